//! The poll-mode worker: one per configured core, pinned, owning one queue of every port.
//!
//! Each poll: load the snapshot once, receive a burst from each port, parse, classify (R8,
//! R10), match sockets (R9), stage deliveries in one batch per socket queue, answer ARP and
//! ICMP echo (R15) and unreachable ports (rate-limited), then hand every batch over once;
//! then take applications' sends, apply R11–R14 and transmit. Nothing here blocks, locks or
//! allocates per packet (batches and frames are recycled).

use crate::counters::{NsDrop, NsWriter, PortCounters, PortDrop, WorkerCounters};
use crate::owner_table::{Dest, NsSlot, OwnerTable};
use crate::port::{Port, MAX_GROUP};
use crate::prefetch;
use crate::socket::{
    Batch, BatchPools, DgramMeta, FreeBatches, OfferStep, ReadyMarks, SocketQueue, Waiter,
};
use crate::types::{DevId, NsId, Proto, SocketId};
use crate::wire::{self, ArpOp, FrameAddrs, MacAddr, Parsed, BROADCAST_MAC, DEFAULT_TTL};
use arc_swap::ArcSwap;
use crossbeam::queue::ArrayQueue;
use hashbrown::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A datagram an application asks to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRequest {
    /// The sending namespace.
    pub ns: NsId,
    /// Source address: chosen by the caller with R13, or given explicitly (R14 checks it).
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// Learned IPv4 → MAC bindings, shared by all workers (a reply may arrive on another worker
/// than the one that asked). Readers load it once per poll; learning copies the small map.
#[derive(Debug, Default)]
pub struct NeighTable {
    map: ArcSwap<HashMap<(u16, Ipv4Addr), MacAddr>>,
    write: Mutex<()>,
}

impl NeighTable {
    pub fn lookup(&self, dev: DevId, ip: Ipv4Addr) -> Option<MacAddr> {
        self.map.load().get(&(dev.0, ip)).copied()
    }

    /// Records `ip is-at mac` on `dev`; returns whether it was new or changed.
    pub fn learn(&self, dev: DevId, ip: Ipv4Addr, mac: MacAddr) -> bool {
        if self.lookup(dev, ip) == Some(mac) {
            return false;
        }
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (**self.map.load()).clone();
        next.insert((dev.0, ip), mac);
        self.map.store(Arc::new(next));
        true
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What workers, the control thread and applications share.
#[derive(Debug)]
pub struct Shared {
    pub table: Arc<ArcSwap<OwnerTable>>,
    pub sends: ArrayQueue<SendRequest>,
    pub pools: Arc<BatchPools>,
    pub neigh: NeighTable,
    pub stop: AtomicBool,
}

/// Empty batches consumers can give back to a worker between two of its polls (more are
/// freed): the worker takes them into its [`FreeBatches`] at the start of each poll.
const BATCHES_RETURNED: usize = 1024;

/// Bytes of empty batches a worker keeps for reuse ([`FreeBatches`], last in first out): a
/// consumer stalled for ~1 ms at 20 Mpps leaves ~300 batches of 64 small datagrams (~4 KiB
/// each) behind; 1,500-byte datagrams fill 100 KiB batches, of which it keeps ~80.
const FREE_BATCH_BYTES: usize = 8 << 20;

impl Shared {
    pub fn new(table: Arc<ArcSwap<OwnerTable>>, workers: usize, send_depth: usize) -> Arc<Self> {
        Arc::new(Shared {
            table,
            sends: ArrayQueue::new(send_depth.max(1)),
            pools: BatchPools::new(workers, BATCHES_RETURNED),
            neigh: NeighTable::default(),
            stop: AtomicBool::new(false),
        })
    }
}

/// A parked consumer is woken when the worker finds nothing more to do (it is about to sleep
/// or spin: all it received is handed over), or at the latest this many polls after the first
/// batch it was not yet woken for (at most that many bursts of latency under load). So at low
/// load a consumer is woken once per busy spell of the worker, not once per poll; and a
/// consumer that keeps up under load is not parked, so the wake is a load per queue.
const WAKE_EVERY_POLLS: u32 = 4;

/// Under load, wake-ups of parked consumers are also at least this far apart (the poll that
/// finds nothing more to do still wakes at once). An unpark is a futex call and, for a consumer
/// on another core, an interrupt there: a consumer that keeps parking between bursts (one that
/// shares its core, say) was unparked ~60,000 times a second at 8 Mpps, 8% of the worker's
/// time. Batches wait at most this much longer; the queue absorbs 50 µs of traffic.
const WAKE_GAP: Duration = Duration::from_micros(50);

/// Queues listed for a wake-up (`Staging::to_wake`) after which the worker wakes their
/// consumers whatever `WAKE_GAP` says: at 20 Mpps over 1,000 queues, 50 µs list ~1,000
/// (a queue handed batches in consecutive rounds is listed once), and the list must not
/// grow without bound while the time a worker is handed stands still.
const WAKE_LIST_MAX: usize = 4096;

/// Up to this many local addresses in a family, the receive path does not prefetch the
/// address-table slots of a burst's destinations: the table (16-byte slots, at most a quarter
/// of them used at this size: 256 KiB) then stays in the core's L2, and the hint's extra hash per
/// packet costs more than the misses it could hide (measured at 1 namespace; at 64,000 and
/// 100,000 addresses the hint pays).
const CACHED_ADDRS: usize = 4096;

/// From this many queues handed batches in one poll on, `flush_staging` asks for each
/// queue's lines ahead of the hand-offs (`SocketQueue::prefetch_offer`): with one or a few
/// queues they stay in the cache, and the passes would only cost.
const PREFETCH_OFFERS: usize = 4;

/// How often a worker reads its ports' ring drops (`Port::rx_ring_drops`: a system
/// call on AF_PACKET, a device statistics read on DPDK).
const RING_DROPS_EVERY: Duration = Duration::from_millis(100);

/// The time a polling loop hands each [`Worker::poll`]: the clock is read every
/// `EVERY` polls, not per poll. Under load a poll may take a handful of frames, and the time
/// only drives timers of 50 µs and more (consumer wake-ups, ICMP tokens, ARP retries, ring
/// drop reads), for which a few polls of lag are nothing. A loop that hands `poll` a time
/// that never moves stops those timers: a consumer is then woken only when a poll finds
/// nothing, and the queues waiting for a wake-up pile up (`Staging::to_wake`).
#[derive(Debug)]
pub struct PollClock {
    now: Instant,
    polls: u32,
}

impl PollClock {
    /// Polls between two reads of the clock while every poll finds work.
    const EVERY: u32 = 8;

    pub fn new() -> Self {
        PollClock {
            now: Instant::now(),
            polls: 0,
        }
    }

    /// The time for the next poll.
    #[inline]
    pub fn now(&mut self) -> Instant {
        self.polls += 1;
        if self.polls >= Self::EVERY {
            self.polls = 0;
            self.now = Instant::now();
        }
        self.now
    }

    /// After a sleep, which took at least as long as asked: the next poll reads the clock.
    pub fn slept(&mut self) {
        self.polls = Self::EVERY;
    }
}

impl Default for PollClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: usize,
    pub burst: usize,
    /// ICMP port-unreachable messages per second (token bucket, burst of the same size).
    pub icmp_rate: u32,
    /// Sends waiting for ARP resolution, at most.
    pub arp_queue: usize,
    /// How long a send waits for ARP before it is dropped (`arp_unresolved`).
    pub arp_timeout: Duration,
    /// Zero: `run` spins when a poll found nothing (poll mode). Otherwise it sleeps this long
    /// after an idle poll (the daemon's `idle_sleep_us`, for shared machines and demos).
    pub idle_sleep: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: 0,
            burst: 64,
            icmp_rate: 100,
            arp_queue: 256,
            arp_timeout: Duration::from_secs(3),
            idle_sleep: Duration::ZERO,
        }
    }
}

struct WaitingSend {
    req: SendRequest,
    port: usize,
    next_hop: Ipv4Addr,
    since: Instant,
}

/// One port queue of this worker, with its device id and counter index.
pub struct WorkerPort<P> {
    pub port: P,
    pub dev: DevId,
    /// Index into the counters' port list.
    pub index: usize,
}

