//! Checked, zero-copy views over the frames l3ns receives, and builders for those it sends.
//!
//! One file per layer, in the order a received frame is read: [`ethernet`], [`arp`],
//! [`ipv4`], [`udp`], [`icmp`], with the RFC 1071 [`checksum`] they share. Each layer is a
//! view (`new_checked` over a byte slice, field getters and setters, no copy). On top:
//! - [`parse_frame`] (in `parse.rs`), the one hot-path entry point: a frame in, a [`Parsed`]
//!   ARP, UDP or ICMP frame out, or the [`DropReason`] to count;
//! - the `build_*` functions (in `emit.rs`), which write whole frames into a caller's buffer
//!   and return their length.
//!
//! Nothing here allocates, and no input makes the parser panic (a property test feeds it
//! random bytes and mutated frames).

pub mod arp;
pub mod checksum;
mod emit;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
mod parse;
pub mod udp;

pub use arp::{ArpOp, ArpPacket, ArpRepr};
pub use emit::{
    build_arp_reply, build_arp_request, build_icmp_echo_reply, build_icmp_echo_request,
    build_icmp_port_unreachable, build_udp, BuildError, FrameAddrs, ICMP_ERROR_TOS,
};
pub use ethernet::{EthernetFrame, EthernetHeader, MacAddr, BROADCAST_MAC};
pub use icmp::IcmpPacket;
pub use ipv4::{Ipv4Header, Ipv4Packet, DEFAULT_TTL};
pub use parse::{
    parse_frame, parse_frame_with, parse_udp_fast, peek_ipv4_dst, peek_udp_dst_port, ArpFrame,
    Checksums, IcmpFrame, Parsed, UdpDatagram, UdpFrame,
};
pub use udp::UdpPacket;

/// Why a received frame was dropped by the parser. Each reason is a Prometheus label value
/// ([`DropReason::as_str`]) and an index into a fixed counter array ([`DropReason::index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[repr(u8)]
pub enum DropReason {
    /// The frame (or an IPv4 payload) is shorter than the fixed header of a layer.
    #[error("frame shorter than a protocol header")]
    Truncated,
    /// An EtherType other than IPv4 and ARP (IPv6, VLAN-tagged frames, …).
    #[error("EtherType is neither IPv4 nor ARP")]
    NotIpv4,
    /// IPv4 EtherType but version field ≠ 4.
    #[error("IP version is not 4")]
    BadVersion,
    /// IHL < 5, or the header it describes runs past the end of the frame.
    #[error("IPv4 header length (IHL) below 5 or beyond the frame")]
    BadIhl,
    /// Total length smaller than the header or larger than the frame.
    #[error("IPv4 total length smaller than the header or larger than the frame")]
    BadTotalLength,
    /// IPv4 header checksum mismatch.
    #[error("IPv4 header checksum mismatch")]
    BadChecksum,
    /// MF set or a non-zero fragment offset: l3ns does not reassemble.
    #[error("IPv4 fragment (l3ns does not reassemble)")]
    Fragment,
    /// An IPv4 protocol other than UDP and ICMP.
    #[error("IPv4 protocol other than UDP or ICMP")]
    UnsupportedProtocol,
    /// UDP length < 8 or larger than the IPv4 payload.
    #[error("UDP length below 8 or beyond the IPv4 payload")]
    BadUdpLength,
    /// Non-zero UDP checksum that does not match.
    #[error("UDP checksum mismatch")]
    BadUdpChecksum,
    /// ICMP checksum mismatch.
    #[error("ICMP checksum mismatch")]
    BadIcmpChecksum,
    /// ARP that is not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4) request or reply.
    #[error("ARP packet is not an Ethernet/IPv4 request or reply")]
    BadArp,
}

