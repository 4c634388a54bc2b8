//! The built-in services in process, frame for frame: the real runtime, one worker on a
//! memory port whose transmitted frames are collected, and the service thread.

mod daemon_util;

use etherparse::{SlicedPacket, TransportSlice};
use l3ns_control::runtime::Runtime;
use l3ns_control::service::{ServiceStats, Services};
use l3ns_dataplane::port::memory::{memory_pair, MemoryPort, MemoryWire, TxMode};
use l3ns_dataplane::port::PortInfo;
use l3ns_dataplane::types::{LoopbackMode, NsId, Scope, SocketId};
use l3ns_dataplane::wire::{self, FrameAddrs, BROADCAST_MAC, DEFAULT_TTL};
use l3ns_dataplane::worker::{Worker, WorkerConfig, WorkerPort};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x99];
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
const WEB1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

struct Net {
    rt: Runtime,
    worker: Worker<MemoryPort>,
    wire: MemoryWire,
    web1: NsId,
    services: Services,
}

fn net() -> Net {
    let mut rt = Runtime::new(Default::default(), 1, vec!["eth0".into()], 1024);
    let dev = rt.add_device("eth0", OUR_MAC).unwrap();
    let root = NsId::ROOT;
    let web1 = rt
        .apply("ns_add", |m| {
            m.ns_add(root, "web1", None, LoopbackMode::Isolated)
        })
        .unwrap();
    rt.apply("addr_add", |m| {
        m.addr_add(root, "eth0", WEB1, 24, None, None, Scope::Global)
            .map(|c| ((), c))
    })
    .unwrap();
    rt.apply("addr_push", |m| {
        m.addr_push(root, "eth0", WEB1, None, "web1")
            .map(|c| ((), c))
    })
    .unwrap();
    let (port, wire) = memory_pair(
        PortInfo {
            name: "eth0".into(),
            mac: OUR_MAC,
            max_frame: 1514,
        },
        1024,
        TxMode::Collect,
    );
    let worker = Worker::new(
        WorkerConfig::default(),
        vec![WorkerPort {
            port,
            dev,
            index: 0,
        }],
        rt.shared.clone(),
        rt.stats.workers[0].clone(),
    );
    let mut n = Net {
        rt,
        worker,
        wire,
        web1,
        services: Services::new(),
    };
    // The peer asks for web1's address: the worker learns its MAC (and answers).
    let mut f = vec![0u8; 64];
    let len = wire::build_arp_request(&mut f, PEER_MAC, PEER, WEB1).unwrap();
    f.truncate(len);
    n.inject(f);
    n.frames(1, Duration::from_secs(5));
    n
}

impl Net {
    fn bind(&mut self, port: u16, service: &str) -> SocketId {
        let (id, _) = self
            .rt
            .bind(self.web1, Ipv4Addr::UNSPECIFIED, port, service)
            .unwrap();
        self.services.start(&self.rt, id, service).unwrap();
        id
    }

    fn inject(&mut self, frame: Vec<u8>) {
        self.wire.inject(frame).unwrap();
        self.worker.poll(Instant::now());
    }

    fn udp(&mut self, dst: Ipv4Addr, dst_mac: [u8; 6], port: u16, payload: &[u8]) {
        let mut f = vec![0u8; 64 + payload.len()];
        let addrs = FrameAddrs {
            src_mac: PEER_MAC,
            dst_mac,
            src_ip: PEER,
            dst_ip: dst,
        };
        let len = wire::build_udp(&mut f, &addrs, 40000, port, DEFAULT_TTL, payload).unwrap();
        f.truncate(len);
        self.inject(f);
    }

    /// Polls the worker (the services answer from their own thread) until `n` frames were
    /// transmitted or `limit` passed.
    fn frames(&mut self, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            self.worker.poll(Instant::now());
            out.extend(self.wire.collect());
            std::thread::sleep(Duration::from_millis(1));
        }
        out
    }
}

/// (src, sport, dst, dport, payload) of a UDP frame.
fn udp_of(frame: &[u8]) -> Option<(Ipv4Addr, u16, Ipv4Addr, u16, Vec<u8>)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        return None;
    };
    let (s, d) = (ip.header().source_addr(), ip.header().destination_addr());
    match p.transport? {
        TransportSlice::Udp(u) => Some((
            s,
            u.source_port(),
            d,
            u.destination_port(),
            u.payload().to_vec(),
        )),
        _ => None,
    }
}

#[test]
fn echo_answers_from_the_address_it_was_sent_to() {
    let mut n = net();
    n.bind(7, "echo");
    n.udp(WEB1, OUR_MAC, 7, b"hello");
    let f = n.frames(1, Duration::from_secs(10));
    assert_eq!(
        udp_of(&f[0]),
        Some((WEB1, 7, PEER, 40000, b"hello".to_vec()))
    );
    assert_eq!(ServiceStats::get(&n.services.stats().echoed), 1);
}