/// Per-poll staging: one open batch per socket queue touched in this burst.
struct Staging {
    /// The batches being filled this poll, with their queues; always empty between polls.
    open: Vec<(OpenQueue, Batch)>,
    /// Empty batches to open (`FREE_BATCH_BYTES`).
    free: FreeBatches,
    /// Queues handed batches since their consumers were last woken (see `WAKE_EVERY_POLLS`).
    to_wake: Vec<OpenQueue>,
    /// The snapshots the queues of `to_wake` were staged from, which keep them alive until
    /// their consumers are woken (usually one: a count per snapshot, not per queue).
    to_wake_held: Vec<Arc<OwnerTable>>,
    /// Polls since the oldest of `to_wake` was handed its batch.
    wake_polls: u32,
    /// When consumers were last woken (see `WAKE_GAP`).
    last_wake: Option<Instant>,
    /// Runs (namespace, broadcast, datagrams) of the batch being handed over: counted once
    /// the queue has taken it.
    scratch: Vec<(NsId, bool, usize)>,
    /// Where each queue's entry in `open` is, once a poll has opened more than a few.
    index: OpenIndex,
    /// The ready bits of the queues handed batches in a round, set together after the
    /// hand-offs: with the batch, before the wake-up (a consumer that wakes on its own timer
    /// must find the queue marked).
    marks: ReadyMarks,
    /// Mail gathered in a round, per consumer thread that accepts it (`Waiter::accept_mail`;
    /// l3nsd has one), posted after the hand-offs. The entries stay from round to round.
    mail: Vec<MailTo>,
    /// The runs of datagrams put in `mail` this round, in order: (queue, entry of `mail`,
    /// datagrams). Counted in their queues, or refused, at the flush.
    mail_log: Vec<(OpenQueue, u8, u32)>,
    /// Datagrams of `mail` a queue refused at the flush: (entry, first, end), cut out of it.
    mail_cut: Vec<(u8, u32, u32)>,
    /// The entries of `mail` posted to since their consumers were last woken, one bit each
    /// (`MAIL_CONSUMERS` fit), and those of them with a queue at least half full: a consumer
    /// of mail is woken once for all of its queues, not once per queue (listing each in
    /// `to_wake` loaded each queue's waiter, 3% of l3nsd's worker at line rate over 100).
    mail_wake: MailWake,
    /// Queues found to take mail or to have batches of their own, with that answer as a memo
    /// hint (`HINT_OWN`; direct-mapped by address): `target` then reads nothing of the queue's,
    /// whose line its consumer writes as it takes its datagrams out (with ten queues, reading
    /// it per datagram was a sixth of the worker). Valid for the snapshot `mail_seen_in`,
    /// which is held so that no queue of a later one can take the address of one listed (a
    /// queue's consumer is not changed while it takes mail: l3nsd's service thread keeps its
    /// sockets).
    mail_seen: [(usize, u8); MAIL_SEEN],
    mail_seen_in: Option<Arc<OwnerTable>>,
}

/// Slots of `Staging::mail_seen`.
const MAIL_SEEN: usize = 256;

/// A consumer thread that takes mail, and its batch of this round (empty between rounds).
/// Holding the waiter keeps its address, the key its queues give
/// (`SocketQueue::consumer_key`), from being reused by another.
struct MailTo {
    key: usize,
    waiter: Arc<Waiter>,
    batch: Batch,
}

/// Consumer threads a worker posts mail to; the queues of any further one are handed their
/// own batches, as before mail.
const MAIL_CONSUMERS: usize = 4;

/// See `Staging::mail_wake`: bit `m` for entry `m` of `Staging::mail`.
#[derive(Clone, Copy, Default)]
struct MailWake {
    posted: u8,
    half_full: u8,
}

/// The entry of `mail` for the consumer thread of `queue` (one without batches of its own),
/// if that thread takes mail.
#[inline]
fn mail_to(mail: &mut Vec<MailTo>, queue: &SocketQueue) -> Option<usize> {
    let key = queue.consumer_key();
    if key == 0 {
        return None;
    }
    if let Some(i) = mail.iter().position(|m| m.key == key) {
        return Some(i);
    }
    add_mail_to(mail, queue)
}

#[cold]
fn add_mail_to(mail: &mut Vec<MailTo>, queue: &SocketQueue) -> Option<usize> {
    if mail.len() >= MAIL_CONSUMERS {
        return None;
    }
    let (key, waiter) = queue.mail_consumer()?;
    mail.push(MailTo {
        key,
        waiter,
        batch: Batch::default(),
    });
    Some(mail.len() - 1)
}

impl Staging {
    fn new() -> Self {
        Staging {
            open: Vec::new(),
            free: FreeBatches::new(FREE_BATCH_BYTES),
            to_wake: Vec::new(),
            to_wake_held: Vec::new(),
            wake_polls: 0,
            last_wake: None,
            scratch: Vec::new(),
            index: OpenIndex::new(),
            marks: ReadyMarks::default(),
            mail: Vec::new(),
            mail_log: Vec::new(),
            mail_cut: Vec::new(),
            mail_wake: MailWake::default(),
            mail_seen: [(0, 0); MAIL_SEEN],
            mail_seen_in: None,
        }
    }
}

/// Up to this many open batches `stage` finds its queue's by looking through them; beyond,
/// through `OpenIndex` (with a queue per socket a group of 64 datagrams opens ~64 batches,
/// and the scan over them was 5% of the worker).
const OPEN_SCAN: usize = 8;

/// Slots of `OpenIndex`: twice the most batches it indexes (`OPEN_INDEXED`).
const OPEN_INDEX_SLOTS: usize = 1024;
const OPEN_INDEXED: usize = OPEN_INDEX_SLOTS / 2;

/// An open-addressing map from a queue's address to its entry in `Staging::open` (the
/// entry's index + 1; 0 is empty), emptied at each flush by clearing the slots it used.
struct OpenIndex {
    slots: Box<[u16]>,
    used: Vec<u16>,
}

impl OpenIndex {
    fn new() -> Self {
        OpenIndex {
            slots: vec![0; OPEN_INDEX_SLOTS].into_boxed_slice(),
            used: Vec::new(),
        }
    }

    #[inline(always)]
    fn home(q: *const SocketQueue) -> usize {
        ((q as usize >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) & (OPEN_INDEX_SLOTS - 1)
    }

    /// The entry of `q` in `open`, or the slot where it goes.
    #[inline(always)]
    fn find(&self, open: &[(OpenQueue, Batch)], q: *const SocketQueue) -> Result<usize, usize> {
        let mut i = Self::home(q);
        loop {
            match self.slots[i] {
                0 => return Err(i),
                e if std::ptr::eq(open[usize::from(e) - 1].0 .0, q) => {
                    return Ok(usize::from(e) - 1)
                }
                _ => i = (i + 1) & (OPEN_INDEX_SLOTS - 1),
            }
        }
    }

    #[inline(always)]
    fn insert_at(&mut self, slot: usize, entry: usize) {
        self.slots[slot] = (entry + 1) as u16;
        self.used.push(slot as u16);
    }

    fn clear(&mut self) {
        for s in self.used.drain(..) {
            self.slots[usize::from(s)] = 0;
        }
    }
}

/// The queue an open batch is for, without a reference count of its own: every queue is
/// staged from the owner-table snapshot the poll holds (`stage` takes the snapshot's `Arc`,
/// `unicast_remembered` a memo valid for its sockets generation), and every open batch is
/// handed over (`flush_staging`) before the poll lets the snapshot go; a queue still to be
/// woken after the poll is kept alive by its snapshot (`Staging::to_wake_held`). Cloning the
/// queue's `Arc` per queue and round instead was a locked increment on the queue's line in
/// the middle of the receive path: after an idle sleep, with the batch lines just written
/// still cold, it took over a third of that path's samples at 100 kpps over 100 sockets.
#[derive(Clone, Copy)]
struct OpenQueue(*const SocketQueue);

impl From<&Arc<SocketQueue>> for OpenQueue {
    fn from(q: &Arc<SocketQueue>) -> Self {
        OpenQueue(Arc::as_ptr(q))
    }
}

// SAFETY: an `OpenQueue` lives in `Staging::open` within one poll, or in `Staging::to_wake`
// beside the snapshot that holds its queue (see above), on the worker's thread; it is only
// dereferenced there, and `SocketQueue` itself is `Sync`.
#[allow(unsafe_code)]
unsafe impl Send for OpenQueue {}

/// A frame the worker itself answers with (ARP reply, echo reply, unreachable), built in a
/// scratch buffer during the receive callback and sent after it.
struct Reply {
    port: usize,
    len: usize,
    buf: [u8; 1514],
}

pub struct Worker<P: Port> {
    cfg: WorkerConfig,
    ports: Vec<WorkerPort<P>>,
    shared: Arc<Shared>,
    counters: Arc<WorkerCounters>,
    ns: NsWriter,
    staging: Staging,
    replies: Vec<Reply>,
    replies_used: usize,
    waiting: Vec<WaitingSend>,
    arp_asked: HashMap<(u16, Ipv4Addr), Instant>,
    icmp_tokens: f64,
    icmp_refill: Instant,
    /// Per port: its receive- and transmit-ring drops counted so far (`Port::rx_ring_drops`,
    /// `Port::tx_ring_drops`).
    ring_drops_seen: Vec<(u64, u64)>,
    /// When the ports' ring drops are read next.
    next_ring_read: Option<Instant>,
}

impl<P: Port> Worker<P> {
    pub fn new(
        cfg: WorkerConfig,
        ports: Vec<WorkerPort<P>>,
        shared: Arc<Shared>,
        counters: Arc<WorkerCounters>,
    ) -> Self {
        let ns = counters.writer();
        let replies = (0..cfg.burst.max(1))
            .map(|_| Reply {
                port: 0,
                len: 0,
                buf: [0; 1514],
            })
            .collect();
        Worker {
            icmp_tokens: f64::from(cfg.icmp_rate),
            cfg,
            ports,
            shared,
            counters,
            ns,
            staging: Staging::new(),
            replies,
            replies_used: 0,
            waiting: Vec::new(),
            arp_asked: HashMap::new(),
            icmp_refill: Instant::now(),
            ring_drops_seen: Vec::new(),
            next_ring_read: None,
        }
    }

