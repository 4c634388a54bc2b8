//! A socket queue takes memory for what it holds, not for its depth: l3nsd gives every socket
//! a queue (1,024 datagrams deep by default), and a ring of `depth` batch slots allocated up
//! front was 64 KiB per socket — 6.4 GB for 100,000 sockets (`l3ns-throughput
//! --queue-per-ns`). Bytes are counted on this thread only.
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
fn a_queue_s_memory_follows_what_it_holds_not_its_depth() {
    let pools = BatchPools::new(1, 8);
    let before = live();
    let q = SocketQueue::new(1024, pools.clone());
    let empty = live() - before;
    // Not even the ring's head and tail (a cache line each) before a batch comes.
    assert!(empty <= 256, "an empty queue of depth 1,024 took {empty} B");

    // A few small batches in: a few KiB, whatever the depth.
    for i in 0..8u32 {
        let mut b = Batch::with_capacity(1, 0);
        b.push(DgramMeta::default(), &i.to_be_bytes());
        assert_eq!(q.offer(b).unwrap(), 1);
    }
    let holding = live() - before;
    assert!(
        holding <= 8 * 1024,
        "8 one-datagram batches took {holding} B"
    );
    assert_eq!(q.len(), 8);

    // The depth still bounds it: 1,024 datagrams, then the queue refuses.
    for i in 8..1024u32 {
        let mut b = Batch::with_capacity(1, 0);
        b.push(DgramMeta::default(), &i.to_be_bytes());
        assert_eq!(q.offer(b).unwrap(), 1);
    }
    let mut b = Batch::with_capacity(1, 0);
    b.push(DgramMeta::default(), b"x");
    assert!(q.offer(b).is_err(), "a full queue takes nothing");
    assert_eq!(q.overflow.load(std::sync::atomic::Ordering::Relaxed), 1);

    // Drained, it gives its memory back (all but at most one block of slots).
    while let Some(b) = q.pop_batch() {
        drop(b);
    }
    let drained = live() - before;
    assert!(drained <= 4 * 1024, "a drained queue kept {drained} B");
    drop(q);
}
