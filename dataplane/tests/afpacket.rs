//! The AF_PACKET port on a real veth pair. Needs root (CAP_NET_ADMIN for the veth and the network
//! namespace, CAP_NET_RAW for the sockets); skipped otherwise.
//!
//! Each test makes its own network namespace `l3ns-afp-<pid>-<tag>` and a veth pair: the host
//! end stays in the root namespace with no address and carries the port under test; the peer end
//! lives in the namespace with 10.99.7.2/24 (an address that exists only there). Frames are sent
//! and received on the peer side with independent oracles: a plain AF_PACKET socket and the
//! peer kernel's own UDP stack. Every wait polls against a deadline; a guard deletes the veth
//! and the namespace even when a test fails.
//!
//! `unsafe` here is confined to the test helpers that need raw system calls (setns, a plain
//! AF_PACKET socket); each block states its invariant.
#![allow(unsafe_code)]

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use l3ns_dataplane::port::afpacket::{self, AfPacketOptions, AfPacketPort, PortError};
use l3ns_dataplane::port::Port;

const HOST_MAC: [u8; 6] = [0x02, 0x4c, 0x33, 0xaf, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x4c, 0x33, 0xaf, 0x00, 0x02];
/// Our side's address: used only as a source in frames we build; configured nowhere.
const HOST_IP: [u8; 4] = [10, 99, 7, 1];
/// The peer's address, configured only on the peer veth inside the test namespace.
const PEER_IP: [u8; 4] = [10, 99, 7, 2];
const MAGIC: &[u8; 8] = b"L3NSAFP!";
const WAIT: Duration = Duration::from_secs(3);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! need_root {
    () => {
        if !is_root() {
            println!("skipped: needs root (CAP_NET_ADMIN to create veth/netns)");
            return;
        }
    };
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with the peer end of a veth pair; the host end is in the root namespace.
/// Dropping it deletes both.
struct Net {
    ns: String,
    host: String,
    peer: String,
}

impl Net {
    fn new(tag: char) -> Net {
        let pid = std::process::id();
        let net = Net {
            ns: format!("l3ns-afp-{pid}-{tag}"),
            host: format!("afh{pid}{tag}"),
            peer: format!("afp{pid}{tag}"),
        };
        // From here on, Drop cleans up whatever got created.
        run(&["ip", "netns", "add", &net.ns]);
        run(&[
            "ip",
            "link",
            "add",
            &net.host,
            "address",
            &mac_str(HOST_MAC),
            "type",
            "veth",
            "peer",
            "name",
            &net.peer,
            "address",
            &mac_str(PEER_MAC),
            "netns",
            &net.ns,
        ]);
        // No IPv6 chatter (router solicitations, DAD) on either end: only our frames flow.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", net.host),
            "1",
        );
        let _ = Command::new("ip")
            .args(["netns", "exec", &net.ns, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{}.disable_ipv6=1", net.peer))
            .output();
        let peer_cidr = format!("{}/24", ip_str(PEER_IP));
        run(&[
            "ip", "-n", &net.ns, "addr", "add", &peer_cidr, "dev", &net.peer,
        ]);
        run(&["ip", "-n", &net.ns, "link", "set", &net.peer, "up"]);
        run(&["ip", "link", "set", &net.host, "up"]);
        net
    }

    /// Runs `f` on a thread that has entered the test namespace (sockets made there stay there).
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: `ns` is an open network-namespace file; setns changes only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in the test namespace panicked")
    }

    fn peer_socket(&self) -> RawSocket {
        let peer = self.peer.clone();
        self.inside(move || RawSocket::bind(&peer))
    }

    fn open(&self, opts: &AfPacketOptions) -> Vec<AfPacketPort> {
        afpacket::open(&self.host, opts).unwrap_or_else(|e| panic!("open({}): {e}", self.host))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; deleting the namespace would too, but be explicit.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip_str(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// A plain (non-mmap) AF_PACKET socket: the independent oracle on the peer side.
struct RawSocket(OwnedFd);

impl RawSocket {
    /// Must run inside the namespace that holds `iface`.
    fn bind(iface: &str) -> RawSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked and then owned.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(iface).unwrap();
        // SAFETY: `name` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index > 0, "if_nametoindex({iface})");
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        RawSocket(fd)
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is valid for reads of its length.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            io::Error::last_os_error()
        );
    }

    /// Incoming frames (not ones this side sent) that satisfy `keep`, until `want` were kept or
    /// the deadline passed.
    fn recv(&self, want: usize, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            loop {
                // SAFETY: all-zero is a valid sockaddr_ll.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: buffer and address are valid for writes of the sizes passed.
                let n = unsafe {
                    libc::recvfrom(
                        self.0.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n < 0 {
                    break;
                }
                let frame = &buf[..n as usize];
                if from.sll_pkttype != libc::PACKET_OUTGOING && keep(frame) {
                    got.push(frame.to_vec());
                }
            }
        }
        got
    }
}

fn udp_frame(
    src: ([u8; 6], [u8; 4], u16),
    dst: ([u8; 6], [u8; 4], u16),
    seq: u32,
    payload_len: usize,
) -> Vec<u8> {
    let mut payload = MAGIC.to_vec();
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend((0..payload_len.saturating_sub(12)).map(|i| (i as u32 ^ seq) as u8));
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(src.1, dst.1, 64)
        .udp(src.2, dst.2);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

/// Our test frames: IPv4/UDP with the magic at the start of the UDP payload.
fn is_ours(frame: &[u8]) -> bool {
    frame.len() >= 42 + MAGIC.len()
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 17
        && &frame[42..42 + MAGIC.len()] == MAGIC
}

/// Polls the ports until `want` frames satisfying `keep` arrived or the deadline passed.
/// Returns them per port (frames not satisfying `keep` are consumed and ignored).
fn receive(
    ports: &mut [AfPacketPort],
    burst: usize,
    want: usize,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<Vec<u8>>> {
    let deadline = Instant::now() + WAIT;
    let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(); ports.len()];
    while got.iter().map(Vec::len).sum::<usize>() < want && Instant::now() < deadline {
        for (port, got) in ports.iter_mut().zip(got.iter_mut()) {
            let n = port.rx_burst(burst, |f| {
                if keep(f) {
                    got.push(f.to_vec())
                }
            });
            assert!(n <= burst, "rx_burst returned {n} > max {burst}");
        }
        std::hint::spin_loop();
    }
    got
}

fn peer_to_host(seq: u32, len: usize) -> Vec<u8> {
    udp_frame((PEER_MAC, PEER_IP, 40000), (HOST_MAC, HOST_IP, 9), seq, len)
}

fn host_to_peer(seq: u32, len: usize) -> Vec<u8> {
    udp_frame(
        (HOST_MAC, HOST_IP, 40000),
        (PEER_MAC, PEER_IP, 9999),
        seq,
        len,
    )
}

#[test]
fn receives_exact_frames_in_order_across_bursts() {
    need_root!();
    let net = Net::new('r');
    let mut ports = net.open(&AfPacketOptions {
        name: Some("uplink".into()),
        ..Default::default()
    });
    assert_eq!(ports.len(), 1);
    let info = ports[0].info().clone();
    assert_eq!(info.name, "uplink");
    assert_eq!(
        info.mac, HOST_MAC,
        "PortInfo.mac must be the interface's address"
    );
    assert_eq!(info.max_frame, 1514, "MTU 1500 + Ethernet header");
    // Idle: nothing yet, and rx_burst returns at once.
    assert_eq!(ports[0].rx_burst(32, |f| assert!(!is_ours(f))), 0);

    let peer = net.peer_socket();
    // Sizes from the smallest UDP frame to a full 1514-byte frame.
    let sizes = [12, 18, 100, 500, 1000, 1472];
    let sent: Vec<Vec<u8>> = (0..120u32)
        .map(|i| peer_to_host(i, sizes[i as usize % sizes.len()]))
        .collect();
    assert_eq!(sent[5].len(), 1514);
    for f in &sent {
        peer.send(f);
    }
    // Bursts of 7 end in the middle of ring blocks: the port must keep its place.
    let got = receive(&mut ports, 7, sent.len(), is_ours).remove(0);
    assert_eq!(got.len(), sent.len(), "frames received");
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "frame {i} differs");
    }
    assert_eq!(
        ports[0].rx_burst(32, |f| assert!(!is_ours(f))),
        0,
        "no duplicates"
    );
    let (received, dropped) = ports[0].stats();
    assert!(received >= sent.len() as u64, "stats received {received}");
    assert_eq!(dropped, 0);
    assert_eq!(ports[0].counters(), Default::default());
}

#[test]
fn transmitted_frames_reach_the_peer_exactly() {
    need_root!();
    let net = Net::new('t');
    let mut ports = net.open(&AfPacketOptions::default());
    let port = &mut ports[0];
    let peer = net.peer_socket();
    let peer_ip = ip_str(PEER_IP);
    let udp = net.inside(move || UdpSocket::bind((peer_ip.as_str(), 9999)).expect("bind udp"));
    udp.set_read_timeout(Some(WAIT)).unwrap();

    // Too long for the port: refused without calling build.
    let max = port.info().max_frame;
    assert!(!port.tx_frame(max + 1, |_| panic!("build called for an oversize frame")));
    assert_eq!(port.counters().tx_too_long, 1);

    let sizes = [12, 64, 700, 1472];
    let sent: Vec<Vec<u8>> = (0..40u32)
        .map(|i| host_to_peer(i, sizes[i as usize % 4]))
        .collect();
    for f in &sent {
        assert!(port.tx_frame(f.len(), |buf| {
            assert_eq!(buf.len(), f.len());
            buf.copy_from_slice(f);
            f.len()
        }));
    }
    // A frame the builder shortens: only the returned length goes out.
    let short = host_to_peer(1000, 20);
    assert!(port.tx_frame(max, |buf| {
        buf[..short.len()].copy_from_slice(&short);
        short.len()
    }));
    port.tx_flush();
    port.tx_flush(); // nothing queued: no-op

    let mut want = sent.clone();
    want.push(short.clone());
    let got = peer.recv(want.len(), is_ours);
    assert_eq!(
        got.len(),
        want.len(),
        "frames seen by the peer's AF_PACKET socket"
    );
    for (i, (g, s)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, s, "frame {i} differs");
    }
    // The peer's kernel accepted them as UDP datagrams (checksums, addresses, MAC).
    let mut buf = [0u8; 2048];
    for (i, f) in want.iter().enumerate() {
        let (n, from) = udp
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i}: {e}"));
        assert_eq!(&buf[..n], &f[42..], "datagram {i}");
        assert_eq!(from.to_string(), format!("{}:40000", ip_str(HOST_IP)));
    }
    // Our own transmissions are not received back.
    assert_eq!(
        port.rx_burst(64, |f| assert!(!is_ours(f), "own frame looped back")),
        0
    );
    assert_eq!(port.counters().tx_kick_errors, 0);
}

