//! The packet path, rule by rule (R8–R15), through the real model, publisher and worker on the
//! memory port: frames in, deliveries and frames out, counters checked exactly.

mod common;

use common::*;
use l3ns_dataplane::counters::PortDrop;
use l3ns_dataplane::types::{LoopbackMode, NsId, Scope};
use l3ns_dataplane::wire::DropReason;
use std::net::Ipv4Addr;

const ROOT: NsId = NsId::ROOT;

#[test]
fn r08_unicast_goes_to_the_owner_and_unowned_is_unclaimed() {
    let mut n = net();
    let mut s1 = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    let mut s2 = n.rt.udp_socket(n.web2, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    n.inject([
        udp_to(WEB1_IP, 9, b"one"),
        udp_to(WEB2_IP, 9, b"two"),
        udp_to(WEB1_IP, 9, b"three"),
        udp_to(Ipv4Addr::new(10, 0, 0, 77), 9, b"nobody"),
    ]);
    let d = s1.try_recv().unwrap();
    assert_eq!(
        (d.payload.as_slice(), d.meta.ns, d.meta.dst, d.meta.src),
        (&b"one"[..], n.web1, WEB1_IP, PEER)
    );
    assert_eq!(s1.try_recv().unwrap().payload, b"three");
    assert!(s1.try_recv().is_none());
    assert_eq!(s2.try_recv().unwrap().payload, b"two");
    assert!(s2.try_recv().is_none());
    let (w1, w2, r) = (
        n.rt.stats.ns(n.web1),
        n.rt.stats.ns(n.web2),
        n.rt.stats.ns(ROOT),
    );
    assert_eq!(
        (
            w1.rx_packets,
            w1.delivered,
            w2.rx_packets,
            w2.delivered,
            r.rx_packets
        ),
        (2, 2, 1, 1, 0)
    );
    assert_eq!(n.rt.stats.port_dropped(0, PortDrop::Unclaimed), 1);
    assert_eq!(n.rt.stats.port_sum(0, |p| p.rx_packets.get()), 4);
    assert!(
        n.sent().is_empty(),
        "l3ns is not a router: nothing is forwarded"
    );
}

#[test]
fn r09_most_specific_socket_wins_and_no_socket_gets_port_unreachable() {
    let mut n = net();
    let mut wild = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 7).unwrap();
    let mut exact = n.rt.udp_socket(n.web1, WEB1_IP, 8).unwrap();
    let mut wild8 = n.rt.udp_socket(n.web2, Ipv4Addr::UNSPECIFIED, 8).unwrap();
    n.inject([
        udp_to(WEB1_IP, 8, b"exact"),
        udp_to(WEB1_IP, 7, b"wild"),
        udp_to(WEB2_IP, 8, b"web2"),
        udp_to(WEB1_IP, 9, b"closed"),
    ]);
    assert_eq!(exact.try_recv().unwrap().payload, b"exact");
    assert_eq!(wild.try_recv().unwrap().payload, b"wild");
    assert_eq!(wild8.try_recv().unwrap().payload, b"web2");
    assert!(exact.try_recv().is_none() && wild.try_recv().is_none() && wild8.try_recv().is_none());
    let w1 = n.rt.stats.ns(n.web1);
    assert_eq!(
        (w1.rx_packets, w1.delivered, w1.dropped_no_socket),
        (3, 2, 1)
    );
    let out = n.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(
        parse_icmp(&out[0]),
        Some((3, 3, WEB1_IP, PEER)),
        "port unreachable from the destination address"
    );
    assert_eq!(n.rt.stats.port_sum(0, |p| p.icmp_unreachable_sent.get()), 1);
}

#[test]
fn r09_the_worker_memo_follows_new_sockets_and_specific_bindings() {
    // The worker remembers each namespace's last socket lookup for the snapshot it was made
    // in: a later snapshot (a socket closed, another bound) and a second address of the
    // namespace with a socket of its own must not be answered from it.
    let mut n = net();
    let extra = Ipv4Addr::new(10, 0, 0, 9);
    n.rt.apply("addr_add", |m| {
        m.addr_add(ROOT, "eth0", extra, 24, None, None, Scope::Global)
            .map(|c| ((), c))
    })
    .unwrap();
    n.rt.apply("addr_push", |m| {
        m.addr_push(ROOT, "eth0", extra, None, "web1")
            .map(|c| ((), c))
    })
    .unwrap();
    let mut first = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 7).unwrap();
    // Two rounds to both addresses: the second is answered from the memo (any address).
    for round in 0..2u8 {
        n.inject([udp_to(WEB1_IP, 7, &[round]), udp_to(extra, 7, &[round])]);
    }
    for _ in 0..4 {
        assert!(first.try_recv().is_some());
    }
    n.rt.close(n.web1, first.id()).unwrap();
    let mut second = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 7).unwrap();
    n.inject([udp_to(WEB1_IP, 7, b"new")]);
    assert_eq!(second.try_recv().unwrap().payload, b"new");
    assert!(
        first.try_recv().is_none(),
        "the closed socket's queue got nothing"
    );
    // A socket on one address of the namespace only: the other address has none on that port.
    let mut exact = n.rt.udp_socket(n.web1, extra, 8).unwrap();
    for round in 0..2u8 {
        n.inject([udp_to(extra, 8, &[round]), udp_to(WEB1_IP, 8, &[round])]);
    }
    for round in 0..2u8 {
        assert_eq!(exact.try_recv().unwrap().payload, [round]);
    }
    assert!(second.try_recv().is_none() && exact.try_recv().is_none());
    let w1 = n.rt.stats.ns(n.web1);
    assert_eq!((w1.delivered, w1.dropped_no_socket), (4 + 1 + 2, 2));
}

