//! A socket queue takes its ring at the first hand-off, not at bind: l3nsd gives every socket
//! a queue (1,024 datagrams deep by default), and a ring of `depth` batch slots made at bind
//! was 64 KiB per socket — 6.4 GB for 100,000 sockets that never receive
//! (`l3ns-throughput --queue-per-ns`). Bytes are counted on this thread only.
//!
//! `unsafe` here is the counting global allocator alone (`GlobalAlloc` is an unsafe trait);
//! it forwards every call to the system allocator unchanged.
#![allow(unsafe_code)]

use l3ns_dataplane::socket::{Batch, BatchPools, DgramMeta, SocketQueue};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    // `const`: no lazy initialisation, so touching it never allocates.
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping neither allocates
// nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.with(|b| b.set(b.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.with(|b| b.set(b.get().saturating_sub(layout.size())));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    BYTES.with(Cell::get)
}

#[test]
fn a_queue_takes_its_ring_at_the_first_hand_off_not_at_bind() {
    let pools = BatchPools::new(1, 8);
    let before = live();
    let q = SocketQueue::new(1024, pools.clone());
    let empty = live() - before;
    // Not even the ring (1,024 slots) before a batch comes.
    assert!(empty <= 256, "an empty queue of depth 1,024 took {empty} B");

    let mut b = Batch::with_capacity(1, 0);
    b.push(DgramMeta::default(), b"first");
    assert_eq!(q.offer(b).unwrap(), 1);
    let holding = live() - before;
    assert!(
        holding > 1024 * 8,
        "the ring is made at the first hand-off ({holding} B)"
    );

    // The depth bounds it: 1,024 datagrams, then the queue refuses.
    for i in 1..1024u32 {
        let mut b = Batch::with_capacity(1, 0);
        b.push(DgramMeta::default(), &i.to_be_bytes());
        assert_eq!(q.offer(b).unwrap(), 1);
    }
    let mut b = Batch::with_capacity(1, 0);
    b.push(DgramMeta::default(), b"x");
    assert!(q.offer(b).is_err(), "a full queue takes nothing");
    assert_eq!(q.overflow.load(std::sync::atomic::Ordering::Relaxed), 1);
    let mut n = 0;
    while let Some(b) = q.pop_batch() {
        n += b.len();
    }
    assert_eq!(n, 1024);
}