    pub fn ports(&self) -> &[WorkerPort<P>] {
        &self.ports
    }

    pub fn ports_mut(&mut self) -> &mut [WorkerPort<P>] {
        &mut self.ports
    }

    /// Runs until `shared.stop` is set, pinned to `core` if given.
    pub fn run(mut self, core: Option<usize>) -> Self {
        if let Some(c) = core {
            core_affinity::set_for_current(core_affinity::CoreId { id: c });
        }
        let mut clock = PollClock::new();
        while !self.shared.stop.load(Ordering::Relaxed) {
            if self.poll(clock.now()) == 0 {
                if self.cfg.idle_sleep.is_zero() {
                    // Busy polling: idle polls count like busy ones (a poll that finds nothing
                    // is short, and at full load a third of polls may find the ring empty).
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(self.cfg.idle_sleep);
                    clock.slept();
                }
            }
        }
        // Drain what is already staged or waiting to be sent before leaving.
        self.poll(Instant::now());
        self.wake_consumers(Instant::now());
        self.count_ring_drops();
        self
    }

    /// One poll of every port and of the send queue. Returns the packets handled.
    pub fn poll(&mut self, now: Instant) -> usize {
        let table = self.shared.table.load_full();
        let st = &mut self.staging;
        if !st
            .mail_seen_in
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &table))
        {
            st.mail_seen = [(0, 0); MAIL_SEEN];
            st.mail_seen_in = Some(table.clone());
        }
        self.staging.free.refill(&self.shared.pools, self.cfg.id);
        let mut work = 0;
        for p in 0..self.ports.len() {
            work += self.rx_port(&table, p, now);
        }
        self.flush_staging(&table);
        work += self.tx_sends(&table, now);
        self.retry_waiting(&table, now);
        for p in &mut self.ports {
            p.port.tx_flush();
        }
        if self.next_ring_read.is_none_or(|t| now >= t) {
            self.next_ring_read = Some(now + RING_DROPS_EVERY);
            self.count_ring_drops();
            for p in &mut self.ports {
                p.port.maintain(now);
            }
        }
        // Open batches point at queues this poll's snapshot holds (`OpenQueue`).
        debug_assert!(self.staging.open.is_empty());
        if work > 0 {
            self.counters.busy_polls.inc();
        } else {
            self.counters.idle_polls.inc();
        }
        if !self.staging.to_wake.is_empty() || self.staging.mail_wake.posted != 0 {
            self.staging.wake_polls += 1;
            let spaced = self
                .staging
                .last_wake
                .is_none_or(|t| now.saturating_duration_since(t) >= WAKE_GAP);
            if work == 0
                || (self.staging.wake_polls >= WAKE_EVERY_POLLS && spaced)
                || self.staging.to_wake.len() >= WAKE_LIST_MAX
            {
                self.wake_consumers(now);
            }
        }
        work
    }

    /// Adds what each port's rings dropped since the last read to the port's drops: the
    /// receive ring's as `rx_ring_full` (frames lost before the worker saw them), the transmit
    /// ring's as `tx_ring_full` (frames the port had accepted, already counted sent). Without
    /// this both would be lost silently.
    fn count_ring_drops(&mut self) {
        self.ring_drops_seen.resize(self.ports.len(), (0, 0));
        for (p, (rx_seen, tx_seen)) in self.ports.iter_mut().zip(&mut self.ring_drops_seen) {
            let pc = &self.counters.ports[p.index];
            for (total, seen, why) in [
                (p.port.rx_ring_drops(), rx_seen, PortDrop::RxRingFull),
                (p.port.tx_ring_drops(), tx_seen, PortDrop::TxRingFull),
            ] {
                if let Some(total) = total.filter(|t| *t > *seen) {
                    pc.dropped[why.index()].add(total - *seen);
                    *seen = total;
                }
            }
        }
    }

    /// Wakes the consumers parked on the queues handed batches since the last call, and those
    /// posted mail (once each, `Staging::mail_wake`): one unpark per consumer thread
    /// (`SocketQueue::wake`), a load per queue otherwise. A
    /// consumer whose park times out within `idle_sleep` anyway is left to its timer (unless
    /// the queue is half full: `SocketQueue::wake_unless_due`): that is no more than the
    /// latency this worker's own sleep adds, and it saves a cross-core wake-up (the costliest
    /// thing l3nsd did per round at 100 kpps). A busy-polling worker (`idle_sleep` zero)
    /// wakes every parked consumer. `now` is the poll's: an older one only makes an unneeded
    /// wake-up more likely, never a missed one.
    fn wake_consumers(&mut self, now: Instant) {
        let mut woken = 0;
        for q in self.staging.to_wake.drain(..) {
            // SAFETY: see `OpenQueue`: a snapshot in `to_wake_held` keeps the queue alive.
            #[allow(unsafe_code)]
            let q = unsafe { &*q.0 };
            woken += u64::from(q.wake_unless_due(now, self.cfg.idle_sleep));
        }
        let MailWake { posted, half_full } = std::mem::take(&mut self.staging.mail_wake);
        for (m, to) in self.staging.mail.iter().enumerate() {
            if posted & 1 << m != 0 {
                let half_full = half_full & 1 << m != 0;
                woken += u64::from(to.waiter.wake_after_hand_off(
                    now,
                    self.cfg.idle_sleep,
                    half_full,
                ));
            }
        }
        if woken > 0 {
            self.counters.consumer_wakeups.add(woken);
        }
        self.staging.to_wake_held.clear();
        self.staging.wake_polls = 0;
        self.staging.last_wake = Some(now);
    }

    fn rx_port(&mut self, table: &Arc<OwnerTable>, p: usize, now: Instant) -> usize {
        let dev = self.ports[p].dev;
        let index = self.ports[p].index;
        let mac = self.ports[p].port.info().mac;
        let burst = self.cfg.burst;
        let Some(family) = table.family_of_dev(dev) else {
            // Not (yet) a device of the model: take the frames off the ring and count them.
            let pc = &self.counters.ports[index];
            return self.ports[p].port.rx_burst(burst, |f| {
                pc.rx_packets.inc();
                pc.rx_bytes.add(f.len() as u64);
                pc.drop(PortDrop::Unclaimed);
            });
        };
        let version = table.version();
        let mut rx = RxCtx {
            table,
            family,
            dev,
            mac,
            version,
            sockets_gen: table.sockets_gen(),
            port_index: p,
            pc: &self.counters.ports[index],
            ns: &mut self.ns,
            staging: &mut self.staging,
            worker: self.cfg.id,
            burst,
            replies: &mut self.replies,
            replies_used: &mut self.replies_used,
            neigh: &self.shared.neigh,
            icmp_tokens: &mut self.icmp_tokens,
            icmp_refill: &mut self.icmp_refill,
            icmp_rate: self.cfg.icmp_rate,
            now,
            rx_run: RxRun {
                ns: NsId(0),
                packets: 0,
                bytes: 0,
                gather: false,
            },
        };
        let n = self.ports[p].port.rx_groups(burst, |group| rx.group(group));
        self.send_replies();
        n
    }

    fn send_replies(&mut self) {
        for r in &self.replies[..self.replies_used] {
            let wp = &mut self.ports[r.port];
            let pc = &self.counters.ports[wp.index];
            let bytes = &r.buf[..r.len];
            if wp.port.tx_frame(bytes.len(), |b| {
                b[..bytes.len()].copy_from_slice(bytes);
                bytes.len()
            }) {
                pc.tx_packets.inc();
                pc.tx_bytes.add(bytes.len() as u64);
            } else {
                pc.drop(PortDrop::TxRingFull);
            }
        }
        self.replies_used = 0;
    }

    /// Hands every open batch to its queue; counts each datagram the queue took as
    /// delivered and each one it had no room for as `queue_full`. `table` is the poll's
    /// snapshot, from which every open batch's queue was staged.
    fn flush_staging(&mut self, table: &Arc<OwnerTable>) {
        let Staging {
            open,
            free,
            scratch,
            to_wake,
            to_wake_held,
            index,
            marks,
            mail,
            mail_log,
            mail_cut,
            mail_wake,
            ..
        } = &mut self.staging;
        if open.is_empty() && mail_log.is_empty() {
            return;
        }
        if !mail_log.is_empty() {
            flush_mail(mail, mail_log, mail_cut, mail_wake, &mut self.ns);
        }
        index.clear();
        if open.len() >= PREFETCH_OFFERS {
            for step in [OfferStep::Queue, OfferStep::End, OfferStep::Slot] {
                for (queue, _) in open.iter() {
                    // SAFETY: see `OpenQueue`, as below.
                    #[allow(unsafe_code)]
                    unsafe { &*queue.0 }.prefetch_offer(step);
                }
            }
        }
        for (queue, batch) in open.iter_mut() {
            // SAFETY: see `OpenQueue`: the snapshot this poll holds keeps the queue alive.
            #[allow(unsafe_code)]
            let queue = unsafe { &*queue.0 };
            let batch = std::mem::take(batch);
            // The batch's runs of datagrams of one namespace and kind (one run for a batch of
            // one flow, without walking it), so that the counters move once per run.
            scratch.clear();
            match batch.uniform() {
                Some((ns, broadcast)) => scratch.push((ns, broadcast, batch.len())),
                None => scratch.extend(
                    batch
                        .metas()
                        .chunk_by(|a, b| (a.ns, a.broadcast) == (b.ns, b.broadcast))
                        .map(|run| (run[0].ns, run[0].broadcast, run.len())),
                ),
            }
            let mut taken = match queue.offer_unmarked(batch) {
                Ok(taken) => {
                    marks.mark(queue);
                    taken
                }
                Err(batch) => {
                    free.put(batch);
                    0
                }
            };
            // The queue took the first `taken` datagrams and refused the rest.
            for &(ns, broadcast, n) in scratch.iter() {
                let delivered = n.min(taken);
                taken -= delivered;
                if delivered > 0 {
                    count_delivered(&mut self.ns, ns, broadcast, delivered);
                }
                if delivered < n {
                    self.ns
                        .tx(ns)
                        .drop(NsDrop::QueueFull, (n - delivered) as u64);
                }
            }
        }
        for m in mail.iter_mut().filter(|m| !m.batch.is_empty()) {
            m.waiter.post(std::mem::take(&mut m.batch));
        }
        marks.publish();
        // Consumers parked on these queues are woken after the round (`poll`); a queue
        // handed batches in consecutive rounds is listed once. The snapshot keeps them alive
        // until then.
        for (queue, _) in open.drain(..) {
            if !to_wake.last().is_some_and(|q| std::ptr::eq(q.0, queue.0)) {
                to_wake.push(queue);
            }
        }
        if !to_wake_held.last().is_some_and(|t| Arc::ptr_eq(t, table)) {
            to_wake_held.push(table.clone());
        }
    }

    /// Takes applications' sends: loopback (R11), local delivery (R12), egress check (R14),
    /// then the wire through ARP.
    fn tx_sends(&mut self, table: &Arc<OwnerTable>, now: Instant) -> usize {
        let mut n = 0;
        while n < self.cfg.burst {
            let Some(req) = self.shared.sends.pop() else {
                break;
            };
            n += 1;
            self.send_one(table, req, now);
        }
        self.flush_staging(table);
        n
    }

    fn send_one(&mut self, table: &Arc<OwnerTable>, req: SendRequest, now: Instant) {
        let Some(view) = table.namespace(req.ns) else {
            return;
        };
        // R14: never transmit a source the sender does not own.
        if !table.may_send_from(req.ns, req.src) {
            self.ns.tx(req.ns).tx_spoofed.inc();
            return;
        }
        let c = self.ns.tx(req.ns);
        c.tx_packets.inc();
        c.tx_bytes.add(req.payload.len() as u64);
        let version = table.version();
        // R11: loopback stays inside the sender (or its parent, when shared).
        if req.dst.is_loopback() {
            match table.loopback_socket(req.ns, Proto::Udp, req.dst, req.dst_port) {
                Some((to, sock)) => self.stage_local(table, to, sock, &req, version),
                None => self.ns.tx(req.ns).drop(NsDrop::NoSocket, 1),
            }
            return;
        }
        // R12: an address owned on this host is delivered here, never on the wire.
        if let Some(family) = table.family(view.family) {
            if let Some(to) = OwnerTable::owner_in(family, DevId::LO, req.dst) {
                match table.unicast_socket(to, Proto::Udp, req.dst, req.dst_port) {
                    Some(sock) => self.stage_local(table, to, sock, &req, version),
                    None => {
                        let c = self.ns.ns(to);
                        c.rx_packets.inc();
                        c.rx_bytes.add(req.payload.len() as u64);
                        self.ns.tx(to).drop(NsDrop::NoSocket, 1);
                    }
                }
                return;
            }
        }
        let Ok(choice) = table.select_source(req.ns, req.dst) else {
            self.count_port_drop_any(PortDrop::NoRoute);
            return;
        };
        let Some(port) = self.ports.iter().position(|p| p.dev == choice.dev) else {
            self.count_port_drop_any(PortDrop::NoRoute);
            return;
        };
        self.transmit_or_wait(port, choice.next_hop, req, now);
    }

    fn count_port_drop_any(&self, why: PortDrop) {
        if let Some(p) = self.ports.first() {
            self.counters.ports[p.index].drop(why);
        }
    }

    fn stage_local(
        &mut self,
        table: &OwnerTable,
        to: NsId,
        sock: crate::types::SocketId,
        req: &SendRequest,
        version: u64,
    ) {
        let Some(queue) = table.socket_queue(sock) else {
            self.ns.tx(to).drop(NsDrop::NoSocket, 1);
            return;
        };
        let c = self.ns.ns(to);
        c.rx_packets.inc();
        c.rx_bytes.add(req.payload.len() as u64);
        let meta = DgramMeta {
            socket: sock,
            ns: to,
            src: req.src,
            src_port: req.src_port,
            dst: req.dst,
            dst_port: req.dst_port,
            dev: DevId::LO.0,
            version,
            ..Default::default()
        };
        stage(
            &mut self.staging,
            self.cfg.id,
            self.cfg.burst,
            queue.into(),
            meta,
            &req.payload,
        );
    }

    fn transmit_or_wait(
        &mut self,
        port: usize,
        next_hop: Ipv4Addr,
        req: SendRequest,
        now: Instant,
    ) {
        let dev = self.ports[port].dev;
        let dst_mac = if req.dst.is_broadcast() {
            Some(BROADCAST_MAC)
        } else {
            self.shared.neigh.lookup(dev, next_hop)
        };
        match dst_mac {
            Some(mac) => self.transmit(port, mac, &req),
            None => {
                if self.waiting.len() >= self.cfg.arp_queue {
                    self.counters.ports[self.ports[port].index].drop(PortDrop::ArpUnresolved);
                    return;
                }
                self.ask_arp(port, req.src, next_hop, now);
                self.waiting.push(WaitingSend {
                    req,
                    port,
                    next_hop,
                    since: now,
                });
            }
        }
    }

    fn transmit(&mut self, port: usize, dst_mac: MacAddr, req: &SendRequest) {
        let wp = &mut self.ports[port];
        let pc = &self.counters.ports[wp.index];
        let addrs = FrameAddrs {
            src_mac: wp.port.info().mac,
            dst_mac,
            src_ip: req.src,
            dst_ip: req.dst,
        };
        let len = 14 + 20 + 8 + req.payload.len();
        if len > wp.port.info().max_frame {
            pc.drop(PortDrop::TxRingFull);
            return;
        }
        let mut built = 0;
        let ok = wp.port.tx_frame(len, |b| {
            built = wire::build_udp(
                b,
                &addrs,
                req.src_port,
                req.dst_port,
                DEFAULT_TTL,
                &req.payload,
            )
            .unwrap_or(0);
            built
        });
        if ok && built > 0 {
            pc.tx_packets.inc();
            pc.tx_bytes.add(built as u64);
        } else {
            pc.drop(PortDrop::TxRingFull);
        }
    }

    fn ask_arp(&mut self, port: usize, src: Ipv4Addr, target: Ipv4Addr, now: Instant) {
        let dev = self.ports[port].dev;
        if let Some(t) = self.arp_asked.get(&(dev.0, target)) {
            if now.duration_since(*t) < Duration::from_millis(500) {
                return;
            }
        }
        self.arp_asked.insert((dev.0, target), now);
        let wp = &mut self.ports[port];
        let mac = wp.port.info().mac;
        let pc = &self.counters.ports[wp.index];
        if wp.port.tx_frame(42, |b| {
            wire::build_arp_request(b, mac, src, target).unwrap_or(0)
        }) {
            pc.arp_requests_sent.inc();
            pc.tx_packets.inc();
            pc.tx_bytes.add(42);
        } else {
            pc.drop(PortDrop::TxRingFull);
        }
    }

    fn retry_waiting(&mut self, table: &Arc<OwnerTable>, now: Instant) {
        if self.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting);
        for w in waiting {
            let dev = self.ports[w.port].dev;
            if let Some(mac) = self.shared.neigh.lookup(dev, w.next_hop) {
                // Ownership may have moved while it waited: check R14 again.
                if table.may_send_from(w.req.ns, w.req.src) {
                    self.transmit(w.port, mac, &w.req);
                } else {
                    self.ns.tx(w.req.ns).tx_spoofed.inc();
                }
            } else if now.duration_since(w.since) > self.cfg.arp_timeout {
                self.counters.ports[self.ports[w.port].index].drop(PortDrop::ArpUnresolved);
            } else {
                self.ask_arp(w.port, w.req.src, w.next_hop, now);
                self.waiting.push(w);
            }
        }
    }
}

