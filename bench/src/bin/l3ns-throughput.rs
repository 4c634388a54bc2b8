//! Dataplane throughput on the memory port (issue 3): one pinned worker classifies a
//! generated stream of 64-byte UDP frames for 1,000 namespaces × 64 addresses, each namespace
//! with a socket on `0.0.0.0:9` drained by a consumer thread on the other core.
//!
//! Every scenario runs in the same process, side by side:
//! - `ceiling`: receive and free only (no parse, no classification);
//! - `unicast`: the full packet path;
//! - `broadcast_mix`: 5% limited broadcasts to port 67, on which 100 namespaces listen;
//! - `churn`: unicast while a control thread applies push/pull changes at a fixed rate.
//!
//! `--json` prints one JSON object; otherwise a table.

use clap::Parser;
use l3ns_control::config::DEFAULT_QUEUE_DEPTH;
use l3ns_control::heap::{self, HeapMode};
use l3ns_control::runtime::Runtime;
use l3ns_dataplane::port::memory::{memory_pair, Generator, MemoryPort, Pace, TxMode};
use l3ns_dataplane::port::{Port, PortInfo};
use l3ns_dataplane::socket::{SocketQueue, Waiter, MAIL_FROM_QUEUES};
use l3ns_dataplane::types::{DevId, LoopbackMode, NsId, Scope, SocketId};
use l3ns_dataplane::wire::{build_udp, FrameAddrs};
use l3ns_dataplane::worker::{PollClock, Worker, WorkerConfig, WorkerPort};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "l3ns dataplane throughput on the memory port (one worker core)")]
struct Args {
    /// Namespaces, each with a socket on 0.0.0.0:9.
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    /// Addresses per namespace.
    #[arg(long, default_value_t = 64)]
    addrs_per_ns: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Push/pull changes per second in the churn scenario.
    #[arg(long, default_value_t = 10_000)]
    churn_rate: u64,
    /// Microseconds between two wake-ups of the churn control thread: each applies the
    /// changes due as one batch (0: wake when the next change is due, one pair a batch).
    #[arg(long, default_value_t = 1000)]
    churn_tick_us: u64,
    /// Milliseconds between two scrapes in the scrape scenario.
    #[arg(long, default_value_t = 100)]
    scrape_ms: u64,
    /// Frames per receive burst (l3nsd's `dataplane.burst`; at most 64 are worked on as one
    /// group, see `port::MAX_GROUP`).
    #[arg(long, default_value_t = 64)]
    burst: usize,
    /// Prepared frames the memory port replays, each to a random owned address (drawn with
    /// replacement): with fewer frames than addresses, only that many destinations (at
    /// most) get traffic.
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    frames: u32,
    /// Send only to the addresses of the first N namespaces (default: every namespace's).
    /// Their counter lines then lie together in memory while their address-table slots stay
    /// spread by the hash: it tells the cost of touching many pages from the cost of
    /// touching many lines (bench/RESULTS.md, fourteenth sitting).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    dst_namespaces: Option<u32>,
    /// Core for the worker (the consumer takes the next one).
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// Give each namespace's sockets a queue of their own (as l3nsd does: one queue per
    /// socket) instead of one queue shared by every socket; the consumer thread finds the
    /// queues to drain by their ready bits, as l3nsd's service thread does.
    #[arg(long)]
    queue_per_ns: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Run only these scenarios (comma-separated: ceiling, unicast, mix, churn, scrape, again).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ceiling,unicast,mix,churn,scrape,again"
    )]
    only: Vec<String>,
    #[arg(long, value_enum, value_name = "MODE", default_value_t = HeapMode::Thp, help = heap::HELP)]
    heap: HeapMode,
}

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

#[derive(Serialize, Debug, Clone)]
struct Scenario {
    name: String,
    packets: u64,
    seconds: f64,
    mpps: f64,
    ns_per_packet: f64,
    /// CPU time the worker thread actually ran, per packet (excludes time it was preempted:
    /// steadier than `ns_per_packet` on a shared machine).
    cpu_ns_per_packet: f64,
    /// Datagrams handed to sockets (copies of a broadcast count once each).
    deliveries: u64,
    deliveries_per_second: f64,
    dropped: u64,
    /// Datagrams the consumer thread took from the socket queues: equal to `deliveries`, as
    /// it drains every queue before the scenario ends.
    consumed: u64,
    changes_applied: u64,
}

