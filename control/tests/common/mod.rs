//! A small network on the memory port for packet-path tests: the real model, publisher and
//! worker, driven one poll at a time so counters can be checked exactly.
#![allow(dead_code)]

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use l3ns_control::runtime::Runtime;
use l3ns_dataplane::port::memory::{memory_pair, MemoryPort, MemoryWire, TxMode};
use l3ns_dataplane::port::PortInfo;
use l3ns_dataplane::types::{DevId, LoopbackMode, NsId, Scope};
use l3ns_dataplane::worker::{Worker, WorkerConfig, WorkerPort};
use std::net::Ipv4Addr;
use std::time::Instant;

pub const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
pub const ROOT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const WEB1_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const WEB2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
pub const BCAST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 255);

pub struct Net {
    pub rt: Runtime,
    pub worker: Worker<MemoryPort>,
    pub wire: MemoryWire,
    pub dev: DevId,
    pub web1: NsId,
    pub web2: NsId,
}

/// root owns 10.0.0.1/24 on eth0; web1 owns 10.0.0.2/24, web2 10.0.0.3/24 (pushed).
pub fn net() -> Net {
    let mut rt = Runtime::new(Default::default(), 1, vec!["eth0".into()], 1024);
    let dev = rt.add_device("eth0", OUR_MAC).unwrap();
    let root = NsId::ROOT;
    let web1 = rt
        .apply("ns_add", |m| {
            m.ns_add(root, "web1", None, LoopbackMode::Isolated)
        })
        .unwrap();
    let web2 = rt
        .apply("ns_add", |m| {
            m.ns_add(root, "web2", None, LoopbackMode::Isolated)
        })
        .unwrap();
    for ip in [ROOT_IP, WEB1_IP, WEB2_IP] {
        rt.apply("addr_add", |m| {
            m.addr_add(root, "eth0", ip, 24, None, None, Scope::Global)
                .map(|c| ((), c))
        })
        .unwrap();
    }
    rt.apply("addr_push", |m| {
        m.addr_push(root, "eth0", WEB1_IP, None, "web1")
            .map(|c| ((), c))
    })
    .unwrap();
    rt.apply("addr_push", |m| {
        m.addr_push(root, "eth0", WEB2_IP, None, "web2")
            .map(|c| ((), c))
    })
    .unwrap();
    let info = PortInfo {
        name: "eth0".into(),
        mac: OUR_MAC,
        max_frame: 1514,
    };
    let (port, wire) = memory_pair(info, 4096, TxMode::Collect);
    let worker = Worker::new(
        WorkerConfig {
            burst: 32,
            ..Default::default()
        },
        vec![WorkerPort {
            port,
            dev,
            index: 0,
        }],
        rt.shared.clone(),
        rt.stats.workers[0].clone(),
    );
    Net {
        rt,
        worker,
        wire,
        dev,
        web1,
        web2,
    }
}

impl Net {
    /// Injects frames and polls until the worker has taken them all.
    pub fn inject(&mut self, frames: impl IntoIterator<Item = Vec<u8>>) {
        for f in frames {
            self.wire.inject(f).expect("rx ring has room");
        }
        self.poll_until_idle();
    }

    pub fn poll_until_idle(&mut self) {
        for _ in 0..10_000 {
            if self.worker.poll(Instant::now()) == 0 && self.wire.rx_pending() == 0 {
                return;
            }
        }
        panic!("worker did not become idle");
    }

    /// Frames the worker transmitted so far.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.wire.collect()
    }

    /// Teaches the worker the peer's MAC, as an ARP request from the peer would.
    pub fn learn_peer(&mut self) {
        let f = arp_request(PEER_MAC, PEER, ROOT_IP);
        self.inject([f]);
        self.sent();
    }
}

pub fn udp_frame(
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(PEER_MAC, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

pub fn udp_to(dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mac = if dst.is_broadcast() || dst == BCAST {
        [0xff; 6]
    } else {
        OUR_MAC
    };
    udp_frame(mac, PEER, dst, 40000, dport, payload)
}

pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A parsed transmitted UDP frame: (eth dst, src ip, dst ip, sport, dport, payload).
pub type UdpSummary = ([u8; 6], Ipv4Addr, Ipv4Addr, u16, u16, Vec<u8>);

pub fn parse_udp(frame: &[u8]) -> Option<UdpSummary> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let eth = match p.link? {
        etherparse::LinkSlice::Ethernet2(e) => e.destination(),
        _ => return None,
    };
    let ip = match p.net? {
        etherparse::NetSlice::Ipv4(ip) => ip,
        _ => return None,
    };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    match p.transport? {
        TransportSlice::Udp(u) => Some((
            eth,
            src,
            dst,
            u.source_port(),
            u.destination_port(),
            u.payload().to_vec(),
        )),
        _ => None,
    }
}

/// (icmp type, code, src, dst) of a transmitted ICMP frame.
pub fn parse_icmp(frame: &[u8]) -> Option<(u8, u8, Ipv4Addr, Ipv4Addr)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let ip = match p.net? {
        etherparse::NetSlice::Ipv4(ip) => ip,
        _ => return None,
    };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    match p.transport? {
        TransportSlice::Icmpv4(i) => Some((i.type_u8(), i.code_u8(), src, dst)),
        _ => None,
    }
}

/// (op, sender mac, sender ip, target ip) of a transmitted ARP frame.
pub fn parse_arp(frame: &[u8]) -> Option<(u16, [u8; 6], Ipv4Addr, Ipv4Addr)> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
        return None;
    }
    let a = &frame[14..];
    let op = u16::from_be_bytes([a[6], a[7]]);
    let mut mac = [0; 6];
    mac.copy_from_slice(&a[8..14]);
    Some((
        op,
        mac,
        Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    ))
}
