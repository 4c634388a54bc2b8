//! A bounded multi-producer multi-consumer ring whose every slot is one cache line.
//!
//! The same algorithm as `crossbeam::queue::ArrayQueue` (D. Vyukov's bounded queue: each
//! slot carries a stamp saying whose turn it is, producers and consumers claim positions
//! with a CAS on their own counter), with one difference that matters for hand-offs between
//! cores: `ArrayQueue`'s buffer is aligned to 8 bytes, so a 64-byte slot (a stamp and a
//! [`crate::socket::Batch`]) straddles two cache lines three times in four, and each hand-off
//! moved two lines from the producer's core to the consumer's and back. Here a slot is
//! aligned to 64 bytes, and each end's counter sits on a line of its own with the slots'
//! address and mask, so that a push or a pop touches two lines: its end's and the slot's.
//!
//! The unsafe code is the slot's value cell: a producer writes it only after winning the CAS
//! for its position while the stamp says the slot is empty, and publishes it with a release
//! store of the stamp; a consumer reads it only after an acquire load of that stamp and a
//! won CAS for the position, and hands the slot back with another release store. So each
//! value is written once and read once, never both at the same time.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

#[repr(C, align(64))]
struct Slot<T> {
    /// `pos` when empty and awaiting the producer of position `pos`, `pos + 1` when full
    /// and awaiting its consumer (positions count up forever; the slot is `pos & mask`).
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// One end of the ring, on a line of its own: its position counter and a copy of what
/// finding a slot needs, so that a push touches this line and the slot's, and a pop the
/// other end's line and the slot's.
#[repr(C, align(64))]
struct End<T> {
    pos: AtomicUsize,
    slots: *const Slot<T>,
    mask: usize,
}

impl<T> End<T> {
    #[inline]
    fn slot(&self, pos: usize) -> &Slot<T> {
        // SAFETY: `slots` points at the ring's `mask + 1` slots, which live as long as the
        // ring (`Ring::buf`), and `pos & mask` is within them.
        unsafe { &*self.slots.add(pos & self.mask) }
    }

    /// Claims this end's next position and its slot, once the slot's stamp is `pos + ahead`
    /// (0 for the producer: freed for this lap; 1 for the consumer: written for it) and the
    /// CAS on the counter is won. `None` while the slot is a lap behind: full for the
    /// producer, empty for the consumer.
    #[inline]
    fn claim(&self, ahead: usize) -> Option<(usize, &Slot<T>)> {
        let mut pos = self.pos.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(pos);
            let stamp = slot.stamp.load(Ordering::Acquire);
            let lag = stamp.wrapping_sub(pos.wrapping_add(ahead)) as isize;
            if lag == 0 {
                match self.pos.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some((pos, slot)),
                    Err(now) => pos = now,
                }
            } else if lag < 0 {
                return None;
            } else {
                pos = self.pos.load(Ordering::Relaxed);
            }
        }
    }
}

/// See the module documentation.
pub struct Ring<T> {
    /// Next position to push.
    tail: End<T>,
    /// Next position to pop.
    head: End<T>,
    /// The slots `tail` and `head` point at (read only to drop them).
    buf: Box<[Slot<T>]>,
}

