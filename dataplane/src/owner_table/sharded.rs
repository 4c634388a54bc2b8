//! A persistent open-addressing hash map for the snapshot: 64 shards, each an `Arc` of a
//! linear-probing table. Publishing a change copies only the shards it touches (a few KiB at
//! 100k entries) and shares the rest with the previous snapshot, so a push is visible in
//! microseconds instead of a full rebuild; a lookup costs one shard pointer load (hot in L1)
//! and, typically, one cache line.

use std::sync::Arc;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;
const MIN_CAP_BITS: u32 = 3;
/// Up to this many slots (16 KiB of address slots, 1 MiB for the 64 shards), a shard is kept
/// at most a quarter full, above it at most half. Measured with one address per namespace
/// and a socket each (`l3ns-throughput --namespaces N --addrs-per-ns 1`): at 10,000 and
/// 16,000 namespaces half-full shards of 512 slots ran at 15.6 and 15.2 Mpps, quarter-full
/// ones of 1,024 at 18.0 and 17.7 (3 runs interleaved); with one namespace holding the same
/// addresses, and at 100,000 namespaces, the load made no difference. The probe is longer
/// in a fuller shard, and with many namespaces the owner it finds decides the next line to
/// load; why this costs so much only in this range is not understood. The memory this adds
/// is bounded — at most 1 MiB per table (16,000 to 33,000 addresses), nothing from 33,000 —
/// unlike a quarter load at a million addresses.
const SPARSE_SLOTS: usize = 1024;

/// Keys of a `ShardedMap`: fixed-size, with one value reserved as the empty-slot marker.
pub trait Key: Copy + Eq {
    /// The key no entry may use.
    const EMPTY: Self;
    fn hash64(self) -> u64;
}

