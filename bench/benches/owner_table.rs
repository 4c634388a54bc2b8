//! Issue 2: owner-table micro-benchmarks. Results and commands: `bench/RESULTS.md`.
//!
//! `cargo bench -p l3ns-bench --bench owner_table -- --warm-up-time 1 --measurement-time 3`
//! runs, in order:
//! 1. `owner_lookup/*` (criterion): `OwnerTable::owner_in` over a precomputed array of
//!    random destinations, family resolved once; throughput in lookups/s.
//! 2. `publish_latency` (custom, printed): push → visible-to-a-reader percentiles.
//! 3. `memory` (custom, printed): `memory_usage()` and RSS delta, each size in a fresh
//!    child process (this executable re-run with `L3NS_OWNER_TABLE_MEM=NS,ADDRS`).
//!
//! A filter argument selects parts by substring (`-- owner_lookup`, `-- publish_latency`,
//! `-- memory`). Without `--bench` (e.g. `cargo test --benches`) everything runs once, small.
#![forbid(unsafe_code)]

use arc_swap::ArcSwap;
use criterion::{black_box, Criterion, Throughput};
use l3ns_bench::owner_table::*;
use l3ns_dataplane::owner_table::OwnerTable;
use l3ns_dataplane::types::NsId;
use std::net::Ipv4Addr;

/// Destinations per criterion iteration (a batch loop, not one lookup per iteration).
const BATCH: usize = 4096;
/// Precomputed destinations (4 MiB): RNG cost is not measured.
const DESTS: usize = 1 << 20;

/// Sums owners so the lookups cannot be optimised away.
#[inline(never)]
fn lookup_batch(fam: &l3ns_dataplane::owner_table::Family, dsts: &[u32]) -> u64 {
    let mut acc = 0u64;
    for &d in dsts {
        if let Some(ns) = OwnerTable::owner_in(fam, DEV, Ipv4Addr::from(d)) {
            acc = acc.wrapping_add(u64::from(ns.0));
        }
    }
    acc
}

fn bench_batch(c: &mut Criterion, name: &str, table: &OwnerTable, dsts: &[u32]) {
    let fam = table.family_of_dev(DEV).expect("eth0's family");
    let mut g = c.benchmark_group("owner_lookup");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut off = 0usize;
    g.bench_function(name, |b| {
        b.iter(|| {
            let s = &dsts[off..off + BATCH];
            off = (off + BATCH) % dsts.len();
            black_box(lookup_batch(fam, black_box(s)))
        })
    });
    g.finish();
}

