//! Counters of R16. Each worker owns its cells and is their only writer: an update is a
//! relaxed load and store on the worker's own cache lines (no locked read-modify-write, no
//! sharing on the hot path). Readers (Prometheus, `l3nsctl stats`) sum all workers' cells.

use crate::socket::SocketQueue;
use crate::types::{NsId, SocketId};
use crate::wire::DropReason;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

/// A single-writer counter cell.
#[derive(Debug, Default)]
pub struct Cell(AtomicU64);

impl Cell {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        // Only one thread writes a cell, so load + store loses nothing and needs no lock.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a namespace dropped a packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum NsDrop {
    /// No socket listened on the destination (R9).
    NoSocket,
    /// The socket's queue was full.
    QueueFull,
    /// The namespace (or the socket) went away with datagrams still queued (R5).
    NsGone,
}

impl NsDrop {
    pub const ALL: [NsDrop; 3] = [NsDrop::NoSocket, NsDrop::QueueFull, NsDrop::NsGone];
    pub fn as_str(self) -> &'static str {
        match self {
            NsDrop::NoSocket => "no_socket",
            NsDrop::QueueFull => "queue_full",
            NsDrop::NsGone => "ns_gone",
        }
    }
}

/// Per-namespace receive counters of one worker, and the worker's memo of the namespace's
/// last socket lookup: one cache line, so that a received packet touches one line of its
/// namespace's per-worker state and, when the memo answers, no line of the snapshot's beyond
/// the address table's (see `worker::RxCtx::group`).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct NsCounters {
    pub rx_packets: Cell,
    pub rx_bytes: Cell,
    pub delivered: Cell,
    pub broadcast_delivered: Cell,
    memo: SocketMemo,
}

impl NsCounters {
    /// The socket and queue remembered for `(dst, port)`, or for `port` at any address of
    /// the namespace (`remember` with `dst` 0), under the sockets generation `generation`
    /// (`OwnerTable::sockets_gen`; never 0), with the hint the worker keeps beside them
    /// (`set_hint`; 0 until it sets one).
    #[inline(always)]
    pub fn memo(
        &self,
        generation: u64,
        dst: u32,
        port: u16,
    ) -> Option<(SocketId, *const SocketQueue, u8)> {
        let m = &self.memo;
        let key = m.key.load(Ordering::Relaxed);
        if m.generation.load(Ordering::Relaxed) == generation
            && generation != 0
            && (key == SocketMemo::key(dst, port) || key == SocketMemo::key(0, port))
        {
            let q = m.queue.load(Ordering::Relaxed);
            if !q.is_null() {
                let s = m.socket.load(Ordering::Relaxed);
                return Some((SocketId(s as u32), q, (s >> 32) as u8));
            }
        }
        None
    }

    /// Remembers R9's answer for `(dst, port)` under the sockets generation `generation`;
    /// `dst` 0 when the answer is the same at every address the namespace owns (no socket is
    /// bound to a particular address on `port`). Every snapshot of that generation holds
    /// `queue`. `hint` is kept beside it (see `set_hint`).
    #[inline(always)]
    pub fn remember(
        &self,
        generation: u64,
        dst: u32,
        port: u16,
        (socket, hint): (SocketId, u8),
        queue: &Arc<SocketQueue>,
    ) {
        let m = &self.memo;
        m.generation.store(generation, Ordering::Relaxed);
        m.key.store(SocketMemo::key(dst, port), Ordering::Relaxed);
        m.socket.store(
            u64::from(socket.0) | u64::from(hint) << 32,
            Ordering::Relaxed,
        );
        m.queue
            .store(Arc::as_ptr(queue).cast_mut(), Ordering::Relaxed);
    }