#[test]
fn r09_a_group_to_one_address_on_several_ports_reaches_each_socket() {
    // Every frame of the group to one address (the worker's one-flow path: one owner and
    // one memo for the group), the ports interleaved: a frame whose port is not the
    // memo's is still looked up on its own, and one to a closed port is refused.
    let mut n = net();
    let mut s7 = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 7).unwrap();
    let mut s8 = n.rt.udp_socket(n.web1, WEB1_IP, 8).unwrap();
    for round in 0..3u8 {
        n.inject([
            udp_to(WEB1_IP, 7, &[round, 0]),
            udp_to(WEB1_IP, 8, &[round, 1]),
            udp_to(WEB1_IP, 7, &[round, 2]),
            udp_to(WEB1_IP, 9, &[round, 3]),
            udp_to(WEB1_IP, 8, &[round, 4]),
            // Last to port 7, so that the next round's group starts with the memo answering
            // its first frame (port 7) and not the others.
            udp_to(WEB1_IP, 7, &[round, 5]),
        ]);
    }
    for round in 0..3u8 {
        for i in [0, 2, 5] {
            assert_eq!(s7.try_recv().unwrap().payload, [round, i]);
        }
        for i in [1, 4] {
            assert_eq!(s8.try_recv().unwrap().payload, [round, i]);
        }
    }
    assert!(s7.try_recv().is_none() && s8.try_recv().is_none());
    let w1 = n.rt.stats.ns(n.web1);
    assert_eq!(
        (w1.rx_packets, w1.delivered, w1.dropped_no_socket),
        (18, 15, 3)
    );
    assert_eq!(
        n.sent().len(),
        3,
        "one port unreachable per closed-port frame"
    );
}

#[test]
fn r09_a_poll_handing_to_many_queues_delivers_each_its_own_in_order() {
    // Eight sockets of web1 and one of web2, each a queue of its own, and every burst spread
    // over all of them: each poll hands over to nine queues at once (the worker then asks
    // for their lines ahead of the hand-offs), first to queues without a ring yet, later
    // to rings that have wrapped (twelve rounds of up to eight batches a queue, past the
    // ring's 64 slots).
    let mut n = net();
    let ports: Vec<u16> = (100..108).collect();
    let mut socks: Vec<_> = ports
        .iter()
        .map(|&p| n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, p).unwrap())
        .collect();
    let mut other = n.rt.udp_socket(n.web2, Ipv4Addr::UNSPECIFIED, 100).unwrap();
    let mut sent = 0u64;
    for round in 0..12u8 {
        let mut frames = Vec::new();
        for i in 0..30u8 {
            for &p in &ports {
                frames.push(udp_to(WEB1_IP, p, &[round, i, p as u8]));
            }
            frames.push(udp_to(WEB2_IP, 100, &[round, i]));
        }
        sent += frames.len() as u64;
        n.inject(frames);
        for (s, &p) in socks.iter_mut().zip(&ports) {
            for i in 0..30u8 {
                let d = s
                    .try_recv()
                    .unwrap_or_else(|| panic!("port {p} round {round} #{i}"));
                assert_eq!(d.payload, [round, i, p as u8]);
            }
            assert!(s.try_recv().is_none());
        }
        for i in 0..30u8 {
            assert_eq!(other.try_recv().unwrap().payload, [round, i]);
        }
        assert!(other.try_recv().is_none());
    }
    let (w1, w2) = (n.rt.stats.ns(n.web1), n.rt.stats.ns(n.web2));
    assert_eq!(w1.delivered + w2.delivered, sent);
    assert_eq!(w1.dropped_queue_full + w2.dropped_queue_full, 0);
}

#[test]
fn r09_port_unreachable_is_rate_limited() {
    let mut n = net();
    let frames: Vec<_> = (0..300).map(|i| udp_to(WEB1_IP, 1000 + i, b"x")).collect();
    for chunk in frames.chunks(100) {
        n.inject(chunk.to_vec());
    }
    let sent = n.sent().len() as u64;
    let limited = n.rt.stats.port_sum(0, |p| p.icmp_rate_limited.get());
    assert_eq!(n.rt.stats.ns(n.web1).dropped_no_socket, 300);
    assert_eq!(
        sent + limited,
        300,
        "every unanswered datagram is either answered or counted rate-limited"
    );
    assert!(
        sent <= 101,
        "at most the bucket (100) plus refill in a fast test: {sent}"
    );
}

