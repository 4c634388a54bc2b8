//! The in-process `memory` port: rings to inject frames and collect what l3ns transmits, for
//! tests, and a generator mode that replays a prepared set of frames for benchmarks and the
//! embedded demo (like DPDK's `net_null` with a traffic source).

use super::{Port, PortInfo};
use crossbeam::queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What happens to transmitted frames.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// Kept for `MemoryWire::collect` (bounded: frames past the ring's depth are dropped and
    /// counted in `tx_ring_full`).
    Collect,
    /// Counted and discarded (benchmarks).
    Discard,
}

/// How fast the generator offers frames.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the worker polls.
    Unlimited,
    /// At most this many frames per second, spread evenly.
    PerSecond(f64),
}

/// Replays `frames` in order, round robin.
#[derive(Debug)]
pub struct Generator {
    frames: Vec<Vec<u8>>,
    next: usize,
    /// Frames still to send; `None` for no limit.
    remaining: Option<u64>,
    pace: Pace,
    started: Option<Instant>,
    sent: u64,
}

impl Generator {
    pub fn new(frames: Vec<Vec<u8>>, pace: Pace, limit: Option<u64>) -> Self {
        assert!(!frames.is_empty(), "a generator needs at least one frame");
        Generator {
            frames,
            next: 0,
            remaining: limit,
            pace,
            started: None,
            sent: 0,
        }
    }

    /// How many frames may go now.
    fn budget(&mut self, max: usize) -> usize {
        let mut n = max as u64;
        if let Some(r) = self.remaining {
            n = n.min(r);
        }
        if let Pace::PerSecond(rate) = self.pace {
            let start = *self.started.get_or_insert_with(Instant::now);
            let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
            n = n.min(due.saturating_sub(self.sent));
        }
        n as usize
    }
}

/// Counters shared between the port and its wire.
#[derive(Debug, Default)]
pub struct MemoryStats {
    pub rx_frames: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_ring_full: AtomicU64,
    /// Frames `MemoryWire::deliver` found no room for in the receive ring.
    pub rx_ring_full: AtomicU64,
}

/// The worker's side.
pub struct MemoryPort {
    info: PortInfo,
    rx: Arc<ArrayQueue<Vec<u8>>>,
    tx: Arc<ArrayQueue<Vec<u8>>>,
    tx_mode: TxMode,
    pending: Vec<Vec<u8>>,
    /// Frames taken off the receive ring for the group being handed over.
    held: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    generator: Option<Generator>,
    stats: Arc<MemoryStats>,
    rx_local: u64,
    tx_local: u64,
}

/// The test's side: inject frames as if they arrived on the wire, collect what was sent.
#[derive(Clone)]
pub struct MemoryWire {
    rx: Arc<ArrayQueue<Vec<u8>>>,
    tx: Arc<ArrayQueue<Vec<u8>>>,
    pub stats: Arc<MemoryStats>,
}

/// A connected port and wire with rings of `depth` frames each way.
pub fn memory_pair(info: PortInfo, depth: usize, tx_mode: TxMode) -> (MemoryPort, MemoryWire) {
    let rx = Arc::new(ArrayQueue::new(depth.max(1)));
    let tx = Arc::new(ArrayQueue::new(depth.max(1)));
    let stats = Arc::new(MemoryStats::default());
    let port = MemoryPort {
        info,
        rx: rx.clone(),
        tx: tx.clone(),
        tx_mode,
        pending: Vec::with_capacity(64),
        held: Vec::with_capacity(super::MAX_GROUP),
        scratch: vec![0; 16 * 1024],
        generator: None,
        stats: stats.clone(),
        rx_local: 0,
        tx_local: 0,
    };
    (port, MemoryWire { rx, tx, stats })
}

impl MemoryPort {
    /// Adds a generator; its frames are offered after any injected ones.
    pub fn with_generator(mut self, generator: Generator) -> Self {
        self.generator = Some(generator);
        self
    }

    /// Whether a generator with a limit has sent everything.
    pub fn generator_done(&self) -> bool {
        self.generator
            .as_ref()
            .is_some_and(|g| g.remaining == Some(0))
    }
}

impl MemoryWire {
    /// Offers a frame to the port; gives it back when the ring is full.
    pub fn inject(&self, frame: Vec<u8>) -> Result<(), Vec<u8>> {
        self.rx.push(frame)
    }

    /// Delivers a frame the way a device does: into the receive ring, or, when it is full,
    /// nowhere — dropped and counted (`MemoryStats::rx_ring_full`, which the port reports as
    /// its receive-ring drops). Returns whether the frame found room.
    pub fn deliver(&self, frame: Vec<u8>) -> bool {
        if self.rx.push(frame).is_ok() {
            return true;
        }
        self.stats.rx_ring_full.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Takes every transmitted frame collected so far.
    pub fn collect(&self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.tx.pop()).collect()
    }

    /// Waits up to `timeout` for at least `n` frames to have been transmitted, polling.
    pub fn collect_at_least(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            out.extend(std::iter::from_fn(|| self.tx.pop()));
            if out.len() >= n || Instant::now() >= deadline {
                return out;
            }
            std::thread::yield_now();
        }
    }

    /// Frames injected but not yet received by the port.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }
}

