//! Where l3ns's memory goes per namespace and per address (issue 7's memory target): live heap
//! bytes, counted by a global allocator wrapper, after each part of the same set-up as
//! `l3ns-throughput` (N namespaces in the root, A addresses pushed to each, a socket on
//! `0.0.0.0:9` in each). Unlike the process RSS that `bench/scripts/scale.py` reports, these
//! figures are exact and do not depend on the allocator's slack or on other load.
//!
//! Parts: the control-plane model alone; the published snapshot (the runtime minus the model
//! and what an empty runtime allocates); a worker's per-namespace counters after a packet to
//! every namespace; and the peak while the set-up batch is published.

use clap::Parser;
use l3ns_control::config::DEFAULT_QUEUE_DEPTH;
use l3ns_control::heap::{self, HeapMode};
use l3ns_control::model::Model;
use l3ns_control::runtime::Runtime;
use l3ns_dataplane::counters::WorkerCounters;
use l3ns_dataplane::types::{LoopbackMode, NsId, Scope};
use peak_alloc::PeakAlloc;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The system allocator, counting live and peak requested bytes.
#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn live() -> usize {
    ALLOC.current_usage()
}

#[derive(Parser, Debug)]
#[command(
    about = "Live heap bytes per namespace and per address of l3ns's control model, published \
             snapshot and counters (exact, from a counting allocator)"
)]
struct Args {
    /// Namespace counts to measure (comma-separated); each point is measured against the
    /// first one, so start with a small count.
    #[arg(long, value_delimiter = ',', default_value = "1,100000")]
    namespaces: Vec<usize>,
    /// Addresses pushed to each namespace (comma-separated: every combination with
    /// `--namespaces` is measured).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    addrs_per_ns: Vec<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Give each namespace's socket a queue of its own (1,024 datagrams deep, as l3nsd's
    /// default `queue_depth`: l3nsd makes one per socket) instead of one queue shared by all.
    #[arg(long)]
    queue_per_ns: bool,
    #[arg(long, value_enum, value_name = "MODE", default_value_t = HeapMode::Thp, help = heap::HELP)]
    heap: HeapMode,
}

#[derive(Serialize, Clone, Copy, Default)]
struct Point {
    namespaces: usize,
    addresses: usize,
    /// The model alone, built by the same operations and compacted.
    model: usize,
    /// A runtime with the same set-up, published (model + snapshot + runtime bookkeeping).
    runtime: usize,
    /// The highest live total while the runtime was set up and published.
    runtime_peak: usize,
    /// One worker's per-namespace counters, after it counted a packet in every namespace.
    worker_counters: usize,
    /// `OwnerTable::memory_usage()`: the snapshot's address tables and namespace views.
    snapshot_addr_tables: usize,
    snapshot_ns_views: usize,
}

fn addr_of(ns: usize, k: usize, per_ns: usize) -> Ipv4Addr {
    let i = (ns * per_ns + k) as u32 + 1;
    Ipv4Addr::from(0x0a00_0000 | i)
}

fn build_model(n: usize, a: usize) -> Model {
    let mut m = Model::new();
    m.add_device("mem0", [2, 0, 0, 0, 0, 1]).unwrap();
    for ns in 0..n {
        let name = format!("t{ns}");
        let (id, _) = m
            .ns_add(NsId::ROOT, &name, None, LoopbackMode::Isolated)
            .unwrap();
        for k in 0..a {
            let ad = addr_of(ns, k, a);
            m.addr_add(NsId::ROOT, "mem0", ad, 8, None, None, Scope::Global)
                .unwrap();
            m.addr_push(NsId::ROOT, "mem0", ad, None, &name).unwrap();
        }
        m.sock_bind(
            id,
            l3ns_dataplane::types::Proto::Udp,
            Ipv4Addr::UNSPECIFIED,
            9,
            "app",
        )
        .unwrap();
    }
    m
}