/// Adds a datagram to the open batch for `queue`, which the poll's snapshot holds (see
/// `OpenQueue`), opening one from the worker's free batches if there is none.
#[inline(always)]
fn stage(
    staging: &mut Staging,
    worker: usize,
    burst: usize,
    queue: OpenQueue,
    meta: DgramMeta,
    payload: &[u8],
) {
    let to = target(staging, worker, burst, queue);
    push_to(staging, to, queue, meta, payload);
}

/// Puts a datagram for `queue` where `target` said (`to`).
#[inline(always)]
fn push_to(staging: &mut Staging, to: Target, queue: OpenQueue, meta: DgramMeta, payload: &[u8]) {
    match to {
        Target::Open(i) => staging.open[i].1.push(meta, payload),
        Target::Mail(m) => push_mail(staging, m, queue, meta, payload),
    }
}

/// Where the datagrams for a queue go this round.
#[derive(Clone, Copy)]
enum Target {
    /// The queue's open batch (its index in `Staging::open`).
    Open(usize),
    /// Its consumer's mail (the index in `Staging::mail`), when it takes mail.
    Mail(usize),
}

#[inline(always)]
fn target(staging: &mut Staging, worker: usize, burst: usize, queue: OpenQueue) -> Target {
    target_and_hint(staging, worker, burst, queue).0
}