impl Port for MemoryPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    #[inline]
    fn rx_groups<F: FnMut(&[&[u8]])>(&mut self, max: usize, mut on_group: F) -> usize {
        let mut total = 0;
        while total < max {
            let want = (max - total).min(super::MAX_GROUP);
            self.held.clear();
            while self.held.len() < want {
                match self.rx.pop() {
                    Some(frame) => self.held.push(frame),
                    None => break,
                }
            }
            let mut group: [&[u8]; super::MAX_GROUP] = [&[]; super::MAX_GROUP];
            let mut n = 0;
            for f in &self.held {
                group[n] = f;
                n += 1;
            }
            if let Some(g) = self.generator.as_mut() {
                let k = g.budget(want - n);
                for _ in 0..k {
                    group[n] = &g.frames[g.next];
                    n += 1;
                    g.next += 1;
                    if g.next == g.frames.len() {
                        g.next = 0;
                    }
                }
                g.sent += k as u64;
                if let Some(r) = g.remaining.as_mut() {
                    *r -= k as u64;
                }
            }
            if n == 0 {
                break;
            }
            on_group(&group[..n]);
            total += n;
            if n < want {
                break;
            }
        }
        if total > 0 {
            self.rx_local += total as u64;
            self.stats.rx_frames.store(self.rx_local, Ordering::Relaxed);
        }
        total
    }

    #[inline]
    fn tx_frame<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, build: F) -> bool {
        match self.tx_mode {
            TxMode::Discard => {
                if self.scratch.len() < len {
                    self.scratch.resize(len, 0);
                }
                build(&mut self.scratch[..len]);
            }
            TxMode::Collect => {
                if self.pending.len() + self.tx.len() >= self.tx.capacity() {
                    self.stats.tx_ring_full.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                let mut buf = vec![0u8; len];
                let n = build(&mut buf);
                buf.truncate(n);
                self.pending.push(buf);
            }
        }
        self.tx_local += 1;
        true
    }

    fn tx_flush(&mut self) {
        for frame in self.pending.drain(..) {
            if self.tx.push(frame).is_err() {
                self.stats.tx_ring_full.fetch_add(1, Ordering::Relaxed);
                self.tx_local -= 1;
            }
        }
        self.stats.tx_frames.store(self.tx_local, Ordering::Relaxed);
    }

    fn rx_ring_drops(&mut self) -> Option<u64> {
        Some(self.stats.rx_ring_full.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PortInfo {
        PortInfo {
            name: "mem0".into(),
            mac: [2, 0, 0, 0, 0, 1],
            max_frame: 1514,
        }
    }

    #[test]
    fn inject_receive_send_collect() {
        let (mut port, wire) = memory_pair(info(), 4, TxMode::Collect);
        wire.inject(vec![1, 2, 3]).unwrap();
        wire.inject(vec![4]).unwrap();
        let mut seen = Vec::new();
        assert_eq!(port.rx_burst(32, |f| seen.push(f.to_vec())), 2);
        assert_eq!(seen, vec![vec![1, 2, 3], vec![4]]);
        assert_eq!(port.rx_burst(32, |_| {}), 0);
        assert!(port.tx_frame(10, |b| {
            b[..2].copy_from_slice(&[9, 9]);
            2
        }));
        port.tx_flush();
        assert_eq!(wire.collect(), vec![vec![9, 9]]);
    }

    #[test]
    fn tx_ring_full_is_counted_not_blocking() {
        let (mut port, wire) = memory_pair(info(), 2, TxMode::Collect);
        let sent = (0..5).filter(|_| port.tx_frame(1, |_| 1)).count();
        port.tx_flush();
        assert_eq!(sent, 2);
        assert_eq!(wire.stats.tx_ring_full.load(Ordering::Relaxed), 3);
        assert_eq!(wire.collect().len(), 2);
    }

    #[test]
    fn groups_are_bounded_and_in_order_injected_first() {
        let (port, wire) = memory_pair(info(), 256, TxMode::Discard);
        for i in 0..100u8 {
            wire.inject(vec![i]).unwrap();
        }
        let mut port = port.with_generator(Generator::new(vec![vec![200]], Pace::Unlimited, None));
        let mut groups = Vec::new();
        let n = port.rx_groups(150, |g| {
            groups.push(g.iter().map(|f| f[0]).collect::<Vec<_>>())
        });
        assert_eq!(n, 150);
        assert_eq!(groups.len(), 3);
        assert!(groups.iter().all(|g| g.len() <= crate::port::MAX_GROUP));
        let flat: Vec<u8> = groups.concat();
        assert_eq!(&flat[..100], &(0..100).collect::<Vec<u8>>()[..]);
        assert!(flat[100..].iter().all(|&b| b == 200));
        assert_eq!(wire.stats.rx_frames.load(Ordering::Relaxed), 150);
    }

    #[test]
    fn generator_limit_and_round_robin() {
        let (port, _wire) = memory_pair(info(), 2, TxMode::Discard);
        let mut port = port.with_generator(Generator::new(
            vec![vec![1], vec![2], vec![3]],
            Pace::Unlimited,
            Some(7),
        ));
        let mut seen = Vec::new();
        while port.rx_burst(4, |f| seen.push(f[0])) > 0 {}
        assert_eq!(seen, vec![1, 2, 3, 1, 2, 3, 1]);
        assert!(port.generator_done());
    }
}