    /// Sets the hint of the remembered answer, if it still is for `queue`: a byte the worker
    /// keeps about that queue for as long as the memo lasts (`worker::HINT_OWN`), so that it
    /// need not read the queue's own lines for it. (A memo read earlier in a group may have
    /// been remembered anew, for another socket of the namespace, by the time its hint is
    /// settled: the hint then is not that socket's.)
    #[inline(always)]
    pub fn set_hint(&self, queue: *const SocketQueue, hint: u8) {
        let m = &self.memo;
        if std::ptr::eq(m.queue.load(Ordering::Relaxed), queue) {
            let socket = m.socket.load(Ordering::Relaxed) & u64::from(u32::MAX);
            m.socket
                .store(socket | u64::from(hint) << 32, Ordering::Relaxed);
        }
    }
}

/// One remembered socket lookup (written and read by the owning worker only; atomics with
/// relaxed order so that the line can sit beside cells other threads read).
#[derive(Debug, Default)]
struct SocketMemo {
    generation: AtomicU64,
    key: AtomicU64,
    /// The socket's id, and the hint (`NsCounters::set_hint`) in bits 32..40.
    socket: AtomicU64,
    queue: AtomicPtr<SocketQueue>,
}

impl SocketMemo {
    #[inline(always)]
    fn key(dst: u32, port: u16) -> u64 {
        u64::from(dst) | u64::from(port) << 32
    }
}

/// Per-namespace transmit counters and drops of one worker (one line apart from the receive
/// line: a delivered packet does not touch it).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct NsTxCounters {
    pub tx_packets: Cell,
    pub tx_bytes: Cell,
    pub tx_spoofed: Cell,
    pub icmp_echo_replied: Cell,
    pub dropped: [Cell; 3],
}

impl NsTxCounters {
    #[inline(always)]
    pub fn drop(&self, why: NsDrop, n: u64) {
        self.dropped[why as usize].add(n);
    }
}

/// Why a port dropped a frame, beyond the parser's reasons.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortDrop {
    /// The parser rejected it (`truncated`, `bad_checksum`, …).
    Malformed(DropReason),
    /// No namespace owns the destination (R8): l3ns is not a router.
    Unclaimed,
    /// Multicast destinations are not delivered by this version.
    Multicast,
    /// A broadcast no socket listened to.
    BroadcastUnheard,
    /// Unicast to another host's MAC address.
    OtherHost,
    /// ICMP other than echo requests (nothing consumes it).
    IcmpUnhandled,
    /// The transmit ring was full: the port refused the frame, or the device refused it at
    /// the flush after the port had accepted it (`Port::tx_ring_drops`, read with the receive
    /// ring's drops).
    TxRingFull,
    /// A send waited for ARP resolution and the wait queue was full, or resolution failed.
    ArpUnresolved,
    /// A send had no route or no device for its output.
    NoRoute,
    /// The port's receive ring was full: the device or the kernel dropped frames before the
    /// worker took them (`Port::rx_ring_drops`, read about every 100 ms).
    RxRingFull,
}

/// Number of `PortDrop` labels.
pub const PORT_DROPS: usize = DropReason::COUNT + 9;