#[test]
fn full_transmit_ring_refuses_then_recovers() {
    need_root!();
    let net = Net::new('f');
    let mut ports = net.open(&AfPacketOptions {
        tx_frames: 8,
        ..Default::default()
    });
    let port = &mut ports[0];
    let capacity = port.tx_capacity();
    assert!(capacity >= 8, "tx capacity {capacity}");
    let peer = net.peer_socket();

    let mut queued = 0;
    for i in 0..=capacity as u32 {
        let f = host_to_peer(i, 40);
        if !port.tx_frame(f.len(), |buf| {
            buf.copy_from_slice(&f);
            f.len()
        }) {
            break;
        }
        queued += 1;
    }
    assert_eq!(
        queued, capacity,
        "the ring takes exactly its capacity before a flush"
    );
    let mut called = false;
    assert!(!port.tx_frame(60, |_| {
        called = true;
        0
    }));
    assert!(!called, "build must not run when the ring is full");

    port.tx_flush();
    // Slots come back once the device is done with them.
    let deadline = Instant::now() + WAIT;
    let extra = host_to_peer(capacity as u32, 40);
    let mut accepted = false;
    while !accepted && Instant::now() < deadline {
        accepted = port.tx_frame(extra.len(), |buf| {
            buf.copy_from_slice(&extra);
            extra.len()
        });
    }
    assert!(accepted, "no transmit slot came back after the flush");
    port.tx_flush();
    let got = peer.recv(capacity + 1, is_ours);
    assert_eq!(got.len(), capacity + 1);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &host_to_peer(i as u32, 40), "frame {i}");
    }
}