impl DropReason {
    /// Every reason, in `index()` order.
    pub const ALL: &'static [DropReason] = &[
        DropReason::Truncated,
        DropReason::NotIpv4,
        DropReason::BadVersion,
        DropReason::BadIhl,
        DropReason::BadTotalLength,
        DropReason::BadChecksum,
        DropReason::Fragment,
        DropReason::UnsupportedProtocol,
        DropReason::BadUdpLength,
        DropReason::BadUdpChecksum,
        DropReason::BadIcmpChecksum,
        DropReason::BadArp,
    ];

    /// Number of reasons: the length of a per-reason counter array.
    pub const COUNT: usize = Self::ALL.len();

    /// Position in [`DropReason::ALL`], for `[u64; DropReason::COUNT]` counters.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stable Prometheus label value (`reason="..."`).
    #[inline]
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::BadVersion => "bad_version",
            DropReason::BadIhl => "bad_ihl",
            DropReason::BadTotalLength => "bad_total_length",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Fragment => "fragment",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::BadUdpLength => "bad_udp_length",
            DropReason::BadUdpChecksum => "bad_udp_checksum",
            DropReason::BadIcmpChecksum => "bad_icmp_checksum",
            DropReason::BadArp => "bad_arp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DropReason;
    use std::collections::HashSet;

    #[test]
    fn test_drop_reason_index_matches_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        assert_eq!(DropReason::COUNT, 12);
    }

    #[test]
    fn test_drop_reason_labels_are_unique_snake_case() {
        let labels: HashSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DropReason::COUNT);
        for l in labels {
            assert!(
                l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{l}"
            );
        }
    }
}

/// Completes the UDP checksum of an Ethernet/IPv4/UDP frame whose sender left it partial
/// (Linux `CHECKSUM_PARTIAL`: frames from local sockets over veth or tap carry only the
/// pseudo-header sum, and AF_PACKET flags them `TP_STATUS_CSUMNOTREADY`). Returns whether it
/// wrote a checksum; anything that is not a well-formed UDP/IPv4 frame is left untouched for
/// the parser to judge.
pub fn complete_partial_udp_checksum(frame: &mut [u8]) -> bool {
    if frame.len() < ethernet::HEADER_LEN
        || frame[12..14] != ethernet::ethertype::IPV4.to_be_bytes()
    {
        return false;
    }
    let l3 = &mut frame[ethernet::HEADER_LEN..];
    let Ok(ip) = Ipv4Packet::new_checked(&*l3) else {
        return false;
    };
    if ip.protocol() != ipv4::protocol::UDP || ip.is_fragment() {
        return false;
    }
    let (src, dst, hl, total) = (
        ip.src_addr(),
        ip.dst_addr(),
        ip.header_len(),
        usize::from(ip.total_len()),
    );
    let Some(seg) = l3.get_mut(hl..total) else {
        return false;
    };
    let Ok(mut udp) = UdpPacket::new_checked(seg) else {
        return false;
    };
    udp.fill_checksum(src, dst);
    true
}

#[cfg(test)]
mod partial_checksum_tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn test_partial_udp_checksum_is_completed() {
        let addrs = FrameAddrs {
            src_mac: [2; 6],
            dst_mac: [4; 6],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
        };
        let mut buf = [0u8; 128];
        let n = build_udp(&mut buf, &addrs, 1, 2, 64, b"payload").unwrap();
        let good = buf[..n].to_vec();
        // What CHECKSUM_PARTIAL leaves: some other value in the field.
        buf[40] = 0x12;
        buf[41] = 0x34;
        assert_eq!(
            parse_frame(&buf[..n]).unwrap_err(),
            DropReason::BadUdpChecksum
        );
        assert!(complete_partial_udp_checksum(&mut buf[..n]));
        assert_eq!(&buf[..n], &good[..]);
        assert!(parse_frame(&buf[..n]).is_ok());
        // Not UDP/IPv4: untouched.
        let mut arp = [0u8; 42];
        assert!(!complete_partial_udp_checksum(&mut arp));
        assert!(!complete_partial_udp_checksum(&mut buf[..20]));
    }
}