/// A socket memo's hint (`NsCounters::set_hint`) for its queue: where `target` settled that
/// its datagrams go, so that the worker reads nothing of the queue's, nor its entry of
/// `Staging::mail_seen` (which holds 256 queues: with 1,000 queues, each read of the queue's
/// line, which its consumer writes, was a third of the worker). 0: not settled yet;
/// `HINT_OWN`: batches of its own, for good; `m + 1`: consumer `m`'s mail (the entries of
/// `Staging::mail` stay, and a queue's consumer is not changed while it takes mail; a memo
/// lasts no longer than its sockets generation).
const HINT_OWN: u8 = u8::MAX;

/// `target`, and its answer as a memo's hint when it is settled for good (else 0).
#[inline(always)]
fn target_and_hint(
    staging: &mut Staging,
    worker: usize,
    burst: usize,
    queue: OpenQueue,
) -> (Target, u8) {
    let key = queue.0 as usize;
    let seen = (key >> 6) % MAIL_SEEN;
    if staging.mail_seen[seen].0 == key {
        let hint = staging.mail_seen[seen].1;
        return (hinted(staging, worker, burst, queue, hint), hint);
    }
    // SAFETY: see `OpenQueue`: the poll's snapshot holds the queue.
    #[allow(unsafe_code)]
    let q = unsafe { &*queue.0 };
    // A queue given an open batch this round keeps it to the end of the round, even if its
    // consumer took to mail meanwhile: its datagrams stay in order.
    if let Ok(i) = find_open(staging, queue) {
        return (Target::Open(i), 0);
    }
    if !q.by_mail() {
        // For good: a queue with batches of its own keeps them.
        staging.mail_seen[seen] = (key, HINT_OWN);
        return (
            Target::Open(open_batch(staging, worker, burst, queue)),
            HINT_OWN,
        );
    }
    if let Some(m) = mail_to(&mut staging.mail, q) {
        let hint = m as u8 + 1;
        staging.mail_seen[seen] = (key, hint);
        return (mail_target(staging, m, worker, burst), hint);
    }
    (Target::Open(open_batch(staging, worker, burst, queue)), 0)
}

/// `target` by a settled hint (not 0), a memo's or `Staging::mail_seen`'s.
#[inline(always)]
fn hinted(
    staging: &mut Staging,
    worker: usize,
    burst: usize,
    queue: OpenQueue,
    hint: u8,
) -> Target {
    match hint {
        HINT_OWN => Target::Open(open_batch(staging, worker, burst, queue)),
        m => mail_target(staging, usize::from(m - 1), worker, burst),
    }
}

/// Consumer `m`'s mail, its batch for this round opened from the worker's free batches if it
/// has none yet (posting it at the flush leaves none).
#[inline(always)]
fn mail_target(staging: &mut Staging, m: usize, worker: usize, burst: usize) -> Target {
    let to = &mut staging.mail[m].batch;
    if to.heap_bytes() == 0 {
        *to = staging.free.take(worker, burst);
        // It takes the round's datagrams for all of the consumer's queues: its lines are
        // asked for at once (5% more datagrams a second at 1,000 and 100,000 queues, 11 of
        // 12 rounds faster; the same for every open batch cost one flow 7%).
        to.prefetch_room(burst);
    }
    Target::Mail(m)
}

/// Puts a datagram in consumer `m`'s mail (see `target`), logging it for the flush.
#[inline(always)]
fn push_mail(staging: &mut Staging, m: usize, queue: OpenQueue, meta: DgramMeta, payload: &[u8]) {
    staging.mail[m].batch.push(meta, payload);
    log_mail(staging, m, queue, 1);
}

/// Logs the last `n` datagrams put in consumer `m`'s mail as `queue`'s (see `flush_mail`).
#[inline(always)]
fn log_mail(staging: &mut Staging, m: usize, queue: OpenQueue, n: u32) {
    if n == 0 {
        return;
    }
    match staging.mail_log.last_mut() {
        Some((q, e, k)) if std::ptr::eq(q.0, queue.0) && usize::from(*e) == m => *k += n,
        _ => staging.mail_log.push((queue, m as u8, n)),
    }
}

/// Counts `n` datagrams of namespace `ns` delivered (as broadcast copies, R10, or not).
#[inline]
fn count_delivered(w: &mut crate::counters::NsWriter, ns: NsId, broadcast: bool, n: usize) {
    let c = w.ns(ns);
    let cell = if broadcast {
        &c.broadcast_delivered
    } else {
        &c.delivered
    };
    cell.add(n as u64);
}

/// Counts the datagrams put in the mail this round in their queues (the queue's bound, as a
/// hand-off of its own would: it takes the first that fit), and as delivered; what a queue
/// has no room for is cut out of the mail and counted `queue_full`. Notes their consumers
/// for a wake-up (`MailWake`). (Summing each queue's runs first, to count them in once, gained nothing: mail is
/// taken from `MAIL_FROM_QUEUES` queues on, where a round's runs are mostly one to a queue.)
fn flush_mail(
    mail: &mut [MailTo],
    log: &mut Vec<(OpenQueue, u8, u32)>,
    cut: &mut Vec<(u8, u32, u32)>,
    wake: &mut MailWake,
    ns: &mut crate::counters::NsWriter,
) {
    if log.len() >= PREFETCH_OFFERS {
        for (queue, ..) in log.iter() {
            // SAFETY: see `OpenQueue`, as below.
            #[allow(unsafe_code)]
            unsafe { &*queue.0 }.prefetch_offer(OfferStep::Queue);
        }
    }
    let mut at = [0usize; MAIL_CONSUMERS];
    for &(queue, m, n) in log.iter() {
        // SAFETY: see `OpenQueue`: the snapshot this poll holds keeps the queue alive.
        #[allow(unsafe_code)]
        let q = unsafe { &*queue.0 };
        let (m, n) = (usize::from(m), n as usize);
        let taken = q.reserve(n);
        let first = at[m];
        at[m] += n;
        let batch = &mail[m].batch;
        let uniform = batch.uniform().filter(|_| n == batch.len());
        if let Some((ns_id, broadcast)) = uniform {
            // The whole batch, of one namespace and kind (one flow): no walk.
            count_delivered(ns, ns_id, broadcast, taken);
            if taken < n {
                ns.tx(ns_id).drop(NsDrop::QueueFull, (n - taken) as u64);
            }
        } else {
            let (kept, refused) = batch.metas()[first..first + n].split_at(taken);
            for run in kept.chunk_by(|a, b| (a.ns, a.broadcast) == (b.ns, b.broadcast)) {
                count_delivered(ns, run[0].ns, run[0].broadcast, run.len());
            }
            for run in refused.chunk_by(|a, b| a.ns == b.ns) {
                ns.tx(run[0].ns).drop(NsDrop::QueueFull, run.len() as u64);
            }
        }
        if taken < n {
            cut.push((m as u8, (first + taken) as u32, (first + n) as u32));
        }
        wake.posted |= 1 << m;
        if q.half_full() {
            wake.half_full |= 1 << m;
        }
    }
    // Last first, so that the positions of the earlier ones stay.
    for &(m, first, end) in cut.iter().rev() {
        mail[usize::from(m)].batch.cut(first as usize, end as usize);
    }
    cut.clear();
    log.clear();
}

/// The index in `staging.open` of `queue`'s open batch, if it has one; else, once the
/// entries are indexed (`OpenIndex`), the index slot where it goes.
#[inline(always)]
fn find_open(staging: &Staging, queue: OpenQueue) -> Result<usize, Option<usize>> {
    let open = &staging.open;
    if open.len() <= OPEN_SCAN || open.len() > OPEN_INDEXED {
        open.iter()
            .position(|(q, _)| std::ptr::eq(q.0, queue.0))
            .ok_or(None)
    } else {
        staging.index.find(open, queue.0).map_err(Some)
    }
}