#[test]
fn fanout_spreads_flows_over_queues_and_reassembles_fragments() {
    need_root!();
    let net = Net::new('q');
    let mut ports = net.open(&AfPacketOptions {
        queues: 2,
        ..Default::default()
    });
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].fanout_id(), ports[1].fanout_id());
    assert_eq!((ports[0].queue(), ports[1].queue()), (0, 1));
    let peer = net.peer_socket();

    // 64 flows (distinct source ports): each frame reaches exactly one queue.
    let sent: Vec<Vec<u8>> = (0..64u32)
        .map(|i| {
            udp_frame(
                (PEER_MAC, PEER_IP, 20000 + i as u16),
                (HOST_MAC, HOST_IP, 9),
                i,
                64,
            )
        })
        .collect();
    for f in &sent {
        peer.send(f);
    }
    let got = receive(&mut ports, 32, sent.len(), is_ours);
    let mut all: Vec<Vec<u8>> = got.iter().flatten().cloned().collect();
    assert_eq!(all.len(), sent.len(), "each frame once, over both queues");
    all.sort();
    let mut expect = sent.clone();
    expect.sort();
    assert_eq!(all, expect);
    assert!(
        !got[0].is_empty() && !got[1].is_empty(),
        "64 flows all hashed to one queue: {} / {}",
        got[0].len(),
        got[1].len()
    );
    // One flow stays on one queue.
    let again = udp_frame((PEER_MAC, PEER_IP, 20000), (HOST_MAC, HOST_IP, 9), 0, 64);
    let first_queue = if got[0].contains(&again) { 0 } else { 1 };
    peer.send(&again);
    let got = receive(&mut ports, 32, 1, is_ours);
    assert_eq!(got[first_queue], vec![again]);

    // A datagram in two IPv4 fragments arrives once, reassembled (PACKET_FANOUT_FLAG_DEFRAG).
    let whole = peer_to_host(7777, 1200);
    let (eth, ip, l4) = (&whole[..14], &whole[14..34], &whole[34..]);
    let cut = 8 * 75;
    let fragment = |offset: usize, more: bool, body: &[u8]| {
        let mut h = ip.to_vec();
        h[2..4].copy_from_slice(&((20 + body.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        let word = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&word.to_be_bytes());
        set_ipv4_checksum(&mut h);
        [eth, &h, body].concat()
    };
    peer.send(&fragment(0, true, &l4[..cut]));
    peer.send(&fragment(cut, false, &l4[cut..]));
    let got = receive(&mut ports, 32, 1, is_ours);
    let frames: Vec<&Vec<u8>> = got.iter().flatten().collect();
    assert_eq!(frames.len(), 1, "one reassembled frame");
    let f = frames[0];
    assert_eq!(f.len(), whole.len());
    assert_eq!(&f[..14], eth);
    assert_eq!(&f[16..18], &ip[2..4], "reassembled total length");
    assert_eq!(
        &f[20..22],
        &[0, 0],
        "reassembled: no fragment flags or offset"
    );
    assert_eq!(&f[34..], l4, "reassembled UDP header and payload");
}

fn set_ipv4_checksum(h: &mut [u8]) {
    h[10..12].copy_from_slice(&[0, 0]);
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[test]
fn full_receive_ring_drops_are_counted_and_the_ring_recovers() {
    need_root!();
    let net = Net::new('d');
    // A tiny ring: two 4 KiB blocks, about 28 small frames.
    let opts = AfPacketOptions {
        rx_block_size: 4096,
        rx_block_count: 2,
        ..Default::default()
    };
    let mut ports = net.open(&opts);
    let port = &mut ports[0];
    let peer = net.peer_socket();
    let total = 300u32;
    for i in 0..total {
        peer.send(&peer_to_host(i, 100));
    }
    // Wait (bounded) until the kernel has accounted for every frame.
    let deadline = Instant::now() + WAIT;
    let (mut received, mut dropped) = port.stats();
    while received + dropped < u64::from(total) && Instant::now() < deadline {
        (received, dropped) = port.stats();
    }
    assert!(
        received + dropped >= u64::from(total),
        "kernel saw {received} + {dropped}"
    );
    assert!(
        dropped > 0,
        "a 2-block ring must overflow with {total} frames"
    );
    // What the worker reads as the port's `rx_ring_full` drops: the same kernel count.
    assert_eq!(port.rx_ring_drops(), Some(dropped));

    let mut delivered = 0u64;
    let mut ours = Vec::new();
    for _ in 0..100 {
        let n = port.rx_burst(16, |f| {
            if is_ours(f) {
                ours.push(f.to_vec())
            }
        });
        delivered += n as u64;
        if n == 0 {
            break;
        }
    }
    assert_eq!(
        delivered, received,
        "rx_burst hands over exactly what the ring holds"
    );
    assert!(!ours.is_empty());
    // What did arrive is intact and in order.
    let seqs: Vec<u32> = ours
        .iter()
        .map(|f| u32::from_be_bytes(f[50..54].try_into().unwrap()))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for (f, s) in ours.iter().zip(&seqs) {
        assert_eq!(f, &peer_to_host(*s, 100));
    }

    // Blocks went back to the kernel: new frames get through.
    let after: Vec<Vec<u8>> = (0..5).map(|i| peer_to_host(10_000 + i, 100)).collect();
    for f in &after {
        peer.send(f);
    }
    let got = receive(&mut ports, 16, after.len(), is_ours).remove(0);
    assert_eq!(got, after);
}

#[test]
fn open_errors_name_the_problem() {
    let err = afpacket::open("l3nsnosuchif0", &AfPacketOptions::default()).unwrap_err();
    if is_root() {
        assert!(matches!(err, PortError::NoSuchInterface(_)), "{err}");
        assert_eq!(err.to_string(), "no such interface: l3nsnosuchif0");
    } else {
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert!(
            err.to_string().contains("needs root or CAP_NET_RAW"),
            "{err}"
        );
        println!("skipped the rest: needs root (CAP_NET_ADMIN to create veth/netns)");
        return;
    }
    let net = Net::new('e');
    run(&["ip", "link", "set", &net.host, "down"]);
    let err = afpacket::open(&net.host, &AfPacketOptions::default()).unwrap_err();
    assert!(matches!(err, PortError::InterfaceDown(_)), "{err}");
    let err = afpacket::open(
        &net.host,
        &AfPacketOptions {
            queues: 0,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, PortError::BadOptions(_)), "{err}");
}
