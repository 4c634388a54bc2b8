//! The sending and receiving loop, generic over [`Port`]: paced bursts from the ring, replies
//! matched and counted, ARP answered for the generator's address.

use super::profile::{format_mac, MacSpec, Profile};
use super::report::{Arp, Loss, Received, Report, Sent};
use super::ring::{self, parse_tag, Kind, Ring};
use l3ns_dataplane::port::Port;
use l3ns_dataplane::wire::{self, parse_frame, ArpOp, Parsed};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sending time when neither `count` nor `duration` is given.
pub const DEFAULT_DURATION: f64 = 5.0;
/// ARP replies waiting to be sent; more requests in one poll are counted and ignored.
const MAX_PENDING_ARP: usize = 64;
/// Receive bursts per loop iteration (replies can outnumber sends: broadcast fan-out).
const RX_BURSTS_PER_POLL: usize = 4;

/// What the receive side saw.
#[derive(Clone, Debug, Default)]
pub struct RxCounters {
    pub packets: u64,
    pub bytes: u64,
    pub replies_by_kind: [u64; Kind::COUNT],
    /// UDP to our address and ports without our tag (or a tag of an unknown kind).
    pub udp_other: u64,
    pub arp_requests: u64,
    pub arp_requests_for_us: u64,
    pub arp_replies_seen: u64,
    pub arp_replies_dropped: u64,
    pub icmp: u64,
    /// Parsed frames that are none of the above (other hosts' UDP, ARP for others).
    pub other: u64,
    /// Frames the l3ns parser refuses (IPv6, malformed, ...).
    pub unparsed: u64,
}

/// The receive side: classifies every frame the port hands over.
struct Rx {
    src_ip: Ipv4Addr,
    port_lo: u16,
    port_hi: u16,
    /// The address being resolved for `dst_mac = "auto"`, and what was learned.
    resolving: Option<Ipv4Addr>,
    learned: Option<[u8; 6]>,
    pending_arp: Vec<([u8; 6], Ipv4Addr)>,
    c: RxCounters,
}

impl Rx {
    #[inline]
    fn on_frame(&mut self, f: &[u8]) {
        self.c.packets += 1;
        self.c.bytes += f.len() as u64;
        match parse_frame(f) {
            Ok(Parsed::Udp(u)) => {
                if u.ip.dst == self.src_ip && (self.port_lo..=self.port_hi).contains(&u.dst_port) {
                    match parse_tag(u.payload) {
                        Some((kind, _slot)) => self.c.replies_by_kind[kind as usize] += 1,
                        None => self.c.udp_other += 1,
                    }
                } else {
                    self.c.other += 1;
                }
            }
            Ok(Parsed::Arp(a)) => match a.arp.op {
                ArpOp::Request => {
                    self.c.arp_requests += 1;
                    if a.arp.target_ip == self.src_ip {
                        self.c.arp_requests_for_us += 1;
                        if self.pending_arp.len() < MAX_PENDING_ARP {
                            self.pending_arp.push((a.arp.sender_mac, a.arp.sender_ip));
                        } else {
                            self.c.arp_replies_dropped += 1;
                        }
                    }
                }
                ArpOp::Reply => {
                    self.c.arp_replies_seen += 1;
                    if Some(a.arp.sender_ip) == self.resolving && self.learned.is_none() {
                        self.learned = Some(a.arp.sender_mac);
                    }
                }
            },
            Ok(Parsed::Icmp(_)) => self.c.icmp += 1,
            Err(_) => self.c.unparsed += 1,
        }
    }
}

/// What the loop needs besides the profile.
pub struct RunContext<'a> {
    /// Backend name for the report.
    pub backend: String,
    /// Set (by a signal handler) to stop sending early; the report is still produced.
    pub stop: &'a AtomicBool,
    /// Called after every transmit flush (the memory backend's in-process sink runs there).
    pub after_flush: &'a mut dyn FnMut(),
    /// No progress lines on stderr.
    pub quiet: bool,
}

/// Pushes every pending ARP reply; returns how many went out.
fn answer_arp<P: Port>(port: &mut P, rx: &mut Rx, our_mac: [u8; 6]) -> u64 {
    let mut sent = 0;
    for (mac, ip) in rx.pending_arp.drain(..) {
        let src_ip = rx.src_ip;
        if port.tx_frame(64, |b| {
            wire::build_arp_reply(b, our_mac, src_ip, mac, ip).unwrap_or(0)
        }) {
            sent += 1;
        } else {
            rx.c.arp_replies_dropped += 1;
        }
    }
    sent
}