struct Setup {
    rt: Runtime,
    dev: DevId,
    owned: Vec<Ipv4Addr>,
    queues: Vec<Arc<SocketQueue>>,
    /// Each socket and the index of its queue in `queues`.
    socket_queue: Vec<(SocketId, usize)>,
}

/// The name of benchmark namespace `i` (formatted when needed rather than kept: the harness
/// should not add to the memory per namespace that `scale.py` measures).
fn ns_name(i: usize) -> String {
    format!("t{i}")
}

fn addr_of(ns: usize, k: usize, per_ns: usize) -> Ipv4Addr {
    // Inside 10.0.0.0/8: each namespace gets a block of max(64, per_ns) addresses (64 in the
    // default 1,000 x 64 set-up, so the same addresses as before).
    let i = (ns * per_ns.max(64) + k) as u32 + 1;
    assert!(i < 1 << 24, "the set-up does not fit in 10.0.0.0/8");
    Ipv4Addr::from(0x0a00_0000 | i)
}

fn setup(args: &Args) -> Setup {
    let mut rt = Runtime::new(Default::default(), 1, vec!["mem0".into()], 1 << 16);
    let dev = rt.add_device("mem0", MAC).unwrap();
    let root = NsId::ROOT;
    let mut owned = Vec::new();
    // One queue shared by every benchmark socket (unless --queue-per-ns): the consumer
    // thread serves them all, and each burst is handed over once.
    let shared_q = rt.new_shared_queue(1 << 16);
    let mut queues = if args.queue_per_ns {
        Vec::with_capacity(args.namespaces)
    } else {
        vec![shared_q.clone()]
    };
    // Like the daemon loading a configuration: every change of the set-up in one batch,
    // published once (one publish per operation made the set-up quadratic in the number of
    // sockets on a port: each rebuilt the port's listener list).
    rt.begin_batch();
    // Each socket's queue (its index in `queues`), for the consumer's mail (with a queue per
    // namespace only: one shared queue needs no map, and the memory per namespace is
    // measured with it).
    let mut socket_queue = Vec::new();
    for ns in 0..args.namespaces {
        let name = ns_name(ns);
        let id = rt
            .apply("ns_add", |m| {
                m.ns_add(root, &name, None, LoopbackMode::Isolated)
            })
            .unwrap();
        for k in 0..args.addrs_per_ns {
            let a = addr_of(ns, k, args.addrs_per_ns);
            rt.apply("addr_add", |m| {
                m.addr_add(root, "mem0", a, 8, None, None, Scope::Global)
                    .map(|c| ((), c))
            })
            .unwrap();
            rt.apply("addr_push", |m| {
                m.addr_push(root, "mem0", a, None, &name).map(|c| ((), c))
            })
            .unwrap();
            owned.push(a);
        }
        let q = if args.queue_per_ns {
            let q = rt.new_shared_queue(DEFAULT_QUEUE_DEPTH);
            queues.push(q.clone());
            q
        } else {
            shared_q.clone()
        };
        let s9 = rt
            .bind_shared(id, Ipv4Addr::UNSPECIFIED, 9, "app", q.clone())
            .unwrap();
        let mut sockets = vec![s9];
        if ns < 100 {
            let s67 = rt
                .bind_shared(id, Ipv4Addr::UNSPECIFIED, 67, "app", q)
                .unwrap();
            sockets.push(s67);
        }
        if args.queue_per_ns {
            socket_queue.extend(sockets.into_iter().map(|s| (s, queues.len() - 1)));
        }
    }
    rt.end_batch();
    Setup {
        rt,
        dev,
        owned,
        queues,
        socket_queue,
    }
}

fn frames(owned: &[Ipv4Addr], broadcast_share: f64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(7);
    (0..n)
        .map(|_| {
            let (dst, port) = if rng.gen_bool(broadcast_share) {
                (Ipv4Addr::BROADCAST, 67)
            } else {
                (owned[rng.gen_range(0..owned.len())], 9)
            };
            let dst_mac = if dst.is_broadcast() { [0xff; 6] } else { MAC };
            let addrs = FrameAddrs {
                src_mac: [2, 0, 0, 0, 0, 9],
                dst_mac,
                src_ip: Ipv4Addr::new(192, 0, 2, 1),
                dst_ip: dst,
            };
            let mut buf = vec![0u8; 64];
            // 14 + 20 + 8 + 18 = 60 bytes: a minimum Ethernet frame without FCS.
            let len = build_udp(&mut buf, &addrs, 1234, port, 64, &[0xab; 18]).unwrap();
            buf.truncate(len);
            buf
        })
        .collect()
}