/// The index in `staging.open` of `queue`'s open batch, opened (empty) if it has none.
#[inline(always)]
fn open_batch(staging: &mut Staging, worker: usize, burst: usize, queue: OpenQueue) -> usize {
    let slot = match find_open(staging, queue) {
        Ok(i) => return i,
        Err(slot) => slot,
    };
    let open = &mut staging.open;
    open.push((queue, staging.free.take(worker, burst)));
    let n = open.len();
    if let Some(at) = slot {
        staging.index.insert_at(at, n - 1);
    } else if n == OPEN_SCAN + 1 {
        // From here on through the index: the entries so far go in first.
        for (i, (q, _)) in open.iter().enumerate() {
            if let Err(at) = staging.index.find(open, q.0) {
                staging.index.insert_at(at, i);
            }
        }
    }
    n - 1
}

/// The owner of a frame's destination, found while prefetching (see `RxCtx::group`).
#[derive(Clone, Copy)]
struct Owner<'a> {
    /// The destination it was looked up for, in host order.
    dst: u32,
    ns: NsId,
    /// What the worker's memo remembered for this destination and `memo.2`, the UDP port
    /// the group read from the frame, with its hint (`HINT_OWN`): then `slot` was not looked
    /// up.
    memo: Option<(SocketId, *const SocketQueue, u16, u8)>,
    slot: Option<&'a NsSlot>,
}

impl Owner<'_> {
    /// Whether this owner stands for a datagram to `dst` (host order): the destination it
    /// was looked up for, unless that is the limited broadcast (which no namespace owns).
    #[inline(always)]
    fn answers(&self, dst: u32) -> bool {
        self.dst == dst && dst != u32::MAX
    }
}

/// Everything the receive callback needs, borrowed for one burst.
struct RxCtx<'a> {
    table: &'a OwnerTable,
    family: &'a crate::owner_table::Family,
    dev: DevId,
    mac: MacAddr,
    version: u64,
    /// `table.sockets_gen()`: the socket memos written under it are valid (see
    /// `OwnerTable::sockets_gen`).
    sockets_gen: u64,
    port_index: usize,
    pc: &'a PortCounters,
    ns: &'a mut NsWriter,
    staging: &'a mut Staging,
    worker: usize,
    burst: usize,
    replies: &'a mut Vec<Reply>,
    replies_used: &'a mut usize,
    neigh: &'a NeighTable,
    icmp_tokens: &'a mut f64,
    icmp_refill: &'a mut Instant,
    icmp_rate: u32,
    now: Instant,
    /// The receive counts of a run of remembered unicast datagrams to one namespace, added to
    /// its counters when the run ends (`count_rx`) or the group does (`one_flow`): one counter
    /// update per run instead of per datagram.
    rx_run: RxRun,
}

/// See `RxCtx::rx_run`. `packets` 0: no run.
#[derive(Clone, Copy)]
struct RxRun {
    ns: NsId,
    packets: u64,
    bytes: u64,
    /// Set only while `one_flow` handles a group: gather (with many destinations a run is
    /// one datagram long, and gathering would only add work).
    gather: bool,
}

impl<'a> RxCtx<'a> {
    /// A group of received frames, in passes: the first ones only ask for cache lines (each
    /// destination's owner-table slot; the owner's namespace slot and counters; with many
    /// sockets, the socket's slot, or for a namespace with more than `HOT` sockets its view)
    /// so that the misses of the whole group overlap; the last one does the work of `frame`,
    /// in arrival order, on lines that are by then in the cache. The hints read nothing that
    /// decides anything: a malformed frame just gets a useless prefetch. The owner the second
    /// pass looks up is handed to `frame`, which uses it only for the destination it was
    /// looked up for (the same lookup `classify` would make).
    #[inline]
    fn group(&mut self, frames: &[&[u8]]) {
        // The port's receive counters once for the group (every frame counts, whatever
        // becomes of it).
        self.pc.rx_packets.add(frames.len() as u64);
        self.pc
            .rx_bytes
            .add(frames.iter().map(|f| f.len() as u64).sum());
        let mut dst = [0u32; MAX_GROUP];
        let n = frames.len().min(MAX_GROUP);
        // The frames themselves are not asked for here: the DPDK port prefetches them as it
        // builds the group, and a pass asking for every frame's header lines cost the memory
        // port 7-8% of its throughput and gained memif nothing (bench/RESULTS.md).
        // A small address table stays in the cache: hashing each destination twice (hint,
        // then lookup) would cost more than the miss it could hide.
        let hint_addrs = self.family.addr_count() > CACHED_ADDRS;
        for (d, f) in dst.iter_mut().zip(&frames[..n]) {
            if let Some(a) = wire::peek_ipv4_dst(f) {
                *d = a;
                if hint_addrs {
                    self.family.prefetch(a);
                }
            }
        }
        // A group of one flow (every frame to one destination: a busy service) looks its
        // owner and its memo up once, not per frame; any other group as below, so that
        // traffic to many destinations pays nothing for it.
        if n > 0 && dst[..n].iter().all(|&d| d == dst[0]) {
            self.one_flow(frames, dst[0]);
            return;
        }
        let table = self.table;
        let mut owner_ns: [Option<NsId>; MAX_GROUP] = [None; MAX_GROUP];
        for (o, &d) in owner_ns.iter_mut().zip(&dst[..n]) {
            if d != 0 {
                if let Some(ns) = self.family.owner_of(self.dev, d) {
                    prefetch::read(self.ns.ns(ns));
                    *o = Some(ns);
                }
            }
        }
        // The worker's line of each owner holds its memo of the last socket lookup: when it
        // answers for this destination and port, the namespace's slot is not read at all;
        // otherwise the slot is asked for. The port is read where a header without IPv4
        // options has it (`frame` checks it against the parsed one).
        let mut owners: [Option<Owner<'a>>; MAX_GROUP] = [None; MAX_GROUP];
        for (((o, ns), &d), f) in owners
            .iter_mut()
            .zip(&owner_ns[..n])
            .zip(&dst[..n])
            .zip(frames)
        {
            let Some(ns) = *ns else { continue };
            let port = wire::peek_udp_dst_port(f);
            *o = Some(self.owner(ns, d, port));
        }
        let many_sockets = table.many_sockets();
        for (o, f) in owners[..n].iter_mut().zip(frames) {
            let Some(o) = o.as_mut().filter(|o| o.memo.is_none()) else {
                continue;
            };
            let (d, slot) = (o.dst, table.ns_slot(o.ns));
            o.slot = slot;
            if let Some(s) = slot {
                if s.spills() {
                    s.prefetch_view();
                } else if many_sockets {
                    // The slot (prefetched) usually holds the socket's queue; when it does
                    // not and there are many sockets, the socket table's slot misses too:
                    // ask for it. The port is read where a header without IPv4 options has
                    // it; for any other frame the hint is merely useless.
                    if let Some(port) = wire::peek_udp_dst_port(f) {
                        if let Some((id, None)) =
                            s.socket_and_queue(Proto::Udp, Ipv4Addr::from(d), port)
                        {
                            table.prefetch_socket(id);
                        }
                    }
                }
            }
        }
        for (i, f) in frames.iter().enumerate() {
            self.frame(f, owners.get(i).copied().flatten());
        }
    }

    /// The owner `ns` of destination `dst` as the group hands it to `frame`: with the memo of
    /// its worker line when that answers for `dst` and `port`, else without (and the
    /// namespace's slot is asked for).
    #[inline(always)]
    fn owner(&mut self, ns: NsId, dst: u32, port: Option<u16>) -> Owner<'a> {
        let memo = port.and_then(|port| {
            let (s, q, hint) = self.ns.ns(ns).memo(self.sockets_gen, dst, port)?;
            Some((s, q, port, hint))
        });
        if memo.is_none() {
            self.table.prefetch_namespace_slot(ns);
        }
        Owner {
            dst,
            ns,
            memo,
            slot: None,
        }
    }

    /// `group` for frames that all have the IPv4 destination `dst` (as peeked: `frame`
    /// checks it against the parsed one, and the port against the memo's): one owner
    /// look-up, one memo, one receive count (`RxRun`) for the whole group.
    #[inline]
    fn one_flow(&mut self, frames: &[&[u8]], dst: u32) {
        self.rx_run.gather = true;
        let mut owner = None;
        if dst != 0 {
            if let Some(ns) = self.family.owner_of(self.dev, dst) {
                let port = wire::peek_udp_dst_port(frames[0]);
                let mut o = self.owner(ns, dst, port);
                if o.memo.is_none() {
                    o.slot = self.table.ns_slot(ns);
                }
                owner = Some(o);
            }
        }
        match owner.and_then(|o| Some((o, o.memo?))) {
            Some((o, memo)) => self.one_flow_remembered(frames, o, memo),
            None => {
                for f in frames {
                    self.frame(f, owner);
                }
            }
        }
        self.end_rx_run();
        self.rx_run.gather = false;
    }

