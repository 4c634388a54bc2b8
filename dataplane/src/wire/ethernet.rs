//! Ethernet II frames: destination, source, EtherType, payload.
//!
//! 802.1Q / 802.1ad tagged frames are not unwrapped: their EtherType is a tag type, so the
//! parser drops them as `not_ipv4`. l3ns ports are untagged (DPDK strips tags in hardware
//! when VLAN offload is configured); supporting tags means adding a VLAN-to-device mapping,
//! not just skipping four bytes.

use super::DropReason;

/// A 48-bit MAC address, in wire order.
pub type MacAddr = [u8; 6];

/// `ff:ff:ff:ff:ff:ff`.
pub const BROADCAST_MAC: MacAddr = [0xff; 6];

/// Length of the Ethernet II header (no FCS: ports hand frames over without it).
pub const HEADER_LEN: usize = 14;

/// EtherType values l3ns looks at.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer tag (dropped as `not_ipv4`).
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (dropped as `not_ipv4`).
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// A view over an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it: field getters panic on a short buffer (slice
    /// getters return an empty slice instead). The parser only uses checked views.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer that holds at least the header (`truncated` otherwise).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst(&self) -> MacAddr {
        mac(&self.buffer.as_ref()[field::DST])
    }

    #[inline]
    pub fn src(&self) -> MacAddr {
        mac(&self.buffer.as_ref()[field::SRC])
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// Everything after the header, including any trailing padding.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_ethertype(&mut self, value: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&value.to_be_bytes());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The addresses of a received frame (its EtherType is implied by what it was parsed as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetHeader {
    pub dst: MacAddr,
    pub src: MacAddr,
}

impl EthernetHeader {
    /// Whether the frame was sent to `ff:ff:ff:ff:ff:ff`.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.dst == BROADCAST_MAC
    }

    /// Whether the frame was sent to a group (multicast or broadcast) address.
    #[inline]
    pub fn is_group(&self) -> bool {
        self.dst[0] & 1 != 0
    }
}

#[inline]
fn mac(b: &[u8]) -> MacAddr {
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fields_round_trip() {
        let mut buf = [0u8; 20];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst([1, 2, 3, 4, 5, 6]);
        f.set_src([7, 8, 9, 10, 11, 12]);
        f.set_ethertype(ethertype::ARP);
        f.payload_mut()[0] = 0xaa;
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.dst(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.ethertype(), 0x0806);
        assert_eq!(f.payload().len(), 6);
        assert_eq!(f.payload()[0], 0xaa);
    }

    #[test]
    fn test_short_frame_is_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&[0u8; HEADER_LEN][..len]),
                Err(DropReason::Truncated)
            );
        }
        assert!(EthernetFrame::new_checked(&[0u8; HEADER_LEN][..]).is_ok());
    }

    #[test]
    fn test_group_addresses() {
        let h = EthernetHeader {
            dst: BROADCAST_MAC,
            src: [2, 0, 0, 0, 0, 1],
        };
        assert!(h.is_broadcast() && h.is_group());
        let h = EthernetHeader {
            dst: [1, 0, 0x5e, 0, 0, 1],
            src: [2, 0, 0, 0, 0, 1],
        };
        assert!(!h.is_broadcast() && h.is_group());
    }
}