fn port(frames: Vec<Vec<u8>>) -> MemoryPort {
    let (p, _wire) = memory_pair(
        PortInfo {
            name: "mem0".into(),
            mac: MAC,
            max_frame: 1514,
        },
        64,
        TxMode::Discard,
    );
    p.with_generator(Generator::new(frames, Pace::Unlimited, None))
}

/// Drains every queue batch by batch until `stop`; returns datagrams taken.
///
/// With a queue per namespace it finds the queues to drain as l3nsd's service thread does:
/// each queue has a bit in this thread's ready set ([`Waiter`]), which the worker sets at
/// each hand-off, and the thread visits the queues whose bits it takes instead of reading
/// every queue's count; and, as that thread does, from `MAIL_FROM_QUEUES` queues on it takes
/// mail (`Waiter::accept_mail`): the worker hands the datagrams of a round for all of its
/// queues over as one batch, and the thread takes each run of them out of its socket's
/// queue. (It spins instead of parking: the worker never waits for it.) With the one shared
/// queue it just drains that queue: a consumer spinning on its count would take the line
/// from the worker at every hand-off (100,000 namespaces ran ~10% slower in interleaved
/// pairs).
fn consumer(
    queues: Vec<Arc<SocketQueue>>,
    socket_queue: &[(SocketId, usize)],
    per_queue: bool,
    stop: Arc<AtomicBool>,
    core: usize,
) -> std::thread::JoinHandle<u64> {
    // The queue of each socket id (`usize::MAX`: not a benchmark socket).
    let top = socket_queue.iter().map(|(s, _)| s.0 as usize + 1).max();
    let mut queue_of = vec![usize::MAX; top.unwrap_or(0)];
    for &(s, q) in socket_queue {
        queue_of[s.0 as usize] = q;
    }
    let (registered, wait_registered) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
        let waiter = Waiter::current();
        if per_queue {
            if queues.len() >= MAIL_FROM_QUEUES {
                waiter.accept_mail();
            }
            for (bit, q) in queues.iter().enumerate() {
                q.set_ready_bit(&waiter, bit);
            }
        }
        let _ = registered.send(());
        let drain = |q: &SocketQueue| {
            let mut n = 0u64;
            while let Some(b) = q.pop_batch() {
                n += b.len() as u64;
                q.recycle(b);
            }
            n
        };
        let mut n = 0u64;
        let mut visit = Vec::new();
        loop {
            let done = stop.load(Ordering::Acquire);
            let before = n;
            if per_queue {
                while let Some(mail) = waiter.take_mail() {
                    let queue = |socket: SocketId| {
                        queue_of
                            .get(socket.0 as usize)
                            .copied()
                            .filter(|&q| q < queues.len())
                            .expect("mail for a benchmark socket")
                    };
                    // As l3nsd's service thread (`Slots::take_mail`): one socket's batch is
                    // one run, no walk; otherwise each run is taken out of its queue.
                    match mail.one_socket() {
                        Some(socket) => queues[queue(socket)].took_mail(mail.len()),
                        None => {
                            for run in mail.metas().chunk_by(|a, b| a.socket == b.socket) {
                                queues[queue(run[0].socket)].took_mail(run.len());
                            }
                        }
                    }
                    n += mail.len() as u64;
                    queues[0].recycle(mail);
                }
                waiter.ready.take(|bit| visit.push(bit));
                for &bit in &visit {
                    n += drain(&queues[bit]);
                }
                visit.clear();
            } else {
                n += queues.iter().map(|q| drain(q)).sum::<u64>();
            }
            if done && n == before {
                return n;
            }
        }
    });
    // The worker starts once every queue has its bit.
    let _ = wait_registered.recv();
    handle
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (0 when unavailable).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn ns_totals(rt: &Runtime, ids: impl Iterator<Item = NsId>) -> (u64, u64) {
    let mut delivered = 0;
    let mut dropped = 0;
    for id in ids {
        let s = rt.stats.ns(id);
        delivered += s.delivered + s.broadcast_delivered;
        dropped += s.dropped_no_socket + s.dropped_queue_full + s.dropped_ns_gone;
    }
    (delivered, dropped)
}