impl PortDrop {
    #[inline(always)]
    pub fn index(self) -> usize {
        match self {
            PortDrop::Malformed(r) => r.index(),
            PortDrop::Unclaimed => DropReason::COUNT,
            PortDrop::Multicast => DropReason::COUNT + 1,
            PortDrop::BroadcastUnheard => DropReason::COUNT + 2,
            PortDrop::OtherHost => DropReason::COUNT + 3,
            PortDrop::IcmpUnhandled => DropReason::COUNT + 4,
            PortDrop::TxRingFull => DropReason::COUNT + 5,
            PortDrop::ArpUnresolved => DropReason::COUNT + 6,
            PortDrop::NoRoute => DropReason::COUNT + 7,
            PortDrop::RxRingFull => DropReason::COUNT + 8,
        }
    }
    pub fn all() -> impl Iterator<Item = PortDrop> {
        DropReason::ALL
            .iter()
            .map(|r| PortDrop::Malformed(*r))
            .chain([
                PortDrop::Unclaimed,
                PortDrop::Multicast,
                PortDrop::BroadcastUnheard,
                PortDrop::OtherHost,
                PortDrop::IcmpUnhandled,
                PortDrop::TxRingFull,
                PortDrop::ArpUnresolved,
                PortDrop::NoRoute,
                PortDrop::RxRingFull,
            ])
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PortDrop::Malformed(r) => r.as_str(),
            PortDrop::Unclaimed => "unclaimed",
            PortDrop::Multicast => "multicast",
            PortDrop::BroadcastUnheard => "broadcast_unheard",
            PortDrop::OtherHost => "other_host",
            PortDrop::IcmpUnhandled => "icmp_unhandled",
            PortDrop::TxRingFull => "tx_ring_full",
            PortDrop::ArpUnresolved => "arp_unresolved",
            PortDrop::NoRoute => "no_route",
            PortDrop::RxRingFull => "rx_ring_full",
        }
    }
    /// Whether the drop is a malformed frame (`l3ns_port_dropped_packets_total` keeps the
    /// parser's precise reason; this groups them).
    pub fn is_malformed(self) -> bool {
        matches!(self, PortDrop::Malformed(_))
    }
}

/// Per-port counters of one worker.
#[derive(Debug)]
pub struct PortCounters {
    pub rx_packets: Cell,
    pub rx_bytes: Cell,
    pub tx_packets: Cell,
    pub tx_bytes: Cell,
    pub dropped: [Cell; PORT_DROPS],
    pub arp_requests_answered: Cell,
    pub arp_requests_sent: Cell,
    pub icmp_unreachable_sent: Cell,
    pub icmp_rate_limited: Cell,
}

impl Default for PortCounters {
    fn default() -> Self {
        PortCounters {
            rx_packets: Cell::default(),
            rx_bytes: Cell::default(),
            tx_packets: Cell::default(),
            tx_bytes: Cell::default(),
            dropped: std::array::from_fn(|_| Cell::default()),
            arp_requests_answered: Cell::default(),
            arp_requests_sent: Cell::default(),
            icmp_unreachable_sent: Cell::default(),
            icmp_rate_limited: Cell::default(),
        }
    }
}

impl PortCounters {
    #[inline(always)]
    pub fn drop(&self, why: PortDrop) {
        self.dropped[why.index()].inc();
    }
}

const NS_CHUNK: usize = 256;
/// The counters of `NS_CHUNK` consecutive namespaces.
#[derive(Debug)]
struct NsChunk {
    rx: [NsCounters; NS_CHUNK],
    tx: [NsTxCounters; NS_CHUNK],
}

impl NsChunk {
    fn new() -> Arc<Self> {
        Arc::new(NsChunk {
            rx: std::array::from_fn(|_| NsCounters::default()),
            tx: std::array::from_fn(|_| NsTxCounters::default()),
        })
    }
}

/// One writer's counters: per namespace (growing in chunks as namespaces appear), per port,
/// and its polls.
#[derive(Debug)]
pub struct WorkerCounters {
    chunks: ArcSwap<Vec<Arc<NsChunk>>>,
    pub ports: Vec<PortCounters>,
    pub busy_polls: Cell,
    pub idle_polls: Cell,
    /// Consumer threads the worker unparked after handing datagrams to their queues (each a
    /// cross-core wake-up, a system call on the worker's core).
    pub consumer_wakeups: Cell,
}

impl WorkerCounters {
    pub fn new(ports: usize) -> Self {
        WorkerCounters {
            chunks: ArcSwap::from_pointee(Vec::new()),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            busy_polls: Cell::default(),
            idle_polls: Cell::default(),
            consumer_wakeups: Cell::default(),
        }
    }

    /// Makes room for the namespaces below `n`, allocated by the calling thread: the control
    /// side calls it as namespaces are made, so that a worker neither allocates on its packet
    /// path nor keeps its counters in its own malloc arena (glibc puts only its main arena on
    /// huge pages, `--heap thp`).
    pub fn reserve(&self, n: usize) {
        self.reserve_chunks(n.div_ceil(NS_CHUNK));
    }

