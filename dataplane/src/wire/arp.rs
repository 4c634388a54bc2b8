//! ARP for Ethernet and IPv4 (RFC 826): the only hardware/protocol pair l3ns speaks.

use super::ethernet::{ethertype, MacAddr};
use super::DropReason;
use std::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP packet (the frame may carry padding after it).
pub const PACKET_LEN: usize = 28;

/// Hardware type "Ethernet".
pub const HTYPE_ETHERNET: u16 = 1;

mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ArpOp {
    Request = 1,
    Reply = 2,
}

/// A view over an ARP packet (the Ethernet payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it: field getters panic on a short buffer (slice
    /// getters return an empty slice instead). The parser only uses checked views.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps a buffer of at least 28 bytes (`truncated` otherwise). Field values are checked
    /// by [`ArpRepr::parse`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < PACKET_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(ArpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn htype(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::HTYPE])
    }

    #[inline]
    pub fn ptype(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PTYPE])
    }

    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    #[inline]
    pub fn oper(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::OPER])
    }

    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        let b = &self.buffer.as_ref()[field::SHA];
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SPA])
    }

    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        let b = &self.buffer.as_ref()[field::THA];
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_htype(&mut self, v: u16) {
        self.buffer.as_mut()[field::HTYPE].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_ptype(&mut self, v: u16) {
        self.buffer.as_mut()[field::PTYPE].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_hlen(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    #[inline]
    pub fn set_plen(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    #[inline]
    pub fn set_oper(&mut self, v: u16) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_sender_mac(&mut self, v: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&v);
    }

    #[inline]
    pub fn set_sender_ip(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&v.octets());
    }

    #[inline]
    pub fn set_target_mac(&mut self, v: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&v);
    }

    #[inline]
    pub fn set_target_ip(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&v.octets());
    }
}

/// A parsed Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Accepts htype 1, ptype 0x0800, hlen 6, plen 4 and operation request or reply;
    /// anything else is `bad_arp`.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr, DropReason> {
        if packet.htype() != HTYPE_ETHERNET
            || packet.ptype() != ethertype::IPV4
            || packet.hlen() != 6
            || packet.plen() != 4
        {
            return Err(DropReason::BadArp);
        }
        let op = match packet.oper() {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            _ => return Err(DropReason::BadArp),
        };
        Ok(ArpRepr {
            op,
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        })
    }

    /// Writes all 28 bytes of the packet.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_htype(HTYPE_ETHERNET);
        packet.set_ptype(ethertype::IPV4);
        packet.set_hlen(6);
        packet.set_plen(4);
        packet.set_oper(self.op as u16);
        packet.set_sender_mac(self.sender_mac);
        packet.set_sender_ip(self.sender_ip);
        packet.set_target_mac(self.target_mac);
        packet.set_target_ip(self.target_ip);
    }
}

#[inline]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArpRepr {
        ArpRepr {
            op: ArpOp::Request,
            sender_mac: [2, 0, 0, 0, 0, 1],
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: [0; 6],
            target_ip: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn test_emit_parse_round_trip() {
        let mut buf = [0u8; PACKET_LEN];
        sample().emit(&mut ArpPacket::new_checked(&mut buf[..]).unwrap());
        let repr = ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(repr, sample());
    }

    #[test]
    fn test_rejects_other_hardware_or_protocol() {
        let mut buf = [0u8; PACKET_LEN];
        sample().emit(&mut ArpPacket::new_checked(&mut buf[..]).unwrap());
        for (offset, value) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16), (7, 3), (7, 0)] {
            let mut bad = buf;
            bad[offset] = value;
            assert_eq!(
                ArpRepr::parse(&ArpPacket::new_checked(&bad[..]).unwrap()),
                Err(DropReason::BadArp),
                "byte {offset} = {value}"
            );
        }
    }

    #[test]
    fn test_short_packet_is_truncated() {
        assert_eq!(
            ArpPacket::new_checked(&[0u8; PACKET_LEN - 1][..]),
            Err(DropReason::Truncated)
        );
    }
}