/// What runs beside the worker in a scenario.
#[derive(Copy, Clone, PartialEq)]
enum Beside {
    Nothing,
    /// Push/pull changes at `--churn-rate`.
    Churn,
    /// A Prometheus scrape (full render of every series) every `--scrape-ms`.
    Scrape,
}

fn run_worker(
    s: &mut Setup,
    args: &Args,
    name: &str,
    frames: Vec<Vec<u8>>,
    beside: Beside,
) -> Scenario {
    let churn = beside == Beside::Churn;
    let ids: Vec<NsId> = (0..=args.namespaces as u32).map(NsId).collect();
    let (d0, x0) = ns_totals(&s.rt, ids.iter().copied());
    let stop = Arc::new(AtomicBool::new(false));
    let cons = consumer(
        s.queues.clone(),
        &s.socket_queue,
        args.queue_per_ns,
        stop.clone(),
        args.core + 1,
    );
    let mut worker = Worker::new(
        WorkerConfig {
            burst: args.burst,
            ..WorkerConfig::default()
        },
        vec![WorkerPort {
            port: port(frames),
            dev: s.dev,
            index: 0,
        }],
        s.rt.shared.clone(),
        s.rt.stats.workers[0].clone(),
    );
    let secs = args.seconds;
    let core = args.core;
    let running = Arc::new(AtomicBool::new(true));
    let worker_running = running.clone();
    let packets = Arc::new(AtomicU64::new(0));
    let worker_packets = packets.clone();
    let start = Instant::now();
    let w = std::thread::spawn(move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
        let mut n = 0u64;
        let t0 = Instant::now();
        let cpu0 = thread_cpu_ns();
        // The time each poll is handed moves as in `Worker::run` (a fixed one stopped the
        // worker's timers: with a queue per namespace, the queues waiting for their
        // consumer's wake-up piled up, ~45 MB a second).
        let mut clock = PollClock::new();
        while t0.elapsed().as_secs_f64() < secs {
            for _ in 0..1024 {
                n += worker.poll(clock.now()) as u64;
            }
        }
        let cpu = thread_cpu_ns().saturating_sub(cpu0);
        worker_packets.store(n, Ordering::Release);
        worker_running.store(false, Ordering::Release);
        (t0.elapsed().as_secs_f64(), cpu)
    });
    // This thread applies the churn or renders the scrapes: like l3nsd's control and
    // metrics threads, it runs on a core no worker holds (the consumer's).
    core_affinity::set_for_current(core_affinity::CoreId { id: core + 1 });
    let mut changes = 0u64;
    if beside == Beside::Scrape {
        let source = l3ns_control::metrics::MetricsSource::from_runtime(&s.rt);
        let every = Duration::from_millis(args.scrape_ms);
        let mut render_time = Duration::ZERO;
        let mut next = Instant::now();
        while running.load(Ordering::Acquire) {
            if Instant::now() >= next {
                let t = Instant::now();
                black_box(source.render().len());
                render_time += t.elapsed();
                changes += 1;
                next += every;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!(
            "scrape: {changes} renders, {:.2} ms each on average",
            render_time.as_secs_f64() * 1e3 / changes.max(1) as f64
        );
    }
    if churn {
        // Pull one address and push it to the next namespace, paced to `churn_rate` changes/s.
        let root = NsId::ROOT;
        let mut k = 0usize;
        let mut owners: Vec<usize> = (0..s.owned.len()).map(|i| i / args.addrs_per_ns).collect();
        // Like a control thread serving requests: it wakes every `--churn-tick-us` and
        // applies the changes due as one batch (one snapshot published for all of them, as
        // the daemon's control thread does with the requests queued meanwhile), then sleeps
        // until the next tick (at most 1 ms), leaving the cores to the worker and the
        // consumer. (Spinning here would steal a third of a core on this 2-core machine and
        // measure the scheduler, not the dataplane.)
        let tick = args.churn_tick_us as f64 / 1e6;
        let cpu0 = thread_cpu_ns();
        while running.load(Ordering::Acquire) {
            let now = start.elapsed().as_secs_f64();
            let due = (now * args.churn_rate as f64) as u64;
            if changes >= due {
                // Idle: free the snapshots the worker has let go of.
                s.rt.reclaim();
                let next_tick = if tick > 0.0 {
                    ((now / tick).floor() + 1.0) * tick
                } else {
                    0.0
                };
                let next = ((changes + 1) as f64 / args.churn_rate as f64).max(next_tick);
                let wait = (next - start.elapsed().as_secs_f64()).clamp(0.0, 0.001);
                std::thread::sleep(Duration::from_secs_f64(wait));
                continue;
            }
            let owned = &s.owned;
            s.rt.batch(|rt| {
                while changes < due {
                    let i = (k * 7919) % owned.len();
                    let a = owned[i];
                    let to = (owners[i] + 1) % args.namespaces;
                    let (from, to_name) = (ns_name(owners[i]), ns_name(to));
                    rt.apply("addr_pull", |m| {
                        m.addr_pull(root, "mem0", a, None, &from).map(|c| ((), c))
                    })
                    .unwrap();
                    rt.apply("addr_push", |m| {
                        m.addr_push(root, "mem0", a, None, &to_name)
                            .map(|c| ((), c))
                    })
                    .unwrap();
                    owners[i] = to;
                    changes += 2;
                    k += 1;
                }
            });
        }
        let cpu = thread_cpu_ns().saturating_sub(cpu0);
        eprintln!(
            "churn: {changes} changes, control thread busy {:.1}% of the run ({:.1} µs per change)",
            cpu as f64 / 1e9 / start.elapsed().as_secs_f64() * 100.0,
            cpu as f64 / 1e3 / changes.max(1) as f64
        );
    }
    let (elapsed, cpu) = w.join().unwrap();
    stop.store(true, Ordering::Release);
    let consumed = cons.join().unwrap();
    let pk = packets.load(Ordering::Acquire);
    let (d1, x1) = ns_totals(&s.rt, ids.into_iter());
    Scenario {
        name: name.into(),
        packets: pk,
        seconds: elapsed,
        mpps: pk as f64 / elapsed / 1e6,
        ns_per_packet: elapsed * 1e9 / pk as f64,
        cpu_ns_per_packet: cpu as f64 / pk.max(1) as f64,
        deliveries: d1 - d0,
        deliveries_per_second: (d1 - d0) as f64 / elapsed,
        dropped: x1 - x0,
        consumed,
        changes_applied: changes,
    }
}

fn ceiling(args: &Args, frames: Vec<Vec<u8>>) -> Scenario {
    let mut p = port(frames);
    let secs = args.seconds;
    let core = args.core;
    let (n, elapsed, cpu) = std::thread::spawn(move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
        let cpu0 = thread_cpu_ns();
        let t0 = Instant::now();
        let mut n = 0u64;
        let mut sum = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            for _ in 0..1024 {
                n += p.rx_burst(32, |f| sum = sum.wrapping_add(u64::from(f[30]))) as u64;
            }
        }
        black_box(sum);
        (
            n,
            t0.elapsed().as_secs_f64(),
            thread_cpu_ns().saturating_sub(cpu0),
        )
    })
    .join()
    .unwrap();
    Scenario {
        name: "ceiling (rx + free only)".into(),
        packets: n,
        seconds: elapsed,
        mpps: n as f64 / elapsed / 1e6,
        ns_per_packet: elapsed * 1e9 / n as f64,
        cpu_ns_per_packet: cpu as f64 / n.max(1) as f64,
        deliveries: 0,
        deliveries_per_second: 0.0,
        dropped: 0,
        consumed: 0,
        changes_applied: 0,
    }
}