/// The worker's shape: per burst of 32, one `ArcSwap::load` + `family_of_dev`, then 32 lookups.
fn bench_bursts(c: &mut Criterion, name: &str, table: OwnerTable, dsts: &[u32]) {
    let swap = ArcSwap::from_pointee(table);
    let mut g = c.benchmark_group("owner_lookup");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut off = 0usize;
    g.bench_function(name, |b| {
        b.iter(|| {
            let s = &dsts[off..off + BATCH];
            off = (off + BATCH) % dsts.len();
            let mut acc = 0u64;
            for burst in s.chunks(32) {
                let snap = swap.load();
                let fam = snap.family_of_dev(DEV).expect("eth0's family");
                acc = acc.wrapping_add(lookup_batch(fam, black_box(burst)));
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn lookups(c: &mut Criterion, quick: bool) {
    let (ns, n) = if quick {
        (1_000, 10_000)
    } else {
        (10_000, 100_000)
    };
    let per_ns = n / ns;
    let addrs = spread_addresses(n, 1);
    let table = build_table_from(&addrs, per_ns);
    assert_eq!(table.family_of_dev(DEV).unwrap().addr_count(), n);
    let owned = sample(&addrs, DESTS, 2);
    // Sanity: every owned destination resolves to the namespace it was given to.
    for (i, &a) in addrs.iter().enumerate().step_by(997) {
        assert_eq!(
            table.owner(DEV, Ipv4Addr::from(a)),
            Some(owner_of_index(i, per_ns))
        );
    }
    bench_batch(c, &format!("owned/{n}addr_{ns}ns"), &table, &owned);
    let unowned = unowned_addresses(&addrs, 1 << 16, 3);
    let half = mixed(&addrs, &unowned, DESTS, 4);
    bench_batch(c, &format!("half_unowned/{n}addr_{ns}ns"), &table, &half);
    bench_bursts(
        c,
        &format!("owned_burst32_load/{n}addr_{ns}ns"),
        table,
        &owned,
    );

    let dense = dense_addresses();
    let dense_table = build_table_from(&dense, 10);
    bench_batch(
        c,
        "dense_slash16/65534addr_6554ns",
        &dense_table,
        &sample(&dense, DESTS, 5),
    );
    drop(dense_table);

    if !quick {
        let big = spread_addresses(1_000_000, 6);
        let big_table = build_table_from(&big, 10);
        bench_batch(
            c,
            "owned/1000000addr_100000ns",
            &big_table,
            &sample(&big, DESTS, 7),
        );
    }
}

fn publish(quick: bool) {
    let (ns, n, pushes) = if quick {
        (1_000, 10_000, 200)
    } else {
        (10_000, 100_000, 10_000)
    };
    let per_ns = n / ns;
    let addrs = spread_addresses(n, 1);
    // For comparison: building the whole snapshot from scratch (what sharing avoids).
    let mut full: Vec<u64> = (0..5)
        .map(|_| {
            let t0 = std::time::Instant::now();
            let t = black_box(build_table_from(&addrs, per_ns));
            let e = t0.elapsed().as_nanos() as u64;
            drop(t);
            e
        })
        .collect();
    full.sort_unstable();
    println!(
        "\nfull rebuild of the {n}-address snapshot: median of 5 = {} µs",
        full[2] / 1000
    );
    println!(
        "\npublish_latency: {pushes} sequential pushes at {n} addresses / {ns} namespaces (ns)"
    );
    println!(
        "{:<34} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "reader / phase", "n", "p50", "p99", "p999", "max"
    );
    for burst in [0usize, 32] {
        let table = build_table_from(&addrs, per_ns);
        let mut r = push_latency(table, &addrs, per_ns, pushes, burst, 42);
        let reader = if burst == 0 {
            "spin on load()"
        } else {
            "load() per 32 lookups"
        };
        for (phase, v) in [
            ("build (clone+set_*)", &mut r.build),
            ("store", &mut r.store),
            ("push start -> reader sees", &mut r.visible),
        ] {
            let p = percentiles(v);
            println!(
                "{:<34} {:>6} {:>9} {:>9} {:>9} {:>9}",
                format!("{reader}: {phase}"),
                p.n,
                p.p50,
                p.p99,
                p.p999,
                p.max
            );
        }
    }
    // Cross-check the semantics: after pushes, a fresh table agrees with the published one.
    let t = build_table_from(&addrs, per_ns);
    let next = push_snapshot(&t, Ipv4Addr::from(addrs[0]), NsId(1), NsId(2));
    assert_eq!(next.owner(DEV, Ipv4Addr::from(addrs[0])), Some(NsId(2)));
    assert_eq!(
        t.owner(DEV, Ipv4Addr::from(addrs[0])),
        Some(NsId(1)),
        "the old snapshot is unchanged"
    );
    assert_eq!(
        (
            next.namespace(NsId(1)).unwrap().ifaddrs.len(),
            next.namespace(NsId(2)).unwrap().ifaddrs.len()
        ),
        (per_ns - 1, per_ns + 1)
    );
}

fn memory(quick: bool) {
    let sizes: &[(usize, usize)] = if quick {
        &[(1_000, 10_000)]
    } else {
        &[(10_000, 100_000), (100_000, 1_000_000)]
    };
    println!("\nmemory: one snapshot, 10 addresses per namespace, spread over 10.0.0.0/8 (each size in a fresh process)");
    println!(
        "{:>8} {:>9} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "ns", "addrs", "addr tables", "ns views", "RSS delta", "B/addr", "B/ns", "RSS B/addr"
    );
    let exe = std::env::current_exe().expect("current exe");
    for &(ns, n) in sizes {
        let out = std::process::Command::new(&exe)
            .env("L3NS_OWNER_TABLE_MEM", format!("{ns},{n}"))
            .output()
            .expect("child process");
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        let [addr_b, ns_b, rss] = f[..] else {
            panic!("child said {line:?}")
        };
        println!(
            "{:>8} {:>9} {:>12} {:>12} {:>12} {:>10.1} {:>10.1} {:>10.1}",
            ns,
            n,
            addr_b,
            ns_b,
            rss,
            addr_b as f64 / n as f64,
            ns_b as f64 / ns as f64,
            rss as f64 / n as f64
        );
    }
}

/// The positional filter among criterion's arguments, if any.
fn filter(args: &[String]) -> Option<String> {
    const WITH_VALUE: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--profile-time",
        "--format",
        "-c",
    ];
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a.starts_with('-') {
            if WITH_VALUE.contains(&a.as_str()) {
                it.next();
            }
        } else {
            return Some(a.clone());
        }
    }
    None
}

fn main() {
    if let Ok(spec) = std::env::var("L3NS_OWNER_TABLE_MEM") {
        let (ns, n) = spec.split_once(',').expect("NS,ADDRS");
        let r = memory_report(ns.parse().expect("NS"), n.parse().expect("ADDRS"));
        println!("{} {} {}", r.addr_bytes, r.ns_bytes, r.rss_delta);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    let list = args.iter().any(|a| a == "--list");
    let f = filter(&args);
    // Criterion filters its own benchmarks; the custom parts run when the filter names them.
    let wants = |name: &str| f.as_deref().filter(|f| !name.contains(f)).is_none();
    let mut c = Criterion::default().configure_from_args();
    if !(f.is_some() && (wants("publish_latency") || wants("memory"))) {
        lookups(&mut c, quick);
    }
    c.final_summary();
    if list {
        return;
    }
    if wants("publish_latency") {
        publish(quick);
    }
    if wants("memory") {
        memory(quick);
    }
}