impl Key for u32 {
    /// `0.0.0.0` is never a local or broadcast address.
    const EMPTY: u32 = 0;
    #[inline(always)]
    fn hash64(self) -> u64 {
        // Fibonacci hashing: the high bits of the product depend on every key bit.
        u64::from(self).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl Key for u64 {
    const EMPTY: u64 = 0;
    #[inline(always)]
    fn hash64(self) -> u64 {
        (self ^ (self >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

#[derive(Clone, Debug)]
struct Shard<K, V> {
    /// `slots.len() == 1 << cap_bits`.
    slots: Box<[(K, V)]>,
    cap_bits: u32,
    len: usize,
}

impl<K: Key, V: Copy + Default> Shard<K, V> {
    fn with_cap_bits(cap_bits: u32) -> Self {
        Shard {
            slots: vec![(K::EMPTY, V::default()); 1 << cap_bits].into_boxed_slice(),
            cap_bits,
            len: 0,
        }
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        // The bits just below the shard bits.
        ((h << SHARD_BITS) >> (64 - self.cap_bits)) as usize
    }

    #[inline(always)]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline(always)]
    fn find(&self, k: K, h: u64) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = self.home(h);
        loop {
            let key = self.slots[i].0;
            if key == k {
                return Ok(i);
            }
            if key == K::EMPTY {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// A shard of `slots` slots grows before it is more than 1/n full, n being this: a
    /// quarter while the shard is at most `SPARSE_SLOTS` slots, then half.
    #[inline]
    fn max_load_inverse(slots: usize) -> usize {
        if slots <= SPARSE_SLOTS {
            4
        } else {
            2
        }
    }

    fn insert(&mut self, k: K, v: V) -> Option<V> {
        let h = k.hash64();
        match self.find(k, h) {
            Ok(i) => Some(std::mem::replace(&mut self.slots[i].1, v)),
            Err(i) => {
                if (self.len + 1) * Self::max_load_inverse(self.slots.len()) > self.slots.len() {
                    self.grow();
                    let i = self.find(k, h).unwrap_err();
                    self.slots[i] = (k, v);
                } else {
                    self.slots[i] = (k, v);
                }
                self.len += 1;
                None
            }
        }
    }

    fn grow(&mut self) {
        let mut bigger = Shard::with_cap_bits(self.cap_bits + 1);
        for &(k, v) in self.slots.iter().filter(|(k, _)| *k != K::EMPTY) {
            let i = bigger.find(k, k.hash64()).unwrap_err();
            bigger.slots[i] = (k, v);
        }
        bigger.len = self.len;
        *self = bigger;
    }

    /// Backward-shift deletion keeps probe sequences intact without tombstones.
    fn remove(&mut self, k: K) -> Option<V> {
        let mut i = self.find(k, k.hash64()).ok()?;
        let old = self.slots[i].1;
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let kj = self.slots[j].0;
            if kj == K::EMPTY {
                break;
            }
            let home = self.home(kj.hash64());
            // Move j back to i if i lies cyclically in [home, j).
            let dist_i = i.wrapping_sub(home) & mask;
            let dist_j = j.wrapping_sub(home) & mask;
            if dist_i < dist_j {
                self.slots[i] = self.slots[j];
                i = j;
            }
        }
        self.slots[i] = (K::EMPTY, V::default());
        self.len -= 1;
        Some(old)
    }
}

/// The map. Cloning it is one `Arc` clone (the shard list is shared too); the first
/// mutation of a clone copies the list of 64 shard pointers, and each mutation copies only
/// the shard it touches.
#[derive(Clone, Debug)]
pub struct ShardedMap<K, V> {
    shards: Arc<[Arc<Shard<K, V>>]>,
    len: usize,
}

impl<K: Key, V: Copy + Default> Default for ShardedMap<K, V> {
    fn default() -> Self {
        let empty = Arc::new(Shard::with_cap_bits(MIN_CAP_BITS));
        ShardedMap {
            shards: (0..SHARDS).map(|_| empty.clone()).collect(),
            len: 0,
        }
    }
}

impl<K: Key + std::fmt::Debug, V: Copy + Default + std::fmt::Debug> ShardedMap<K, V> {
    #[inline(always)]
    fn shard_of(h: u64) -> usize {
        (h >> (64 - SHARD_BITS)) as usize
    }

    #[inline(always)]
    pub fn get(&self, k: K) -> Option<V> {
        if k == K::EMPTY {
            return None;
        }
        let h = k.hash64();
        let shard = &self.shards[Self::shard_of(h)];
        shard.find(k, h).ok().map(|i| shard.slots[i].1)
    }

    /// Prefetches the slot where a lookup of `k` starts (see `crate::prefetch`).
    #[inline(always)]
    pub fn prefetch(&self, k: K) {
        let h = k.hash64();
        let shard = &self.shards[Self::shard_of(h)];
        if let Some(slot) = shard.slots.get(shard.home(h)) {
            crate::prefetch::read(slot);
        }
    }

    /// Inserts or replaces; `k` must not be `K::EMPTY`.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        assert!(k != K::EMPTY, "the empty key cannot be stored");
        let s = Self::shard_of(k.hash64());
        let old = Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[s]).insert(k, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, k: K) -> Option<V> {
        if k == K::EMPTY {
            return None;
        }
        let s = Self::shard_of(k.hash64());
        // Avoid copying a shared shard for a key it does not hold.
        self.shards[s].find(k, k.hash64()).ok()?;
        let old = Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[s]).remove(k);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        self.shards
            .iter()
            .flat_map(|s| s.slots.iter().copied().filter(|(k, _)| *k != K::EMPTY))
    }

    /// Bytes held by the slot arrays (shared shards counted once per map).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.slots.len() * std::mem::size_of::<(K, V)>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Small shards stay at most a quarter full, large ones at most half (`SPARSE_SLOTS`).
    #[test]
    fn a_shard_grows_at_a_quarter_up_to_sparse_slots_then_at_half() {
        let mut shard: Shard<u32, u32> = Shard::with_cap_bits(MIN_CAP_BITS);
        let mut most_full_small = 0.0f64;
        let mut most_full_large = 0.0f64;
        for k in 1..=5_000u32 {
            shard.insert(k, k);
            let load = shard.len as f64 / shard.slots.len() as f64;
            if shard.slots.len() <= SPARSE_SLOTS {
                most_full_small = most_full_small.max(load);
            } else {
                most_full_large = most_full_large.max(load);
            }
        }
        assert_eq!(most_full_small, 0.25);
        assert_eq!(most_full_large, 0.5);
        // 5,000 keys would fill 8,192 slots beyond half.
        assert_eq!(shard.slots.len(), 16_384);
        for k in 1..=5_000u32 {
            assert_eq!(shard.get_for_test(k), Some(k));
        }
    }

    impl Shard<u32, u32> {
        fn get_for_test(&self, k: u32) -> Option<u32> {
            self.find(k, k.hash64()).ok().map(|i| self.slots[i].1)
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_hashmap(ops in proptest::collection::vec((any::<bool>(), 0u32..300, any::<u16>()), 0..200)) {
            let mut m: ShardedMap<u32, u16> = ShardedMap::default();
            let mut reference = HashMap::new();
            let mut snapshots = Vec::new();
            for (ins, k, v) in ops {
                snapshots.push((m.clone(), reference.clone()));
                if ins && k != 0 {
                    prop_assert_eq!(m.insert(k, v), reference.insert(k, v));
                } else if !ins {
                    prop_assert_eq!(m.remove(k), reference.remove(&k));
                }
                prop_assert_eq!(m.len(), reference.len());
            }
            for k in 0..300u32 {
                prop_assert_eq!(m.get(k), reference.get(&k).copied());
            }
            // Earlier versions are unaffected by later changes (structure sharing is safe).
            for (old, oref) in snapshots {
                for k in 0..300u32 {
                    prop_assert_eq!(old.get(k), oref.get(&k).copied());
                }
            }
        }
    }

    #[test]
    fn dense_and_sparse_keys() {
        let mut m: ShardedMap<u32, u32> = ShardedMap::default();
        for i in 1..=100_000u32 {
            m.insert(0x0a00_0000 + i, i);
            m.insert((i << 12) | 0x8000_0000, i);
        }
        assert_eq!(m.len(), 200_000);
        for i in 1..=100_000u32 {
            assert_eq!(m.get(0x0a00_0000 + i), Some(i));
            assert_eq!(m.get((i << 12) | 0x8000_0000), Some(i));
        }
        assert_eq!(m.get(0x0b00_0000), None);
    }
}