fn poll_rx<P: Port>(port: &mut P, rx: &mut Rx, burst: usize) -> usize {
    let mut total = 0;
    for _ in 0..RX_BURSTS_PER_POLL {
        let n = port.rx_burst(burst, |f| rx.on_frame(f));
        total += n;
        if n < burst {
            break;
        }
    }
    total
}

/// Runs the profile on `port`: resolves the destination MAC if asked, builds the ring, sends
/// for `count` frames or `duration` seconds, receives for `drain` seconds more, and reports.
pub fn run<P: Port>(port: &mut P, p: &Profile, ctx: RunContext<'_>) -> Result<Report, String> {
    let RunContext {
        backend,
        stop,
        after_flush,
        quiet,
    } = ctx;
    let info = port.info().clone();
    let src_mac = match p.src_mac()? {
        MacSpec::Auto => info.mac,
        MacSpec::Fixed(m) => m,
    };
    if p.port_frame_len() > info.max_frame {
        return Err(format!(
            "frame.frame_size {} (FCS included) exceeds the port's largest frame ({} bytes without FCS)",
            p.frame.frame_size, info.max_frame
        ));
    }
    let burst = p.run.burst;
    let mut rx = Rx {
        src_ip: p.frame.src_ip,
        port_lo: p.frame.src_port,
        port_hi: p.frame.src_port + (p.frame.src_ports - 1),
        resolving: None,
        learned: None,
        pending_arp: Vec::with_capacity(MAX_PENDING_ARP),
        c: RxCounters::default(),
    };
    let mut arp = Arp::default();

    if p.run.gratuitous_arp {
        // A gratuitous ARP request: sender and target are our address, to broadcast.
        let ip = p.frame.src_ip;
        if port.tx_frame(64, |b| {
            wire::build_arp_request(b, src_mac, ip, ip).unwrap_or(0)
        }) {
            arp.gratuitous_sent = 1;
        }
        port.tx_flush();
        after_flush();
    }

    let dst_mac = match p.dst_mac()? {
        MacSpec::Fixed(m) => m,
        MacSpec::Auto => {
            let target = p.unicast_address(0);
            rx.resolving = Some(target);
            let deadline = Instant::now() + Duration::from_secs_f64(p.run.resolve_timeout);
            let mut next_request = Instant::now();
            loop {
                let now = Instant::now();
                if let Some(m) = rx.learned {
                    arp.resolved = Some(format!("{target} is at {}", format_mac(m)));
                    break m;
                }
                if now >= deadline || stop.load(Ordering::Relaxed) {
                    return Err(format!(
                        "no ARP reply for {target} within {}s (set frame.dst_mac to the receiver's MAC)",
                        p.run.resolve_timeout
                    ));
                }
                if now >= next_request {
                    let ip = p.frame.src_ip;
                    if port.tx_frame(64, |b| {
                        wire::build_arp_request(b, src_mac, ip, target).unwrap_or(0)
                    }) {
                        arp.requests_sent += 1;
                    }
                    next_request = now + Duration::from_millis(200);
                }
                arp.replies_sent += answer_arp(port, &mut rx, src_mac);
                port.tx_flush();
                after_flush();
                if poll_rx(port, &mut rx, burst) == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    };

    let ring: Ring = ring::build(p, src_mac, dst_mac)?;
    let ring_len = ring.len();
    if !quiet {
        eprintln!(
            "l3ns-pktgen: {} frames prepared ({} KiB), {} -> {}, sending on {} ({backend})",
            ring_len,
            ring.bytes() / 1024,
            format_mac(src_mac),
            format_mac(dst_mac),
            info.name
        );
    }

    let limit = if p.run.count > 0 {
        Some(p.run.count)
    } else {
        None
    };
    let duration = if p.run.duration > 0.0 {
        Some(Duration::from_secs_f64(p.run.duration))
    } else if limit.is_none() {
        Some(Duration::from_secs_f64(DEFAULT_DURATION))
    } else {
        None
    };
    let rate = (p.run.rate > 0.0).then_some(p.run.rate);
    // Bucket depth: a few bursts, so oversleeping is caught up in back-to-back bursts.
    let depth = (4 * burst) as f64;
    let mut tokens = burst as f64;

    let mut by_kind = [0u64; Kind::COUNT];
    let mut sent_total = 0u64;
    let mut sent_bytes = 0u64;
    let mut ring_full = 0u64;
    let mut pos = 0usize;

    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut last = start;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d) {
            break;
        }
        let remaining = limit.map_or(u64::MAX, |l| l - sent_total);
        if remaining == 0 {
            break;
        }
        let mut want = (burst as u64).min(remaining) as usize;
        if let Some(r) = rate {
            tokens = (tokens + (now - last).as_secs_f64() * r).min(depth);
            if tokens < want as f64 {
                want = 0;
            }
        }
        last = now;

        let mut n = 0;
        while n < want {
            let (frame, kind) = ring.frame(pos);
            let len = frame.len();
            if !port.tx_frame(len, |b| {
                b[..len].copy_from_slice(frame);
                len
            }) {
                ring_full += 1;
                break;
            }
            by_kind[kind as usize] += 1;
            sent_bytes += len as u64;
            n += 1;
            pos += 1;
            if pos == ring_len {
                pos = 0;
            }
        }
        sent_total += n as u64;
        if rate.is_some() {
            tokens -= n as f64;
        }
        arp.replies_sent += answer_arp(port, &mut rx, src_mac);
        port.tx_flush();
        after_flush();
        let got = poll_rx(port, &mut rx, burst);

        if n == 0 && got == 0 {
            match rate {
                Some(r) if !p.run.spin => {
                    let wait = ((burst.min(remaining as usize) as f64 - tokens) / r).max(0.0);
                    if wait > 200e-6 {
                        std::thread::sleep(Duration::from_secs_f64((wait - 100e-6).min(1e-3)));
                    } else {
                        std::hint::spin_loop();
                    }
                }
                _ => std::hint::spin_loop(),
            }
        }
    }
    let send_elapsed = start.elapsed();
    if !quiet {
        // A marker for scripts that measure the sending phase (bench/scripts/kernel.py).
        eprintln!(
            "l3ns-pktgen: sent {sent_total} frames in {:.3}s, receiving for up to {}s more",
            send_elapsed.as_secs_f64(),
            p.run.drain
        );
    }

    // Drain: keep answering ARP and counting replies.
    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs_f64(p.run.drain);
    let mut idle_since = Instant::now();
    while Instant::now() < drain_deadline {
        arp.replies_sent += answer_arp(port, &mut rx, src_mac);
        port.tx_flush();
        after_flush();
        let got = poll_rx(port, &mut rx, burst);
        let now = Instant::now();
        if got > 0 {
            idle_since = now;
        } else {
            let all_back = p.frame.echo
                && by_kind[Kind::Unicast as usize] > 0
                && rx.c.replies_by_kind[Kind::Unicast as usize] >= by_kind[Kind::Unicast as usize];
            if all_back && now - idle_since >= Duration::from_millis(20) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let drain_elapsed = drain_start.elapsed();

    let secs = send_elapsed.as_secs_f64().max(1e-9);
    let total_secs = (send_elapsed + drain_elapsed).as_secs_f64().max(1e-9);
    let kinds = |a: &[u64; Kind::COUNT]| {
        Kind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), a[*k as usize]))
            .collect()
    };
    let unicast_sent = by_kind[Kind::Unicast as usize];
    let unicast_replies = rx.c.replies_by_kind[Kind::Unicast as usize];
    let loss = p.frame.echo.then(|| {
        let lost = unicast_sent as i64 - unicast_replies as i64;
        Loss {
            unicast_sent,
            unicast_replies,
            lost,
            ratio: if unicast_sent > 0 {
                lost as f64 / unicast_sent as f64
            } else {
                0.0
            },
        }
    });
    let replies: u64 = rx.c.replies_by_kind.iter().sum();
    arp.requests_for_us = rx.c.arp_requests_for_us;
    arp.requests_seen = rx.c.arp_requests;
    arp.replies_seen = rx.c.arp_replies_seen;
    arp.replies_dropped = rx.c.arp_replies_dropped;

    Ok(Report {
        profile: p.name.clone(),
        backend,
        port: info.name.clone(),
        src_mac: format_mac(src_mac),
        dst_mac: format_mac(dst_mac),
        src_ip: p.frame.src_ip.to_string(),
        frame_size: p.frame.frame_size,
        rate_limit_pps: rate,
        ring_frames: ring_len,
        duration_s: secs,
        drain_s: drain_elapsed.as_secs_f64(),
        interrupted: stop.load(Ordering::Relaxed),
        sent: Sent {
            packets: sent_total,
            bytes: sent_bytes,
            pps: sent_total as f64 / secs,
            mbps: sent_bytes as f64 * 8.0 / secs / 1e6,
            by_kind: kinds(&by_kind),
            tx_ring_full: ring_full,
            device_dropped: None,
        },
        received: Received {
            packets: rx.c.packets,
            bytes: rx.c.bytes,
            pps: rx.c.packets as f64 / total_secs,
            replies,
            replies_pps: replies as f64 / total_secs,
            replies_by_kind: kinds(&rx.c.replies_by_kind),
            udp_other: rx.c.udp_other,
            icmp: rx.c.icmp,
            other: rx.c.other,
            unparsed: rx.c.unparsed,
        },
        loss,
        arp,
        sink: None,
    })
}