    fn reserve_chunks(&self, n: usize) {
        if self.chunks.load().len() >= n {
            return;
        }
        self.chunks.rcu(|cur| {
            let mut v: Vec<Arc<NsChunk>> = (**cur).clone();
            while v.len() < n {
                v.push(NsChunk::new());
            }
            v
        });
    }

    /// The writer's view; keep it and refresh only when `ns_mut` needs a new chunk.
    pub fn writer(self: &Arc<Self>) -> NsWriter {
        NsWriter {
            owner: self.clone(),
            chunks: self.chunks.load_full(),
        }
    }

    /// Reads one namespace's cells, if this writer ever touched it.
    pub fn ns(&self, ns: NsId) -> Option<NsSnapshot> {
        let chunks = self.chunks.load();
        let c = chunks.get(ns.0 as usize / NS_CHUNK)?;
        let i = ns.0 as usize % NS_CHUNK;
        Some(NsSnapshot::of(&c.rx[i], &c.tx[i]))
    }
}

/// A worker's handle for writing namespace counters.
pub struct NsWriter {
    owner: Arc<WorkerCounters>,
    chunks: Arc<Vec<Arc<NsChunk>>>,
}

impl NsWriter {
    /// The receive counters of `ns`.
    #[inline(always)]
    pub fn ns(&mut self, ns: NsId) -> &NsCounters {
        &self.chunk(ns).rx[ns.0 as usize % NS_CHUNK]
    }

    /// The transmit counters of `ns`.
    #[inline(always)]
    pub fn tx(&mut self, ns: NsId) -> &NsTxCounters {
        &self.chunk(ns).tx[ns.0 as usize % NS_CHUNK]
    }

    #[inline(always)]
    fn chunk(&mut self, ns: NsId) -> &NsChunk {
        let i = ns.0 as usize / NS_CHUNK;
        if i >= self.chunks.len() {
            self.grow(i + 1);
        }
        &self.chunks[i]
    }

    /// Takes the chunks `reserve` made, or makes them (a namespace the control side did not
    /// reserve for, e.g. in tests that build snapshots by hand).
    #[cold]
    fn grow(&mut self, n: usize) {
        self.owner.reserve_chunks(n);
        self.chunks = self.owner.chunks.load_full();
    }
}

/// A namespace's counters summed (or read) at one moment.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NsSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub delivered: u64,
    pub broadcast_delivered: u64,
    pub dropped_no_socket: u64,
    pub dropped_queue_full: u64,
    pub dropped_ns_gone: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_spoofed: u64,
    pub icmp_echo_replied: u64,
}

impl NsSnapshot {
    fn of(c: &NsCounters, t: &NsTxCounters) -> Self {
        NsSnapshot {
            rx_packets: c.rx_packets.get(),
            rx_bytes: c.rx_bytes.get(),
            delivered: c.delivered.get(),
            broadcast_delivered: c.broadcast_delivered.get(),
            dropped_no_socket: t.dropped[0].get(),
            dropped_queue_full: t.dropped[1].get(),
            dropped_ns_gone: t.dropped[2].get(),
            tx_packets: t.tx_packets.get(),
            tx_bytes: t.tx_bytes.get(),
            tx_spoofed: t.tx_spoofed.get(),
            icmp_echo_replied: t.icmp_echo_replied.get(),
        }
    }

    pub fn add(&mut self, o: &NsSnapshot) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.delivered += o.delivered;
        self.broadcast_delivered += o.broadcast_delivered;
        self.dropped_no_socket += o.dropped_no_socket;
        self.dropped_queue_full += o.dropped_queue_full;
        self.dropped_ns_gone += o.dropped_ns_gone;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_spoofed += o.tx_spoofed;
        self.icmp_echo_replied += o.icmp_echo_replied;
    }

    pub fn dropped(&self, why: NsDrop) -> u64 {
        match why {
            NsDrop::NoSocket => self.dropped_no_socket,
            NsDrop::QueueFull => self.dropped_queue_full,
            NsDrop::NsGone => self.dropped_ns_gone,
        }
    }
}