#[test]
fn echo_answers_a_broadcast_from_its_own_address() {
    let mut n = net();
    n.bind(7, "echo");
    for dst in [Ipv4Addr::BROADCAST, Ipv4Addr::new(10, 0, 0, 255)] {
        n.udp(dst, BROADCAST_MAC, 7, b"anyone?");
        let f = n.frames(1, Duration::from_secs(10));
        // Never from the broadcast address: R13 picks web1's own address.
        assert_eq!(
            udp_of(&f[0]),
            Some((WEB1, 7, PEER, 40000, b"anyone?".to_vec())),
            "to {dst}"
        );
    }
}

#[test]
fn sink_counts_and_drops() {
    let mut n = net();
    n.bind(9, "sink");
    for _ in 0..3 {
        n.udp(WEB1, OUR_MAC, 9, b"x");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ServiceStats::get(&n.services.stats().sunk) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ServiceStats::get(&n.services.stats().sunk), 3);
    assert!(n.frames(1, Duration::from_millis(200)).is_empty());
}

#[test]
fn attach_round_trips_through_the_python_client() {
    let dir = daemon_util::TempDir::new("svc-attach");
    let path = dir.path("a.sock");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/attach_client.py");
    let mut client = daemon_util::Guard::spawn(Command::new("python3").args([
        script,
        "--path",
        path.to_str().unwrap(),
        "--count",
        "2",
        "--timeout",
        "20",
        "--prefix",
        "re: ",
    ]));
    let mut out = BufReader::new(client.0.as_mut().unwrap().stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let mut n = net();
    n.bind(5000, &format!("attach:{}", path.display()));
    n.udp(WEB1, OUR_MAC, 5000, b"ping");
    let f = n.frames(1, Duration::from_secs(10));
    assert_eq!(
        udp_of(&f[0]),
        Some((WEB1, 5000, PEER, 40000, b"re: ping".to_vec()))
    );
    // A directed broadcast: the client answers "from" the broadcast address it saw; the
    // service lets R13 pick web1's own address instead.
    n.udp(Ipv4Addr::new(10, 0, 0, 255), BROADCAST_MAC, 5000, b"all");
    let f = n.frames(1, Duration::from_secs(10));
    assert_eq!(
        udp_of(&f[0]),
        Some((WEB1, 5000, PEER, 40000, b"re: all".to_vec()))
    );
    let mut seen = String::new();
    out.read_line(&mut seen).unwrap();
    let v: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(
        (v["src"].as_str(), v["dst"].as_str(), v["dst_port"].as_u64()),
        (Some("10.0.0.99"), Some("10.0.0.2"), Some(5000))
    );
    let done = client.wait(Duration::from_secs(20));
    assert!(done.status.success(), "{}", daemon_util::text(&done.stderr));
    assert_eq!(ServiceStats::get(&n.services.stats().forwarded), 2);
    assert_eq!(ServiceStats::get(&n.services.stats().returned), 2);
}

#[test]
fn attach_without_a_process_drops_and_counts() {
    let dir = daemon_util::TempDir::new("svc-noattach");
    let mut n = net();
    n.bind(
        5000,
        &format!("attach:{}", dir.path("nobody.sock").display()),
    );
    n.udp(WEB1, OUR_MAC, 5000, b"lost");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ServiceStats::get(&n.services.stats().attach_dropped) < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ServiceStats::get(&n.services.stats().attach_dropped), 1);
}

#[test]
fn stopped_services_no_longer_answer() {
    let mut n = net();
    let id = n.bind(7, "echo");
    n.rt.close(n.web1, id).unwrap();
    n.services.stop(id);
    n.udp(WEB1, OUR_MAC, 7, b"anyone?");
    // No socket any more: only the ICMP port unreachable leaves, no UDP echo.
    let f = n.frames(1, Duration::from_secs(5));
    assert!(f.iter().all(|f| udp_of(f).is_none()), "{f:?}");
}

/// More datagrams at once than a round takes from one socket (256): the rest, whether still
/// in the queue or in the batch the socket was reading, are answered in the next rounds,
/// although no worker marks the socket ready again.
#[test]
fn echo_answers_more_than_a_round_takes_at_once() {
    let mut n = net();
    n.bind(7, "echo");
    let frame = |i: u32| {
        let mut f = vec![0u8; 128];
        let addrs = FrameAddrs {
            src_mac: PEER_MAC,
            dst_mac: OUR_MAC,
            src_ip: PEER,
            dst_ip: WEB1,
        };
        let len = wire::build_udp(&mut f, &addrs, 40000, 7, DEFAULT_TTL, &i.to_be_bytes()).unwrap();
        f.truncate(len);
        f
    };
    // Batches of 20 and then 4 × 64 (the worker's burst), handed over in five polls in a
    // row: a round that finds them all takes 20 + 3 × 64 + 44 and stops in the middle of the
    // last batch with the queue empty.
    for i in 0..20 {
        n.wire.inject(frame(i)).unwrap();
    }
    n.worker.poll(Instant::now());
    for i in 20..276 {
        n.wire.inject(frame(i)).unwrap();
    }
    for _ in 0..4 {
        n.worker.poll(Instant::now());
    }
    let f = n.frames(276, Duration::from_secs(20));
    let mut got: Vec<u32> = f
        .iter()
        .filter_map(|f| udp_of(f))
        .map(|(_, _, _, _, p)| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..276).collect::<Vec<_>>());
}

