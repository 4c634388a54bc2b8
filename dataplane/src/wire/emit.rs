//! Builders for the frames l3ns sends: each writes a whole Ethernet frame into a buffer the
//! caller owns (an mbuf, a ring slot) and returns its length. No allocation.
//!
//! IPv4 headers are 20 bytes, DF set, identification 0 (an atomic datagram, RFC 6864 §4.1).
//! Frames are not padded to 60 bytes: the NIC or the kernel pads short frames.

use super::arp::{self, ArpOp, ArpPacket, ArpRepr};
use super::ethernet::{self, ethertype, EthernetFrame, EthernetHeader, MacAddr, BROADCAST_MAC};
use super::icmp::{self, kind, IcmpPacket};
use super::ipv4::{self, protocol, Ipv4Header, Ipv4Packet, DEFAULT_TTL, FLAG_DONT_FRAGMENT};
use super::parse::IcmpFrame;
use super::udp::{self, UdpPacket};
use std::net::Ipv4Addr;

/// TOS of ICMP errors: precedence "internetwork control", as Linux and RFC 1812 §4.3.2.5.
pub const ICMP_ERROR_TOS: u8 = 0xc0;

/// Ethernet + IPv4 header bytes in front of a UDP or ICMP message.
const ETH_IPV4_LEN: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;

/// Why a frame could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The caller's buffer cannot hold the frame.
    #[error("a {needed}-byte frame does not fit a {available}-byte buffer")]
    BufferTooSmall { needed: usize, available: usize },
    /// The IPv4 packet would exceed 65,535 bytes.
    #[error("an IPv4 packet of {0} bytes exceeds 65535")]
    TooLong(usize),
}

/// Link and network addresses of a frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameAddrs {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
}

impl FrameAddrs {
    /// Addresses of an answer to a received packet: from `our_mac` and the address the packet
    /// was sent to, back to its sender. (Whether to answer a broadcast is the caller's call.)
    #[inline]
    pub fn answering(our_mac: MacAddr, eth: &EthernetHeader, ip: &Ipv4Header<'_>) -> FrameAddrs {
        FrameAddrs {
            src_mac: our_mac,
            dst_mac: eth.src,
            src_ip: ip.dst,
            dst_ip: ip.src,
        }
    }
}

/// Writes an Ethernet/IPv4/UDP frame carrying `payload`, checksums included.
#[inline]
pub fn build_udp(
    buf: &mut [u8],
    addrs: &FrameAddrs,
    src_port: u16,
    dst_port: u16,
    ttl: u8,
    payload: &[u8],
) -> Result<usize, BuildError> {
    let udp_len = udp::HEADER_LEN + payload.len();
    let len = emit_eth_ipv4(buf, addrs, protocol::UDP, 0, ttl, udp_len)?;
    let mut udp = UdpPacket::new_unchecked(&mut buf[ETH_IPV4_LEN..len]);
    udp.set_src_port(src_port);
    udp.set_dst_port(dst_port);
    udp.set_len(udp_len as u16);
    udp.payload_mut().copy_from_slice(payload);
    udp.fill_checksum(addrs.src_ip, addrs.dst_ip);
    Ok(len)
}

