//! The hot-path parser: one frame in, an ARP, UDP or ICMP frame (borrowing the buffer) or a
//! drop reason out.
//!
//! Checks run in wire order and the first failure is the reason: Ethernet (`truncated`,
//! `not_ipv4`), then ARP (`truncated`, `bad_arp`) or IPv4 (`truncated`, `bad_version`,
//! `bad_ihl`, `bad_total_length`, `bad_checksum`, `fragment`, `unsupported_protocol`), then
//! UDP (`truncated`, `bad_udp_length`, `bad_udp_checksum`) or ICMP (`truncated`,
//! `bad_icmp_checksum`). The header checksum is checked before the fragment bits so that a
//! corrupted header is counted as corrupted.

use super::arp::{ArpPacket, ArpRepr};
use super::ethernet::{ethertype, EthernetFrame, EthernetHeader};
use super::icmp::IcmpPacket;
use super::ipv4::{protocol, Ipv4Header, Ipv4Packet};
use super::udp::UdpPacket;
use super::DropReason;

/// Which checksums [`parse_frame_with`] verifies. A port whose NIC validated them (DPDK
/// `RTE_MBUF_F_RX_*_CKSUM_GOOD`) may skip the work; a NIC-reported bad checksum should be
/// counted by the port with the same reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksums {
    /// The IPv4 header checksum.
    pub ipv4: bool,
    /// The UDP checksum (when non-zero) and the ICMP checksum.
    pub l4: bool,
}

impl Checksums {
    pub const VERIFY_ALL: Checksums = Checksums {
        ipv4: true,
        l4: true,
    };
    pub const TRUST_ALL: Checksums = Checksums {
        ipv4: false,
        l4: false,
    };
}

/// A received frame the dataplane handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Arp(ArpFrame),
    Udp(UdpFrame<'a>),
    Icmp(IcmpFrame<'a>),
}

/// A received ARP request or reply (Ethernet/IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth: EthernetHeader,
    pub arp: ArpRepr,
}

/// A received UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    pub eth: EthernetHeader,
    pub ip: Ipv4Header<'a>,
    pub src_port: u16,
    pub dst_port: u16,
    /// The payload, up to the UDP length.
    pub payload: &'a [u8],
}

/// A received ICMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpFrame<'a> {
    pub eth: EthernetHeader,
    pub ip: Ipv4Header<'a>,
    pub icmp_type: u8,
    pub code: u8,
    /// Bytes 4..6 of the message: the echo identifier for echo request and reply.
    pub ident: u16,
    /// Bytes 6..8 of the message: the echo sequence number for echo request and reply.
    pub seq: u16,
    /// Everything after the 8-byte ICMP header (echo data, or an error's quoted datagram).
    pub data: &'a [u8],
}

/// Parses and validates a frame, verifying every checksum.
#[inline]
pub fn parse_frame(frame: &[u8]) -> Result<Parsed<'_>, DropReason> {
    parse_frame_with(frame, Checksums::VERIFY_ALL)
}

/// The IPv4 destination of an Ethernet frame, read without any validation — a hint for
/// prefetching (the worker's first pass over a burst), never a basis for a decision.
#[inline(always)]
pub fn peek_ipv4_dst(frame: &[u8]) -> Option<u32> {
    let ethertype = frame.get(12..14)?;
    if ethertype != [0x08, 0x00] {
        return None;
    }
    let d = frame.get(30..34)?;
    Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

/// Parses and validates a frame, verifying the checksums `verify` asks for.
#[inline]
pub fn parse_frame_with(frame: &[u8], verify: Checksums) -> Result<Parsed<'_>, DropReason> {
    let eth = EthernetFrame::new_checked(frame)?;
    let header = EthernetHeader {
        dst: eth.dst(),
        src: eth.src(),
    };
    match eth.ethertype() {
        ethertype::IPV4 => parse_ipv4(header, eth.payload(), verify),
        ethertype::ARP => {
            let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload())?)?;
            Ok(Parsed::Arp(ArpFrame { eth: header, arp }))
        }
        _ => Err(DropReason::NotIpv4),
    }
}