/// Sockets come and go: a new socket takes the slot (and ready bit) of one stopped before,
/// and the service thread still answers on every live one and on no stopped one.
#[test]
fn services_answer_on_sockets_that_reuse_the_slots_of_stopped_ones() {
    let mut n = net();
    let ids: Vec<SocketId> = (0..40).map(|i| n.bind(1000 + i, "echo")).collect();
    for id in ids.iter().step_by(2) {
        n.rt.close(n.web1, *id).unwrap();
        n.services.stop(*id);
    }
    for i in 0..10 {
        n.bind(2000 + i, "echo");
    }
    let live: Vec<u16> = (0..40)
        .filter(|i| i % 2 == 1)
        .map(|i| 1000 + i)
        .chain(2000..2010)
        .collect();
    for &p in &live {
        n.udp(WEB1, OUR_MAC, p, b"hi");
    }
    let f = n.frames(live.len(), Duration::from_secs(20));
    let mut answered: Vec<u16> = f.iter().filter_map(|f| udp_of(f)).map(|u| u.1).collect();
    answered.sort_unstable();
    assert_eq!(answered, live);
}

/// A sink whose thread is already running finds datagrams a busy worker handed over without
/// waking it (a worker defers wake-ups while it has work): the hand-off itself marks the
/// socket ready for the thread's timer.
#[test]
fn a_sink_finds_datagrams_a_busy_worker_did_not_wake_it_for() {
    let mut n = net();
    n.bind(9, "sink");
    let sunk = |n: &Net, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while ServiceStats::get(&n.services.stats().sunk) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        ServiceStats::get(&n.services.stats().sunk)
    };
    n.udp(WEB1, OUR_MAC, 9, b"first");
    assert_eq!(
        sunk(&n, 1),
        1,
        "the thread has taken its socket and the first datagram"
    );
    // Two busy polls: the worker defers the wake-up to its fourth busy or first idle poll,
    // which never come here.
    n.udp(WEB1, OUR_MAC, 9, b"x");
    n.udp(WEB1, OUR_MAC, 9, b"y");
    assert_eq!(sunk(&n, 3), 3);
}

/// From `MAIL_FROM_QUEUES` sockets on, the service thread takes its datagrams as mail (one
/// batch per worker round for all of its sockets): every echo socket still answers each of
/// its own, and no socket's queue was handed batches of its own.
#[test]
fn echo_answers_on_many_sockets_served_by_mail() {
    use l3ns_dataplane::socket::MAIL_FROM_QUEUES;
    let mut n = net();
    let ports: Vec<u16> = (0..MAIL_FROM_QUEUES as u16 + 6).map(|i| 1000 + i).collect();
    let ids: Vec<SocketId> = ports.iter().map(|&p| n.bind(p, "echo")).collect();
    // A socket bound after them answers: the service thread has added every socket (it takes
    // them in order), and so takes mail.
    n.bind(999, "echo");
    n.udp(WEB1, OUR_MAC, 999, b"first");
    assert_eq!(n.frames(1, Duration::from_secs(20)).len(), 1);
    // Three datagrams to each socket, interleaved: rounds of the worker's burst to many.
    for round in 0..3u8 {
        for &p in &ports {
            n.udp(WEB1, OUR_MAC, p, &[round, (p - 1000) as u8]);
        }
    }
    let f = n.frames(3 * ports.len(), Duration::from_secs(20));
    let mut got: Vec<(u16, Vec<u8>)> = f
        .iter()
        .filter_map(|f| udp_of(f))
        .map(|(_, sport, _, _, p)| (sport, p))
        .collect();
    got.sort();
    let mut want: Vec<(u16, Vec<u8>)> = (0..3u8)
        .flat_map(|r| ports.iter().map(move |&p| (p, vec![r, (p - 1000) as u8])))
        .collect();
    want.sort();
    assert_eq!(got, want);
    for id in ids {
        let s = n.rt.socket_handle(id).unwrap();
        assert!(
            s.queue().by_mail(),
            "socket {} had batches of its own",
            id.0
        );
        assert_eq!(s.queue().len(), 0);
    }
}