fn main() {
    let args = Args::parse();
    // Before anything else, as in l3nsd: may re-execute the program.
    let heap_status = heap::apply(args.heap);
    let t = Instant::now();
    let mut s = setup(&args);
    let setup_s = t.elapsed().as_secs_f64();
    // `owned` lists the addresses namespace by namespace.
    let targets = args
        .dst_namespaces
        .map_or(s.owned.len(), |n| n as usize * args.addrs_per_ns)
        .min(s.owned.len());
    let unicast = frames(&s.owned[..targets], 0.0, args.frames as usize);
    let mix = frames(&s.owned[..targets], 0.05, args.frames as usize);
    let want = |k: &str| args.only.iter().any(|o| o == k);
    let mut results: Vec<(&str, Scenario)> = Vec::new();
    if want("ceiling") {
        results.push(("ceiling", ceiling(&args, unicast.clone())));
    }
    let plan: [(&str, String, &Vec<Vec<u8>>, Beside); 5] = [
        ("unicast", "unicast".into(), &unicast, Beside::Nothing),
        (
            "mix",
            "broadcast_mix (5% to 100 listeners)".into(),
            &mix,
            Beside::Nothing,
        ),
        (
            "churn",
            format!("unicast + churn ({}/s)", args.churn_rate),
            &unicast,
            Beside::Churn,
        ),
        (
            "scrape",
            format!("unicast + scrape every {} ms", args.scrape_ms),
            &unicast,
            Beside::Scrape,
        ),
        (
            "again",
            "unicast (again, after the others)".into(),
            &unicast,
            Beside::Nothing,
        ),
    ];
    for (key, name, f, beside) in plan {
        if want(key) {
            let r = run_worker(&mut s, &args, &name, f.clone(), beside);
            results.push((key, r));
        }
    }
    let mpps = |k: &str| {
        results
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, r)| r.mpps)
    };
    let unicast_vs_ceiling = mpps("unicast").zip(mpps("ceiling")).map(|(u, c)| u / c);
    let churn_drop = mpps("churn").zip(mpps("unicast")).map(|(c, u)| 1.0 - c / u);
    // The scrape scenario is compared with the mean of the unicast runs before and after it.
    let scrape_drop = match (mpps("scrape"), mpps("unicast"), mpps("again")) {
        (Some(sc), Some(u), Some(a)) => Some(1.0 - sc / ((u + a) / 2.0)),
        _ => None,
    };
    let results: Vec<Scenario> = results.into_iter().map(|(_, r)| r).collect();
    if args.json {
        let out = serde_json::json!({
            "namespaces": args.namespaces,
            "addresses": args.namespaces * args.addrs_per_ns,
            "destinations_from_namespaces": targets / args.addrs_per_ns.max(1),
            // Over every scenario run: how many namespaces the traffic reached.
            "namespaces_received": (0..=args.namespaces as u32)
                .filter(|&i| s.rt.stats.ns(NsId(i)).rx_packets > 0)
                .count(),
            "frames": args.frames,
            "setup_seconds": setup_s,
            "heap": args.heap.name(),
            "glibc_malloc_hugetlb": heap_status.tunable,
            "scenarios": results,
            "unicast_vs_ceiling": unicast_vs_ceiling,
            "churn_throughput_drop": churn_drop,
            "scrape_throughput_drop": scrape_drop,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    println!("{} namespaces x {} addresses ({} addresses), setup {:.1} s, {} s per scenario, one worker core, {heap_status}", args.namespaces, args.addrs_per_ns, s.owned.len(), setup_s, args.seconds);
    if args.dst_namespaces.is_some() {
        println!(
            "traffic to the addresses of the first {} namespaces only",
            targets / args.addrs_per_ns.max(1)
        );
    }
    println!(
        "{:<40} {:>10} {:>8} {:>8} {:>14} {:>10} {:>9}",
        "scenario", "Mpps", "ns/pkt", "cpu ns", "deliveries/s", "dropped", "changes"
    );
    for r in &results {
        println!(
            "{:<40} {:>10.2} {:>8.1} {:>8.1} {:>14.0} {:>10} {:>9}",
            r.name,
            r.mpps,
            r.ns_per_packet,
            r.cpu_ns_per_packet,
            r.deliveries_per_second,
            r.dropped,
            r.changes_applied
        );
    }
    let pct = |x: Option<f64>| x.map_or("n/a".to_string(), |x| format!("{:.1}%", x * 100.0));
    println!(
        "unicast / ceiling = {}; throughput drop under churn = {}; with a scrape every {} ms (vs the mean of the two plain unicast runs) = {}",
        unicast_vs_ceiling.map_or("n/a".to_string(), |x| format!("{x:.3}")),
        pct(churn_drop),
        args.scrape_ms,
        pct(scrape_drop)
    );
}