    /// `one_flow` when the memo of `o` answered (`memo`, its socket, queue and port): the
    /// queue's open batch is found once, and each frame that `frame` would hand to
    /// `unicast_remembered` (valid UDP without options, for this host, to `o.dst` and the
    /// memo's port) is pushed straight into it; any other frame goes through `frame` as
    /// usual. (Side by side on the memory port, one flow: 1.22× the frames a second of
    /// `frame` per frame, which looked for the open batch and matched the owner each time.)
    #[inline]
    fn one_flow_remembered(
        &mut self,
        frames: &[&[u8]],
        o: Owner<'a>,
        (sock, queue, port, hint): (SocketId, *const SocketQueue, u16, u8),
    ) {
        // The memo's queue is held by `self.table` (see `unicast_remembered`). `frame` may
        // open batches for other queues meanwhile: they are appended, so `to` stays.
        let to = self.route(o.ns, OpenQueue(queue), hint);
        // Datagrams put in the mail and not yet logged (logged as one run before `frame`
        // may put others in, and at the end).
        let mut mailed = 0;
        for f in frames {
            match wire::parse_udp_fast(f) {
                Some(d)
                    if self.for_this_host(&d)
                        && o.answers(u32::from(d.dst))
                        && d.dst_port == port =>
                {
                    self.count_rx(o.ns, d.ip_len);
                    let meta = self.unicast_meta(o.ns, sock, &d);
                    match to {
                        Target::Open(i) => self.staging.open[i].1.push(meta, d.payload),
                        Target::Mail(m) => {
                            self.staging.mail[m].batch.push(meta, d.payload);
                            mailed += 1;
                        }
                    }
                }
                _ => {
                    if let Target::Mail(m) = to {
                        log_mail(
                            self.staging,
                            m,
                            OpenQueue(queue),
                            std::mem::take(&mut mailed),
                        );
                    }
                    self.frame(f, Some(o))
                }
            }
        }
        if let Target::Mail(m) = to {
            log_mail(self.staging, m, OpenQueue(queue), mailed);
        }
    }

    /// Counts a remembered unicast datagram of `bytes` (IPv4 length) received for `ns`: in a
    /// group of one flow into the run, otherwise straight into the counters.
    #[inline(always)]
    fn count_rx(&mut self, ns: NsId, bytes: u16) {
        if !self.rx_run.gather {
            let c = self.ns.ns(ns);
            c.rx_packets.inc();
            c.rx_bytes.add(u64::from(bytes));
            return;
        }
        if self.rx_run.ns != ns {
            self.end_rx_run();
            self.rx_run.ns = ns;
        }
        self.rx_run.packets += 1;
        self.rx_run.bytes += u64::from(bytes);
    }

    /// Adds the run `count_rx` gathered to its namespace's counters.
    #[inline]
    fn end_rx_run(&mut self) {
        let RxRun {
            ns, packets, bytes, ..
        } = self.rx_run;
        if packets > 0 {
            let c = self.ns.ns(ns);
            c.rx_packets.add(packets);
            c.rx_bytes.add(bytes);
            self.rx_run.packets = 0;
            self.rx_run.bytes = 0;
        }
    }

    /// Whether a datagram's Ethernet destination is this port's MAC or a group address.
    #[inline(always)]
    fn for_this_host(&self, d: &wire::UdpDatagram<'_>) -> bool {
        d.is_group() || d.eth_dst == self.mac
    }

    #[inline]
    fn frame(&mut self, frame: &[u8], owner: Option<Owner<'a>>) {
        // The common frame — valid UDP, no IPv4 options, to a local unicast address — takes
        // the short way; everything else (and every drop) goes through `parse_frame` as
        // before. No counter moves before the paths part, so the result is the same.
        if let Some(d) = wire::parse_udp_fast(frame) {
            if self.for_this_host(&d) {
                let dst = u32::from(d.dst);
                // `classify` without a second lookup: an owner, unless limited broadcast.
                let owner = match owner {
                    Some(o) if o.answers(dst) => match o.memo {
                        Some((sock, q, port, hint)) if port == d.dst_port => {
                            self.unicast_remembered(o.ns, (sock, hint), q, &d);
                            return;
                        }
                        Some(_) => Some((o.ns, self.table.ns_slot(o.ns))),
                        None => Some((o.ns, o.slot)),
                    },
                    _ => match OwnerTable::classify(self.family, self.dev, d.dst) {
                        Dest::Unicast(ns) => Some((ns, self.table.ns_slot(ns))),
                        _ => None,
                    },
                };
                if let Some((ns, slot)) = owner {
                    self.unicast(ns, slot, &d, frame);
                    return;
                }
            }
        }
        self.frame_parsed(frame);
    }

    #[inline(never)]
    fn frame_parsed(&mut self, frame: &[u8]) {
        match wire::parse_frame(frame) {
            Err(reason) => self.pc.drop(PortDrop::Malformed(reason)),
            Ok(Parsed::Udp(u)) => {
                if !u.eth.is_group() && u.eth.dst != self.mac {
                    self.pc.drop(PortDrop::OtherHost);
                    return;
                }
                match OwnerTable::classify(self.family, self.dev, u.ip.dst) {
                    Dest::Unicast(ns) => {
                        let slot = self.table.ns_slot(ns);
                        self.unicast(ns, slot, &u.datagram(), frame)
                    }
                    Dest::LimitedBroadcast | Dest::DirectedBroadcast => self.broadcast(&u),
                    Dest::Multicast => self.pc.drop(PortDrop::Multicast),
                    Dest::Unclaimed => self.pc.drop(PortDrop::Unclaimed),
                }
            }
            Ok(Parsed::Arp(a)) => self.arp(&a),
            Ok(Parsed::Icmp(i)) => self.icmp(&i),
        }
    }

    /// R9 for a datagram to a unicast address `ns` (whose slot is `slot`) owns; `frame` is
    /// what it arrived in.
    #[inline]
    fn unicast(
        &mut self,
        ns: NsId,
        slot: Option<&NsSlot>,
        u: &wire::UdpDatagram<'_>,
        frame: &[u8],
    ) {
        let c = self.ns.ns(ns);
        c.rx_packets.inc();
        c.rx_bytes.add(u64::from(u.ip_len));
        let queue = slot
            .and_then(|v| v.socket_and_queue(Proto::Udp, u.dst, u.dst_port))
            .and_then(|(s, q)| q.or_else(|| self.table.socket_queue(s)).map(|q| (s, q)));
        match queue {
            Some((sock, q)) => {
                // `q` is held by `table`, and by every snapshot with its sockets generation.
                let dst = match slot {
                    Some(v) if v.any_dst(u.dst_port) => 0,
                    _ => u32::from(u.dst),
                };
                let (to, hint) = target_and_hint(self.staging, self.worker, self.burst, q.into());
                c.remember(self.sockets_gen, dst, u.dst_port, (sock, hint), q);
                let meta = self.unicast_meta(ns, sock, u);
                push_to(self.staging, to, q.into(), meta, u.payload);
            }
            None => {
                self.ns.tx(ns).drop(NsDrop::NoSocket, 1);
                self.no_socket(frame);
            }
        }
    }

    /// What a unicast datagram for `socket` in `ns` is queued with.
    #[inline(always)]
    fn unicast_meta(&self, ns: NsId, socket: SocketId, u: &wire::UdpDatagram<'_>) -> DgramMeta {
        DgramMeta {
            socket,
            ns,
            src: u.src,
            src_port: u.src_port,
            dst: u.dst,
            dst_port: u.dst_port,
            dev: self.dev.0,
            version: self.version,
            ..Default::default()
        }
    }

    /// `unicast` to the socket and queue the namespace's memo gave (`RxCtx::group`).
    #[inline(always)]
    fn unicast_remembered(
        &mut self,
        ns: NsId,
        (sock, hint): (SocketId, u8),
        queue: *const SocketQueue,
        u: &wire::UdpDatagram<'_>,
    ) {
        self.count_rx(ns, u.ip_len);
        let meta = self.unicast_meta(ns, sock, u);
        // The memo was written (`unicast`) from an `Arc` held by a snapshot with the sockets
        // generation of `self.table` (`memo` checks it), so `self.table`, which this poll
        // holds, holds that same `Arc` (`OwnerTable::sockets_gen`), as `OpenQueue` needs.
        let to = self.route(ns, OpenQueue(queue), hint);
        push_to(self.staging, to, OpenQueue(queue), meta, u.payload);
    }

    /// Where the datagrams for `queue`, the memo of `ns` remembers with `hint`, go this
    /// round: by the hint once `target` has settled it, which it then keeps.
    #[inline(always)]
    fn route(&mut self, ns: NsId, queue: OpenQueue, hint: u8) -> Target {
        if hint != 0 {
            return hinted(self.staging, self.worker, self.burst, queue, hint);
        }
        let (to, hint) = target_and_hint(self.staging, self.worker, self.burst, queue);
        if hint != 0 {
            self.ns.ns(ns).set_hint(queue.0, hint);
        }
        to
    }