/// Every writer's counters: the workers', the control thread's (which counts `ns_gone` for
/// what a closed socket's queue still held) and the consumer threads' (`ns_gone` for the
/// mail they take for a socket closed meanwhile, `socket::Waiter::accept_mail`; one writer
/// per thread, each thread taking its own with `consumer`).
#[derive(Debug)]
pub struct Stats {
    pub workers: Vec<Arc<WorkerCounters>>,
    pub control: Arc<WorkerCounters>,
    consumers: ArcSwap<Vec<Arc<WorkerCounters>>>,
    pub port_names: Vec<String>,
}

impl Stats {
    pub fn new(workers: usize, port_names: Vec<String>) -> Arc<Self> {
        let n = port_names.len();
        Arc::new(Stats {
            workers: (0..workers)
                .map(|_| Arc::new(WorkerCounters::new(n)))
                .collect(),
            control: Arc::new(WorkerCounters::new(n)),
            consumers: ArcSwap::from_pointee(Vec::new()),
            port_names,
        })
    }

    /// A writer of namespace counters for a consumer thread of its own (once per thread).
    pub fn consumer(&self) -> NsWriter {
        let c = Arc::new(WorkerCounters::new(self.port_names.len()));
        self.consumers.rcu(|v| {
            let mut v = (**v).clone();
            v.push(c.clone());
            v
        });
        c.writer()
    }

    /// Makes room in every worker's counters for the namespaces below `n` (see
    /// [`WorkerCounters::reserve`]).
    pub fn reserve_workers(&self, n: usize) {
        for w in &self.workers {
            w.reserve(n);
        }
    }

    /// A namespace's counters summed over every writer.
    pub fn ns(&self, ns: NsId) -> NsSnapshot {
        let mut s = NsSnapshot::default();
        let consumers = self.consumers.load();
        for w in self
            .workers
            .iter()
            .chain([&self.control])
            .chain(consumers.iter())
        {
            if let Some(x) = w.ns(ns) {
                s.add(&x);
            }
        }
        s
    }

    /// A port counter summed over the workers, chosen by `f`.
    pub fn port_sum(&self, port: usize, f: impl Fn(&PortCounters) -> u64) -> u64 {
        self.workers
            .iter()
            .chain([&self.control])
            .filter_map(|w| w.ports.get(port))
            .map(f)
            .sum()
    }

