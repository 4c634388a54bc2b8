//! A cache prefetch hint for the receive path.
//!
//! The worker classifies a burst in passes (DESIGN.md, "Workers"): it first asks for the lines
//! every packet of the burst will need — the frame, the owner-table slot of its destination,
//! the owning namespace's view and counters — and only then reads them, so the cache misses
//! of a whole burst overlap instead of following one another. A plain load cannot do this:
//! it waits for its line and holds the core's reorder window while it does.
//!
//! This is the one module outside the port backends that uses `unsafe` (DESIGN.md keeps
//! `unsafe` in the backends): the prefetch instruction is only reachable through an
//! intrinsic that Rust marks `unsafe`, although it is a pure hint — it cannot fault, it reads
//! and writes nothing a program can observe, and here it is only ever given a live reference.

/// Asks for the cache line holding `*r` to be brought close to the core. A hint: no effect on
/// what the program computes, whatever the state of the caches.
#[inline(always)]
pub fn read<T: ?Sized>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: PREFETCHT0 never faults and has no architecturally visible effect (Intel
        // SDM vol. 2, PREFETCHh; AMD APM vol. 3); the address comes from a live reference.
        // The intrinsic needs SSE, which every x86_64 processor has (part of the baseline).
        unsafe { _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = r;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hint_changes_nothing() {
        let v = vec![7u64; 1024];
        for x in &v {
            super::read(x);
        }
        super::read(&v[..]);
        super::read("str");
        assert!(v.iter().all(|&x| x == 7));
    }
}
