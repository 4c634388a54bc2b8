//! IPv4 packets (RFC 791): a checked view, the parsed header fields l3ns uses, and the
//! protocol numbers it handles.
//!
//! l3ns does not reassemble: fragments are dropped by the parser (`fragment`). Options are
//! allowed and skipped. Bytes after `total_length` (Ethernet padding) are ignored.

use super::checksum;
use super::DropReason;
use std::net::Ipv4Addr;

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// TTL of packets l3ns originates (Linux's default).
pub const DEFAULT_TTL: u8 = 64;

/// IP protocol numbers.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// Flag bits of the flags/fragment-offset word.
pub const FLAG_DONT_FRAGMENT: u16 = 0x4000;
pub const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// A view over an IPv4 packet.
///
/// [`Ipv4Packet::new_checked`] guarantees that the header, as long as its IHL says, and the
/// whole packet, as long as its total length says, are inside the buffer; it does not look at
/// the checksum or the fragment fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it: field getters panic on a short buffer (slice
    /// getters return an empty slice instead). The parser only uses checked views.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after the structural checks, in this order:
    /// fewer than 20 bytes → `truncated`; version ≠ 4 → `bad_version`; IHL < 5 or the header
    /// longer than the buffer → `bad_ihl`; total length < header length or > buffer →
    /// `bad_total_length` (a frame cut short inside the payload lands here: the two cases
    /// cannot be told apart).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let packet = Ipv4Packet { buffer };
        packet.check()?;
        Ok(packet)
    }

    #[inline]
    fn check(&self) -> Result<(), DropReason> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(DropReason::BadVersion);
        }
        let header_len = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN || header_len > b.len() {
            return Err(DropReason::BadIhl);
        }
        let total_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if total_len < header_len || total_len > b.len() {
            return Err(DropReason::BadTotalLength);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service byte (DSCP and ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::TOTAL_LEN])
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLAGS_FRAG]) & FLAG_DONT_FRAGMENT != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLAGS_FRAG]) & FLAG_MORE_FRAGMENTS != 0
    }

    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLAGS_FRAG]) & FRAG_OFFSET_MASK
    }

    /// Whether this packet is a fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLAGS_FRAG]) & (FLAG_MORE_FRAGMENTS | FRAG_OFFSET_MASK)
            != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SRC])
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::DST])
    }

    /// Whether the header (options included) sums to all ones.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let header = self.buffer.as_ref().get(..self.header_len()).unwrap_or(&[]);
        checksum::verify(checksum::accumulate(0, header))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// Options bytes (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        self.buffer
            .as_ref()
            .get(MIN_HEADER_LEN..self.header_len())
            .unwrap_or(&[])
    }

    /// Header and payload, up to the total length (padding excluded).
    #[inline]
    pub fn packet(&self) -> &'a [u8] {
        self.buffer
            .as_ref()
            .get(..usize::from(self.total_len()))
            .unwrap_or(&[])
    }

    /// The payload, from the end of the header to the total length.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.buffer
            .as_ref()
            .get(self.header_len()..usize::from(self.total_len()))
            .unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }

    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::TOTAL_LEN].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the whole flags/fragment-offset word (e.g. [`FLAG_DONT_FRAGMENT`]).
    #[inline]
    pub fn set_flags_and_frag_offset(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLAGS_FRAG].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_src_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&v.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&v.octets());
    }

    /// Computes and stores the header checksum (over IHL × 4 bytes).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::checksum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(sum);
    }

    /// The bytes after the header (to the end of the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }
}

/// The fields of a received IPv4 header that l3ns acts on, and the packet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub tos: u8,
    /// Header length in bytes (20..=60).
    pub header_len: u8,
    /// Header and payload up to the total length: what an ICMP error quotes.
    pub packet: &'a [u8],
}

impl<'a> Ipv4Header<'a> {
    /// The IPv4 payload (empty if `header_len` does not fit `packet`).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.packet
            .get(usize::from(self.header_len)..)
            .unwrap_or(&[])
    }

    /// Total length in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        self.packet.len()
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

    /// A valid header (IHL 5, total length 28) followed by 8 payload bytes and 4 padding bytes.
    fn sample() -> [u8; 32] {
        let mut buf = [0u8; 32];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(20);
        p.set_total_len(28);
        p.set_flags_and_frag_offset(FLAG_DONT_FRAGMENT);
        p.set_ttl(64);
        p.set_protocol(protocol::UDP);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum();
        buf
    }

    #[test]
    fn test_getters_and_padding() {
        let buf = sample();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.verify_checksum());
        assert_eq!(p.packet().len(), 28);
        assert_eq!(p.payload().len(), 8);
        assert!(p.options().is_empty());
    }

    #[test]
    fn test_structural_checks() {
        let buf = sample();
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..19]),
            Err(DropReason::Truncated)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..27]),
            Err(DropReason::BadTotalLength)
        );
        let mut b = buf;
        b[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(DropReason::BadVersion));
        b[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(DropReason::BadIhl));
        b[0] = 0x49; // 36-byte header in a 32-byte buffer
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(DropReason::BadIhl));
        let mut b = buf;
        b[3] = 19;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]),
            Err(DropReason::BadTotalLength)
        );
        b[3] = 33;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]),
            Err(DropReason::BadTotalLength)
        );
    }

    #[test]
    fn test_checksum_covers_options() {
        let mut buf = [0u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(24);
        p.set_total_len(24);
        p.set_ttl(1);
        buf[20] = 0x94; // router alert option
        buf[21] = 4;
        Ipv4Packet::new_unchecked(&mut buf[..]).fill_checksum();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.options(), &[0x94, 4, 0, 0]);
        assert!(p.payload().is_empty());
        buf[22] = 1;
        assert!(!Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }
}
