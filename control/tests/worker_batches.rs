//! A consumer that stalls must not make the worker allocate once it has the batches a stall
//! needs: the worker keeps the empty batches consumers give back (last in, first out, within
//! a byte budget) instead of freeing all but a few and allocating again at the next stall.
//! (Under 100,000 address moves a second, the benchmark's consumer shared its core with the
//! control thread and the worker spent 8% of its time in malloc and realloc.)
//!
//! One thread plays worker and consumer in turn, so the stalls are exact: the worker polls
//! while nobody reads the socket, then the socket is drained, and again. Allocations are
//! counted on this thread during `Worker::poll` only.
//!
//! `unsafe` here is the counting global allocator alone (`GlobalAlloc` is an unsafe trait);
//! it forwards every call to the system allocator unchanged.
#![allow(unsafe_code)]

use l3ns_control::runtime::Runtime;
use l3ns_dataplane::port::memory::{memory_pair, Generator, Pace, TxMode};
use l3ns_dataplane::port::PortInfo;
use l3ns_dataplane::types::{LoopbackMode, NsId, Scope};
use l3ns_dataplane::wire::{build_udp, FrameAddrs};
use l3ns_dataplane::worker::{Worker, WorkerConfig, WorkerPort};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The system allocator, counting the allocations (and reallocations) made on a thread
/// while its `COUNTING` flag is set.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // `const`: no lazy initialisation, so reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping neither allocates
// nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// Polls a stall lasts: with bursts of 64, 64 batches of 64 datagrams left in the queue.
const STALL_POLLS: usize = 64;

#[test]
fn a_stalled_consumer_does_not_make_the_worker_allocate_once_warm() {
    let mut rt = Runtime::new(Default::default(), 1, vec!["eth0".into()], 1 << 16);
    let dev = rt.add_device("eth0", MAC).unwrap();
    let root = NsId::ROOT;
    let ns = rt
        .apply("ns_add", |m| {
            m.ns_add(root, "t0", None, LoopbackMode::Isolated)
        })
        .unwrap();
    let dst = Ipv4Addr::new(10, 0, 1, 1);
    rt.apply("addr_add", |m| {
        m.addr_add(root, "eth0", dst, 16, None, None, Scope::Global)
            .map(|c| ((), c))
    })
    .unwrap();
    rt.apply("addr_push", |m| {
        m.addr_push(root, "eth0", dst, None, "t0").map(|c| ((), c))
    })
    .unwrap();
    let mut socket = rt.udp_socket(ns, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    let frames: Vec<Vec<u8>> = (0..64u32)
        .map(|k| {
            let mut buf = vec![0u8; 128];
            let addrs = FrameAddrs {
                src_mac: [2, 0, 0, 0, 0, 9],
                dst_mac: MAC,
                src_ip: Ipv4Addr::new(10, 0, 200, 1),
                dst_ip: dst,
            };
            let n = build_udp(&mut buf, &addrs, 1234, 9, 64, &k.to_be_bytes()).unwrap();
            buf.truncate(n);
            buf
        })
        .collect();
    let (port, _wire) = memory_pair(
        PortInfo {
            name: "eth0".into(),
            mac: MAC,
            max_frame: 1514,
        },
        64,
        TxMode::Discard,
    );
    let port = port.with_generator(Generator::new(frames, Pace::Unlimited, None));
    let mut worker = Worker::new(
        WorkerConfig::default(),
        vec![WorkerPort {
            port,
            dev,
            index: 0,
        }],
        rt.shared.clone(),
        rt.stats.workers[0].clone(),
    );

    // One stall: the worker fills the queue while nobody reads, then the consumer drains it
    // (giving every batch back). Returns the allocations the worker made and the datagrams
    // read.
    let mut stall = || {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let mut handled = 0;
        for _ in 0..STALL_POLLS {
            COUNTING.with(|c| c.set(true));
            handled += worker.poll(Instant::now());
            COUNTING.with(|c| c.set(false));
        }
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
        let mut read = 0;
        while socket.try_recv().is_some() {
            read += 1;
        }
        assert_eq!(
            handled,
            STALL_POLLS * 64,
            "the generator offers a burst each poll"
        );
        (allocated, read)
    };

    // The first stall allocates the batches it needs (and the worker's other buffers); the
    // second takes them back into the worker's stack, which grows to hold them.
    let (first, read) = stall();
    assert!(
        first >= STALL_POLLS as u64,
        "{first} allocations in the first stall"
    );
    assert_eq!(read, STALL_POLLS * 64, "the queue took every datagram");
    let (second, _) = stall();
    assert!(second < 16, "{second} allocations in the second stall");
    // Then the same stalls reuse them.
    for round in 3..=6 {
        let (allocated, read) = stall();
        assert_eq!(read, STALL_POLLS * 64);
        assert_eq!(
            allocated, 0,
            "stall {round}: the worker allocated {allocated} times"
        );
    }
    let s = rt.stats.ns(ns);
    assert_eq!(s.delivered, 6 * (STALL_POLLS as u64) * 64);
    assert_eq!(s.dropped_queue_full, 0);
}
