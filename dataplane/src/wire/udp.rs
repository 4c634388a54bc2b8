//! UDP datagrams (RFC 768).
//!
//! The UDP length must be at least 8 and at most the IPv4 payload; bytes after it are
//! ignored. A zero checksum means "not computed" and is accepted; a non-zero checksum is
//! verified over the pseudo-header and the UDP length, and a mismatch is `bad_udp_checksum`.
//! l3ns always computes the checksum on what it sends (a computed zero is sent as `0xffff`).

use super::checksum;
use super::ipv4::protocol;
use super::DropReason;
use std::net::Ipv4Addr;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A view over a UDP datagram (the IPv4 payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it: field getters panic on a short buffer (slice
    /// getters return an empty slice instead). The parser only uses checked views.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps an IPv4 payload: fewer than 8 bytes → `truncated`; UDP length < 8 or beyond the
    /// buffer → `bad_udp_length`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let len = usize::from(be16(&b[field::LENGTH]));
        if len < HEADER_LEN || len > b.len() {
            return Err(DropReason::BadUdpLength);
        }
        Ok(UdpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The UDP length field (header and payload).
    #[inline]
    pub fn len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Whether the datagram carries no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Whether the datagram's checksum is absent (zero) or correct for these addresses.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let acc = checksum::pseudo_header(src, dst, protocol::UDP, len);
        checksum::verify(checksum::accumulate(
            acc,
            self.buffer.as_ref().get(..usize::from(len)).unwrap_or(&[]),
        ))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload, up to the UDP length.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..usize::from(self.len()))
            .unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Computes and stores the checksum over the pseudo-header and the UDP length
    /// (a computed zero is stored as `0xffff`, RFC 768).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let acc = checksum::pseudo_header(src, dst, protocol::UDP, len);
        let sum = checksum::finish(checksum::accumulate(
            acc,
            &self.buffer.as_ref()[..usize::from(len)],
        ));
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// The bytes after the header (to the end of the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[inline]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    fn sample(payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN + payload.len()];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(1234);
        p.set_dst_port(9);
        p.set_len((HEADER_LEN + payload.len()) as u16);
        p.payload_mut().copy_from_slice(payload);
        p.fill_checksum(SRC, DST);
        buf
    }

    #[test]
    fn test_round_trip_and_checksum() {
        let buf = sample(b"hello");
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (1234, 9, 13));
        assert_eq!(p.payload(), b"hello");
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(192, 0, 2, 3)));
    }

    #[test]
    fn test_zero_checksum_is_accepted() {
        let mut buf = sample(b"x");
        UdpPacket::new_unchecked(&mut buf[..]).set_checksum(0);
        assert!(UdpPacket::new_checked(&buf[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn test_bytes_beyond_udp_length_are_ignored() {
        let mut buf = sample(b"abc");
        buf.extend_from_slice(&[0xee; 5]);
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), b"abc");
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn test_length_checks() {
        let buf = sample(b"abc");
        assert_eq!(
            UdpPacket::new_checked(&buf[..7]),
            Err(DropReason::Truncated)
        );
        let mut b = buf.clone();
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]),
            Err(DropReason::BadUdpLength)
        );
        b[5] = 12;
        assert_eq!(
            UdpPacket::new_checked(&b[..]),
            Err(DropReason::BadUdpLength)
        );
    }

    #[test]
    fn test_computed_zero_checksum_is_sent_as_ffff() {
        // Find a payload whose checksum computes to zero, then check it is sent as 0xffff
        // and still verifies.
        for x in 0..=u16::MAX {
            let mut buf = sample(&x.to_be_bytes());
            let mut p = UdpPacket::new_unchecked(&mut buf[..]);
            p.fill_checksum(SRC, DST);
            if p.checksum() == 0xffff {
                assert!(UdpPacket::new_checked(&buf[..])
                    .unwrap()
                    .verify_checksum(SRC, DST));
                return;
            }
        }
        panic!("no payload with a zero checksum found");
    }
}