    pub fn port_dropped(&self, port: usize, why: PortDrop) -> u64 {
        self.port_sum(port, |p| p.dropped[why.index()].get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_keeps_its_hint_until_it_is_remembered_again() {
        let q = SocketQueue::new(8, crate::socket::BatchPools::new(1, 4));
        let c = NsCounters::default();
        let (dst, other) = (0x0a00_0001, 0x0a00_0002);
        assert!(c.memo(7, dst, 53).is_none(), "nothing remembered yet");
        c.remember(7, dst, 53, (SocketId(u32::MAX), 0), &q);
        assert_eq!(
            c.memo(7, dst, 53),
            Some((SocketId(u32::MAX), Arc::as_ptr(&q), 0))
        );
        c.set_hint(Arc::as_ptr(&q), 5);
        // The hint does not touch the socket's id, whatever its bits.
        assert_eq!(
            c.memo(7, dst, 53),
            Some((SocketId(u32::MAX), Arc::as_ptr(&q), 5))
        );
        // A hint settled for another queue than the one remembered now is not kept.
        let other_q = SocketQueue::new(8, crate::socket::BatchPools::new(1, 4));
        c.set_hint(Arc::as_ptr(&other_q), 9);
        assert_eq!(
            c.memo(7, dst, 53),
            Some((SocketId(u32::MAX), Arc::as_ptr(&q), 5))
        );
        assert!(c.memo(8, dst, 53).is_none(), "another sockets generation");
        assert!(c.memo(7, other, 53).is_none(), "another address");
        assert!(c.memo(7, dst, 54).is_none(), "another port");
        c.remember(7, 0, 53, (SocketId(3), 0), &q);
        assert_eq!(
            c.memo(7, other, 53),
            Some((SocketId(3), Arc::as_ptr(&q), 0))
        );
        c.remember(7, 0, 53, (SocketId(3), 255), &q);
        assert_eq!(
            c.memo(7, dst, 53),
            Some((SocketId(3), Arc::as_ptr(&q), 255))
        );
    }

    #[test]
    fn reserved_chunks_serve_the_writer_and_lose_nothing() {
        let stats = Stats::new(1, vec![]);
        let mut w = stats.workers[0].writer();
        w.ns(NsId(3)).rx_packets.inc(); // the writer makes chunk 0 itself
        stats.reserve_workers(3 * NS_CHUNK); // the control side makes chunks 1 and 2
        assert_eq!(stats.workers[0].chunks.load().len(), 3);
        let far = NsId(2 * NS_CHUNK as u32 + 1);
        w.ns(far).rx_packets.add(5); // taken from the reserve, not made again
        stats.reserve_workers(NS_CHUNK); // already there: nothing changes
        assert_eq!(stats.workers[0].chunks.load().len(), 3);
        assert_eq!(stats.ns(NsId(3)).rx_packets, 1);
        assert_eq!(stats.ns(far).rx_packets, 5);
    }

    #[test]
    fn counters_sum_over_writers_and_grow() {
        let stats = Stats::new(2, vec!["mem0".into()]);
        let mut w0 = stats.workers[0].writer();
        let mut w1 = stats.workers[1].writer();
        w0.ns(NsId(3)).delivered.add(2);
        w1.ns(NsId(3)).delivered.inc();
        w1.ns(NsId(700)).rx_packets.inc();
        stats.control.writer().tx(NsId(3)).drop(NsDrop::NsGone, 4);
        assert_eq!(stats.ns(NsId(3)).delivered, 3);
        assert_eq!(stats.ns(NsId(3)).dropped_ns_gone, 4);
        assert_eq!(stats.ns(NsId(700)).rx_packets, 1);
        assert_eq!(stats.ns(NsId(9999)), NsSnapshot::default());
        stats.workers[0].ports[0].drop(PortDrop::Unclaimed);
        assert_eq!(stats.port_dropped(0, PortDrop::Unclaimed), 1);
        let labels: std::collections::HashSet<_> = PortDrop::all().map(|d| d.as_str()).collect();
        assert_eq!(labels.len(), PORT_DROPS);
        for (i, d) in PortDrop::all().enumerate() {
            assert_eq!(d.index(), i);
        }
    }

    #[test]
    fn a_namespace_costs_128_bytes_per_writer_and_rx_and_tx_cells_are_apart() {
        // The memory target of issue 7 (<= 1 KiB per namespace in the whole process) counts
        // these once per worker and once for the control thread.
        assert_eq!(std::mem::size_of::<NsChunk>(), 128 * NS_CHUNK);
        assert_eq!(std::mem::size_of::<NsCounters>(), 64);
        let stats = Stats::new(1, vec![]);
        let mut w = stats.workers[0].writer();
        w.ns(NsId(5)).rx_packets.add(3);
        w.tx(NsId(5)).tx_packets.add(4);
        w.tx(NsId(5)).icmp_echo_replied.inc();
        w.tx(NsId(6)).tx_bytes.add(9);
        let s5 = stats.ns(NsId(5));
        assert_eq!(
            (s5.rx_packets, s5.tx_packets, s5.icmp_echo_replied),
            (3, 4, 1)
        );
        assert_eq!(stats.ns(NsId(6)).tx_bytes, 9);
        assert_eq!(stats.ns(NsId(6)).rx_packets, 0);
    }
}
