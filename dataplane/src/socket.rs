//! The socket layer: where classified datagrams are handed from workers to applications.
//!
//! A `SocketQueue` is a bounded receive queue that one or more sockets deliver into; an
//! application (or a built-in service) drains it. Workers never push per datagram: during a
//! burst each worker fills one `Batch` per queue it touches and hands the batch over once at
//! the end of the burst — one cross-core transfer per burst instead of one per packet
//! (DESIGN.md, "the hand-off design decides everything"). Emptied batches go back to the
//! worker's free pool, so the steady state allocates nothing.
//!
//! A queue's bound is counted in datagrams; a batch that does not fit is dropped whole and
//! counted `queue_full` against each datagram's namespace. A worker never blocks.

use crate::types::{NsId, SocketId};
use crossbeam::queue::ArrayQueue;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

/// One received datagram's metadata; its payload is `Batch::payload(meta)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DgramMeta {
    pub socket: SocketId,
    /// The namespace it was delivered in.
    pub ns: NsId,
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    /// The device it arrived on (`DevId::LO` for loopback and local delivery).
    pub dev: u16,
    /// The snapshot version that classified it.
    pub version: u64,
    /// Delivered as one copy of a broadcast (R10).
    pub broadcast: bool,
    /// Where the payload sits in the batch (set by `Batch::push`).
    pub off: u32,
    pub len: u32,
}

impl Default for DgramMeta {
    fn default() -> Self {
        DgramMeta {
            socket: SocketId(0),
            ns: NsId(0),
            src: Ipv4Addr::UNSPECIFIED,
            src_port: 0,
            dst: Ipv4Addr::UNSPECIFIED,
            dst_port: 0,
            dev: 0,
            version: 0,
            broadcast: false,
            off: 0,
            len: 0,
        }
    }
}

/// Datagrams handed over together.
#[derive(Debug, Default)]
pub struct Batch {
    metas: Vec<DgramMeta>,
    bytes: Vec<u8>,
    /// Which worker's pool it returns to.
    home: usize,
}

impl Batch {
    /// A batch with room for `n` small datagrams before it grows. Batches are recycled with
    /// their capacity, so a batch that often carries a full burst keeps room for one; a fresh
    /// one stays small (a worker delivering to many sockets makes many one-datagram batches,
    /// and allocating room for a full burst each time showed in its profile).
    pub fn with_capacity(n: usize, home: usize) -> Self {
        let n = n.min(8);
        Batch {
            metas: Vec::with_capacity(n),
            bytes: Vec::with_capacity(n * 128),
            home,
        }
    }

