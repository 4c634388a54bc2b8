//! l3ns benchmarks: harness helpers shared by the criterion benches and the `l3ns-pktgen` generator.
#![forbid(unsafe_code)]

pub mod pktgen;

pub mod owner_table {
    //! Synthetic `OwnerTable` snapshots and the measurements of `benches/owner_table.rs`
    //! (issue 2): table building, push → visible latency, memory per namespace / address.

    use arc_swap::ArcSwap;
    use l3ns_dataplane::owner_table::{AddrEntry, NsView, OwnerTable};
    use l3ns_dataplane::rules;
    use l3ns_dataplane::types::{DevId, Device, IfAddr, NsId, Scope};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// The one device of the root family every synthetic table has.
    pub const DEV: DevId = DevId(1);
    pub const ROOT: NsId = NsId::ROOT;
    const NET8: u32 = 0x0a00_0000;

    /// `n` distinct addresses drawn uniformly from `10.0.0.0/8` (network and broadcast
    /// excluded), in random order.
    pub fn spread_addresses(n: usize, seed: u64) -> Vec<u32> {
        assert!(n < (1 << 23), "keep the set sparse in 10.0.0.0/8");
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut seen = HashSet::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let a = NET8 | rng.gen_range(1..0x00ff_ffff);
            if seen.insert(a) {
                out.push(a);
            }
        }
        out
    }

    /// Every host address of `10.1.0.0/16`: 10.1.0.1 … 10.1.255.254 (65,534 addresses).
    pub fn dense_addresses() -> Vec<u32> {
        (0x0a01_0001..0x0a01_ffff).collect()
    }

    /// `n` addresses of `10.0.0.0/8` that are not in `owned`.
    pub fn unowned_addresses(owned: &[u32], n: usize, seed: u64) -> Vec<u32> {
        let owned: HashSet<u32> = owned.iter().copied().collect();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let a = NET8 | rng.gen_range(1..0x00ff_ffff);
            if !owned.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// `n` destinations drawn uniformly (with repetition) from `pool`.
    pub fn sample(pool: &[u32], n: usize, seed: u64) -> Vec<u32> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n).map(|_| pool[rng.gen_range(0..pool.len())]).collect()
    }

    /// Half from `owned`, half from `unowned`, shuffled together.
    pub fn mixed(owned: &[u32], unowned: &[u32], n: usize, seed: u64) -> Vec<u32> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                if rng.gen::<bool>() {
                    owned[rng.gen_range(0..owned.len())]
                } else {
                    unowned[rng.gen_range(0..unowned.len())]
                }
            })
            .collect()
    }

    fn prefix_of(addrs: &[u32]) -> u8 {
        if addrs.iter().all(|a| a >> 16 == 0x0a01) {
            16
        } else {
            8
        }
    }

    /// The ifaddr `local/prefix` on `DEV`, owned by `owner`.
    pub fn ifaddr(local: u32, prefix: u8, owner: NsId) -> IfAddr {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        IfAddr {
            dev: DEV,
            label: "eth0".into(),
            local: Ipv4Addr::from(local),
            prefix,
            broadcast: Ipv4Addr::from(local | !mask),
            scope: Scope::Global,
            owner,
        }
    }

    /// Namespace that owns `addrs[i]` in `build_table_from(addrs, per_ns)`.
    pub fn owner_of_index(i: usize, per_ns: usize) -> NsId {
        NsId((i / per_ns) as u32 + 1)
    }

    /// A snapshot the way the publisher builds one: the root L2 namespace (ns 0) with one
    /// device `eth0`, its connected route, and L3 children ns 1, 2, … each owning `per_ns`
    /// consecutive entries of `addrs` (all on `eth0`, `/8` or, for the dense set, `/16`).
    pub fn build_table_from(addrs: &[u32], per_ns: usize) -> OwnerTable {
        let prefix = prefix_of(addrs);
        let mut t = OwnerTable::new();
        t.set_device(Device {
            id: DEV,
            name: "eth0".into(),
            owner: ROOT,
            mac: [2, 0, 0, 0, 0, 1],
        });
        t.set_routes(
            ROOT,
            vec![rules::connected_route(&ifaddr(addrs[0], prefix, ROOT))],
        );
        t.set_namespace(view(ROOT, "root".into(), None, Vec::new()));
        for (n, chunk) in addrs.chunks(per_ns).enumerate() {
            let id = NsId(n as u32 + 1);
            let ifaddrs: Vec<IfAddr> = chunk.iter().map(|&a| ifaddr(a, prefix, id)).collect();
            for ifa in &ifaddrs {
                t.set_local(ROOT, ifa.local, &[AddrEntry::of(ifa)]);
            }
            t.set_namespace(view(id, format!("ns{}", id.0), Some(ROOT), ifaddrs));
        }
        t.set_version(1);
        t
    }

    /// `addresses` spread over `10.0.0.0/8`, `addresses / namespaces` per namespace.
    pub fn build_table(namespaces: usize, addresses: usize) -> OwnerTable {
        let addrs = spread_addresses(addresses, 1);
        build_table_from(&addrs, addresses.div_ceil(namespaces))
    }

    fn view(id: NsId, name: String, parent: Option<NsId>, ifaddrs: Vec<IfAddr>) -> NsView {
        NsView::in_root_family(id, &name, parent, ifaddrs, &[])
    }

    /// One `addr push`: `local` moves from namespace `from` to `to`. Clones `cur`, applies
    /// `set_local` (the owner change) and `set_namespace` for both namespaces (their ifaddr
    /// lists changed), bumps the version.
    pub fn push_snapshot(cur: &OwnerTable, local: Ipv4Addr, from: NsId, to: NsId) -> OwnerTable {
        let mut next = cur.clone();
        let mut src = cur.namespace(from).expect("source namespace").clone();
        let pos = src
            .ifaddrs
            .iter()
            .position(|i| i.local == local)
            .expect("source owns the address");
        let ifa = src.ifaddrs.remove(pos);
        let mut dst = cur.namespace(to).expect("destination namespace").clone();
        next.set_local(ROOT, local, &[AddrEntry::owned(&ifa, to)]);
        dst.ifaddrs.push(ifa);
        next.set_namespace(src);
        next.set_namespace(dst);
        next.set_version(cur.version() + 1);
        next
    }

    /// Per-push timings, in nanoseconds.
    #[derive(Clone, Debug, Default)]
    pub struct PushLatencies {
        /// Clone + `set_*` + `set_version` (building the next snapshot).
        pub build: Vec<u64>,
        /// `ArcSwap::store` (includes dropping the previous snapshot when it was the last ref).
        pub store: Vec<u64>,
        /// Publish start → the reader's `load()` returns the new version.
        pub visible: Vec<u64>,
    }

    /// Percentiles of a sample (sorted in place).
    #[derive(Copy, Clone, Debug)]
    pub struct Percentiles {
        pub n: usize,
        pub p50: u64,
        pub p99: u64,
        pub p999: u64,
        pub max: u64,
    }

    pub fn percentiles(v: &mut [u64]) -> Percentiles {
        assert!(!v.is_empty());
        v.sort_unstable();
        // Nearest-rank: the smallest sample with at least q of the samples at or below it.
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles {
            n: v.len(),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: v[v.len() - 1],
        }
    }

    /// Push → visible: a publisher thread (pinned to core 0) makes `pushes` snapshots with
    /// `push_snapshot` (random address, random destination namespace) and `store`s each; a
    /// reader thread (pinned to core 1) spins on `load()` and timestamps the first load that
    /// returns the new version. Pushes are sequential: the next starts only after the reader
    /// saw the previous one, so every sample is one push into an otherwise idle table. With `reader_burst > 0` the
    /// reader behaves like a worker instead: between loads it does `reader_burst` owner
    /// lookups on the snapshot it holds.
    pub fn push_latency(
        table: OwnerTable,
        addrs: &[u32],
        per_ns: usize,
        pushes: usize,
        reader_burst: usize,
        seed: u64,
    ) -> PushLatencies {
        // Who owns which address now (addresses move as pushes happen).
        let mut owner: Vec<NsId> = (0..addrs.len())
            .map(|i| owner_of_index(i, per_ns))
            .collect();
        let namespaces = addrs.len().div_ceil(per_ns);
        let start_version = table.version();
        let swap = Arc::new(ArcSwap::from_pointee(table));
        let seen = Arc::new(AtomicU64::new(start_version));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let probes: Vec<u32> = sample(addrs, 4096, seed ^ 0x5eed);

        let reader = {
            let (swap, seen, stop) = (swap.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                pin(1);
                let mut times = Vec::with_capacity(pushes);
                let mut last = start_version;
                let mut sink = 0u64;
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let g = swap.load();
                    let v = g.version();
                    if v != last {
                        times.push(epoch.elapsed().as_nanos() as u64);
                        last = v;
                        seen.store(v, Ordering::Release);
                    }
                    if reader_burst > 0 {
                        let fam = g.family_of_dev(DEV).expect("eth0's family");
                        for _ in 0..reader_burst {
                            let d = probes[k & 4095];
                            k += 1;
                            sink += u64::from(
                                OwnerTable::owner_in(fam, DEV, Ipv4Addr::from(d))
                                    .map_or(0, |n| n.0),
                            );
                        }
                    } else {
                        std::hint::spin_loop();
                    }
                }
                std::hint::black_box(sink);
                times
            })
        };

        let (mut out, starts) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    pin(0);
                    let mut rng = SmallRng::seed_from_u64(seed);
                    let mut out = PushLatencies::default();
                    let mut starts = Vec::with_capacity(pushes);
                    // Let the reader start spinning.
                    std::thread::sleep(Duration::from_millis(20));
                    for _ in 0..pushes {
                        let i = rng.gen_range(0..addrs.len());
                        let from = owner[i];
                        let mut to = NsId(rng.gen_range(1..=namespaces as u32));
                        if to == from {
                            to = NsId(to.0 % namespaces as u32 + 1);
                        }
                        let t0 = Instant::now();
                        let cur = swap.load_full();
                        let next = push_snapshot(&cur, Ipv4Addr::from(addrs[i]), from, to);
                        drop(cur);
                        let version = next.version();
                        let t1 = Instant::now();
                        swap.store(Arc::new(next));
                        let t2 = Instant::now();
                        owner[i] = to;
                        starts.push((t0 - epoch).as_nanos() as u64);
                        out.build.push((t1 - t0).as_nanos() as u64);
                        out.store.push((t2 - t1).as_nanos() as u64);
                        while seen.load(Ordering::Acquire) != version {
                            std::hint::spin_loop();
                        }
                    }
                    stop.store(true, Ordering::Relaxed);
                    (out, starts)
                })
                .join()
                .expect("publisher thread")
        });
        let seen_at = reader.join().expect("reader thread");
        assert_eq!(seen_at.len(), pushes, "the reader saw every version");
        out.visible = starts.iter().zip(&seen_at).map(|(s, e)| e - s).collect();
        out
    }

    /// Pins the calling thread to core `id` when the machine has it (best effort).
    pub fn pin(id: usize) {
        if let Some(core) =
            core_affinity::get_core_ids().and_then(|c| c.into_iter().find(|c| c.id == id))
        {
            core_affinity::set_for_current(core);
        }
    }

    /// Resident set size of this process in bytes (`/proc/self/statm`, field 2 × page size).
    pub fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// Memory of one snapshot with `namespaces` namespaces and `addresses` spread addresses.
    #[derive(Copy, Clone, Debug)]
    pub struct MemoryReport {
        pub namespaces: usize,
        pub addresses: usize,
        /// `OwnerTable::memory_usage()`: (address tables, namespace views).
        pub addr_bytes: usize,
        pub ns_bytes: usize,
        /// RSS after building minus RSS before (address list generated before the first read).
        pub rss_delta: u64,
    }

    /// Measures one snapshot; meant to run in a fresh process (RSS is process-wide).
    pub fn memory_report(namespaces: usize, addresses: usize) -> MemoryReport {
        let addrs = spread_addresses(addresses, 1);
        let per_ns = addresses.div_ceil(namespaces);
        let before = rss_bytes();
        let t = build_table_from(&addrs, per_ns);
        let after = rss_bytes();
        let (addr_bytes, ns_bytes) = t.memory_usage();
        std::hint::black_box(&t);
        MemoryReport {
            namespaces,
            addresses,
            addr_bytes,
            ns_bytes,
            rss_delta: after.saturating_sub(before),
        }
    }
}