// SAFETY: values move between threads only through the stamp protocol above (each is owned
// by exactly one side at a time), so the ring is as Send/Sync as crossbeam's for `T: Send`.
unsafe impl<T: Send> Send for Ring<T> {}
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring of at least `capacity` slots (rounded up to a power of two; at least 2: with
    /// one slot, the stamp of a value waiting for its consumer and that of a slot its consumer
    /// has freed would be equal, and a second push would overwrite the first value).
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        let buf: Box<[Slot<T>]> = (0..cap)
            .map(|i| Slot {
                stamp: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        let end = |slots| End {
            pos: AtomicUsize::new(0),
            slots,
            mask: cap - 1,
        };
        Ring {
            tail: end(buf.as_ptr()),
            head: end(buf.as_ptr()),
            buf,
        }
    }

    /// Asks for the producer end's line (for writing), ahead of a [`Ring::push`].
    #[inline(always)]
    pub fn prefetch_tail(&self) {
        crate::prefetch::write(&self.tail);
    }

    /// Asks for the slot the next [`Ring::push`] fills (for writing); reads the producer
    /// end, so best after [`Ring::prefetch_tail`] has had time to bring it.
    #[inline(always)]
    pub fn prefetch_tail_slot(&self) {
        crate::prefetch::write(self.tail.slot(self.tail.pos.load(Ordering::Relaxed)));
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends `value`, or gives it back when the ring is full.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), T> {
        let Some((pos, slot)) = self.tail.claim(0) else {
            return Err(value);
        };
        // SAFETY: the claim made this thread the only producer of `pos`, and the stamp said
        // the slot's consumer for `pos - capacity` is done with it.
        unsafe { (*slot.value.get()).write(value) };
        slot.stamp.store(pos.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Takes the oldest value, if any. Unlike `ArrayQueue::pop`, which waits, it also says
    /// `None` while the oldest position is claimed by a producer that has not yet filled it,
    /// even if later ones are full ([`Ring::is_empty`] is false then).
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let (pos, slot) = self.head.claim(1)?;
        // SAFETY: the claim made this thread the only consumer of `pos`, and its acquire load
        // of the stamp saw the producer's release store.
        let value = unsafe { (*slot.value.get()).assume_init_read() };
        slot.stamp
            .store(pos.wrapping_add(self.head.mask + 1), Ordering::Release);
        Some(value)
    }

    /// Values in the ring (a snapshot; exact when no other thread is using it).
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.pos.load(Ordering::SeqCst);
            let head = self.head.pos.load(Ordering::SeqCst);
            if self.tail.pos.load(Ordering::SeqCst) == tail {
                return tail.wrapping_sub(head).min(self.capacity());
            }
        }
    }

    /// No value in the ring and none being pushed (no position claimed but not yet popped).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_slot_is_one_cache_line_for_a_batch() {
        assert_eq!(std::mem::size_of::<Slot<crate::socket::Batch>>(), 64);
        assert_eq!(std::mem::align_of::<Slot<crate::socket::Batch>>(), 64);
        let r: Ring<crate::socket::Batch> = Ring::new(4);
        assert_eq!(r.buf.as_ptr() as usize % 64, 0);
        assert_eq!(std::mem::size_of::<End<crate::socket::Batch>>(), 64);
    }

    #[test]
    fn fills_to_capacity_refuses_then_drains_in_order_across_laps() {
        let r = Ring::new(3);
        assert_eq!(r.capacity(), 4);
        for lap in 0..5u32 {
            for i in 0..4 {
                assert!(r.push(lap * 10 + i).is_ok());
            }
            assert_eq!(r.push(99), Err(99));
            assert_eq!(r.len(), 4);
            for i in 0..4 {
                assert_eq!(r.pop(), Some(lap * 10 + i));
            }
            assert_eq!(r.pop(), None);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn a_ring_asked_for_one_slot_still_tells_full_from_empty() {
        let r = Ring::new(1);
        assert_eq!(r.capacity(), 2);
        for lap in 0..3u32 {
            assert!(r.push(lap).is_ok() && r.push(lap + 10).is_ok());
            assert_eq!(r.push(99), Err(99), "full, not overwritten");
            assert_eq!(
                (r.pop(), r.pop(), r.pop()),
                (Some(lap), Some(lap + 10), None)
            );
        }
    }

    #[test]
    fn values_left_in_the_ring_are_dropped_with_it() {
        let v = Arc::new(());
        {
            let r = Ring::new(8);
            for _ in 0..5 {
                r.push(v.clone()).unwrap();
            }
            drop(r.pop());
            assert_eq!(Arc::strong_count(&v), 5);
        }
        assert_eq!(Arc::strong_count(&v), 1);
    }

    /// Two producers and two consumers: every value comes out exactly once, and each
    /// producer's values come out in order to each consumer.
    #[test]
    fn concurrent_producers_and_consumers_lose_and_repeat_nothing() {
        const PER: u64 = 200_000;
        let r = Arc::new(Ring::new(16));
        let taken = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        let mut v = (p << 32) | i;
                        while let Err(back) = r.push(v) {
                            v = back;
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (r, taken) = (r.clone(), taken.clone());
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut last = [None::<u64>; 2];
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    while taken.load(Ordering::Relaxed) < 2 * PER as usize
                        && std::time::Instant::now() < deadline
                    {
                        match r.pop() {
                            Some(v) => {
                                let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                                assert!(last[p].is_none_or(|l| l < i), "out of order");
                                last[p] = Some(i);
                                got.push(v);
                                taken.fetch_add(1, Ordering::Relaxed);
                            }
                            None => std::hint::spin_loop(),
                        }
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        while let Some(v) = r.pop() {
            all.push(v);
        }
        all.sort_unstable();
        let want: Vec<u64> = (0..2u64)
            .flat_map(|p| (0..PER).map(move |i| (p << 32) | i))
            .collect();
        assert_eq!(all.len(), want.len());
        assert!(all == want, "a value was lost or repeated");
    }
}