#[test]
fn r10_broadcast_reaches_every_listening_socket_in_the_family() {
    let mut n = net();
    // A /16 for web1 only on the same device, to tell directed broadcasts apart.
    let root = ROOT;
    n.rt.apply("addr_add", |m| {
        m.addr_add(
            root,
            "eth0",
            Ipv4Addr::new(10, 1, 0, 1),
            16,
            None,
            None,
            Scope::Global,
        )
        .map(|c| ((), c))
    })
    .unwrap();
    n.rt.apply("addr_push", |m| {
        m.addr_push(root, "eth0", Ipv4Addr::new(10, 1, 0, 1), None, "web1")
            .map(|c| ((), c))
    })
    .unwrap();
    let mut r = n.rt.udp_socket(ROOT, Ipv4Addr::UNSPECIFIED, 67).unwrap();
    let mut w1 = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 67).unwrap();
    let mut w2 = n.rt.udp_socket(n.web2, Ipv4Addr::UNSPECIFIED, 67).unwrap();
    let mut w2_other_port = n.rt.udp_socket(n.web2, Ipv4Addr::UNSPECIFIED, 68).unwrap();
    n.inject([udp_to(Ipv4Addr::BROADCAST, 67, b"limited")]);
    for s in [&mut r, &mut w1, &mut w2] {
        let d = s
            .try_recv()
            .expect("limited broadcast reaches every 0.0.0.0 listener");
        assert!(d.meta.broadcast);
        assert!(s.try_recv().is_none(), "exactly one copy");
    }
    assert!(w2_other_port.try_recv().is_none());
    // Directed broadcast of 10.1.0.0/16: root (the L2) and web1 (owns an ifaddr with it), not web2.
    n.inject([udp_frame(
        [0xff; 6],
        PEER,
        Ipv4Addr::new(10, 1, 255, 255),
        1,
        67,
        b"directed",
    )]);
    assert_eq!(r.try_recv().unwrap().payload, b"directed");
    assert_eq!(w1.try_recv().unwrap().payload, b"directed");
    assert!(
        w2.try_recv().is_none(),
        "web2 owns no ifaddr with broadcast 10.1.255.255"
    );
    // Directed broadcast of 10.0.0.0/24: everyone owns an ifaddr of that subnet.
    n.inject([udp_to(BCAST, 67, b"subnet")]);
    for s in [&mut r, &mut w1, &mut w2] {
        assert_eq!(s.try_recv().unwrap().payload, b"subnet");
    }
    for (ns, copies) in [(ROOT, 3), (n.web1, 3), (n.web2, 2)] {
        assert_eq!(n.rt.stats.ns(ns).broadcast_delivered, copies, "{ns}");
    }
    // Nobody listens on 99.
    n.inject([udp_to(Ipv4Addr::BROADCAST, 99, b"x")]);
    assert_eq!(n.rt.stats.port_dropped(0, PortDrop::BroadcastUnheard), 1);
    assert!(
        n.sent().is_empty(),
        "broadcasts are never answered with ICMP"
    );
}

#[test]
fn r11_loopback_stays_in_the_namespace_and_shared_reaches_the_parent() {
    let mut n = net();
    let lo = Ipv4Addr::LOCALHOST;
    let mut w1_dns = n.rt.udp_socket(n.web1, lo, 53).unwrap();
    let mut w2_dns = n.rt.udp_socket(n.web2, lo, 53).unwrap();
    let mut root_portmap = n.rt.udp_socket(ROOT, lo, 111).unwrap();
    let w1_client =
        n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 5000)
            .unwrap();
    w1_client.send_to(b"q1", lo, 53).unwrap();
    n.poll_until_idle();
    let d = w1_dns.try_recv().unwrap();
    assert_eq!(
        (d.payload.as_slice(), d.meta.src, d.meta.ns),
        (&b"q1"[..], lo, n.web1)
    );
    assert!(
        w2_dns.try_recv().is_none(),
        "web2's 127.0.0.1:53 is a different socket"
    );
    // Isolated: web1 has no portmap listener and does not reach root's.
    w1_client.send_to(b"pm", lo, 111).unwrap();
    n.poll_until_idle();
    assert!(root_portmap.try_recv().is_none());
    assert_eq!(n.rt.stats.ns(n.web1).dropped_no_socket, 1);
    // A shared namespace reaches its parent's listener when it has none.
    let root = ROOT;
    let trusting =
        n.rt.apply("ns_add", |m| {
            m.ns_add(root, "trusting", None, LoopbackMode::Shared)
        })
        .unwrap();
    let t_client =
        n.rt.udp_socket(trusting, Ipv4Addr::UNSPECIFIED, 5000)
            .unwrap();
    t_client.send_to(b"pm", lo, 111).unwrap();
    n.poll_until_idle();
    let d = root_portmap.try_recv().unwrap();
    assert_eq!((d.payload.as_slice(), d.meta.ns), (&b"pm"[..], ROOT));
    assert!(n.sent().is_empty(), "loopback never leaves the host");
}

#[test]
fn r12_local_delivery_between_namespaces_never_touches_the_wire() {
    let mut n = net();
    let mut w2 = n.rt.udp_socket(n.web2, Ipv4Addr::UNSPECIFIED, 80).unwrap();
    let w1 =
        n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 4444)
            .unwrap();
    w1.send_to(b"hello", WEB2_IP, 80).unwrap();
    n.poll_until_idle();
    let d = w2.try_recv().unwrap();
    assert_eq!(
        (
            d.payload.as_slice(),
            d.meta.src,
            d.meta.src_port,
            d.meta.dst
        ),
        (&b"hello"[..], WEB1_IP, 4444, WEB2_IP),
        "the source stays web1's"
    );
    assert!(n.sent().is_empty());
    assert_eq!(n.rt.stats.ns(n.web1).tx_packets, 1);
    assert_eq!(n.rt.stats.ns(n.web2).delivered, 1);
}

#[test]
fn r13_source_selection_and_arp_resolution() {
    let mut n = net();
    let w1 =
        n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 4444)
            .unwrap();
    w1.send_to(b"out", PEER, 9).unwrap();
    n.poll_until_idle();
    // Unknown neighbour: an ARP request from web1's address, the datagram waits.
    let out = n.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(parse_arp(&out[0]), Some((1, OUR_MAC, WEB1_IP, PEER)));
    // The peer answers (as a request to us, which also teaches us its MAC).
    n.inject([arp_request(PEER_MAC, PEER, WEB1_IP)]);
    let out = n.sent();
    let udp: Vec<_> = out.iter().filter_map(|f| parse_udp(f)).collect();
    assert_eq!(
        udp,
        vec![(PEER_MAC, WEB1_IP, PEER, 4444, 9, b"out".to_vec())],
        "sent from web1's own address"
    );
    // A namespace that owns nothing cannot send: EADDRNOTAVAIL, nothing leaves.
    let root = ROOT;
    let empty =
        n.rt.apply("ns_add", |m| {
            m.ns_add(root, "empty", None, LoopbackMode::Isolated)
        })
        .unwrap();
    let e = n.rt.udp_socket(empty, Ipv4Addr::UNSPECIFIED, 1).unwrap();
    assert_eq!(
        e.send_to(b"x", PEER, 9),
        Err(l3ns_dataplane::Errno::EADDRNOTAVAIL)
    );
    n.poll_until_idle();
    assert!(n.sent().is_empty());
}