    /// Appends a datagram; `meta.off` and `meta.len` are set here.
    #[inline(always)]
    pub fn push(&mut self, meta: DgramMeta, payload: &[u8]) {
        // One struct literal, so that an inlined caller's fields are stored straight into the
        // batch (patching `off`/`len` into a copy on the stack made the copy's wide loads
        // wait on the narrow stores: a store-forwarding stall per datagram).
        self.metas.push(DgramMeta {
            off: self.bytes.len() as u32,
            len: payload.len() as u32,
            ..meta
        });
        self.bytes.extend_from_slice(payload);
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    pub fn clear(&mut self) {
        self.metas.clear();
        self.bytes.clear();
    }

    /// Keeps the first `n` datagrams.
    pub fn truncate(&mut self, n: usize) {
        if let Some(m) = self.metas.get(n) {
            self.bytes.truncate(m.off as usize);
            self.metas.truncate(n);
        }
    }

    pub fn metas(&self) -> &[DgramMeta] {
        &self.metas
    }

    pub fn payload(&self, m: &DgramMeta) -> &[u8] {
        &self.bytes[m.off as usize..(m.off + m.len) as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (&DgramMeta, &[u8])> {
        self.metas.iter().map(move |m| (m, self.payload(m)))
    }
}

/// Per-worker pools of empty batches; consumers return batches here.
#[derive(Debug)]
pub struct BatchPools {
    pools: Vec<ArrayQueue<Batch>>,
}

impl BatchPools {
    pub fn new(workers: usize, per_worker: usize) -> Arc<Self> {
        Arc::new(BatchPools {
            pools: (0..workers.max(1))
                .map(|_| ArrayQueue::new(per_worker.max(1)))
                .collect(),
        })
    }

    pub fn take(&self, worker: usize, burst: usize) -> Batch {
        self.pools
            .get(worker)
            .and_then(|p| p.pop())
            .unwrap_or_else(|| Batch::with_capacity(burst, worker))
    }

    /// Returns an emptied batch to the worker it came from (dropped if that pool is full).
    pub fn give_back(&self, mut batch: Batch) {
        batch.clear();
        if let Some(p) = self.pools.get(batch.home) {
            let _ = p.push(batch);
        }
    }
}

/// A bounded receive queue shared by one or more sockets.
#[derive(Debug)]
pub struct SocketQueue {
    batches: ArrayQueue<Batch>,
    /// Datagrams currently queued (updated once per batch).
    queued: AtomicUsize,
    depth: usize,
    pools: Arc<BatchPools>,
    /// Set when every socket of the queue is closed: workers stop delivering.
    closed: AtomicBool,
    /// Datagrams handed to the application.
    pub received: AtomicU64,
    /// Highest depth seen.
    pub high_water: AtomicUsize,
    /// Datagrams refused because the queue was full.
    pub overflow: AtomicU64,
    /// Set while a consumer is parked in [`SocketQueue::park`]; a worker that hands a batch
    /// over then unparks it (one relaxed-cost load per hand-off otherwise).
    sleeping: AtomicBool,
    waiter: Mutex<Option<Thread>>,
}

impl SocketQueue {
    /// A queue holding up to `depth` datagrams.
    pub fn new(depth: usize, pools: Arc<BatchPools>) -> Arc<Self> {
        let depth = depth.max(1);
        Arc::new(SocketQueue {
            batches: ArrayQueue::new(depth),
            queued: AtomicUsize::new(0),
            depth,
            pools,
            closed: AtomicBool::new(false),
            received: AtomicU64::new(0),
            high_water: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            waiter: Mutex::new(None),
        })
    }

    /// Consumer side: registers the calling thread to be woken by the next hand-off and
    /// declares it asleep (the caller then parks, see [`SocketQueue::park`]). Returns false,
    /// without declaring anything, when datagrams are already queued.
    pub fn prepare_park(&self) -> bool {
        {
            let mut w = self.waiter.lock().unwrap_or_else(|e| e.into_inner());
            if w.as_ref().map(Thread::id) != Some(std::thread::current().id()) {
                *w = Some(std::thread::current());
            }
        }
        // With the SeqCst add in `offer`, either the worker sees `sleeping` and unparks, or
        // this load sees its datagrams (no lost wake-up).
        self.sleeping.store(true, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) > 0 {
            self.sleeping.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Consumer side: the thread is awake again.
    pub fn end_park(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Consumer side: waits until a worker hands a batch over or `timeout` passes (no
    /// polling while traffic is sparse). Returns at once when datagrams are queued.
    pub fn park(&self, timeout: std::time::Duration) {
        if self.prepare_park() {
            std::thread::park_timeout(timeout);
            self.end_park();
        }
    }

    /// Worker side: wakes a consumer parked on this queue, if any. Called once per queue
    /// after a round of hand-offs (not per `offer`), so that a consumer of many queues is
    /// woken once per round instead of once per queue.
    #[inline]
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = self
                .waiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                t.unpark();
            }
        }
    }

    /// Worker side: hands a batch over. The queue fills to its depth like a socket buffer:
    /// it takes the first datagrams that fit, drops the rest of the batch (counted in
    /// `overflow`) and returns how many it took; `Err` gives the batch back when it took none.
    pub fn offer(&self, mut batch: Batch) -> Result<usize, Batch> {
        let n = batch.len();
        if self.closed.load(Ordering::Relaxed) || n == 0 {
            return Err(batch);
        }
        let now = self.queued.fetch_add(n, Ordering::SeqCst) + n;
        let excess = now.saturating_sub(self.depth).min(n);
        if excess > 0 {
            self.queued.fetch_sub(excess, Ordering::AcqRel);
            self.overflow.fetch_add(excess as u64, Ordering::Relaxed);
        }
        let taken = n - excess;
        if taken == 0 {
            return Err(batch);
        }
        batch.truncate(taken);
        match self.batches.push(batch) {
            Ok(()) => {
                let depth_now = now - excess;
                if depth_now > self.high_water.load(Ordering::Relaxed) {
                    self.high_water.store(depth_now, Ordering::Relaxed);
                }
                Ok(taken)
            }
            Err(b) => {
                self.queued.fetch_sub(taken, Ordering::AcqRel);
                self.overflow.fetch_add(taken as u64, Ordering::Relaxed);
                Err(b)
            }
        }
    }

    /// Application side: the next batch, if any. Give it back with `recycle` when done.
    pub fn pop_batch(&self) -> Option<Batch> {
        let b = self.batches.pop()?;
        self.queued.fetch_sub(b.len(), Ordering::AcqRel);
        self.received.fetch_add(b.len() as u64, Ordering::Relaxed);
        Some(b)
    }

    pub fn recycle(&self, batch: Batch) {
        self.pools.give_back(batch);
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Closes the queue and returns what was still queued, per namespace, for `ns_gone`
    /// accounting.
    pub fn close(&self) -> Vec<(NsId, u64)> {
        self.closed.store(true, Ordering::Relaxed);
        let mut lost: Vec<(NsId, u64)> = Vec::new();
        while let Some(b) = self.pop_batch() {
            for m in b.metas() {
                match lost.iter_mut().find(|(ns, _)| *ns == m.ns) {
                    Some((_, n)) => *n += 1,
                    None => lost.push((m.ns, 1)),
                }
            }
            self.recycle(b);
        }
        lost
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// An owned datagram, for applications that want one at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub meta: DgramMeta,
    pub payload: Vec<u8>,
}

/// A convenience reader over a queue: one datagram at a time.
#[derive(Debug)]
pub struct Receiver {
    queue: Arc<SocketQueue>,
    current: Option<Batch>,
    next: usize,
}

impl Receiver {
    pub fn new(queue: Arc<SocketQueue>) -> Self {
        Receiver {
            queue,
            current: None,
            next: 0,
        }
    }

    pub fn queue(&self) -> &Arc<SocketQueue> {
        &self.queue
    }

    /// The next datagram, or `None` when nothing is queued (never blocks).
    pub fn try_recv(&mut self) -> Option<Datagram> {
        loop {
            if let Some(b) = &self.current {
                if let Some(m) = b.metas().get(self.next) {
                    self.next += 1;
                    return Some(Datagram {
                        meta: *m,
                        payload: b.payload(m).to_vec(),
                    });
                }
                let done = self.current.take().expect("checked above");
                self.queue.recycle(done);
            }
            self.current = Some(self.queue.pop_batch()?);
            self.next = 0;
        }
    }

    /// Waits up to `timeout` for a datagram, parked until a worker hands one over
    /// (see [`SocketQueue::park`]).
    pub fn recv_timeout(&mut self, timeout: std::time::Duration) -> Option<Datagram> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(d) = self.try_recv() {
                return Some(d);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            self.queue.park(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: u32) -> DgramMeta {
        DgramMeta {
            socket: SocketId(1),
            ns: NsId(ns),
            src: Ipv4Addr::new(10, 0, 0, 9),
            src_port: 1000,
            dst: Ipv4Addr::new(10, 0, 0, 1),
            dst_port: 7,
            ..Default::default()
        }
    }

    #[test]
    fn a_parked_consumer_is_woken_by_the_hand_off() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(64, pools.clone());
        // Data already queued: park returns at once, nothing declared.
        let mut b = pools.take(0, 32);
        b.push(meta(1), b"x");
        q.offer(b).unwrap();
        assert!(!q.prepare_park());
        q.recycle(q.pop_batch().unwrap());
        // Empty: the consumer parks (with a timeout far beyond the test's patience) until
        // the hand-off wakes it; the barrier orders "about to park" before the offer, and a
        // wake-up that comes before the park itself is kept by the thread's park token.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (q2, b2) = (q.clone(), barrier.clone());
        let consumer = std::thread::spawn(move || {
            assert!(q2.prepare_park());
            b2.wait();
            let t = std::time::Instant::now();
            while q2.is_empty() && t.elapsed() < std::time::Duration::from_secs(30) {
                std::thread::park_timeout(std::time::Duration::from_secs(30));
            }
            q2.end_park();
            (t.elapsed(), q2.pop_batch().map(|b| b.len()))
        });
        barrier.wait();
        let mut b = pools.take(0, 32);
        b.push(meta(1), b"y");
        b.push(meta(1), b"z");
        q.offer(b).unwrap();
        q.wake();
        let (waited, got) = consumer.join().unwrap();
        assert_eq!(got, Some(2));
        assert!(
            waited < std::time::Duration::from_secs(30),
            "woken, not timed out"
        );
    }

    #[test]
    fn recv_timeout_waits_for_the_hand_off_and_times_out_when_none_comes() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(64, pools.clone());
        let mut rx = Receiver::new(q.clone());
        assert_eq!(rx.recv_timeout(std::time::Duration::from_millis(5)), None);
        let sender = std::thread::spawn(move || {
            let mut b = pools.take(0, 32);
            b.push(meta(3), b"late");
            q.offer(b).unwrap();
            q.wake();
        });
        let d = rx.recv_timeout(std::time::Duration::from_secs(30));
        sender.join().unwrap();
        let d = d.expect("the datagram handed over");
        assert_eq!((d.meta.ns, &d.payload[..]), (NsId(3), &b"late"[..]));
    }

    #[test]
    fn batches_hand_over_and_bound_is_in_datagrams() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(3, pools.clone());
        let mut b = pools.take(0, 32);
        for i in 0..2u8 {
            b.push(meta(1), &[i; 3]);
        }
        q.offer(b).unwrap();
        let mut b = pools.take(0, 32);
        for _ in 0..2 {
            b.push(meta(1), b"x");
        }
        assert_eq!(
            q.offer(b).unwrap(),
            1,
            "2 + 2 > depth 3: the first fits, the second drops"
        );
        assert_eq!(q.len(), 3);
        assert_eq!(q.overflow.load(Ordering::Relaxed), 1);
        let mut b = pools.take(0, 32);
        b.push(meta(1), b"y");
        let back = q.offer(b).unwrap_err();
        assert_eq!(back.len(), 1, "a full queue takes nothing");
        assert_eq!(q.overflow.load(Ordering::Relaxed), 2);
        let mut r = Receiver::new(q.clone());
        assert_eq!(r.try_recv().unwrap().payload, vec![0; 3]);
        assert_eq!(r.try_recv().unwrap().payload, vec![1; 3]);
        assert_eq!(r.try_recv().unwrap().payload, b"x");
        assert!(r.try_recv().is_none());
        assert_eq!(q.len(), 0);
        assert_eq!(q.received.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn close_reports_what_was_lost() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(10, pools.clone());
        let mut b = pools.take(0, 32);
        b.push(meta(4), b"a");
        b.push(meta(4), b"b");
        q.offer(b).unwrap();
        assert_eq!(q.close(), vec![(NsId(4), 2)]);
        let mut b = pools.take(0, 32);
        b.push(meta(4), b"c");
        assert!(q.offer(b).is_err(), "closed queues take nothing");
    }
}
