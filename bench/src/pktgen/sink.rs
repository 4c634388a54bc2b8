//! The `memory` backend's receiver: an in-process stand-in for l3nsd on the other end of a
//! `memory` port. It takes every frame the generator transmits, parses it with l3ns's own
//! parser, counts it by what it is (unicast to an owned address, a broadcast, an unowned
//! destination, or the parser's drop reason), answers ARP requests for owned addresses, and
//! echoes unicast datagrams to the echo port back into the port's receive ring — so a
//! self-test exercises the whole generator (ring, pacing, ARP resolution, reply matching).

use super::profile::Profile;
use l3ns_dataplane::port::memory::MemoryWire;
use l3ns_dataplane::wire::{self, parse_frame, ArpOp, FrameAddrs, Parsed};
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

/// The MAC the sink answers ARP with (the default `frame.dst_mac`).
pub const SINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

pub struct MemorySink {
    wire: MemoryWire,
    mac: [u8; 6],
    owned: HashSet<Ipv4Addr>,
    directed: Ipv4Addr,
    echo_port: Option<u16>,
    counts: BTreeMap<String, u64>,
    buf: Vec<u8>,
}

impl MemorySink {
    /// A sink owning the profile's unicast addresses, echoing on `frame.dst_port` when
    /// `frame.echo` is on.
    pub fn new(wire: MemoryWire, p: &Profile) -> MemorySink {
        let n = p.unicast_addresses();
        let owned = if p.unicast.namespaces > 0 && p.unicast.addresses_per_namespace > 0 {
            (0..n).map(|k| p.unicast_address(k)).collect()
        } else {
            HashSet::new()
        };
        MemorySink {
            wire,
            mac: SINK_MAC,
            owned,
            directed: p.broadcast.address,
            echo_port: p.frame.echo.then_some(p.frame.dst_port),
            counts: BTreeMap::new(),
            buf: vec![0; 2048],
        }
    }

    fn count(&mut self, what: &str) {
        match self.counts.get_mut(what) {
            Some(c) => *c += 1,
            None => {
                self.counts.insert(what.to_string(), 1);
            }
        }
    }

    fn answer(&mut self, len: usize) {
        if self.wire.inject(self.buf[..len].to_vec()).is_err() {
            self.count("reply_dropped_rx_ring_full");
        }
    }

    /// Takes and handles every frame transmitted so far.
    pub fn drain(&mut self) {
        for frame in self.wire.collect() {
            match parse_frame(&frame) {
                Ok(Parsed::Udp(u)) => {
                    let dst = u.ip.dst;
                    if dst == Ipv4Addr::BROADCAST {
                        self.count("limited_broadcast");
                    } else if dst == self.directed {
                        self.count("directed_broadcast");
                    } else if self.owned.contains(&dst) {
                        self.count("unicast");
                        if Some(u.dst_port) == self.echo_port {
                            let addrs = FrameAddrs {
                                src_mac: self.mac,
                                dst_mac: u.eth.src,
                                src_ip: dst,
                                dst_ip: u.ip.src,
                            };
                            let payload = u.payload.to_vec();
                            match wire::build_udp(
                                &mut self.buf,
                                &addrs,
                                u.dst_port,
                                u.src_port,
                                64,
                                &payload,
                            ) {
                                Ok(len) => self.answer(len),
                                Err(_) => self.count("reply_too_long"),
                            }
                        }
                    } else {
                        self.count("unowned");
                    }
                }
                Ok(Parsed::Arp(a)) => {
                    if a.arp.op == ArpOp::Request && self.owned.contains(&a.arp.target_ip) {
                        self.count("arp_request_answered");
                        let len = wire::build_arp_reply(
                            &mut self.buf,
                            self.mac,
                            a.arp.target_ip,
                            a.arp.sender_mac,
                            a.arp.sender_ip,
                        )
                        .expect("an ARP reply fits 2048 bytes");
                        self.answer(len);
                    } else {
                        self.count("arp_other");
                    }
                }
                Ok(Parsed::Icmp(_)) => self.count("icmp"),
                Err(reason) => self.count(&format!("dropped_{}", reason.as_str())),
            }
        }
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.clone()
    }
}
