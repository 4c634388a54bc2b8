//! Cache prefetch hints for the receive path and the hand-off.
//!
//! The worker classifies a burst in passes (DESIGN.md, "Workers"): it first asks for the lines
//! every packet of the burst will need — the frame, the owner-table slot of its destination,
//! the owning namespace's view and counters — and only then reads them, so the cache misses
//! of a whole burst overlap instead of following one another. A plain load cannot do this:
//! it waits for its line and holds the core's reorder window while it does.
//!
//! The hand-off does the same across the socket queues of a group (`SocketQueue::prefetch_offer`):
//! with a queue per socket nearly every datagram is its own hand-off to a queue whose lines
//! the consumer's core wrote last.
//!
//! The prefetch instructions are only reachable through intrinsics that Rust marks `unsafe`
//! (PREFETCHW through inline assembly), although each is a pure hint — it cannot fault, it
//! reads and writes nothing a program can observe, and here it is only ever given an address
//! within a live reference.

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

/// As [`read`], for every line `*r` spans (a struct that straddles a line boundary).
#[inline(always)]
pub fn read_all<T>(r: &T) {
    let start = r as *const T as usize;
    let end = start + std::mem::size_of::<T>().max(1) - 1;
    let mut line = start & !63;
    while line <= end {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: as for `read`; the address is within `*r`'s lines, and a prefetch of
            // any address cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.max(start) as *const i8) }
        }
        line += 64;
    }
}

/// As [`read`], for a line the core is about to write, which another core may hold modified
/// (a socket queue's count, its ring's producer end and slot, which the consumer writes
/// too): asks for it in a state this core can write without a second request (PREFETCHW,
/// where the processor has it; PREFETCHT0 otherwise).
#[inline(always)]
pub fn write<T: ?Sized>(r: &T) {
    write_line((r as *const T).cast::<u8>());
}

/// As [`write`], for every line the elements of `s` span (room about to be written in turn).
#[inline(always)]
pub fn write_all<T>(s: &[T]) {
    let start = s.as_ptr() as usize;
    let end = start + std::mem::size_of_val(s);
    // Nothing for an empty slice (its pointer need not point at anything).
    let mut line = if end > start { start & !63 } else { end };
    while line < end {
        write_line(line.max(start) as *const u8);
        line += 64;
    }
}

/// PREFETCHW (or PREFETCHT0) of the line holding `at`, an address within a live reference.
#[inline(always)]
fn write_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        if has_prefetchw() {
            // SAFETY: as for `read`: PREFETCHW never faults and changes nothing a program can
            // observe (AMD APM vol. 3; Intel SDM vol. 2); it runs only where CPUID says the
            // processor has it, and the address is within a live reference.
            unsafe {
                core::arch::asm!(
                    "prefetchw [{0}]",
                    in(reg) at,
                    options(nostack, preserves_flags, readonly)
                );
            }
        } else {
            // SAFETY: as for `read`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = at;
    }
}

/// Whether the processor has PREFETCHW (CPUID 8000_0001h, ECX bit 8, "3DNowPrefetch" /
/// "PRFCHW", on both AMD and Intel), asked once.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_prefetchw() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not asked yet, 1: no, 2: yes.
    static HAS: AtomicU8 = AtomicU8::new(0);
    match HAS.load(Ordering::Relaxed) {
        0 => {
            // Leaf 8000_0000h says whether the extended leaf exists before it is asked.
            use core::arch::x86_64::__cpuid;
            let yes =
                __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0;
            HAS.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        v => v == 2,
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
        for x in &v {
            super::write(x);
        }
        super::read_all(&[0u8; 200]);
        super::write_all(&v[3..900]);
        super::write_all(&v[..0]);
        assert!(v.iter().all(|&x| x == 7));
    }
}
