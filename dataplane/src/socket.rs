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

use crate::ring::Ring;
use crate::types::{NsId, SocketId};
use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam::queue::SegQueue;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

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

/// The payload size `Batch::prefetch_room` asks for room for.
const ROOM_BYTES: usize = 32;

/// Datagrams handed over together.
#[derive(Debug, Default)]
pub struct Batch {
    metas: Vec<DgramMeta>,
    bytes: Vec<u8>,
    /// Which worker's pool it returns to (32 bits, so that with `mixed` a batch and the ring's
    /// sequence number fill one cache line).
    home: u32,
    /// Some datagram's namespace or broadcast flag differs from the first one's (possibly
    /// still set after `truncate`).
    mixed: bool,
    /// Some datagram's socket differs from the first one's (a batch of mail for several).
    sockets: bool,
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
            home: home as u32,
            mixed: false,
            sockets: false,
        }
    }

    /// Appends a datagram; `meta.off` and `meta.len` are set here.
    #[inline(always)]
    pub fn push(&mut self, meta: DgramMeta, payload: &[u8]) {
        // One struct literal, so that an inlined caller's fields are stored straight into the
        // batch (patching `off`/`len` into a copy on the stack made the copy's wide loads
        // wait on the narrow stores: a store-forwarding stall per datagram).
        if let Some(first) = self.metas.first() {
            self.mixed |= first.ns != meta.ns || first.broadcast != meta.broadcast;
            self.sockets |= first.socket != meta.socket;
        }
        self.metas.push(DgramMeta {
            off: self.bytes.len() as u32,
            len: payload.len() as u32,
            ..meta
        });
        self.bytes.extend_from_slice(payload);
    }

    /// Removes datagrams `first..end` (a queue had no room for them, `worker::flush_mail`).
    pub fn cut(&mut self, first: usize, end: usize) {
        let end = end.min(self.len());
        if first >= end {
            return;
        }
        let from = self.metas[first].off as usize;
        let to = self
            .metas
            .get(end)
            .map_or(self.bytes.len(), |m| m.off as usize);
        self.bytes.drain(from..to);
        self.metas.drain(first..end);
        let gone = (to - from) as u32;
        for m in &mut self.metas[first..] {
            m.off -= gone;
        }
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
        self.mixed = false;
        self.sockets = false;
    }

    /// The namespace and broadcast flag every datagram has, when they are all the same (a
    /// batch of one flow): its counters move once for the whole batch.
    #[inline]
    pub fn uniform(&self) -> Option<(NsId, bool)> {
        let first = self.metas.first().filter(|_| !self.mixed)?;
        Some((first.ns, first.broadcast))
    }

    /// The socket every datagram is for, when it is one (possibly `None` after `truncate`
    /// or `cut` left one): a consumer of mail then takes the batch as one run.
    #[inline]
    pub fn one_socket(&self) -> Option<SocketId> {
        let first = self.metas.first().filter(|_| !self.sockets)?;
        Some(first.socket)
    }

    /// Asks for the first free line of each buffer (where the next datagram goes), for
    /// writing: the consumer's core read them last.
    #[inline(always)]
    fn prefetch(&mut self) {
        if let Some(m) = self.metas.spare_capacity_mut().first() {
            crate::prefetch::write(m);
        }
        if let Some(b) = self.bytes.spare_capacity_mut().first() {
            crate::prefetch::write(b);
        }
    }

    /// Asks, for writing, for the room `n` more datagrams of up to `ROOM_BYTES` bytes are
    /// written to (a worker's batch of mail, which takes a round's datagrams one after
    /// another: the consumer's core read its lines last).
    #[inline]
    pub fn prefetch_room(&mut self, n: usize) {
        let metas = self.metas.spare_capacity_mut();
        let k = metas.len().min(n);
        crate::prefetch::write_all(&metas[..k]);
        let bytes = self.bytes.spare_capacity_mut();
        let k = bytes.len().min(n * ROOM_BYTES);
        crate::prefetch::write_all(&bytes[..k]);
    }

    /// Bytes its two buffers hold allocated (their capacity, not their contents).
    pub fn heap_bytes(&self) -> usize {
        self.metas.capacity() * std::mem::size_of::<DgramMeta>() + self.bytes.capacity()
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

/// Per-worker return channels of empty batches: consumers give batches back here, and each
/// worker moves what was returned to it into its own [`FreeBatches`] once per poll.
#[derive(Debug)]
pub struct BatchPools {
    pools: Vec<Ring<Batch>>,
}

impl BatchPools {
    pub fn new(workers: usize, per_worker: usize) -> Arc<Self> {
        Arc::new(BatchPools {
            pools: (0..workers.max(1))
                .map(|_| Ring::new(per_worker.max(1)))
                .collect(),
        })
    }

    /// The oldest batch returned to `worker` and not yet taken.
    pub fn returned(&self, worker: usize) -> Option<Batch> {
        self.pools.get(worker)?.pop()
    }

    /// Returns an emptied batch to the worker it came from (dropped if that pool is full).
    pub fn give_back(&self, mut batch: Batch) {
        batch.clear();
        if let Some(p) = self.pools.get(batch.home as usize) {
            let _ = p.push(batch);
        }
    }
}

/// A worker's empty batches, last in first out, holding at most `budget` bytes of buffers.
///
/// Last in first out keeps the batches in circulation few and hot while consumers keep up
/// (the ones on top are reused; a first-in-first-out pool of 4,096 rotated thousands of cold
/// batches, a cache miss per packet written), while a consumer that stalls for a while (one
/// that shares its core with a busy thread) is absorbed by the batches below, allocated
/// once, not by allocating a batch per round and freeing it when the consumer catches up:
/// with 16 batches kept, that was 8% of the worker's time under 100,000 address moves a
/// second (the control thread took the consumer's core half of the time). When the budget
/// is exceeded the coldest batch (the bottom one) is freed.
#[derive(Debug)]
pub struct FreeBatches {
    stack: std::collections::VecDeque<Batch>,
    bytes: usize,
    budget: usize,
}

impl FreeBatches {
    pub fn new(budget: usize) -> Self {
        FreeBatches {
            stack: Default::default(),
            bytes: 0,
            budget,
        }
    }

    /// The batch on top, else a new one for `worker` sized for `burst`.
    #[inline]
    pub fn take(&mut self, worker: usize, burst: usize) -> Batch {
        match self.stack.pop_back() {
            Some(b) => {
                self.bytes -= b.heap_bytes();
                // The next one taken is this one's neighbour: its lines come in meanwhile
                // (after an idle sleep they are cold, and the first datagram written to a
                // batch waited for them).
                if let Some(next) = self.stack.back_mut() {
                    next.prefetch();
                }
                // With a queue per socket nearly every datagram takes a batch of its own, a
                // group's worth one after another: the one `TAKE_AHEAD` down is asked for
                // too, so that their misses overlap.
                let n = self.stack.len();
                if n > TAKE_AHEAD {
                    self.stack[n - 1 - TAKE_AHEAD].prefetch();
                }
                b
            }
            None => Batch::with_capacity(burst, worker),
        }
    }

    /// Puts an emptied `batch` on top.
    pub fn put(&mut self, mut batch: Batch) {
        batch.clear();
        self.bytes += batch.heap_bytes();
        self.stack.push_back(batch);
        while self.bytes > self.budget {
            let Some(cold) = self.stack.pop_front() else {
                break;
            };
            self.bytes -= cold.heap_bytes();
        }
    }

    /// Takes back what consumers returned to `worker`.
    pub fn refill(&mut self, pools: &BatchPools, worker: usize) {
        while let Some(b) = pools.returned(worker) {
            self.put(b);
        }
    }

    pub fn len(&self) -> usize {
        self.stack.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stack.is_empty()
    }

    /// Bytes of buffers held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// How a parked consumer thread is woken: one per thread, registered on every queue the
/// thread consumes ([`SocketQueue::set_waiter`]). Parking is one store and a look at each
/// queue's count; a worker's [`SocketQueue::wake`] unparks the thread and clears `sleeping`,
/// so the other queues it handed batches to in the same round cost one load each.
///
/// While no consumer thread of the process is parked (a consumer that keeps up under load), a
/// wake costs one load of a process-wide count of parking threads.
///
/// No lost wake-up: every access to `sleeping`, to that count, to the queues' counts, to the
/// ready bits and to the registration is `SeqCst`. A consumer parks only after declaring
/// `sleeping` and then seeing every count at zero and no ready bit set (a worker sets a
/// queue's bit at the hand-off, before it looks at `sleeping`); a worker that queued
/// datagrams after that look reads `sleeping` afterwards, sees it set and unparks (the
/// thread's park token keeps an unpark that comes before the park itself), or sees it cleared
/// by another worker that did, or by the consumer, awake again, which looks at the counts
/// again before it parks.
#[derive(Debug)]
pub struct Waiter {
    sleeping: AtomicBool,
    /// When the park declared by `prepare` times out, in ns since `epoch()`.
    deadline: AtomicU64,
    /// Whether this thread is counted in `PARKING` (read and written by the thread only).
    counted: AtomicBool,
    /// Set by a consumer that need not see datagrams soon (a `sink`): workers then leave it
    /// to its timer until a queue they hand to is half full ([`SocketQueue::wake_unless_due`]).
    lazy: AtomicBool,
    /// The queues (of those given a bit, [`SocketQueue::set_ready_bit`]) handed datagrams
    /// since the thread last took the set.
    pub ready: ReadySet,
    /// Datagrams for this thread's queues handed over as one batch per worker round, once
    /// the thread accepts them ([`Waiter::accept_mail`]).
    mail: OnceLock<Mailbox>,
    thread: Thread,
}

/// From how many queues on a consumer thread takes mail ([`Waiter::accept_mail`]; l3nsd's
/// service thread and `l3ns-throughput --queue-per-ns` follow it): with more queues than a
/// burst has datagrams, a round's datagrams go mostly one to a queue, and mail (one batch
/// for all) moved 1.4-2.1x more at 1,000 and 100,000 queues on one worker core. With ten
/// queues, each of a round's batches holds several, and batches of their own were 1.2-2x
/// faster than mail (`bench/RESULTS.md`, eighteenth sitting).
pub const MAIL_FROM_QUEUES: usize = 64;

/// A consumer thread's mail: each worker round hands the datagrams for all of the thread's
/// queues over as one batch (their `meta.socket` says whose), instead of one batch per queue.
/// With a queue per socket and traffic spread over many sockets, nearly every datagram was a
/// hand-off of its own, and each moved the lines of a batch, of its queue's ring and of the
/// worker's return pool between the two cores; a batch of mail moves a round's datagrams
/// together. The bound stays per queue: the worker counts each queue's datagrams in its
/// count before it posts them ([`SocketQueue::reserve`]), and the consumer takes them out
/// ([`SocketQueue::took_mail`]).
#[derive(Debug)]
struct Mailbox {
    batches: Rings,
    spilled: AtomicUsize,
    /// Batches posted and not yet taken, at least (added before the post, taken away after
    /// the take): what `prepare` looks at, `SeqCst` as the rest of the park's protocol.
    waiting: AtomicUsize,
}

/// Which of a consumer thread's queues were handed datagrams since it last looked: one bit
/// per queue (the thread gives each queue its bit, [`SocketQueue::set_ready_bit`]), set by
/// workers after their hand-offs, taken by the thread. A thread of many queues then visits
/// the queues that have something instead of reading every queue's count (l3nsd's service
/// thread with 50,000 sinks and 10,000 pps spent a third of a core on that). The set grows
/// by chunks that never move, so a bit set in a chunk is never lost to a copy.
#[derive(Debug)]
pub struct ReadySet {
    chunks: ArcSwap<Vec<Arc<ReadyChunk>>>,
}

/// 64 words of 64 bits (512 bytes).
#[derive(Debug)]
struct ReadyChunk([AtomicU64; READY_WORDS]);

const READY_WORDS: usize = 64;
const READY_BITS: usize = READY_WORDS * 64;

impl Default for ReadySet {
    fn default() -> Self {
        ReadySet {
            chunks: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl ReadySet {
    /// Consumer side: makes room for the bits below `n`.
    pub fn ensure(&self, n: usize) {
        let need = n.div_ceil(READY_BITS);
        if self.chunks.load().len() >= need {
            return;
        }
        self.chunks.rcu(|cur| {
            let mut v = (**cur).clone();
            while v.len() < need {
                v.push(Arc::new(ReadyChunk(std::array::from_fn(|_| {
                    AtomicU64::new(0)
                }))));
            }
            v
        });
    }

    /// Worker side: sets `bit` (ignored beyond the room made).
    #[inline]
    pub fn mark(&self, bit: usize) {
        if let Some(c) = self.chunks.load().get(bit / READY_BITS) {
            c.0[(bit / 64) % READY_WORDS].fetch_or(1 << (bit % 64), Ordering::SeqCst);
        }
    }

    /// Worker side: sets the bits of each `(word, bits)`, word `w` holding bits `64 * w`
    /// to `64 * w + 63` (words beyond the room made are ignored).
    pub fn mark_words(&self, words: &[(usize, u64)]) {
        let chunks = self.chunks.load();
        for &(w, bits) in words {
            if let Some(c) = chunks.get(w / READY_WORDS) {
                c.0[w % READY_WORDS].fetch_or(bits, Ordering::SeqCst);
            }
        }
    }

    /// Consumer side: clears every set bit and hands each to `f`.
    pub fn take(&self, mut f: impl FnMut(usize)) {
        for (ci, c) in self.chunks.load().iter().enumerate() {
            for (wi, w) in c.0.iter().enumerate() {
                // A bit this load misses is found by the next `take`, or by `any` (SeqCst)
                // before the thread parks.
                if w.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let mut bits = w.swap(0, Ordering::SeqCst);
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f(ci * READY_BITS + wi * 64 + b);
                }
            }
        }
    }

    /// Whether any bit is set.
    pub fn any(&self) -> bool {
        self.chunks
            .load()
            .iter()
            .any(|c| c.0.iter().any(|w| w.load(Ordering::SeqCst) != 0))
    }
}

/// A worker's ready bits of one round, gathered and set together after its hand-offs
/// ([`ReadyMarks::publish`]): one locked `or` per word of 64 queues instead of one per queue,
/// and no look-up of the queue's consumer per hand-off (with a queue per socket nearly every
/// datagram is a hand-off of its own, and the two `ArcSwap` loads and the locked `or` of
/// [`SocketQueue::offer`]'s mark were a third of the hand-off's time).
///
/// It keeps the consumer thread's [`Waiter`] it last gathered for (one thread serves every
/// socket with a bit in l3nsd); a queue of another consumer thread is marked at once, as
/// `offer` does. Holding the `Arc` keeps the waiter's address, which queues give as its key
/// ([`SocketQueue::ready_target`]), from being reused by another while it is held.
#[derive(Debug, Default)]
pub struct ReadyMarks {
    waiter: Option<Arc<Waiter>>,
    key: usize,
    /// (word, bits) to set, in the order first touched; a word may appear more than once.
    words: Vec<(usize, u64)>,
}

/// How far back `ReadyMarks::mark` looks for the word of a bit among the words gathered.
const MARK_SCAN: usize = 8;

impl ReadyMarks {
    /// Gathers `q`'s ready bit, if it has one: call after a hand-off to `q` and
    /// [`ReadyMarks::publish`] before waking consumers.
    #[inline]
    pub fn mark(&mut self, q: &SocketQueue) {
        let Some((key, bit)) = q.ready_target() else {
            return;
        };
        if key != self.key && !self.adopt(q, key) {
            q.mark_ready();
            return;
        }
        let (word, b) = (bit / 64, 1u64 << (bit % 64));
        let n = self.words.len();
        match self.words[n.saturating_sub(MARK_SCAN)..]
            .iter_mut()
            .find(|(w, _)| *w == word)
        {
            Some((_, bits)) => *bits |= b,
            None => self.words.push((word, b)),
        }
    }

    /// Takes `q`'s consumer as the one to gather for, when nothing is gathered for another.
    #[cold]
    fn adopt(&mut self, q: &SocketQueue, key: usize) -> bool {
        if !self.words.is_empty() {
            return false;
        }
        match q.consumer() {
            Some((k, w)) if k == key => {
                self.waiter = Some(w);
                self.key = key;
                true
            }
            _ => false,
        }
    }

    /// Sets the bits gathered.
    #[inline]
    pub fn publish(&mut self) {
        if self.words.is_empty() {
            return;
        }
        if let Some(w) = &self.waiter {
            w.ready.mark_words(&self.words);
        }
        self.words.clear();
    }
}

/// Threads between [`Waiter::prepare`] and the end of their [`Waiter::park`]: while it is
/// zero, [`SocketQueue::wake`] needs to look no further.
static PARKING: AtomicUsize = AtomicUsize::new(0);

/// The origin of `Waiter::deadline`.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl Waiter {
    /// The calling thread's waiter (one per thread).
    pub fn current() -> Arc<Waiter> {
        thread_local! {
            static WAITER: Arc<Waiter> = Arc::new(Waiter {
                sleeping: AtomicBool::new(false),
                deadline: AtomicU64::new(0),
                counted: AtomicBool::new(false),
                lazy: AtomicBool::new(false),
                ready: ReadySet::default(),
                mail: OnceLock::new(),
                thread: std::thread::current(),
            });
        }
        WAITER.with(Arc::clone)
    }

    /// Consumer side: from now on workers hand datagrams for this thread's queues over as
    /// mail ([`Waiter::take_mail`]), one batch per worker round for all of them, except to a
    /// queue that already has batches of its own (it keeps them, so that its datagrams stay
    /// in order). The thread must then take its mail before it parks again, and find each
    /// datagram's socket by `meta.socket`.
    pub fn accept_mail(&self) {
        self.mail.get_or_init(|| Mailbox {
            batches: Rings::new(RING_SLOTS),
            spilled: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        });
    }

    /// Whether the thread takes mail ([`Waiter::accept_mail`]).
    #[inline]
    pub fn accepts_mail(&self) -> bool {
        self.mail.get().is_some()
    }

    /// Worker side: hands `batch` over as mail, to a thread that accepts it (workers post
    /// only to those, `SocketQueue::mail_consumer`).
    pub fn post(&self, batch: Batch) {
        debug_assert!(
            self.accepts_mail(),
            "mail posted to a thread that takes none"
        );
        if let Some(m) = self.mail.get() {
            m.waiting.fetch_add(1, Ordering::SeqCst);
            m.batches.push(batch, &m.spilled);
        }
    }

    /// Consumer side: the oldest batch of mail. Account for each datagram with
    /// [`SocketQueue::took_mail`] on its socket's queue, and give the batch back with
    /// [`BatchPools::give_back`].
    pub fn take_mail(&self) -> Option<Batch> {
        let m = self.mail.get()?;
        if m.waiting.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let b = m.batches.pop(&m.spilled)?;
        m.waiting.fetch_sub(1, Ordering::SeqCst);
        Some(b)
    }

    /// Consumer side: whether the thread has mail waiting (or being posted).
    pub fn has_mail(&self) -> bool {
        self.mail
            .get()
            .is_some_and(|m| m.waiting.load(Ordering::SeqCst) > 0)
    }

    /// Consumer side: whether the next parks are lazy: a worker then wakes the thread only
    /// when a queue it hands datagrams to is at least half full, and otherwise leaves them to
    /// the park's timeout (nothing is lost: the thread finds them then). For consumers that
    /// only count and drop; each wake-up spared is a sleep and a wake of a thread.
    pub fn set_lazy(&self, lazy: bool) {
        // Published to workers by `prepare`'s SeqCst store of `sleeping`.
        self.lazy.store(lazy, Ordering::Relaxed);
    }

    /// Consumer side: declares the thread asleep for at most `timeout`, then returns false
    /// (and declares nothing) when one of `queues` has datagrams queued or a bit of `ready`
    /// is set; true: call
    /// [`Waiter::park`]. The queues must have this waiter registered.
    pub fn prepare<'a>(
        &self,
        timeout: Duration,
        queues: impl IntoIterator<Item = &'a SocketQueue>,
    ) -> bool {
        if !self.counted.swap(true, Ordering::Relaxed) {
            PARKING.fetch_add(1, Ordering::SeqCst);
        }
        // Published by the SeqCst store below to a worker that reads `sleeping` set.
        let deadline = nanos_since_epoch(Instant::now())
            .saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        self.deadline.store(deadline, Ordering::Relaxed);
        self.sleeping.store(true, Ordering::SeqCst);
        if self.ready.any() || self.has_mail() {
            self.awake();
            return false;
        }
        for q in queues {
            if q.queued.load(Ordering::SeqCst) > 0 {
                self.awake();
                return false;
            }
        }
        true
    }

    /// Consumer side, after a successful [`Waiter::prepare`]: sleeps until a worker hands a
    /// batch to one of the queues or the timeout given to `prepare` passes (or spuriously;
    /// the caller looks again).
    pub fn park(&self) {
        let deadline = self.deadline.load(Ordering::Relaxed);
        let left = deadline.saturating_sub(nanos_since_epoch(Instant::now()));
        if left > 0 {
            std::thread::park_timeout(Duration::from_nanos(left));
        }
        self.awake();
    }

    fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        if self.counted.swap(false, Ordering::Relaxed) {
            PARKING.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Worker side: unparks the thread if it declared itself asleep (once: the flag is
    /// cleared). Returns whether it did.
    #[inline]
    pub fn wake(&self) -> bool {
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            self.thread.unpark();
            return true;
        }
        false
    }

    /// Worker side: like [`Waiter::wake`], unless the thread's park times out within `within`
    /// of `now` anyway (it then finds the datagrams itself, no later than that).
    #[inline]
    pub fn wake_unless_due(&self, now: Instant, within: Duration) -> bool {
        if !self.sleeping.load(Ordering::SeqCst) {
            return false;
        }
        let due = nanos_since_epoch(now)
            .saturating_add(u64::try_from(within.as_nanos()).unwrap_or(u64::MAX));
        if self.deadline.load(Ordering::Relaxed) <= due {
            return false;
        }
        self.wake()
    }

    /// Worker side, after handing the thread datagrams (batches to one of its queues, or
    /// mail): [`SocketQueue::wake_unless_due`]'s rule. `half_full`: a queue the datagrams went
    /// to is at least half full. Returns whether it unparked the thread.
    #[inline]
    pub fn wake_after_hand_off(&self, now: Instant, within: Duration, half_full: bool) -> bool {
        if PARKING.load(Ordering::SeqCst) == 0 {
            return false;
        }
        if half_full {
            return self.wake();
        }
        if self.lazy.load(Ordering::Relaxed) {
            return false;
        }
        self.wake_unless_due(now, within)
    }

    /// Whether the thread has declared itself asleep (and no worker has woken it yet).
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst)
    }
}

/// Batches the consumer has not taken yet: a ring of at most [`RING_SLOTS`] slots, and
/// beyond it, while a consumer is that many batches behind, an unbounded spill (`queued`
/// against the queue's depth bounds both: every batch holds a datagram at least).
///
/// The ring is allocated once and never again, so a warm worker hands over without
/// allocating until a consumer falls [`RING_SLOTS`] batches behind; only then does the spill
/// allocate, a block per 31 batches (a spill alone — a `SegQueue` as the only ring —
/// allocated in the worker every 31 hand-offs; a ring of `depth` slots alone takes 64 KiB for
/// each socket that ever receives).
///
/// Order: a producer puts a batch in the ring only when it sees the spill empty, and the
/// consumer takes from the spill only when it finds the ring empty. So each producer's
/// batches come out in the order it handed them over: its ring batches are older than its
/// spill batches, and a batch it puts in the ring after some went to the spill finds them
/// taken already (it saw the spill empty after pushing them).
#[derive(Debug)]
struct Rings {
    ring: Ring<Batch>,
    spill: SegQueue<Batch>,
}

/// How far below the top of the free batches `FreeBatches::take` asks for lines.
const TAKE_AHEAD: usize = 8;

/// Slots of a queue's ring (64 bytes each): a consumer may fall this many batches behind
/// before the worker allocates for it. Control/tests/worker_batches.rs stalls 32 batches.
const RING_SLOTS: usize = 64;

impl Rings {
    fn new(depth: usize) -> Self {
        Rings {
            ring: Ring::new(depth.clamp(1, RING_SLOTS)),
            spill: SegQueue::new(),
        }
    }

    /// `spilled` counts the batches in the spill, at least (the producer adds before it
    /// pushes there, the consumer takes away after it popped): zero means the spill is empty,
    /// and reading it costs no line of the spill's.
    #[inline]
    fn push(&self, batch: Batch, spilled: &AtomicUsize) {
        let refused = if spilled.load(Ordering::Acquire) == 0 {
            self.ring.push(batch).err()
        } else {
            Some(batch)
        };
        if let Some(b) = refused {
            spilled.fetch_add(1, Ordering::AcqRel);
            self.spill.push(b);
        }
    }

    #[inline]
    fn pop(&self, spilled: &AtomicUsize) -> Option<Batch> {
        if let Some(b) = self.ring.pop() {
            return Some(b);
        }
        if spilled.load(Ordering::Acquire) == 0 {
            return None;
        }
        // The ring said empty, but a producer may have claimed its head slot and not yet
        // filled it (preempted mid-push, say) while its later batches filled the ring and
        // then the spill: taking from the spill now would hand that producer's batches over
        // out of order. The spill's turn comes only when the ring holds nothing, claimed or
        // filled; until then the in-flight batch is the next one (its offer wakes the
        // consumer, as any does).
        if !self.ring.is_empty() {
            return None;
        }
        let b = self.spill.pop()?;
        spilled.fetch_sub(1, Ordering::AcqRel);
        Some(b)
    }
}

/// The steps of [`SocketQueue::prefetch_offer`], in order.
#[derive(Clone, Copy, Debug)]
pub enum OfferStep {
    /// The queue's count (and the fields beside it).
    Queue,
    /// Its ring's producer end.
    End,
    /// The ring slot the next hand-off fills.
    Slot,
}

/// A bounded receive queue shared by one or more sockets.
///
/// (Aligning it to a cache line with the fields a hand-off touches first was tried: no
/// difference beyond the noise at 1,000 queues, 96 more bytes per queue.)
#[derive(Debug)]
pub struct SocketQueue {
    /// The batches handed over, oldest first (see [`Rings`]), made at the first hand-off
    /// (by the worker, once) rather than at bind: a socket that never receives carries
    /// nothing (a ring of `depth` slots made at bind took 64 KiB per socket, 6.4 GB for
    /// 100,000 sockets).
    batches: OnceLock<Box<Rings>>,
    /// Datagrams currently queued (updated once per batch).
    queued: AtomicUsize,
    /// Batches in the spill, at least (see [`Rings::push`]).
    spilled: AtomicUsize,
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
    /// The consumer thread to wake after a hand-off, once one has parked on this queue
    /// ([`Waiter`]).
    waiter: ArcSwapOption<Waiter>,
    /// This queue's bit in its waiter's [`ReadySet`] (`usize::MAX`: none).
    ready_bit: AtomicUsize,
    /// The address of `waiter`'s thread (0: none), stored after it: what [`ReadyMarks`]
    /// compares without loading `waiter`.
    waiter_key: AtomicUsize,
}

impl SocketQueue {
    /// A queue holding up to `depth` datagrams.
    pub fn new(depth: usize, pools: Arc<BatchPools>) -> Arc<Self> {
        let depth = depth.max(1);
        Arc::new(SocketQueue {
            batches: OnceLock::new(),
            queued: AtomicUsize::new(0),
            spilled: AtomicUsize::new(0),
            depth,
            pools,
            closed: AtomicBool::new(false),
            received: AtomicU64::new(0),
            high_water: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
            waiter: ArcSwapOption::empty(),
            ready_bit: AtomicUsize::new(usize::MAX),
            waiter_key: AtomicUsize::new(0),
        })
    }

    /// Consumer side: `waiter` is the thread to wake after the next hand-off (kept until
    /// another thread registers). Cheap when it already is.
    pub fn set_waiter(&self, waiter: &Arc<Waiter>) {
        let current = self.waiter.load();
        if !current.as_ref().is_some_and(|w| Arc::ptr_eq(w, waiter)) {
            self.waiter.store(Some(waiter.clone()));
            self.waiter_key
                .store(Arc::as_ptr(waiter) as usize, Ordering::SeqCst);
        }
    }

    /// Consumer side: registers `waiter` (as [`SocketQueue::set_waiter`]) and gives this queue
    /// bit `bit` of its [`ReadySet`], which workers then set after handing it datagrams.
    pub fn set_ready_bit(&self, waiter: &Arc<Waiter>, bit: usize) {
        waiter.ready.ensure(bit + 1);
        self.set_waiter(waiter);
        self.ready_bit.store(bit, Ordering::SeqCst);
    }

    /// Worker side, at each hand-off (so before it looks whether to wake the consumer): sets
    /// this queue's bit in its consumer's ready set, if it has one.
    #[inline]
    pub fn mark_ready(&self) {
        let bit = self.ready_bit.load(Ordering::Relaxed);
        if bit != usize::MAX {
            if let Some(w) = &*self.waiter.load() {
                w.ready.mark(bit);
            }
        }
    }

    /// Worker side: the key of the consumer thread registered with a ready bit (its
    /// waiter's address) and the bit, if the queue has one.
    #[inline]
    pub fn ready_target(&self) -> Option<(usize, usize)> {
        let bit = self.ready_bit.load(Ordering::Relaxed);
        if bit == usize::MAX {
            return None;
        }
        match self.consumer_key() {
            0 => None,
            key => Some((key, bit)),
        }
    }

    /// Consumer side: waits until a worker hands a batch over or `timeout` passes (no
    /// polling while traffic is sparse). Returns at once when datagrams are queued. A thread
    /// that consumes several queues parks on all of them at once with [`Waiter::prepare`].
    pub fn park(&self, timeout: Duration) {
        let w = Waiter::current();
        self.set_waiter(&w);
        if w.prepare(timeout, [self]) {
            w.park();
        }
    }

    /// Worker side: wakes the consumer parked on this queue, if any. Called after hand-offs
    /// (not per `offer`); the first queue of a consumer that wakes it clears its `sleeping`
    /// flag, so a consumer of many queues is woken once, not once per queue.
    /// Returns whether it unparked one.
    #[inline]
    pub fn wake(&self) -> bool {
        PARKING.load(Ordering::SeqCst) > 0 && self.waiter.load().as_ref().is_some_and(|w| w.wake())
    }

    /// Worker side: [`SocketQueue::wake`], unless the consumer's park times out within
    /// `within` of `now` anyway ([`Waiter::wake_unless_due`]): a worker that sleeps
    /// `idle_sleep` between polls passes that, the latency it already adds, and saves the
    /// cross-core wake-up while the consumer wakes on its own timer.
    /// A lazy consumer ([`Waiter::set_lazy`]) is left to its timer while this queue is less
    /// than half full. A queue at least half full wakes its consumer whatever its timer: the
    /// worker may hand over another round before the timer fires, and the half left may not
    /// hold it (at 400 kpps a worker sleeping 1 ms hands a sink ~400 datagrams a round).
    #[inline]
    pub fn wake_unless_due(&self, now: Instant, within: Duration) -> bool {
        PARKING.load(Ordering::SeqCst) > 0
            && self
                .waiter
                .load()
                .as_ref()
                .is_some_and(|w| w.wake_after_hand_off(now, within, self.half_full()))
    }

    /// Whether the queue holds at least half its depth (see [`SocketQueue::wake_unless_due`]).
    #[inline]
    pub fn half_full(&self) -> bool {
        self.len() * 2 >= self.depth
    }

    /// Worker side, ahead of an [`SocketQueue::offer`] to many queues: each step asks for
    /// the lines the next one reads, so a worker handing over to a group's queues makes all
    /// the queues' misses overlap instead of taking them one after another (the count, the
    /// ring's end and its slot are each written by the consumer's core as well).
    #[inline(always)]
    pub fn prefetch_offer(&self, step: OfferStep) {
        match step {
            OfferStep::Queue => {
                // The queue spans two lines (it is not aligned to them): both are read,
                // and the count is written.
                crate::prefetch::read_all(self);
                crate::prefetch::write(&self.queued);
            }
            OfferStep::End => {
                if let Some(r) = self.batches.get() {
                    r.ring.prefetch_tail();
                }
            }
            OfferStep::Slot => {
                if let Some(r) = self.batches.get() {
                    r.ring.prefetch_tail_slot();
                }
            }
        }
    }

    /// Worker side: hands a batch over. The queue fills to its depth like a socket buffer:
    /// it takes the first datagrams that fit, drops the rest of the batch (counted in
    /// `overflow`) and returns how many it took; `Err` gives the batch back when it took none.
    pub fn offer(&self, batch: Batch) -> Result<usize, Batch> {
        let taken = self.offer_unmarked(batch)?;
        self.mark_ready();
        Ok(taken)
    }

    /// [`SocketQueue::offer`] without setting the queue's ready bit: the caller gathers it
    /// in its [`ReadyMarks`] and publishes them before it wakes consumers.
    #[inline]
    pub fn offer_unmarked(&self, mut batch: Batch) -> Result<usize, Batch> {
        let taken = self.reserve(batch.len());
        if taken == 0 {
            return Err(batch);
        }
        batch.truncate(taken);
        self.batches
            .get_or_init(|| Box::new(Rings::new(self.depth)))
            .push(batch, &self.spilled);
        Ok(taken)
    }

    /// Worker side: the bound of a hand-off of `n` datagrams. Counts the first ones that fit
    /// in as queued and the rest in `overflow`, and returns how many fit (none when the queue
    /// is closed). [`SocketQueue::offer`] then puts them in the queue's batches; a worker
    /// posting mail puts them in the consumer's (see [`SocketQueue::by_mail`]).
    #[inline]
    pub fn reserve(&self, n: usize) -> usize {
        if self.closed.load(Ordering::Relaxed) || n == 0 {
            return 0;
        }
        let now = self.queued.fetch_add(n, Ordering::SeqCst) + n;
        let excess = now.saturating_sub(self.depth).min(n);
        if excess > 0 {
            self.queued.fetch_sub(excess, Ordering::AcqRel);
            self.overflow.fetch_add(excess as u64, Ordering::Relaxed);
        }
        let depth_now = now - excess;
        if depth_now > self.high_water.load(Ordering::Relaxed) {
            self.high_water.store(depth_now, Ordering::Relaxed);
        }
        n - excess
    }

    /// Worker side: whether this queue's datagrams may go to its consumer as mail (if the
    /// consumer accepts it): only while the queue has never had batches of its own, so that a
    /// queue handed batches before its consumer took mail keeps its order.
    #[inline]
    pub fn by_mail(&self) -> bool {
        self.batches.get().is_none()
    }

    /// Worker side: the consumer thread registered on this queue and its key (see
    /// [`SocketQueue::consumer_key`]), when the key is its.
    #[cold]
    fn consumer(&self) -> Option<(usize, Arc<Waiter>)> {
        let w = self.waiter.load_full()?;
        let key = Arc::as_ptr(&w) as usize;
        (key == self.waiter_key.load(Ordering::SeqCst)).then_some((key, w))
    }

    /// Worker side: [`SocketQueue::consumer`], when it accepts mail.
    #[cold]
    pub fn mail_consumer(&self) -> Option<(usize, Arc<Waiter>)> {
        self.consumer().filter(|(_, w)| w.accepts_mail())
    }

    /// Worker side: the key of the consumer thread registered on this queue (0: none).
    #[inline]
    pub fn consumer_key(&self) -> usize {
        self.waiter_key.load(Ordering::Relaxed)
    }

    /// Consumer side: `n` of this queue's datagrams were taken from the consumer's mail.
    #[inline]
    pub fn took_mail(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Application side: the next batch, if any. Give it back with `recycle` when done.
    pub fn pop_batch(&self) -> Option<Batch> {
        let b = self.batches.get()?.pop(&self.spilled)?;
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

    #[test]
    fn a_batch_knows_when_all_its_datagrams_share_a_namespace_and_kind() {
        let mut b = Batch::with_capacity(4, 0);
        assert_eq!(b.uniform(), None, "empty");
        b.push(meta(3), b"a");
        b.push(meta(3), b"b");
        assert_eq!(b.uniform(), Some((NsId(3), false)));
        b.push(
            DgramMeta {
                broadcast: true,
                ..meta(3)
            },
            b"c",
        );
        assert_eq!(b.uniform(), None, "a broadcast copy among unicast");
        b.clear();
        b.push(meta(4), b"d");
        assert_eq!(b.uniform(), Some((NsId(4), false)), "clear forgets");
        b.push(meta(5), b"e");
        assert_eq!(b.uniform(), None, "two namespaces");
    }

    #[test]
    fn a_batch_keeps_every_payload_byte_whatever_its_length() {
        let mut b = Batch::with_capacity(4, 0);
        let payloads: Vec<Vec<u8>> = (0..=130u8)
            .map(|n| (0..n).map(|i| i.wrapping_mul(7) ^ n).collect())
            .collect();
        for p in &payloads {
            b.push(meta(1), p);
        }
        for (m, p) in b.metas().iter().zip(&payloads) {
            assert_eq!(b.payload(m), &p[..], "payload of {} bytes", p.len());
        }
        assert_eq!(b.bytes.len(), payloads.iter().map(Vec::len).sum::<usize>());
    }

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

    /// Hands `n` datagrams to `q` in one batch.
    fn hand_over(q: &SocketQueue, n: usize) {
        let mut b = Batch::with_capacity(32, 0);
        for _ in 0..n {
            b.push(meta(1), b"d");
        }
        q.offer(b).unwrap();
    }

    /// A one-datagram batch carrying `producer` and `seq`.
    fn numbered(producer: u32, seq: u32) -> Batch {
        let mut b = Batch::with_capacity(1, 0);
        b.push(meta(producer), &seq.to_be_bytes());
        b
    }

    fn seq_of(b: &Batch) -> (u32, u32) {
        let (m, p) = b.iter().next().expect("one datagram");
        (m.ns.0, u32::from_be_bytes(p.try_into().unwrap()))
    }

    /// Batches beyond the ring go to the spill and come out after the ring's, in order; a
    /// batch handed over while the spill holds some follows them even when the ring has
    /// room again.
    #[test]
    fn batches_beyond_the_ring_spill_and_keep_their_order() {
        let q = SocketQueue::new(1024, BatchPools::new(1, 8));
        let mut next = 0u32;
        let offer = |q: &SocketQueue, next: &mut u32, n: u32| {
            for _ in 0..n {
                assert_eq!(q.offer(numbered(0, *next)).unwrap(), 1);
                *next += 1;
            }
        };
        offer(&q, &mut next, RING_SLOTS as u32 + 100);
        let rings = q.batches.get().unwrap();
        assert_eq!(rings.ring.len(), RING_SLOTS);
        assert_eq!(rings.spill.len(), 100);
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(seq_of(&q.pop_batch().unwrap()).1);
        }
        // The ring has room, but the spill is not empty: these go behind it.
        offer(&q, &mut next, 5);
        assert_eq!(rings.spill.len(), 105);
        while let Some(b) = q.pop_batch() {
            got.push(seq_of(&b).1);
        }
        assert_eq!(got, (0..next).collect::<Vec<_>>());
        assert!(q.is_empty());
        // Drained, the ring is used again.
        offer(&q, &mut next, 1);
        assert_eq!((rings.ring.len(), rings.spill.len()), (1, 0));
    }

    /// Two producers and a consumer at once, the consumer waiting now and then until the
    /// producers have run past the ring: every batch comes out once, and each producer's in
    /// its order.
    #[test]
    fn concurrent_producers_keep_their_order_through_the_spill() {
        const PER: u32 = 20_000;
        let q = SocketQueue::new(1 << 20, BatchPools::new(1, 8));
        let done = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let (q, done) = (q.clone(), done.clone());
                std::thread::spawn(move || {
                    for i in 0..PER {
                        assert_eq!(q.offer(numbered(p, i)).unwrap(), 1);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let mut last = [None::<u32>; 2];
        let (mut taken, mut spilled) = (0u32, 0u32);
        while taken < 2 * PER {
            if taken % 5_000 == 0 {
                // Let the producers run past the ring (or finish).
                while q.len() < RING_SLOTS + 16 && done.load(Ordering::SeqCst) < 2 {
                    std::hint::spin_loop();
                }
                spilled += u32::from(q.batches.get().is_some_and(|r| !r.spill.is_empty()));
            }
            let Some(b) = q.pop_batch() else {
                std::hint::spin_loop();
                continue;
            };
            let (p, i) = seq_of(&b);
            let p = p as usize;
            assert!(
                last[p].is_none_or(|l| i == l + 1),
                "producer {p}: {i} after {:?} (taken {taken}, q.len {}, spill {})",
                last[p],
                q.len(),
                q.batches.get().map_or(0, |r| r.spill.len())
            );
            last[p] = Some(i);
            taken += 1;
        }
        for t in producers {
            t.join().unwrap();
        }
        assert_eq!(last, [Some(PER - 1), Some(PER - 1)]);
        assert!(q.pop_batch().is_none());
        assert!(spilled > 0, "the spill was never used");
    }

    /// A batch of `n` one-byte datagrams from worker 0, tagged by namespace `tag`.
    fn filled(free: &mut FreeBatches, tag: u32, n: usize) -> Batch {
        let mut b = free.take(0, 32);
        for _ in 0..n {
            b.push(meta(tag), b"d");
        }
        b
    }

    #[test]
    fn free_batches_are_reused_last_in_first_out_and_the_coldest_go_over_budget() {
        let pools = BatchPools::new(1, 8);
        let mut free = FreeBatches::new(usize::MAX);
        // Three batches made, filled differently, so that each is recognisable by its
        // capacity; returned through a consumer (the pool) in the order 0, 1, 2.
        let sizes = [1usize, 9, 17];
        let made: Vec<Batch> = sizes.iter().map(|&n| filled(&mut free, 0, n)).collect();
        let caps: Vec<usize> = made.iter().map(|b| b.heap_bytes()).collect();
        assert!(caps[0] < caps[1] && caps[1] < caps[2], "{caps:?}");
        for b in made {
            pools.give_back(b);
        }
        free.refill(&pools, 0);
        assert_eq!(free.len(), 3);
        assert_eq!(free.bytes(), caps.iter().sum::<usize>());
        // The last returned comes out first, empty.
        let top = free.take(0, 32);
        assert!(top.is_empty());
        assert_eq!(top.heap_bytes(), caps[2]);
        free.put(top);
        assert_eq!(free.take(0, 32).heap_bytes(), caps[2]);
        assert_eq!(free.take(0, 32).heap_bytes(), caps[1]);
        assert_eq!(free.take(0, 32).heap_bytes(), caps[0]);
        assert_eq!(free.bytes(), 0);
        // Empty: a new batch.
        assert!(free.take(0, 32).is_empty() && free.is_empty());

        // Over budget, the bottom (coldest) batch is freed, never the one just put.
        let mut small = FreeBatches::new(caps[1] + caps[2]);
        let made: Vec<Batch> = sizes.iter().map(|&n| filled(&mut small, 0, n)).collect();
        for b in made {
            small.put(b);
        }
        assert_eq!(small.len(), 2);
        assert_eq!(small.bytes(), caps[1] + caps[2]);
        assert_eq!(small.take(0, 32).heap_bytes(), caps[2]);
        assert_eq!(small.take(0, 32).heap_bytes(), caps[1]);
        // A batch larger than the whole budget is not kept at all.
        let mut tiny = FreeBatches::new(caps[0]);
        let b = filled(&mut tiny, 0, 17);
        tiny.put(b);
        assert!(tiny.is_empty());
        assert_eq!(tiny.bytes(), 0);
    }

    #[test]
    fn a_parked_consumer_is_woken_by_the_hand_off() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(64, pools.clone());
        let w = Waiter::current();
        q.set_waiter(&w);
        // Data already queued: nothing declared, nothing to wake.
        let mut b = Batch::with_capacity(32, 0);
        b.push(meta(1), b"x");
        q.offer(b).unwrap();
        assert!(!w.prepare(Duration::from_secs(30), [&*q]));
        assert!(!w.is_sleeping());
        assert!(!q.wake(), "a consumer that is not asleep is not unparked");
        q.recycle(q.pop_batch().unwrap());
        // Empty: the consumer parks (with a timeout far beyond the test's patience) until
        // the hand-off wakes it; the barrier orders "about to park" before the offer, and a
        // wake-up that comes before the park itself is kept by the thread's park token.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (q2, b2) = (q.clone(), barrier.clone());
        let consumer = std::thread::spawn(move || {
            let w = Waiter::current();
            q2.set_waiter(&w);
            assert!(w.prepare(Duration::from_secs(30), [&*q2]));
            b2.wait();
            let t = std::time::Instant::now();
            while q2.is_empty() && t.elapsed() < std::time::Duration::from_secs(30) {
                w.park();
            }
            (t.elapsed(), q2.pop_batch().map(|b| b.len()))
        });
        barrier.wait();
        let mut b = Batch::with_capacity(32, 0);
        b.push(meta(1), b"y");
        b.push(meta(1), b"z");
        q.offer(b).unwrap();
        assert!(q.wake(), "the consumer declared itself asleep: unparked");
        let (waited, got) = consumer.join().unwrap();
        assert_eq!(got, Some(2));
        assert!(
            waited < std::time::Duration::from_secs(30),
            "woken, not timed out"
        );
    }

    #[test]
    fn a_consumer_of_many_queues_is_unparked_once_per_round() {
        let pools = BatchPools::new(1, 8);
        let qs: Vec<_> = (0..3)
            .map(|_| SocketQueue::new(64, pools.clone()))
            .collect();
        let w = Waiter::current();
        for q in &qs {
            q.set_waiter(&w);
        }
        assert!(w.prepare(Duration::from_secs(30), qs.iter().map(|q| &**q)));
        // One round hands a batch to each queue, then wakes each: one unpark.
        for (i, q) in qs.iter().enumerate() {
            let mut b = Batch::with_capacity(32, 0);
            b.push(meta(i as u32), b"d");
            q.offer(b).unwrap();
        }
        let unparked: Vec<bool> = qs.iter().map(|q| q.wake()).collect();
        assert_eq!(unparked, vec![true, false, false]);
        assert!(!w.is_sleeping());
        // The unpark came before the park: the token makes it return at once.
        let t = std::time::Instant::now();
        w.park();
        assert!(t.elapsed() < std::time::Duration::from_secs(30));
        // Anything queued anywhere: not declared asleep, so the next round wakes nobody.
        assert!(!w.prepare(Duration::from_secs(30), qs.iter().map(|q| &**q)));
        assert!(!qs[2].wake());
        // Drained: declares again, and the next hand-off unparks again.
        for q in &qs {
            q.recycle(q.pop_batch().unwrap());
        }
        assert!(w.prepare(Duration::from_secs(30), qs.iter().map(|q| &**q)));
        let mut b = Batch::with_capacity(32, 0);
        b.push(meta(1), b"e");
        qs[1].offer(b).unwrap();
        assert!(qs[1].wake());
        w.park();
    }

    #[test]
    fn a_consumer_whose_park_ends_soon_is_left_to_its_timer() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(64, pools.clone());
        let w = Waiter::current();
        q.set_waiter(&w);
        // Parked for 1 ms: a worker that sleeps up to 1 s between polls leaves it to its
        // timer (it stays declared asleep), and the park still ends by itself.
        assert!(w.prepare(Duration::from_millis(1), [&*q]));
        hand_over(&q, 1);
        assert!(!q.wake_unless_due(Instant::now(), Duration::from_secs(1)));
        assert!(w.is_sleeping());
        w.park();
        assert!(!w.is_sleeping());
        assert_eq!(q.len(), 1);
        q.recycle(q.pop_batch().unwrap());
        // Parked for long: woken, also by a worker that sleeps between polls.
        assert!(w.prepare(Duration::from_secs(30), [&*q]));
        hand_over(&q, 1);
        assert!(q.wake_unless_due(Instant::now(), Duration::from_millis(1)));
        let t = Instant::now();
        w.park();
        assert!(t.elapsed() < Duration::from_secs(30));
        q.recycle(q.pop_batch().unwrap());
        // A busy-polling worker (nothing to wait for) wakes it whatever its timeout.
        assert!(w.prepare(Duration::from_secs(10), [&*q]));
        hand_over(&q, 1);
        assert!(q.wake_unless_due(Instant::now(), Duration::ZERO));
        w.park();
        q.recycle(q.pop_batch().unwrap());
        // Parked for 1 ms again, but the queue is half full: woken, the timer not waited for
        // (the worker's next round might not fit in the other half).
        assert!(w.prepare(Duration::from_millis(1), [&*q]));
        hand_over(&q, 31);
        assert!(!q.wake_unless_due(Instant::now(), Duration::from_secs(1)));
        hand_over(&q, 1);
        assert!(q.wake_unless_due(Instant::now(), Duration::from_secs(1)));
        assert!(!w.is_sleeping());
        w.park();
        while let Some(b) = q.pop_batch() {
            q.recycle(b);
        }
    }

    #[test]
    fn a_ready_set_hands_over_each_bit_once_across_chunks_and_growth() {
        let r = ReadySet::default();
        r.mark(5); // no room yet: ignored
        assert!(!r.any());
        r.ensure(100);
        r.mark(5);
        r.mark(99);
        // Growing keeps what was set in the chunks before.
        r.ensure(3 * READY_BITS);
        r.mark(READY_BITS + 7);
        r.mark(3 * READY_BITS - 1);
        r.mark(5);
        assert!(r.any());
        let mut got = Vec::new();
        r.take(|b| got.push(b));
        assert_eq!(got, vec![5, 99, READY_BITS + 7, 3 * READY_BITS - 1]);
        assert!(!r.any());
        r.take(|_| panic!("taken twice"));
    }

    /// Mail: none for a thread that does not take it; once it does, batches come
    /// out in the order posted (past the ring's 64 slots too), and mail waiting keeps the
    /// thread from parking, as a ready bit does.
    #[test]
    fn mail_comes_out_in_order_and_keeps_its_consumer_awake() {
        let w = Waiter::current();
        assert!(!w.accepts_mail());
        assert!(!w.has_mail() && w.take_mail().is_none());
        w.accept_mail();
        assert!(w.accepts_mail());
        for i in 0..100 {
            w.post(numbered(0, i));
        }
        assert!(
            !w.prepare(Duration::from_secs(30), []),
            "mail waiting: no park"
        );
        for i in 0..100 {
            assert_eq!(seq_of(&w.take_mail().expect("posted")), (0, i));
        }
        assert!(!w.has_mail() && w.take_mail().is_none());
        assert!(w.prepare(Duration::from_secs(30), []), "nothing waiting");
        w.post(numbered(0, 100));
        assert!(w.wake(), "asleep: woken");
        w.park(); // the unpark came first: returns at once
        assert!(w.has_mail());
    }

    /// A worker's marks of a round (`ReadyMarks`): set when published, one word at a time,
    /// for the consumer it gathers for; a queue of another consumer is marked at once.
    #[test]
    fn ready_marks_are_set_together_at_publish_and_another_consumer_s_at_once() {
        let pools = BatchPools::new(1, 8);
        let w = Waiter::current();
        let other = std::thread::spawn(Waiter::current).join().unwrap();
        // Bits 0..130 span three words.
        let qs: Vec<_> = (0..130)
            .map(|_| SocketQueue::new(64, pools.clone()))
            .collect();
        for (i, q) in qs.iter().enumerate() {
            q.set_ready_bit(&w, i);
        }
        let q_other = SocketQueue::new(64, pools.clone());
        q_other.set_ready_bit(&other, 7);
        let q_plain = SocketQueue::new(64, pools);
        let mut marks = ReadyMarks::default();
        for q in [
            &qs[3], &qs[64], &qs[129], &qs[5], &q_other, &q_plain, &qs[3],
        ] {
            marks.mark(q);
        }
        assert!(!w.ready.any(), "the first consumer's bits wait for publish");
        let mut got = Vec::new();
        other.ready.take(|b| got.push(b));
        assert_eq!(got, vec![7], "a second consumer's bit is set at once");
        marks.publish();
        let mut got = Vec::new();
        w.ready.take(|b| got.push(b));
        assert_eq!(got, vec![3, 5, 64, 129]);
        // Nothing gathered: the next round may gather for the other consumer.
        marks.mark(&q_other);
        marks.mark(&qs[1]);
        assert!(!other.ready.any());
        let mut got = Vec::new();
        w.ready.take(|b| got.push(b));
        assert_eq!(got, vec![1]);
        marks.publish();
        let mut got = Vec::new();
        other.ready.take(|b| got.push(b));
        assert_eq!(got, vec![7]);
    }

    /// The ready bit and the park: a hand-off sets the bit, so one made before the consumer
    /// looks keeps it awake and one after it declared itself asleep comes before the wake-up.
    #[test]
    fn a_queue_with_a_ready_bit_is_marked_by_each_hand_off() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(64, pools);
        let w = Waiter::current();
        q.set_ready_bit(&w, 42);
        hand_over(&q, 1);
        assert!(!w.prepare(Duration::from_secs(30), []), "marked: no park");
        let mut got = Vec::new();
        w.ready.take(|b| got.push(b));
        assert_eq!(got, vec![42]);
        assert!(w.prepare(Duration::from_secs(30), []), "nothing marked");
        hand_over(&q, 1);
        assert!(q.wake(), "asleep: woken");
        w.park(); // the unpark came first: returns at once
        w.ready.take(|b| got.push(b));
        assert_eq!(got, vec![42, 42]);
    }

    #[test]
    fn a_lazy_consumer_is_woken_only_by_a_half_full_queue() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(8, pools.clone());
        let w = Waiter::current();
        q.set_waiter(&w);
        w.set_lazy(true);
        assert!(w.prepare(Duration::from_secs(30), [&*q]));
        // 3 of 8: left to its timer, even by a busy-polling worker.
        hand_over(&q, 3);
        assert!(!q.wake_unless_due(Instant::now(), Duration::ZERO));
        assert!(w.is_sleeping());
        // 4 of 8: half full, woken.
        hand_over(&q, 1);
        assert!(q.wake_unless_due(Instant::now(), Duration::ZERO));
        assert!(!w.is_sleeping());
        w.park();
        while let Some(b) = q.pop_batch() {
            q.recycle(b);
        }
        // Not lazy any more: the first datagram wakes it.
        w.set_lazy(false);
        assert!(w.prepare(Duration::from_secs(30), [&*q]));
        hand_over(&q, 1);
        assert!(q.wake_unless_due(Instant::now(), Duration::ZERO));
        w.park();
        q.recycle(q.pop_batch().unwrap());
    }

    #[test]
    fn recv_timeout_waits_for_the_hand_off_and_times_out_when_none_comes() {
        let pools = BatchPools::new(1, 8);
        let q = SocketQueue::new(64, pools.clone());
        let mut rx = Receiver::new(q.clone());
        assert_eq!(rx.recv_timeout(std::time::Duration::from_millis(5)), None);
        let sender = std::thread::spawn(move || {
            let mut b = Batch::with_capacity(32, 0);
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
        let mut b = Batch::with_capacity(32, 0);
        for i in 0..2u8 {
            b.push(meta(1), &[i; 3]);
        }
        q.offer(b).unwrap();
        let mut b = Batch::with_capacity(32, 0);
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
        let mut b = Batch::with_capacity(32, 0);
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
        let mut b = Batch::with_capacity(32, 0);
        b.push(meta(4), b"a");
        b.push(meta(4), b"b");
        q.offer(b).unwrap();
        assert_eq!(q.close(), vec![(NsId(4), 2)]);
        let mut b = Batch::with_capacity(32, 0);
        b.push(meta(4), b"c");
        assert!(q.offer(b).is_err(), "closed queues take nothing");
    }
}