    /// Answers a datagram no socket took (the ICMP error quotes the whole parsed header).
    #[cold]
    #[inline(never)]
    fn no_socket(&mut self, frame: &[u8]) {
        if let Ok(Parsed::Udp(u)) = wire::parse_frame(frame) {
            self.port_unreachable(&u);
        }
    }

    fn broadcast(&mut self, u: &wire::UdpFrame<'_>) {
        let mut any = false;
        let (table, staging, ns) = (self.table, &mut *self.staging, &mut *self.ns);
        let (worker, burst, dev, version) = (self.worker, self.burst, self.dev, self.version);
        table.broadcast_recipients(dev, u.ip.dst, Proto::Udp, u.dst_port, |b| {
            let Some(q) = table.socket_queue(b.id) else {
                return;
            };
            any = true;
            let c = ns.ns(b.ns);
            c.rx_packets.inc();
            c.rx_bytes.add(u.ip.total_len() as u64);
            let meta = DgramMeta {
                socket: b.id,
                ns: b.ns,
                src: u.ip.src,
                src_port: u.src_port,
                dst: u.ip.dst,
                dst_port: u.dst_port,
                dev: dev.0,
                version,
                broadcast: true,
                ..Default::default()
            };
            stage(staging, worker, burst, q.into(), meta, u.payload);
        });
        if !any {
            self.pc.drop(PortDrop::BroadcastUnheard);
        }
    }

    fn reply_slot(&mut self) -> Option<&mut Reply> {
        let i = *self.replies_used;
        let r = self.replies.get_mut(i)?;
        *self.replies_used += 1;
        r.port = self.port_index;
        Some(r)
    }

    fn arp(&mut self, a: &wire::ArpFrame) {
        let arp = a.arp;
        // Learn the sender's binding (requests and replies both carry it).
        if !arp.sender_ip.is_unspecified() {
            self.neigh.learn(self.dev, arp.sender_ip, arp.sender_mac);
        }
        if arp.op != ArpOp::Request {
            return;
        }
        // R15: every local address on this device, whoever owns it.
        if self.table.local_on_dev(self.dev, arp.target_ip).is_none() {
            return;
        }
        let mac = self.mac;
        let Some(r) = self.reply_slot() else {
            self.pc.drop(PortDrop::TxRingFull);
            return;
        };
        r.len = wire::build_arp_reply(
            &mut r.buf,
            mac,
            arp.target_ip,
            arp.sender_mac,
            arp.sender_ip,
        )
        .unwrap_or(0);
        self.pc.arp_requests_answered.inc();
    }

    fn icmp(&mut self, i: &wire::IcmpFrame<'_>) {
        if !i.eth.is_group() && i.eth.dst != self.mac {
            self.pc.drop(PortDrop::OtherHost);
            return;
        }
        let Dest::Unicast(ns) = OwnerTable::classify(self.family, self.dev, i.ip.dst) else {
            self.pc.drop(PortDrop::Unclaimed);
            return;
        };
        let c = self.ns.ns(ns);
        c.rx_packets.inc();
        c.rx_bytes.add(i.ip.total_len() as u64);
        if i.icmp_type != wire::icmp::kind::ECHO_REQUEST {
            self.pc.drop(PortDrop::IcmpUnhandled);
            return;
        }
        // R15: answered from the address it was sent to, counted in the owner.
        let c = self.ns.tx(ns);
        c.icmp_echo_replied.inc();
        c.tx_packets.inc();
        c.tx_bytes.add(i.ip.total_len() as u64);
        let mac = self.mac;
        let Some(r) = self.reply_slot() else {
            self.pc.drop(PortDrop::TxRingFull);
            return;
        };
        r.len = wire::build_icmp_echo_reply(&mut r.buf, mac, i).unwrap_or(0);
    }

    fn port_unreachable(&mut self, u: &wire::UdpFrame<'_>) {
        // Never answer to a broadcast or multicast frame (RFC 1122 3.2.2).
        if u.eth.is_group() {
            return;
        }
        let elapsed = self
            .now
            .saturating_duration_since(*self.icmp_refill)
            .as_secs_f64();
        *self.icmp_refill = self.now;
        let rate = f64::from(self.icmp_rate);
        *self.icmp_tokens = (*self.icmp_tokens + elapsed * rate).min(rate);
        if *self.icmp_tokens < 1.0 {
            self.pc.icmp_rate_limited.inc();
            return;
        }
        *self.icmp_tokens -= 1.0;
        let addrs = FrameAddrs::answering(self.mac, &u.eth, &u.ip);
        let Some(r) = self.reply_slot() else {
            self.pc.icmp_rate_limited.inc();
            return;
        };
        r.len = wire::build_icmp_port_unreachable(&mut r.buf, &addrs, u.ip.packet).unwrap_or(0);
        self.pc.icmp_unreachable_sent.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::PortInfo;
    use std::sync::atomic::AtomicU64;

    /// A port with nothing to receive whose ring-drop totals the test sets.
    struct Drops {
        info: PortInfo,
        rx: Arc<AtomicU64>,
        tx: Arc<AtomicU64>,
    }

    impl Port for Drops {
        fn info(&self) -> &PortInfo {
            &self.info
        }
        fn rx_groups<F: FnMut(&[&[u8]])>(&mut self, _max: usize, _on_group: F) -> usize {
            0
        }
        fn tx_frame<F: FnOnce(&mut [u8]) -> usize>(&mut self, _len: usize, _build: F) -> bool {
            false
        }
        fn tx_flush(&mut self) {}
        fn rx_ring_drops(&mut self) -> Option<u64> {
            Some(self.rx.load(Ordering::Relaxed))
        }
        fn tx_ring_drops(&mut self) -> Option<u64> {
            Some(self.tx.load(Ordering::Relaxed))
        }
    }

    #[test]
    fn ring_drops_are_counted_once_at_each_read_about_every_100_ms() {
        let (rx, tx) = (Arc::new(AtomicU64::new(5)), Arc::new(AtomicU64::new(2)));
        let port = Drops {
            info: PortInfo {
                name: "d0".into(),
                mac: [2, 0, 0, 0, 0, 1],
                max_frame: 1514,
            },
            rx: rx.clone(),
            tx: tx.clone(),
        };
        let shared = Shared::new(Arc::new(ArcSwap::from_pointee(OwnerTable::new())), 1, 16);
        let counters = Arc::new(WorkerCounters::new(1));
        let mut w = Worker::new(
            WorkerConfig::default(),
            vec![WorkerPort {
                port,
                dev: DevId(1),
                index: 0,
            }],
            shared,
            counters.clone(),
        );
        let drops = |why: PortDrop| counters.ports[0].dropped[why.index()].get();
        let t0 = Instant::now();
        w.poll(t0);
        assert_eq!(
            (drops(PortDrop::RxRingFull), drops(PortDrop::TxRingFull)),
            (5, 2)
        );
        rx.store(9, Ordering::Relaxed);
        tx.store(3, Ordering::Relaxed);
        w.poll(t0 + Duration::from_millis(50));
        assert_eq!(
            (drops(PortDrop::RxRingFull), drops(PortDrop::TxRingFull)),
            (5, 2),
            "not read again before 100 ms"
        );
        w.poll(t0 + Duration::from_millis(150));
        assert_eq!(
            (drops(PortDrop::RxRingFull), drops(PortDrop::TxRingFull)),
            (9, 3)
        );
        w.poll(t0 + Duration::from_millis(300));
        assert_eq!(
            (drops(PortDrop::RxRingFull), drops(PortDrop::TxRingFull)),
            (9, 3)
        );
    }
}

#[cfg(test)]
mod open_index_tests {
    use super::*;

    #[test]
    fn each_queue_gets_one_batch_with_its_own_datagrams_whatever_their_number() {
        let pools = BatchPools::new(1, 16);
        // Below the scan limit, through the index, and past what the index holds.
        for queues in [
            1,
            OPEN_SCAN,
            OPEN_SCAN + 1,
            100,
            OPEN_INDEXED,
            OPEN_INDEXED + 90,
        ] {
            let qs: Vec<_> = (0..queues)
                .map(|_| SocketQueue::new(64, pools.clone()))
                .collect();
            let mut st = Staging::new();
            for round in 0..3u8 {
                for (i, q) in qs.iter().enumerate() {
                    let meta = DgramMeta {
                        src_port: i as u16,
                        ..Default::default()
                    };
                    stage(&mut st, 0, 64, q.into(), meta, &[round]);
                }
            }
            assert_eq!(st.open.len(), queues, "{queues} queues");
            for ((q, b), (i, want)) in st.open.iter().zip(qs.iter().enumerate()) {
                assert!(std::ptr::eq(q.0, Arc::as_ptr(want)));
                assert_eq!(b.len(), 3);
                for (round, m) in b.metas().iter().enumerate() {
                    assert_eq!(m.src_port, i as u16);
                    assert_eq!(b.payload(m), [round as u8]);
                }
            }
            // Emptied as `flush_staging` empties it: the next poll starts from nothing.
            st.index.clear();
            assert!(st.index.slots.iter().all(|&s| s == 0));
        }
    }
}