#[test]
fn r14_a_source_the_namespace_does_not_own_is_never_transmitted() {
    let mut n = net();
    n.learn_peer();
    let w1 =
        n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 4444)
            .unwrap();
    w1.send_from(WEB2_IP, b"spoof", PEER, 9).unwrap();
    w1.send_from(ROOT_IP, b"spoof", PEER, 9).unwrap();
    w1.send_from(WEB1_IP, b"honest", PEER, 9).unwrap();
    n.poll_until_idle();
    let udp: Vec<_> = n.sent().iter().filter_map(|f| parse_udp(f)).collect();
    assert_eq!(udp.len(), 1);
    assert_eq!(udp[0].1, WEB1_IP);
    assert_eq!(n.rt.stats.ns(n.web1).tx_spoofed, 2);
    // After a pull the address is no longer web1's: its sends from it are spoofed.
    let root = ROOT;
    n.rt.apply("addr_pull", |m| {
        m.addr_pull(root, "eth0", WEB1_IP, None, "web1")
            .map(|c| ((), c))
    })
    .unwrap();
    w1.send_from(WEB1_IP, b"stale", PEER, 9).unwrap();
    n.poll_until_idle();
    assert!(n.sent().iter().all(|f| parse_udp(f).is_none()));
    assert_eq!(n.rt.stats.ns(n.web1).tx_spoofed, 3);
}

#[test]
fn r15_arp_is_answered_for_every_local_address_and_echo_from_the_owner() {
    let mut n = net();
    n.inject([
        arp_request(PEER_MAC, PEER, WEB1_IP),
        arp_request(PEER_MAC, PEER, WEB2_IP),
        arp_request(PEER_MAC, PEER, ROOT_IP),
        arp_request(PEER_MAC, PEER, Ipv4Addr::new(10, 0, 0, 77)),
    ]);
    let replies: Vec<_> = n.sent().iter().filter_map(|f| parse_arp(f)).collect();
    assert_eq!(
        replies,
        vec![
            (2, OUR_MAC, WEB1_IP, PEER),
            (2, OUR_MAC, WEB2_IP, PEER),
            (2, OUR_MAC, ROOT_IP, PEER)
        ],
        "not for 10.0.0.77"
    );
    // ICMP echo to web2's address: answered from it, counted in web2.
    let b = etherparse::PacketBuilder::ethernet2(PEER_MAC, OUR_MAC)
        .ipv4(PEER.octets(), WEB2_IP.octets(), 64)
        .icmpv4_echo_request(7, 1);
    let mut ping = Vec::new();
    b.write(&mut ping, b"ping").unwrap();
    n.inject([ping]);
    let out = n.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(parse_icmp(&out[0]), Some((0, 0, WEB2_IP, PEER)));
    assert_eq!(n.rt.stats.ns(n.web2).icmp_echo_replied, 1);
    assert_eq!(n.rt.stats.ns(n.web1).icmp_echo_replied, 0);
}

