//! A socket queue takes memory when it receives, and little: l3nsd gives every socket a
//! queue (1,024 datagrams deep by default), and a ring of `depth` batch slots made at bind
//! was 64 KiB per socket — 6.4 GB for 100,000 sockets (`l3ns-throughput --queue-per-ns`).
//! Now nothing at bind, a ring of 64 slots at the first hand-off, and a spill only while a
//! consumer is further behind. Bytes are counted on this thread only.
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
fn a_queue_takes_a_small_ring_at_the_first_hand_off_and_spills_only_when_behind() {
    let pools = BatchPools::new(1, 8);
    let before = live();
    let q = SocketQueue::new(1024, pools.clone());
    let empty = live() - before;
    assert!(empty <= 256, "an empty queue of depth 1,024 took {empty} B");

    let one = |i: u32| {
        let mut b = Batch::with_capacity(1, 0);
        b.push(DgramMeta::default(), &i.to_be_bytes());
        b
    };
    assert_eq!(q.offer(one(0)).unwrap(), 1);
    let ring = live() - before;
    assert!(
        ring <= 8 * 1024,
        "the first hand-off made {ring} B (a ring of 64 slots is 4 KiB)"
    );

    // 1,024 one-datagram batches: the ring and the spill hold them; the depth still bounds.
    for i in 1..1024u32 {
        assert_eq!(q.offer(one(i)).unwrap(), 1);
    }
    assert!(q.offer(one(9999)).is_err(), "a full queue takes nothing");
    assert_eq!(q.overflow.load(std::sync::atomic::Ordering::Relaxed), 1);
    let mut n = 0u32;
    while let Some(b) = q.pop_batch() {
        let (_, p) = b.iter().next().unwrap();
        assert_eq!(u32::from_be_bytes(p.try_into().unwrap()), n, "in order");
        n += 1;
    }
    assert_eq!(n, 1024);
    // Drained: the ring, and at most the spill's last block, are left (the batches
    // themselves were dropped here).
    let drained = live() - before;
    assert!(drained <= 8 * 1024, "a drained queue kept {drained} B");
}