fn measure(n: usize, a: usize, queue_per_ns: bool) -> Point {
    let base = live();
    let mut model = build_model(n, a);
    // As the runtime keeps it after a large batch (`Model::compact`).
    model.compact();
    let model_bytes = live() - base;
    drop(model);

    let base = live();
    ALLOC.reset_peak_usage();
    let mut rt = Runtime::new(Model::new(), 1, vec!["mem0".into()], 1024);
    let q = rt.new_shared_queue(1024);
    let empty = live() - base;
    let dev = "mem0";
    rt.add_device(dev, [2, 0, 0, 0, 0, 1]).unwrap();
    rt.begin_batch();
    let mut ids = Vec::with_capacity(n);
    for ns in 0..n {
        let name = format!("t{ns}");
        let id = rt
            .apply("ns_add", |m| {
                m.ns_add(NsId::ROOT, &name, None, LoopbackMode::Isolated)
            })
            .unwrap();
        for k in 0..a {
            let ad = addr_of(ns, k, a);
            rt.apply("addr_add", |m| {
                m.addr_add(NsId::ROOT, dev, ad, 8, None, None, Scope::Global)
                    .map(|c| ((), c))
            })
            .unwrap();
            rt.apply("addr_push", |m| {
                m.addr_push(NsId::ROOT, dev, ad, None, &name)
                    .map(|c| ((), c))
            })
            .unwrap();
        }
        let q = if queue_per_ns {
            rt.new_shared_queue(DEFAULT_QUEUE_DEPTH)
        } else {
            q.clone()
        };
        rt.bind_shared(id, Ipv4Addr::UNSPECIFIED, 9, "app", q)
            .unwrap();
        ids.push(id);
    }
    rt.end_batch();
    rt.reclaim();
    let runtime = live() - base - empty;
    let runtime_peak = ALLOC.peak_usage() - base - empty;
    let (snapshot_addr_tables, snapshot_ns_views) = rt.snapshot().memory_usage();

    let before = live();
    let wc = Arc::new(WorkerCounters::new(1));
    let mut w = wc.writer();
    for &id in &ids {
        w.ns(id).rx_packets.inc();
    }
    drop(w);
    let worker_counters = live() - before;
    drop(wc);
    drop(ids);
    drop(rt);
    Point {
        namespaces: n,
        addresses: n * a,
        model: model_bytes,
        runtime,
        runtime_peak,
        worker_counters,
        snapshot_addr_tables,
        snapshot_ns_views,
    }
}

fn main() {
    let args = Args::parse();
    // Before anything else, as in l3nsd: may re-execute the program.
    let heap_status = heap::apply(args.heap);
    let points: Vec<Point> = args
        .namespaces
        .iter()
        .flat_map(|&n| args.addrs_per_ns.iter().map(move |&a| (n, a)))
        .map(|(n, a)| measure(n, a, args.queue_per_ns))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&points).unwrap());
        return;
    }
    println!("{heap_status} (live heap bytes do not depend on it)");
    let first = points[0];
    println!(
        "{:>9} {:>9} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "ns", "addrs", "model", "runtime", "peak", "counters", "snap addr", "snap ns"
    );
    for p in &points {
        println!(
            "{:>9} {:>9} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
            p.namespaces,
            p.addresses,
            p.model,
            p.runtime,
            p.runtime_peak,
            p.worker_counters,
            p.snapshot_addr_tables,
            p.snapshot_ns_views
        );
    }
    // Marginal costs against the first point: per namespace added (with its addresses and
    // socket) and per address added.
    for p in &points[1..] {
        let total = |q: &Point| (q.runtime + q.worker_counters) as f64;
        let grow = total(p) - total(&first);
        let dn = p.namespaces as f64 - first.namespaces as f64;
        let da = p.addresses as f64 - first.addresses as f64;
        let per_ns = if dn > 0.0 {
            format!("{:.0} B per namespace", grow / dn)
        } else {
            "same namespaces".to_string()
        };
        println!(
            "{}x{} -> {}x{}: runtime + one worker's counters grew {:.1} MB: {per_ns}, {:.1} B \
             per address (model alone {:.1} B per address)",
            first.namespaces,
            first.addresses / first.namespaces.max(1),
            p.namespaces,
            p.addresses / p.namespaces.max(1),
            grow / 1e6,
            grow / da,
            (p.model as f64 - first.model as f64) / da,
        );
    }
}