#[test]
fn malformed_frames_are_counted_and_the_worker_keeps_serving() {
    let mut n = net();
    let mut s = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    let good = udp_to(WEB1_IP, 9, b"ok");
    let mut bad_csum = good.clone();
    bad_csum[24] ^= 0xff;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut fragment = good.clone();
    fragment[20] |= 0x20; // MF
    fix_ipv4_checksum(&mut fragment);
    let mut bad_udp_len = good.clone();
    bad_udp_len[38] = 0;
    bad_udp_len[39] = 4;
    let mut frames = vec![
        good[..20].to_vec(),
        bad_csum,
        bad_ihl,
        fragment,
        bad_udp_len,
        vec![0u8; 3],
    ];
    // Random bytes must not hurt either.
    let mut x: u32 = 12345;
    for len in 0..200 {
        frames.push(
            (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect(),
        );
    }
    frames.push(good.clone());
    n.inject(frames);
    assert_eq!(s.try_recv().unwrap().payload, b"ok");
    assert!(s.try_recv().is_none());
    for r in [
        DropReason::Truncated,
        DropReason::BadChecksum,
        DropReason::BadIhl,
        DropReason::Fragment,
        DropReason::BadUdpLength,
    ] {
        assert!(
            n.rt.stats.port_dropped(0, PortDrop::Malformed(r)) >= 1,
            "{r:?}"
        );
    }
    let total_dropped: u64 = PortDrop::all().map(|d| n.rt.stats.port_dropped(0, d)).sum();
    let delivered = n.rt.stats.ns(n.web1).delivered;
    assert_eq!(
        total_dropped + delivered,
        207,
        "every frame is delivered or counted"
    );
}

/// The worker takes plain UDP frames to a local address a short way and parses everything
/// else fully: a datagram behind IPv4 options, or in a group-addressed Ethernet frame, must
/// be delivered and counted exactly like the plain one, and another host's MAC dropped.
#[test]
fn r08_r09_the_short_and_the_full_parse_deliver_and_count_alike() {
    let mut n = net();
    let mut s = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    let plain = udp_to(WEB1_IP, 9, b"plain");
    let options = with_ipv4_options(udp_to(WEB1_IP, 9, b"options"));
    let group = udp_frame([0x01, 0, 0x5e, 0, 0, 1], PEER, WEB1_IP, 40000, 9, b"group");
    let other_host = udp_frame([0x02, 0, 0, 0, 0, 0x77], PEER, WEB1_IP, 40000, 9, b"no");
    let ip_bytes: u64 = [&plain, &options, &group]
        .iter()
        .map(|f| u64::from(u16::from_be_bytes([f[16], f[17]])))
        .sum();
    n.inject([plain, options, other_host, group]);
    let got: Vec<_> = std::iter::from_fn(|| s.try_recv()).collect();
    let payloads: Vec<&[u8]> = got.iter().map(|d| d.payload.as_slice()).collect();
    assert_eq!(payloads, [&b"plain"[..], b"options", b"group"]);
    for d in &got {
        let m = l3ns_dataplane::socket::DgramMeta {
            off: 0,
            len: 0,
            ..d.meta
        };
        let first = l3ns_dataplane::socket::DgramMeta {
            off: 0,
            len: 0,
            ..got[0].meta
        };
        assert_eq!(m, first, "same meta whichever parse took it");
    }
    assert_eq!(
        (
            got[0].meta.ns,
            got[0].meta.src,
            got[0].meta.dst,
            got[0].meta.src_port
        ),
        (n.web1, PEER, WEB1_IP, 40000)
    );
    let w1 = n.rt.stats.ns(n.web1);
    assert_eq!((w1.rx_packets, w1.rx_bytes, w1.delivered), (3, ip_bytes, 3));
    assert_eq!(n.rt.stats.port_dropped(0, PortDrop::OtherHost), 1);
    assert_eq!(n.rt.stats.port_sum(0, |p| p.rx_packets.get()), 4);
}

/// A group of one flow once the namespace's memo answers for it (the worker's shortest path:
/// the memo's socket, the queue's batch found once for the group) still checks every frame:
/// another host's MAC and a bad UDP checksum are dropped and counted, a datagram behind IPv4
/// options or in a group-addressed Ethernet frame is delivered like the plain ones, in order.
#[test]
fn r08_r09_a_remembered_flow_still_checks_each_frame() {
    let mut n = net();
    let mut s = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    // The first datagram leaves the memo answering for (WEB1_IP, 9).
    n.inject([udp_to(WEB1_IP, 9, b"warm")]);
    assert_eq!(s.try_recv().unwrap().payload, b"warm");
    let options = with_ipv4_options(udp_to(WEB1_IP, 9, b"options"));
    let mut bad_sum = udp_to(WEB1_IP, 9, b"bad sum");
    *bad_sum.last_mut().unwrap() ^= 0x55;
    let other_host = udp_frame([0x02, 0, 0, 0, 0, 0x77], PEER, WEB1_IP, 40000, 9, b"other");
    let group = udp_frame([0x01, 0, 0x5e, 0, 0, 1], PEER, WEB1_IP, 40000, 9, b"group");
    n.inject([
        udp_to(WEB1_IP, 9, b"a"),
        other_host,
        options,
        bad_sum,
        group,
        udp_to(WEB1_IP, 9, b"b"),
    ]);
    let got: Vec<_> = std::iter::from_fn(|| s.try_recv()).collect();
    let payloads: Vec<&[u8]> = got.iter().map(|d| d.payload.as_slice()).collect();
    assert_eq!(payloads, [&b"a"[..], b"options", b"group", b"b"]);
    assert_eq!(n.rt.stats.port_dropped(0, PortDrop::OtherHost), 1);
    assert_eq!(
        n.rt.stats
            .port_dropped(0, PortDrop::Malformed(DropReason::BadUdpChecksum)),
        1
    );
    let w1 = n.rt.stats.ns(n.web1);
    assert_eq!((w1.rx_packets, w1.delivered), (5, 5));
}

/// `frame` with four NOP options in its IPv4 header: IHL 6, total length + 4 (the UDP
/// checksum does not cover them).
fn with_ipv4_options(mut frame: Vec<u8>) -> Vec<u8> {
    frame.splice(34..34, [1u8, 1, 1, 1]);
    frame[14] = 0x46;
    let total = u16::from_be_bytes([frame[16], frame[17]]) + 4;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    frame
}

/// Recomputes the IPv4 header checksum after a test edited the header.
fn fix_ipv4_checksum(frame: &mut [u8]) {
    frame[24] = 0;
    frame[25] = 0;
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let c = l3ns_dataplane::wire::checksum::checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn a_full_queue_drops_and_counts_queue_full_without_blocking_the_worker() {
    let mut n = net();
    let q = n.rt.new_shared_queue(2);
    n.rt.bind_shared(n.web1, Ipv4Addr::UNSPECIFIED, 9, "app", q.clone())
        .unwrap();
    n.inject([udp_to(WEB1_IP, 9, b"a"), udp_to(WEB1_IP, 9, b"b")]);
    assert_eq!(q.len(), 2);
    // The queue is full: the next burst is refused whole and counted, the worker goes on.
    n.inject([
        udp_to(WEB1_IP, 9, b"c"),
        udp_to(WEB1_IP, 9, b"d"),
        udp_to(WEB1_IP, 9, b"e"),
    ]);
    let w1 = n.rt.stats.ns(n.web1);
    assert_eq!(
        (w1.rx_packets, w1.delivered, w1.dropped_queue_full),
        (5, 2, 3)
    );
    assert_eq!(q.overflow.load(std::sync::atomic::Ordering::Relaxed), 3);
    let mut got = Vec::new();
    while let Some(b) = q.pop_batch() {
        got.extend(b.iter().map(|(_, p)| p.to_vec()));
        q.recycle(b);
    }
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
    n.inject([udp_to(WEB1_IP, 9, b"f")]);
    assert_eq!(
        n.rt.stats.ns(n.web1).delivered,
        3,
        "room again after the consumer drained"
    );
}

/// Mail (`Waiter::accept_mail`, as l3nsd's service thread takes it): a consumer of many
/// queues gets a round's datagrams for all of them as one batch, each queue's in order, and
/// each queue's bound still holds until the consumer has taken its datagrams out.
#[test]
fn r09_mail_carries_a_round_for_many_queues_and_each_queue_keeps_its_bound() {
    use l3ns_dataplane::socket::Waiter;
    let mut n = net();
    let w = Waiter::current();
    w.accept_mail();
    let q1 = n.rt.new_shared_queue(3);
    let s1 =
        n.rt.bind_shared(n.web1, Ipv4Addr::UNSPECIFIED, 9, "app", q1.clone())
            .unwrap();
    let q2 = n.rt.new_shared_queue(64);
    let s2 =
        n.rt.bind_shared(n.web2, Ipv4Addr::UNSPECIFIED, 9, "app", q2.clone())
            .unwrap();
    q1.set_ready_bit(&w, 0);
    q2.set_ready_bit(&w, 1);
    n.inject([
        udp_to(WEB1_IP, 9, b"a"),
        udp_to(WEB2_IP, 9, b"A"),
        udp_to(WEB1_IP, 9, b"b"),
        udp_to(WEB1_IP, 9, b"c"),
        udp_to(WEB2_IP, 9, b"B"),
        udp_to(WEB1_IP, 9, b"d"),
        udp_to(WEB1_IP, 9, b"e"),
    ]);
    let mail = w.take_mail().expect("the round's mail");
    assert!(w.take_mail().is_none(), "one batch for the round");
    let of = |s| {
        mail.iter()
            .filter(|(m, _)| m.socket == s)
            .map(|(_, p)| p.to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(s1), [b"a", b"b", b"c"], "web1's room: three");
    assert_eq!(of(s2), [b"A", b"B"]);
    assert_eq!(mail.len(), 5);
    assert!(q1.by_mail() && q2.by_mail(), "no batches of their own");
    assert!(q1.pop_batch().is_none() && q2.pop_batch().is_none());
    let (w1, w2) = (n.rt.stats.ns(n.web1), n.rt.stats.ns(n.web2));
    assert_eq!((w1.delivered, w1.dropped_queue_full), (3, 2));
    assert_eq!((w2.delivered, w2.dropped_queue_full), (2, 0));
    // Until the consumer takes them out, web1's three fill its queue: the next is refused.
    assert_eq!((q1.len(), q2.len()), (3, 2));
    n.inject([udp_to(WEB1_IP, 9, b"f")]);
    assert!(w.take_mail().is_none());
    assert_eq!(n.rt.stats.ns(n.web1).dropped_queue_full, 3);
    q1.took_mail(3);
    q2.took_mail(2);
    q1.recycle(mail);
    assert_eq!((q1.len(), q2.len()), (0, 0));
    assert_eq!(q1.received.load(std::sync::atomic::Ordering::Relaxed), 3);
    n.inject([udp_to(WEB1_IP, 9, b"g")]);
    let mail = w.take_mail().expect("room again");
    assert_eq!(
        mail.iter()
            .map(|(m, p)| (m.socket, p.to_vec()))
            .collect::<Vec<_>>(),
        [(s1, b"g".to_vec())]
    );
}

/// The worker keeps, in its memo of a namespace's last socket lookup, where that socket's
/// datagrams go (batches of its own, or its consumer's mail). When a memo read early in a
/// group was remembered anew for another socket of the namespace before the first one's
/// answer settled, the answer is not written onto the other socket's memo: that socket's
/// datagrams still go by mail, not into batches of its own.
#[test]
fn r09_a_socket_s_memo_does_not_take_another_socket_s_answer() {
    use l3ns_dataplane::socket::Waiter;
    let mut n = net();
    let w = Waiter::current();
    w.accept_mail();
    // Port 9: a queue with no consumer registered yet (it gets batches of its own).
    let web1 = n.web1;
    let (q1, _) = queue_on(&mut n, web1, 9, 64);
    // Port 10: a queue whose consumer, this thread, takes mail.
    let (q2, s2) = queue_on(&mut n, web1, 10, 64);
    q2.set_ready_bit(&w, 0);
    // Web1's memo: port 9, answer not settled (its queue had no consumer to take mail).
    n.inject([udp_to(WEB1_IP, 9, b"a")]);
    assert!(!q1.by_mail(), "port 9's queue has batches of its own");
    // One group (to two destinations, so not one flow): the memo misses the datagram to
    // port 10, which remembers that socket, then answers the one to port 9 from before.
    n.inject([
        udp_to(WEB2_IP, 9, b"-"),
        udp_to(WEB1_IP, 10, b"X"),
        udp_to(WEB1_IP, 9, b"b"),
    ]);
    n.inject([udp_to(WEB2_IP, 9, b"-"), udp_to(WEB1_IP, 10, b"Y")]);
    assert!(q2.by_mail(), "port 10's queue got batches of its own");
    let mut got = Vec::new();
    while let Some(mail) = w.take_mail() {
        got.extend(
            mail.iter()
                .filter(|(m, _)| m.socket == s2)
                .map(|(_, p)| p.to_vec()),
        );
        q2.took_mail(mail.iter().filter(|(m, _)| m.socket == s2).count());
        q2.recycle(mail);
    }
    assert_eq!(got, [b"X", b"Y"]);
    assert_eq!(drain_batches(&q1), [b"a", b"b"]);
}

/// A queue handed batches of its own before its consumer took mail keeps them, so that its
/// datagrams stay in order.
#[test]
fn r09_a_queue_with_batches_of_its_own_keeps_them_when_its_consumer_takes_mail() {
    use l3ns_dataplane::socket::Waiter;
    let mut n = net();
    let w = Waiter::current();
    let q = n.rt.new_shared_queue(64);
    n.rt.bind_shared(n.web1, Ipv4Addr::UNSPECIFIED, 9, "app", q.clone())
        .unwrap();
    q.set_ready_bit(&w, 0);
    n.inject([udp_to(WEB1_IP, 9, b"1")]);
    w.accept_mail();
    n.inject([udp_to(WEB1_IP, 9, b"2")]);
    assert!(w.take_mail().is_none());
    assert_eq!(drain_batches(&q), [b"1", b"2"]);
}

#[test]
fn r05_deleting_a_namespace_counts_what_its_sockets_still_held_as_ns_gone() {
    let mut n = net();
    let s = n.rt.udp_socket(n.web2, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    n.inject([udp_to(WEB2_IP, 9, b"1"), udp_to(WEB2_IP, 9, b"2")]);
    assert_eq!(s.queue().len(), 2);
    let root = ROOT;
    n.rt.apply("ns_del", |m| m.ns_del(root, "web2").map(|c| ((), c)))
        .unwrap();
    assert_eq!(n.rt.stats.ns(n.web2).dropped_ns_gone, 2);
    assert!(s.queue().is_closed());
    // Its address is root's again: with no root listener the datagram is root's no_socket.
    n.inject([udp_to(WEB2_IP, 9, b"3")]);
    assert_eq!(n.rt.stats.ns(ROOT).dropped_no_socket, 1);
}

/// The test network with a queue of `depth` bound to web1's `0.0.0.0:9`, consumed by this
/// thread (its waiter registered on the queue, not yet parked).
fn consumer_of_web1(
    depth: usize,
) -> (
    Net,
    std::sync::Arc<l3ns_dataplane::socket::SocketQueue>,
    std::sync::Arc<l3ns_dataplane::socket::Waiter>,
) {
    let mut n = net();
    let q = n.rt.new_shared_queue(depth);
    n.rt.bind_shared(n.web1, Ipv4Addr::UNSPECIFIED, 9, "app", q.clone())
        .unwrap();
    let w = l3ns_dataplane::socket::Waiter::current();
    q.set_waiter(&w);
    (n, q, w)
}

#[test]
fn a_parked_consumer_is_woken_when_the_worker_goes_idle_or_four_busy_polls_later() {
    use std::time::{Duration, Instant};
    let (mut n, q, w) = consumer_of_web1(1024);
    // Under load (one burst of 32 per poll, five queued): not woken per poll, but after the
    // fourth poll that handed it something.
    assert!(w.prepare(Duration::from_secs(30), [&*q]));
    for _ in 0..160 {
        n.wire.inject(udp_to(WEB1_IP, 9, b"x")).unwrap();
    }
    for polls in 1..=3 {
        assert_eq!(n.worker.poll(Instant::now()), 32);
        assert!(w.is_sleeping(), "woken after {polls} busy polls");
    }
    let stats = n.rt.stats.workers[0].clone();
    let wakeups = || stats.consumer_wakeups.get();
    assert_eq!(wakeups(), 0);
    assert_eq!(n.worker.poll(Instant::now()), 32);
    assert!(
        !w.is_sleeping(),
        "woken four busy polls after the first hand-off"
    );
    assert_eq!(wakeups(), 1, "the wake-up is counted");
    assert_eq!(q.len(), 128);
    w.park(); // the unpark came first: returns at once
              // Sparse traffic: woken by the poll that finds nothing more to do.
    n.poll_until_idle();
    while let Some(b) = q.pop_batch() {
        q.recycle(b);
    }
    assert!(w.prepare(Duration::from_secs(30), [&*q]));
    n.wire.inject(udp_to(WEB1_IP, 9, b"y")).unwrap();
    assert_eq!(n.worker.poll(Instant::now()), 1);
    assert!(
        w.is_sleeping(),
        "not yet: the worker may have more to hand over"
    );
    assert_eq!(n.worker.poll(Instant::now()), 0);
    assert!(!w.is_sleeping(), "woken once the worker went idle");
    assert_eq!(wakeups(), 2);
    let t = Instant::now();
    w.park();
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(q.len(), 1);
}

/// A parked consumer that takes mail is woken once the worker has posted it a round (not per
/// queue the round was for); a lazy one only when a queue the round was for is half full.
#[test]
fn a_parked_consumer_of_mail_is_woken_for_the_round_and_a_lazy_one_by_a_half_full_queue() {
    use l3ns_dataplane::socket::Waiter;
    use std::time::Duration;
    let mut n = net();
    let w = Waiter::current();
    w.accept_mail();
    let (web1, web2) = (n.web1, n.web2);
    let (q1, _) = queue_on(&mut n, web1, 9, 64);
    let (q2, _) = queue_on(&mut n, web2, 9, 4);
    q1.set_ready_bit(&w, 0);
    q2.set_ready_bit(&w, 1);
    let stats = n.rt.stats.workers[0].clone();
    let wakeups = || stats.consumer_wakeups.get();
    let take = |w: &Waiter| {
        let mut got = 0;
        while let Some(mail) = w.take_mail() {
            for run in mail.metas().chunk_by(|a, b| a.socket == b.socket) {
                let q = if run[0].ns == web1 { &q1 } else { &q2 };
                q.took_mail(run.len());
            }
            got += mail.len();
            q1.recycle(mail);
        }
        got
    };
    assert!(w.prepare(Duration::from_secs(30), [&*q1, &*q2]));
    n.inject([udp_to(WEB1_IP, 9, b"a"), udp_to(WEB2_IP, 9, b"b")]);
    assert!(!w.is_sleeping(), "woken for the round's mail");
    assert_eq!(wakeups(), 1, "once for both queues");
    w.park(); // the unpark came first: returns at once
    assert_eq!(take(&w), 2);
    // Lazy: one datagram in 64 is left to the consumer's timer ...
    w.set_lazy(true);
    assert!(w.prepare(Duration::from_secs(30), [&*q1, &*q2]));
    n.inject([udp_to(WEB1_IP, 9, b"c")]);
    assert!(w.is_sleeping(), "a lazy consumer is left to its timer");
    // ... two in 4 (half full) are not.
    n.inject([udp_to(WEB2_IP, 9, b"d"), udp_to(WEB2_IP, 9, b"e")]);
    assert!(!w.is_sleeping(), "woken by a half-full queue");
    assert_eq!(wakeups(), 2);
    w.park();
    assert_eq!(take(&w), 3);
}

#[test]
fn under_load_consumers_are_woken_at_most_every_50_microseconds() {
    use std::time::{Duration, Instant};
    let (mut n, q, w) = consumer_of_web1(4096);
    for _ in 0..32 * 11 {
        n.wire.inject(udp_to(WEB1_IP, 9, b"x")).unwrap();
    }
    let t0 = Instant::now();
    let us = |u: u64| t0 + Duration::from_micros(u);
    // A first busy spell: woken at the fourth poll.
    assert!(w.prepare(Duration::from_secs(30), [&*q]));
    for t in 1..=4 {
        assert_eq!(n.worker.poll(us(t)), 32);
    }
    assert!(!w.is_sleeping(), "first wake after four busy polls");
    // Parked again 10 µs later: four more busy polls inside the 50 µs do not wake it ...
    assert!(
        !w.prepare(Duration::from_secs(30), [&*q]),
        "datagrams are queued"
    );
    while let Some(b) = q.pop_batch() {
        q.recycle(b);
    }
    assert!(w.prepare(Duration::from_secs(30), [&*q]));
    for t in 10..=13 {
        assert_eq!(n.worker.poll(us(t)), 32);
        assert!(w.is_sleeping(), "woken {t} µs in, 50 µs apart at the least");
    }
    // ... the next busy poll once 50 µs have passed does.
    assert_eq!(n.worker.poll(us(54)), 32);
    assert!(!w.is_sleeping(), "woken 50 µs after the last wake");
    // And a poll that finds nothing wakes at once, gap or not.
    while let Some(b) = q.pop_batch() {
        q.recycle(b);
    }
    assert!(w.prepare(Duration::from_secs(30), [&*q]));
    assert_eq!(n.worker.poll(us(55)), 32);
    assert!(w.is_sleeping());
    assert_eq!(n.worker.poll(us(56)), 32);
    n.wire.inject(udp_to(WEB1_IP, 9, b"y")).unwrap();
    assert_eq!(n.worker.poll(us(57)), 1);
    assert_eq!(n.worker.poll(us(58)), 0);
    assert!(!w.is_sleeping(), "an idle poll wakes at once");
}

#[test]
fn frames_the_receive_ring_had_no_room_for_are_counted_rx_ring_full() {
    let mut n = net();
    let mut s = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    // A device delivering faster than the worker polls: the ring (4,096 frames) fills and the
    // device drops the rest before the worker sees them.
    let mut refused = 0;
    for i in 0..4096 + 10 {
        if !n
            .wire
            .deliver(udp_to(WEB1_IP, 9, &(i as u32).to_be_bytes()))
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 10);
    let t0 = std::time::Instant::now();
    let mut polls = 0;
    while n.worker.poll(t0) > 0 {
        polls += 1;
        assert!(polls < 10_000);
    }
    assert_eq!(n.rt.stats.port_dropped(0, PortDrop::RxRingFull), 10);
    assert_eq!(
        n.rt.stats.port_sum(0, |p| p.rx_packets.get()),
        4096,
        "the frames that found room"
    );
    let mut got = 0;
    while s.try_recv().is_some() {
        got += 1;
    }
    assert_eq!(
        got, 1024,
        "the socket queue's depth; the rest are queue_full"
    );
    // Read about every 100 ms: a later drop shows at the next read, and once.
    for _ in 0..4096 + 3 {
        n.wire.deliver(udp_to(WEB1_IP, 9, b"x"));
    }
    n.worker.poll(t0);
    assert_eq!(n.rt.stats.port_dropped(0, PortDrop::RxRingFull), 10);
    let later = t0 + std::time::Duration::from_millis(150);
    while n.worker.poll(later) > 0 {}
    assert_eq!(n.rt.stats.port_dropped(0, PortDrop::RxRingFull), 13);
    n.worker.poll(later + std::time::Duration::from_millis(150));
    assert_eq!(n.rt.stats.port_dropped(0, PortDrop::RxRingFull), 13);
}

/// A queue of `depth` bound to `0.0.0.0:port` in `ns`, and its socket's id.
fn queue_on(
    n: &mut Net,
    ns: NsId,
    port: u16,
    depth: usize,
) -> (
    std::sync::Arc<l3ns_dataplane::socket::SocketQueue>,
    l3ns_dataplane::types::SocketId,
) {
    let q = n.rt.new_shared_queue(depth);
    let s =
        n.rt.bind_shared(ns, Ipv4Addr::UNSPECIFIED, port, "app", q.clone())
            .unwrap();
    (q, s)
}

/// The payloads of the batches `q` holds, taken out in order.
fn drain_batches(q: &l3ns_dataplane::socket::SocketQueue) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some(b) = q.pop_batch() {
        got.extend(b.iter().map(|(_, p)| p.to_vec()));
        q.recycle(b);
    }
    got
}
