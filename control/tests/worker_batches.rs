//! A consumer that stalls must not make the worker allocate once it has the batches a stall
//! needs: the worker keeps the empty batches consumers give back (last in, first out, within
//! a byte budget) instead of freeing all but a few and allocating again at the next stall.
//! (Under 100,000 address moves a second, the benchmark's consumer shared its core with the
//! control thread and the worker spent 8% of its time in malloc and realloc.)
//!
//! One thread plays worker and consumer in turn on the packet-path tests' network
//! (`common::net`), so the stalls are exact: the worker polls while nobody reads the socket,
//! then the socket is drained, and again. Allocations are
//! counted on this thread during `Worker::poll` only.
//!
//! `unsafe` here is the counting global allocator alone (`GlobalAlloc` is an unsafe trait);
//! it forwards every call to the system allocator unchanged.
#![allow(unsafe_code)]

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

mod common;
use common::{net, udp_to, WEB1_IP};

/// Datagrams a stall leaves queued (the test network's socket queues hold 1,024; the
/// worker's bursts of 32 make them 32 batches).
const STALL: usize = 1024;

#[test]
fn a_stalled_consumer_does_not_make_the_worker_allocate_once_warm() {
    let mut n = net();
    let mut socket = n.rt.udp_socket(n.web1, Ipv4Addr::UNSPECIFIED, 9).unwrap();
    let frames: Vec<Vec<u8>> = (0..STALL as u32)
        .map(|k| udp_to(WEB1_IP, 9, &k.to_be_bytes()))
        .collect();

    // One stall: the worker takes `STALL` datagrams while nobody reads, then the consumer
    // drains the socket (giving every batch back). Returns the allocations the worker made
    // in its polls and the datagrams read.
    let mut stall = || {
        for f in &frames {
            n.wire.inject(f.clone()).expect("rx ring has room");
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let mut handled = 0;
        while handled < STALL {
            COUNTING.with(|c| c.set(true));
            let got = n.worker.poll(Instant::now());
            COUNTING.with(|c| c.set(false));
            assert!(got > 0, "the worker stopped short: {handled} of {STALL}");
            handled += got;
        }
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
        let mut read = 0;
        while socket.try_recv().is_some() {
            read += 1;
        }
        (allocated, read)
    };

    // The first stall allocates the batches it needs (and the worker's other buffers); the
    // second takes them back into the worker's stack, which grows to hold them.
    let (first, read) = stall();
    assert!(
        first >= (STALL / 32) as u64,
        "{first} allocations in the first stall"
    );
    assert_eq!(read, STALL, "the queue took every datagram");
    let (second, _) = stall();
    assert!(second < 16, "{second} allocations in the second stall");
    // Then the same stalls reuse them.
    for round in 3..=6 {
        let (allocated, read) = stall();
        assert_eq!(read, STALL);
        assert_eq!(
            allocated, 0,
            "stall {round}: the worker allocated {allocated} times"
        );
    }
    let s = n.rt.stats.ns(n.web1);
    assert_eq!(s.delivered, 6 * STALL as u64);
    assert_eq!(s.dropped_queue_full, 0);
}