#[inline]
fn parse_ipv4(
    eth: EthernetHeader,
    bytes: &[u8],
    verify: Checksums,
) -> Result<Parsed<'_>, DropReason> {
    let packet = Ipv4Packet::new_checked(bytes)?;
    if verify.ipv4 && !packet.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    if packet.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let ip = Ipv4Header {
        src: packet.src_addr(),
        dst: packet.dst_addr(),
        ttl: packet.ttl(),
        tos: packet.tos(),
        header_len: packet.header_len() as u8,
        packet: packet.packet(),
    };
    match packet.protocol() {
        protocol::UDP => {
            let udp = UdpPacket::new_checked(packet.payload())?;
            if verify.l4 && !udp.verify_checksum(ip.src, ip.dst) {
                return Err(DropReason::BadUdpChecksum);
            }
            Ok(Parsed::Udp(UdpFrame {
                eth,
                ip,
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
                payload: udp.payload(),
            }))
        }
        protocol::ICMP => {
            let icmp = IcmpPacket::new_checked(packet.payload())?;
            if verify.l4 && !icmp.verify_checksum() {
                return Err(DropReason::BadIcmpChecksum);
            }
            Ok(Parsed::Icmp(IcmpFrame {
                eth,
                ip,
                icmp_type: icmp.msg_type(),
                code: icmp.code(),
                ident: icmp.echo_ident(),
                seq: icmp.echo_seq(),
                data: icmp.data(),
            }))
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::emit::{build_arp_request, build_icmp_echo_request, build_udp, FrameAddrs};
    use crate::wire::ethernet::MacAddr;
    use crate::wire::ipv4::{FLAG_DONT_FRAGMENT, FLAG_MORE_FRAGMENTS};
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    const MAC_A: MacAddr = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: MacAddr = [0x02, 0, 0, 0, 0, 0x0b];
    const ADDRS: FrameAddrs = FrameAddrs {
        src_mac: MAC_A,
        dst_mac: MAC_B,
        src_ip: Ipv4Addr::new(192, 0, 2, 1),
        dst_ip: Ipv4Addr::new(192, 0, 2, 2),
    };
    const IP: usize = 14;
    const L4: usize = 34;

    fn udp() -> Vec<u8> {
        let mut buf = vec![0u8; 128];
        let n = build_udp(&mut buf, &ADDRS, 1234, 9, 64, b"0123456789abcdef").unwrap();
        buf.truncate(n);
        buf
    }

    fn icmp() -> Vec<u8> {
        let mut buf = vec![0u8; 128];
        let n = build_icmp_echo_request(&mut buf, &ADDRS, 1, 2, b"ping").unwrap();
        buf.truncate(n);
        buf
    }

    fn arp() -> Vec<u8> {
        let mut buf = vec![0u8; 60];
        let n = build_arp_request(&mut buf, MAC_A, ADDRS.src_ip, ADDRS.dst_ip).unwrap();
        buf.truncate(n);
        buf
    }

    /// Edits the IPv4 header of `frame`, then refills the header checksum so the edit is the
    /// only defect.
    fn edit_ip(mut frame: Vec<u8>, edit: impl FnOnce(&mut Ipv4Packet<&mut [u8]>)) -> Vec<u8> {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[IP..]);
        edit(&mut ip);
        ip.fill_checksum();
        frame
    }

    /// Edits the UDP header of `frame`, then refills the UDP checksum.
    fn edit_udp(mut frame: Vec<u8>, edit: impl FnOnce(&mut UdpPacket<&mut [u8]>)) -> Vec<u8> {
        let mut udp = UdpPacket::new_unchecked(&mut frame[L4..]);
        edit(&mut udp);
        udp.fill_checksum(ADDRS.src_ip, ADDRS.dst_ip);
        frame
    }

    fn with_byte(mut frame: Vec<u8>, offset: usize, value: u8) -> Vec<u8> {
        frame[offset] = value;
        frame
    }

    fn reason(frame: &[u8]) -> DropReason {
        match parse_frame(frame) {
            Err(r) => r,
            Ok(p) => panic!("accepted: {p:?}"),
        }
    }

    #[test]
    fn test_valid_frames_parse() {
        assert!(matches!(parse_frame(&udp()), Ok(Parsed::Udp(_))));
        assert!(matches!(parse_frame(&icmp()), Ok(Parsed::Icmp(_))));
        assert!(matches!(parse_frame(&arp()), Ok(Parsed::Arp(_))));
    }

    /// One crafted frame per reason; together they must provoke every `DropReason`.
    #[test]
    fn test_every_drop_reason_is_provoked() {
        let mut frame_with_options = udp();
        frame_with_options.splice(L4..L4, [1u8, 1, 1, 1]); // four NOP options
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (udp()[..13].to_vec(), DropReason::Truncated),
            (udp()[..IP + 19].to_vec(), DropReason::Truncated),
            (with_byte(udp(), 12, 0x86), DropReason::NotIpv4), // 0x86dd IPv6
            (
                with_byte(with_byte(udp(), 12, 0x81), 13, 0x00),
                DropReason::NotIpv4,
            ), // 802.1Q
            (with_byte(udp(), IP, 0x65), DropReason::BadVersion),
            (
                edit_ip(udp(), |ip| ip.set_version_and_header_len(16)),
                DropReason::BadIhl,
            ),
            (with_byte(udp(), IP, 0x4f), DropReason::BadIhl), // 60-byte header, 44-byte packet
            (
                with_byte(frame_with_options.clone(), IP, 0x46),
                DropReason::BadChecksum,
            ),
            (
                edit_ip(udp(), |ip| ip.set_total_len(19)),
                DropReason::BadTotalLength,
            ),
            (
                edit_ip(udp(), |ip| ip.set_total_len(45)),
                DropReason::BadTotalLength,
            ),
            (with_byte(udp(), IP + 8, 63), DropReason::BadChecksum), // TTL changed
            (
                edit_ip(udp(), |ip| {
                    ip.set_flags_and_frag_offset(FLAG_MORE_FRAGMENTS)
                }),
                DropReason::Fragment,
            ),
            (
                edit_ip(udp(), |ip| {
                    ip.set_flags_and_frag_offset(FLAG_DONT_FRAGMENT | 185)
                }),
                DropReason::Fragment,
            ),
            (
                edit_ip(udp(), |ip| ip.set_protocol(6)),
                DropReason::UnsupportedProtocol,
            ),
            (
                edit_ip(udp(), |ip| ip.set_total_len(20 + 7)),
                DropReason::Truncated,
            ),
            (with_byte(udp(), L4 + 5, 7), DropReason::BadUdpLength),
            (with_byte(udp(), L4 + 5, 8 + 17), DropReason::BadUdpLength),
            (with_byte(udp(), L4 + 8, b'X'), DropReason::BadUdpChecksum),
            (with_byte(icmp(), L4 + 8, b'P'), DropReason::BadIcmpChecksum),
            (
                edit_ip(icmp(), |ip| ip.set_total_len(20 + 7)),
                DropReason::Truncated,
            ),
            (arp()[..14 + 27].to_vec(), DropReason::Truncated),
            (with_byte(arp(), 14 + 1, 6), DropReason::BadArp), // htype 6 (IEEE 802)
            (with_byte(arp(), 14 + 7, 3), DropReason::BadArp), // RARP request
        ];
        let mut seen = BTreeSet::new();
        for (i, (frame, expected)) in cases.iter().enumerate() {
            assert_eq!(reason(frame), *expected, "case {i}");
            seen.insert(*expected);
        }
        let all: BTreeSet<_> = DropReason::ALL.iter().copied().collect();
        assert_eq!(seen, all, "some drop reason has no crafted frame");
        // The same options frame with a correct checksum is accepted, options skipped.
        let ok = edit_ip(frame_with_options, |ip| {
            ip.set_version_and_header_len(24);
            ip.set_total_len(20 + 4 + 8 + 16);
        });
        let Ok(Parsed::Udp(u)) = parse_frame(&ok) else {
            panic!("options frame rejected: {:?}", parse_frame(&ok))
        };
        assert_eq!((u.ip.header_len, u.payload), (24, &b"0123456789abcdef"[..]));
    }

    #[test]
    fn test_truncated_at_every_offset_is_rejected() {
        for frame in [udp(), icmp(), arp()] {
            for n in 0..frame.len() {
                let r = parse_frame(&frame[..n]);
                let expected = if n < L4 {
                    DropReason::Truncated
                } else {
                    DropReason::BadTotalLength
                };
                if frame[12..14] == [0x08, 0x00] {
                    assert_eq!(r, Err(expected), "cut at {n}");
                } else {
                    assert_eq!(r, Err(DropReason::Truncated), "ARP cut at {n}");
                }
            }
        }
    }

    #[test]
    fn test_ethernet_padding_is_ignored() {
        for frame in [udp(), icmp()] {
            let mut padded = frame.clone();
            padded.extend_from_slice(&[0xaa; 20]);
            assert_eq!(
                parse_frame(&padded),
                parse_frame(&frame),
                "padding changed the result"
            );
        }
        let mut tiny = vec![0u8; 64];
        let n = build_udp(&mut tiny, &ADDRS, 1, 2, 64, b"").unwrap();
        let Ok(Parsed::Udp(u)) = parse_frame(&tiny) else {
            panic!("padded minimum frame rejected")
        };
        assert_eq!((u.ip.packet.len(), u.payload.len()), (n - 14, 0));
    }

    #[test]
    fn test_udp_bytes_beyond_udp_length_are_ignored() {
        // UDP length 8 + 4 inside a 16-byte payload: only 4 bytes are the datagram's.
        let frame = edit_udp(udp(), |u| u.set_len(12));
        let Ok(Parsed::Udp(u)) = parse_frame(&frame) else {
            panic!("rejected: {:?}", parse_frame(&frame))
        };
        assert_eq!(u.payload, b"0123");
    }

    #[test]
    fn test_zero_udp_checksum_is_accepted() {
        let frame = with_byte(with_byte(udp(), L4 + 6, 0), L4 + 7, 0);
        let frame = with_byte(frame, L4 + 8, b'X');
        assert!(matches!(parse_frame(&frame), Ok(Parsed::Udp(_))));
    }

    #[test]
    fn test_dont_fragment_alone_is_not_a_fragment() {
        let frame = edit_ip(udp(), |ip| ip.set_flags_and_frag_offset(FLAG_DONT_FRAGMENT));
        assert!(parse_frame(&frame).is_ok());
        let frame = edit_ip(udp(), |ip| ip.set_flags_and_frag_offset(0));
        assert!(parse_frame(&frame).is_ok());
    }

    #[test]
    fn test_checksum_policy_trusts_offload() {
        let bad_ip = with_byte(udp(), IP + 8, 63);
        let bad_udp = with_byte(udp(), L4 + 8, b'X');
        let bad_icmp = with_byte(icmp(), L4 + 8, b'P');
        let trust = Checksums::TRUST_ALL;
        assert!(parse_frame_with(&bad_ip, trust).is_ok());
        assert!(parse_frame_with(&bad_udp, trust).is_ok());
        assert!(parse_frame_with(&bad_icmp, trust).is_ok());
        let ip_only = Checksums {
            ipv4: true,
            l4: false,
        };
        assert_eq!(
            parse_frame_with(&bad_ip, ip_only),
            Err(DropReason::BadChecksum)
        );
        assert!(parse_frame_with(&bad_udp, ip_only).is_ok());
        // Structural checks still apply when checksums are trusted.
        assert_eq!(
            parse_frame_with(&udp()[..40], trust),
            Err(DropReason::BadTotalLength)
        );
    }

    fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
        let base = prop_oneof![Just(udp()), Just(icmp()), Just(arp())];
        (
            base,
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            any::<prop::sample::Index>(),
            proptest::collection::vec(any::<u8>(), 0..32),
        )
            .prop_map(|(mut frame, edits, cut, tail)| {
                for (at, value) in edits {
                    let i = at.index(frame.len());
                    frame[i] = value;
                }
                let cut = cut.index(frame.len() + 1);
                frame.truncate(cut);
                frame.extend_from_slice(&tail);
                frame
            })
    }

    /// Whatever `parse_frame` returns borrows from the frame and stays within it.
    fn check_within(frame: &[u8], parsed: &Parsed<'_>) {
        let range = frame.as_ptr_range();
        let inside = |s: &[u8]| {
            s.is_empty() || (range.contains(&s.as_ptr()) && s.as_ptr_range().end <= range.end)
        };
        match parsed {
            Parsed::Arp(_) => {}
            Parsed::Udp(u) => assert!(inside(u.ip.packet) && inside(u.payload)),
            Parsed::Icmp(i) => assert!(inside(i.ip.packet) && inside(i.data)),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn prop_random_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = parse_frame(&frame) {
                check_within(&frame, &p);
            }
        }

        #[test]
        fn prop_random_ipv4_never_panics(
            head in proptest::collection::vec(any::<u8>(), 0..80),
            ihl in 0u8..16,
            proto in prop_oneof![Just(1u8), Just(17u8), any::<u8>()],
        ) {
            // An Ethernet/IPv4 prefix with random IHL and protocol reaches the deeper layers.
            let mut frame = udp()[..L4].to_vec();
            frame[IP] = 0x40 | ihl;
            frame[IP + 9] = proto;
            frame.extend_from_slice(&head);
            let total = (frame.len() - IP) as u16;
            frame[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
            for trust in [Checksums::VERIFY_ALL, Checksums::TRUST_ALL] {
                if let Ok(p) = parse_frame_with(&frame, trust) {
                    check_within(&frame, &p);
                }
            }
        }

        #[test]
        fn prop_mutated_frames_never_panic(frame in mutated_frame()) {
            for trust in [Checksums::VERIFY_ALL, Checksums::TRUST_ALL] {
                if let Ok(p) = parse_frame_with(&frame, trust) {
                    check_within(&frame, &p);
                }
            }
        }
    }
}