/// Writes an ICMP echo request (for tests and traffic generators).
#[inline]
pub fn build_icmp_echo_request(
    buf: &mut [u8],
    addrs: &FrameAddrs,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Result<usize, BuildError> {
    emit_icmp(
        buf,
        addrs,
        0,
        kind::ECHO_REQUEST,
        0,
        echo_rest(ident, seq),
        data,
    )
}

/// Writes the echo reply to a received echo request: same identifier, sequence and data,
/// from the address the request was sent to (R15), back to its sender, with its TOS.
/// The caller has checked that `request` is an echo request to one of its addresses.
#[inline]
pub fn build_icmp_echo_reply(
    buf: &mut [u8],
    our_mac: MacAddr,
    request: &IcmpFrame<'_>,
) -> Result<usize, BuildError> {
    let addrs = FrameAddrs::answering(our_mac, &request.eth, &request.ip);
    let rest = echo_rest(request.ident, request.seq);
    emit_icmp(
        buf,
        &addrs,
        request.ip.tos,
        kind::ECHO_REPLY,
        0,
        rest,
        request.data,
    )
}

/// Writes an ICMP port unreachable (type 3, code 3) about `original_ip_packet` (the
/// received IPv4 packet, header first), quoting its header and the first 8 bytes of its
/// payload (RFC 792; RFC 1122 §3.2.2 "at least"), or less if the packet is shorter.
#[inline]
pub fn build_icmp_port_unreachable(
    buf: &mut [u8],
    addrs: &FrameAddrs,
    original_ip_packet: &[u8],
) -> Result<usize, BuildError> {
    let header_len = original_ip_packet
        .first()
        .map_or(0, |b| usize::from(b & 0x0f) * 4);
    let quote_len = original_ip_packet.len().min(header_len + 8);
    emit_icmp(
        buf,
        addrs,
        ICMP_ERROR_TOS,
        kind::DEST_UNREACHABLE,
        kind::CODE_PORT_UNREACHABLE,
        [0; 4],
        &original_ip_packet[..quote_len],
    )
}

/// Writes a broadcast ARP request for `target_ip`.
#[inline]
pub fn build_arp_request(
    buf: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> Result<usize, BuildError> {
    let repr = ArpRepr {
        op: ArpOp::Request,
        sender_mac: our_mac,
        sender_ip: our_ip,
        target_mac: [0; 6],
        target_ip,
    };
    emit_arp(buf, BROADCAST_MAC, &repr)
}

/// Writes the ARP reply "`our_ip` is at `our_mac`" to the requester, unicast.
#[inline]
pub fn build_arp_reply(
    buf: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    their_mac: MacAddr,
    their_ip: Ipv4Addr,
) -> Result<usize, BuildError> {
    let repr = ArpRepr {
        op: ArpOp::Reply,
        sender_mac: our_mac,
        sender_ip: our_ip,
        target_mac: their_mac,
        target_ip: their_ip,
    };
    emit_arp(buf, their_mac, &repr)
}

#[inline]
fn emit_arp(buf: &mut [u8], dst_mac: MacAddr, repr: &ArpRepr) -> Result<usize, BuildError> {
    let len = ethernet::HEADER_LEN + arp::PACKET_LEN;
    let buf = fit(buf, len)?;
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    eth.set_dst(dst_mac);
    eth.set_src(repr.sender_mac);
    eth.set_ethertype(ethertype::ARP);
    repr.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    Ok(len)
}

#[inline]
fn echo_rest(ident: u16, seq: u16) -> [u8; 4] {
    let (i, s) = (ident.to_be_bytes(), seq.to_be_bytes());
    [i[0], i[1], s[0], s[1]]
}

#[inline]
fn emit_icmp(
    buf: &mut [u8],
    addrs: &FrameAddrs,
    tos: u8,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    data: &[u8],
) -> Result<usize, BuildError> {
    let icmp_len = icmp::HEADER_LEN + data.len();
    let len = emit_eth_ipv4(buf, addrs, protocol::ICMP, tos, DEFAULT_TTL, icmp_len)?;
    let mut icmp = IcmpPacket::new_unchecked(&mut buf[ETH_IPV4_LEN..len]);
    icmp.set_msg_type(msg_type);
    icmp.set_code(code);
    icmp.set_rest_of_header(rest);
    icmp.data_mut().copy_from_slice(data);
    icmp.fill_checksum();
    Ok(len)
}

/// Writes the Ethernet header and a 20-byte IPv4 header (checksum filled) for a payload of
/// `l4_len` bytes; returns the frame length.
#[inline]
fn emit_eth_ipv4(
    buf: &mut [u8],
    addrs: &FrameAddrs,
    proto: u8,
    tos: u8,
    ttl: u8,
    l4_len: usize,
) -> Result<usize, BuildError> {
    let ip_len = ipv4::MIN_HEADER_LEN + l4_len;
    let total_len = u16::try_from(ip_len).map_err(|_| BuildError::TooLong(ip_len))?;
    let len = ethernet::HEADER_LEN + ip_len;
    let buf = fit(buf, len)?;
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    eth.set_dst(addrs.dst_mac);
    eth.set_src(addrs.src_mac);
    eth.set_ethertype(ethertype::IPV4);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
    ip.set_tos(tos);
    ip.set_total_len(total_len);
    ip.set_ident(0);
    ip.set_flags_and_frag_offset(FLAG_DONT_FRAGMENT);
    ip.set_ttl(ttl);
    ip.set_protocol(proto);
    ip.set_src_addr(addrs.src_ip);
    ip.set_dst_addr(addrs.dst_ip);
    ip.fill_checksum();
    Ok(len)
}

#[inline]
fn fit(buf: &mut [u8], len: usize) -> Result<&mut [u8], BuildError> {
    let available = buf.len();
    buf.get_mut(..len).ok_or(BuildError::BufferTooSmall {
        needed: len,
        available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_frame, Parsed};
    use etherparse::{
        icmpv4::DestUnreachableHeader, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket,
        TransportSlice,
    };
    use proptest::prelude::*;

    const MAC_A: MacAddr = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: MacAddr = [0x02, 0, 0, 0, 0, 0x0b];
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

    fn a_to_b() -> FrameAddrs {
        FrameAddrs {
            src_mac: MAC_A,
            dst_mac: MAC_B,
            src_ip: IP_A,
            dst_ip: IP_B,
        }
    }

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let len = build_udp(&mut buf, &a_to_b(), 40000, 9, 64, payload).unwrap();
        buf.truncate(len);
        buf
    }

    fn parse_udp(frame: &[u8]) -> crate::wire::UdpFrame<'_> {
        match parse_frame(frame) {
            Ok(Parsed::Udp(u)) => u,
            other => panic!("expected UDP, got {other:?}"),
        }
    }

    fn parse_icmp(frame: &[u8]) -> IcmpFrame<'_> {
        match parse_frame(frame) {
            Ok(Parsed::Icmp(i)) => i,
            other => panic!("expected ICMP, got {other:?}"),
        }
    }

    #[test]
    fn test_udp_round_trip() {
        let frame = udp_frame(b"hello l3ns");
        assert_eq!(frame.len(), 42 + 10);
        let u = parse_udp(&frame);
        assert_eq!(
            u.eth,
            EthernetHeader {
                dst: MAC_B,
                src: MAC_A
            }
        );
        assert_eq!(
            (u.ip.src, u.ip.dst, u.ip.ttl, u.ip.tos),
            (IP_A, IP_B, 64, 0)
        );
        assert_eq!(usize::from(u.ip.header_len), 20);
        assert_eq!(u.ip.packet, &frame[14..]);
        assert_eq!((u.src_port, u.dst_port), (40000, 9));
        assert_eq!(u.payload, b"hello l3ns");
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.dont_frag());
        assert_eq!(ip.ident(), 0);
    }

    #[test]
    fn test_udp_empty_payload() {
        let frame = udp_frame(b"");
        assert_eq!(parse_udp(&frame).payload, b"");
    }

    #[test]
    fn test_udp_is_accepted_by_etherparse_with_same_checksums() {
        let payload = b"cross-check with etherparse";
        let frame = udp_frame(payload);
        let sliced = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("not IPv4: {:?}", sliced.net)
        };
        let header = ip.header().to_header();
        assert_eq!(header.source, IP_A.octets());
        assert_eq!(header.destination, IP_B.octets());
        assert_eq!(header.time_to_live, 64);
        assert!(header.dont_fragment);
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
            panic!("not UDP: {:?}", sliced.transport)
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (40000, 9));
        assert_eq!(udp.payload(), payload);
        let expected = udp
            .to_header()
            .calc_checksum_ipv4(&header, payload)
            .unwrap();
        assert_eq!(udp.checksum(), expected);
    }

    #[test]
    fn test_parses_etherparse_udp() {
        let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP_A.octets(), IP_B.octets(), 17)
            .udp(5353, 53);
        let payload = [7u8; 33];
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut frame, &payload).unwrap();
        let u = parse_udp(&frame);
        assert_eq!((u.ip.src, u.ip.dst, u.ip.ttl), (IP_A, IP_B, 17));
        assert_eq!((u.src_port, u.dst_port), (5353, 53));
        assert_eq!(u.payload, &payload);
    }

    #[test]
    fn test_parses_etherparse_icmp_echo() {
        let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP_A.octets(), IP_B.octets(), 64)
            .icmpv4_echo_request(0x4242, 3);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"abcdefgh").unwrap();
        let i = parse_icmp(&frame);
        assert_eq!((i.icmp_type, i.code), (kind::ECHO_REQUEST, 0));
        assert_eq!((i.ident, i.seq), (0x4242, 3));
        assert_eq!(i.data, b"abcdefgh");
    }

    #[test]
    fn test_echo_reply_answers_request() {
        let mut buf = [0u8; 256];
        let len = build_icmp_echo_request(&mut buf, &a_to_b(), 77, 5, b"payload!").unwrap();
        let request = parse_icmp(&buf[..len]);
        let mut out = [0u8; 256];
        let n = build_icmp_echo_reply(&mut out, MAC_B, &request).unwrap();
        let reply = parse_icmp(&out[..n]);
        assert_eq!(
            reply.eth,
            EthernetHeader {
                dst: MAC_A,
                src: MAC_B
            }
        );
        assert_eq!((reply.ip.src, reply.ip.dst), (IP_B, IP_A));
        assert_eq!((reply.icmp_type, reply.code), (kind::ECHO_REPLY, 0));
        assert_eq!((reply.ident, reply.seq), (77, 5));
        assert_eq!(reply.data, b"payload!");
        // etherparse agrees on type, fields and checksum.
        let sliced = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &sliced.transport else {
            panic!("not ICMP")
        };
        let Icmpv4Type::EchoReply(echo) = icmp.icmp_type() else {
            panic!("not an echo reply: {:?}", icmp.icmp_type())
        };
        assert_eq!((echo.id, echo.seq), (77, 5));
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type().calc_checksum(icmp.payload())
        );
    }

    #[test]
    fn test_port_unreachable_quotes_header_and_8_bytes() {
        let original = udp_frame(&[0x5a; 100]);
        let u = parse_udp(&original);
        let addrs = FrameAddrs::answering(MAC_B, &u.eth, &u.ip);
        let mut buf = [0u8; 256];
        let n = build_icmp_port_unreachable(&mut buf, &addrs, u.ip.packet).unwrap();
        assert_eq!(n, 14 + 20 + 8 + 28);
        let i = parse_icmp(&buf[..n]);
        assert_eq!((i.ip.src, i.ip.dst, i.ip.tos), (IP_B, IP_A, ICMP_ERROR_TOS));
        assert_eq!(i.eth.dst, MAC_A);
        assert_eq!(
            (i.icmp_type, i.code),
            (kind::DEST_UNREACHABLE, kind::CODE_PORT_UNREACHABLE)
        );
        assert_eq!((i.ident, i.seq), (0, 0));
        assert_eq!(i.data, &original[14..14 + 28]);
        let sliced = SlicedPacket::from_ethernet(&buf[..n]).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &sliced.transport else {
            panic!("not ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
        );
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type().calc_checksum(icmp.payload())
        );
    }

    #[test]
    fn test_port_unreachable_quotes_ip_options_and_short_packets() {
        // A 24-byte header (IHL 6) with a 10-byte payload: quote 24 + 8.
        let mut original = [0u8; 34];
        let mut ip = Ipv4Packet::new_unchecked(&mut original[..]);
        ip.set_version_and_header_len(24);
        ip.set_total_len(34);
        let mut buf = [0u8; 128];
        let n = build_icmp_port_unreachable(&mut buf, &a_to_b(), &original).unwrap();
        assert_eq!(parse_icmp(&buf[..n]).data, &original[..32]);
        // A packet shorter than header + 8 is quoted whole.
        let n = build_icmp_port_unreachable(&mut buf, &a_to_b(), &original[..25]).unwrap();
        assert_eq!(parse_icmp(&buf[..n]).data, &original[..25]);
        let n = build_icmp_port_unreachable(&mut buf, &a_to_b(), &[]).unwrap();
        assert_eq!(parse_icmp(&buf[..n]).data, b"");
    }

    #[test]
    fn test_arp_request_matches_linux_bytes() {
        let mut buf = [0u8; 64];
        let n = build_arp_request(&mut buf, MAC_A, IP_A, IP_B).unwrap();
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            0x02, 0, 0, 0, 0, 0x0a, 10, 1, 0, 1,
            0, 0, 0, 0, 0, 0, 10, 1, 0, 2,
        ];
        assert_eq!(&buf[..n], &expected);
    }

    #[test]
    fn test_arp_reply_round_trip() {
        let mut buf = [0u8; 60];
        let n = build_arp_reply(&mut buf, MAC_B, IP_B, MAC_A, IP_A).unwrap();
        assert_eq!(n, 42);
        // Ethernet padding to 60 bytes is ignored.
        let Ok(Parsed::Arp(a)) = parse_frame(&buf) else {
            panic!("not ARP")
        };
        assert_eq!(
            a.eth,
            EthernetHeader {
                dst: MAC_A,
                src: MAC_B
            }
        );
        assert_eq!(
            a.arp,
            ArpRepr {
                op: ArpOp::Reply,
                sender_mac: MAC_B,
                sender_ip: IP_B,
                target_mac: MAC_A,
                target_ip: IP_A,
            }
        );
    }

    #[test]
    fn test_builders_refuse_small_buffers() {
        let mut small = [0u8; 64];
        let too_small = |r: Result<usize, BuildError>, needed: usize, available: usize| {
            assert_eq!(r, Err(BuildError::BufferTooSmall { needed, available }));
        };
        too_small(
            build_udp(&mut small[..51], &a_to_b(), 1, 2, 64, &[0; 10]),
            52,
            51,
        );
        too_small(
            build_arp_request(&mut small[..41], MAC_A, IP_A, IP_B),
            42,
            41,
        );
        too_small(
            build_arp_reply(&mut small[..0], MAC_A, IP_A, MAC_B, IP_B),
            42,
            0,
        );
        too_small(
            build_icmp_echo_request(&mut small[..42], &a_to_b(), 1, 1, b"x"),
            43,
            42,
        );
        too_small(
            build_icmp_port_unreachable(&mut small, &a_to_b(), &[0x45; 60]),
            70,
            64,
        );
    }

    #[test]
    fn test_udp_payload_too_long() {
        let mut buf = vec![0u8; 70_000];
        let max = 65_535 - 28;
        assert_eq!(
            build_udp(&mut buf, &a_to_b(), 1, 2, 64, &vec![0; max]),
            Ok(14 + 65_535)
        );
        assert_eq!(
            build_udp(&mut buf, &a_to_b(), 1, 2, 64, &vec![0; max + 1]),
            Err(BuildError::TooLong(65_536))
        );
    }

    proptest! {
        #[test]
        fn prop_udp_round_trip_agrees_with_etherparse(
            src_mac in any::<[u8; 6]>(), dst_mac in any::<[u8; 6]>(),
            src_ip in any::<[u8; 4]>(), dst_ip in any::<[u8; 4]>(),
            src_port in any::<u16>(), dst_port in any::<u16>(), ttl in any::<u8>(),
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let addrs = FrameAddrs { src_mac, dst_mac, src_ip: src_ip.into(), dst_ip: dst_ip.into() };
            let mut buf = [0u8; 1600];
            let n = build_udp(&mut buf, &addrs, src_port, dst_port, ttl, &payload).unwrap();
            let u = parse_udp(&buf[..n]);
            prop_assert_eq!((u.ip.src, u.ip.dst, u.ip.ttl), (addrs.src_ip, addrs.dst_ip, ttl));
            prop_assert_eq!((u.src_port, u.dst_port), (src_port, dst_port));
            prop_assert_eq!(u.payload, &payload[..]);
            prop_assert_eq!((u.eth.src, u.eth.dst), (src_mac, dst_mac));

            // The same fields built by etherparse give the same bytes (ours sets DF, id 0).
            let mut theirs = Vec::new();
            let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(src_ip, dst_ip, ttl)
                .udp(src_port, dst_port);
            builder.write(&mut theirs, &payload).unwrap();
            let u2 = parse_udp(&theirs);
            prop_assert_eq!(u2.payload, &payload[..]);
            let mut ours_no_df = buf[..n].to_vec();
            let mut ip = Ipv4Packet::new_unchecked(&mut ours_no_df[14..]);
            let their_ip = Ipv4Packet::new_checked(&theirs[14..]).unwrap();
            ip.set_flags_and_frag_offset(if their_ip.dont_frag() { FLAG_DONT_FRAGMENT } else { 0 });
            ip.set_ident(their_ip.ident());
            ip.fill_checksum();
            prop_assert_eq!(ours_no_df, theirs);
        }

        #[test]
        fn prop_icmp_echo_round_trip(
            ident in any::<u16>(), seq in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..1400),
        ) {
            let mut buf = [0u8; 1500];
            let n = build_icmp_echo_request(&mut buf, &a_to_b(), ident, seq, &data).unwrap();
            let i = parse_icmp(&buf[..n]);
            prop_assert_eq!((i.icmp_type, i.ident, i.seq), (kind::ECHO_REQUEST, ident, seq));
            prop_assert_eq!(i.data, &data[..]);
            let mut theirs = Vec::new();
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ipv4(IP_A.octets(), IP_B.octets(), DEFAULT_TTL)
                .icmpv4_echo_request(ident, seq)
                .write(&mut theirs, &data)
                .unwrap();
            // Same ICMP message byte for byte (IP headers differ only in DF / id).
            prop_assert_eq!(&buf[34..n], &theirs[34..]);
        }
    }

    #[test]
    fn test_build_error_messages() {
        let e = BuildError::BufferTooSmall {
            needed: 60,
            available: 10,
        };
        assert_eq!(
            e.to_string(),
            "a 60-byte frame does not fit a 10-byte buffer"
        );
    }
}
