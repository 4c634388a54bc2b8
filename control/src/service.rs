//! Built-in services that consume bound sockets: `echo`, `sink` and `attach:PATH`.
//!
//! One service thread serves every socket. Each socket's queue has a bit in the thread's ready
//! set, which workers set after handing it datagrams; a round drains the queues whose bits
//! were set ([`UdpSocket::try_recv`], or whole batches for `sink`), not every queue (with
//! 50,000 sinks, reading every queue's count took a third of a core), and once it has left
//! them empty the thread parks ([`Waiter`]): the worker that next hands a batch to any queue
//! marks it and wakes the thread, once per round whatever the number of queues. Commands (sockets
//! added and removed, through a channel) and `stop` unpark it too. The park times out after
//! 1 ms while traffic flows (then a worker with `idle_sleep_us` ≥ 1000 leaves the wake-up to
//! that timer instead of a cross-core unpark), after 100 ms once it has stopped, and after
//! 1 ms while an `attach` service runs (its process's replies arrive on a Unix socket nothing
//! wakes the thread for).
//!
//! - `echo` answers each datagram to its sender from the address it was received on
//!   (`send_from(meta.dst)`); a datagram received as a broadcast is answered with `send_to`,
//!   so that R13 picks the namespace's own source address.
//! - `sink` counts and drops.
//! - `attach:PATH` hands datagrams to another process over a Unix **datagram** socket
//!   (`SOCK_DGRAM`). The process binds PATH; the service binds an abstract address
//!   (`\0l3ns-attach-PID-SOCKET-N`) and connects to PATH, so the process learns where to answer
//!   from `recvfrom`. Every message, each way, is one datagram:
//!
//!   ```text
//!   offset  0: 4 bytes  source IPv4        (big-endian, network order)
//!   offset  4: 2 bytes  source port
//!   offset  8: 4 bytes  destination IPv4
//!   offset 12: 2 bytes  destination port
//!   offset 14: payload
//!   ```
//!
//!   Towards the process, source is the remote sender and destination the address and port the
//!   datagram was received on. From the process, destination is where to send and source the
//!   address to send from: `0.0.0.0` (or a broadcast address) lets R13 choose; the source port
//!   is ignored (the socket's bound port is used). So a process answers a datagram by swapping
//!   the two halves of the header. Sending from an address the namespace does not own is
//!   refused by the worker (R14, `tx_spoofed`). When PATH cannot be reached (not there yet, the
//!   process restarted) the service retries every second and counts what it had to drop.
//!   `tests/attach_client.py` is an example process.

use crate::error::ControlError;
use crate::runtime::Runtime;
use hashbrown::HashMap;
use l3ns_dataplane::api::UdpSocket;
use l3ns_dataplane::counters::{NsDrop, NsWriter, Stats};
use l3ns_dataplane::errno::Errno;
use l3ns_dataplane::socket::{Batch, BatchPools, DgramMeta, Waiter, MAIL_FROM_QUEUES};
use l3ns_dataplane::types::{SocketId, Subnet};
use l3ns_dataplane::worker::Shared;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of the attach header in front of every payload.
pub const ATTACH_HEADER: usize = 12;
/// Longest Unix socket path (`sizeof(sockaddr_un.sun_path) - 1`).
const MAX_UNIX_PATH: usize = 107;
/// Datagrams taken from one socket per round, so that one busy socket cannot starve others.
const ROUND_BUDGET: usize = 256;
/// The longest park with no `attach` service (commands and `stop` unpark the thread).
const MAX_PARK: Duration = Duration::from_millis(100);
/// The park while traffic flows (a round found datagrams in the last `BUSY_ROUNDS` parks): a
/// worker that sleeps at least this long between polls (`idle_sleep_us` ≥ 1000) does not wake
/// the thread across cores but lets this timer do it (`Worker::wake_consumers`).
const BUSY_PARK: Duration = Duration::from_millis(1);
/// The park while traffic flows to sinks only: a sink is woken early by a worker when one of
/// its queues is half full, so this only bounds how stale its `sunk` count gets.
const SINK_PARK: Duration = Duration::from_millis(10);
/// Wake-ups that found nothing before the thread parks for `MAX_PARK` again.
const BUSY_ROUNDS: u32 = 4;
/// The longest park while an `attach` service runs: how soon its process's replies are read.
const MAX_PARK_ATTACH: Duration = Duration::from_millis(1);
/// How often an unreachable attach PATH is retried.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// A service, parsed from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    Echo,
    Sink,
    Attach(PathBuf),
}

impl ServiceKind {
    /// Parses `echo`, `sink` or `attach:PATH` (`EINVAL` otherwise).
    pub fn parse(service: &str) -> Result<ServiceKind, ControlError> {
        match service {
            "echo" => Ok(ServiceKind::Echo),
            "sink" => Ok(ServiceKind::Sink),
            s => match s.strip_prefix("attach:") {
                Some(p) if !p.is_empty() && p.len() <= MAX_UNIX_PATH => Ok(ServiceKind::Attach(PathBuf::from(p))),
                Some(p) if !p.is_empty() => Err(ControlError::einval(format!(
                    "attach path {p:?} is {} bytes long; a Unix socket path has at most {MAX_UNIX_PATH}: use a shorter path",
                    p.len()
                ))),
                _ => Err(ControlError::einval(format!("service {s:?} is unknown; use echo, sink or attach:PATH"))),
            },
        }
    }
}

/// Counters of all services (written by the service thread only).
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Datagrams taken from socket queues.
    pub received: AtomicU64,
    /// Echo answers handed to the workers.
    pub echoed: AtomicU64,
    /// Datagrams a sink consumed.
    pub sunk: AtomicU64,
    /// Datagrams handed to attached processes.
    pub forwarded: AtomicU64,
    /// Datagrams attached processes sent back, handed to the workers.
    pub returned: AtomicU64,
    /// Datagrams an attach service dropped (process unreachable or not reading).
    pub attach_dropped: AtomicU64,
    /// Messages from a process that were shorter than the header.
    pub attach_malformed: AtomicU64,
    /// Sends the socket layer refused (no source address, send queue full).
    pub send_errors: AtomicU64,
}

impl ServiceStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

enum Command {
    Add(Entry),
    Remove(SocketId),
}

/// The built-in services of one daemon: a handle on the service thread.
pub struct Services {
    commands: mpsc::Sender<Command>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<ServiceStats>,
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl Services {
    /// Starts the (idle) service thread.
    pub fn new() -> Self {
        Self::on_core(None)
    }

    /// Starts the (idle) service thread, pinned to `core` if given.
    pub fn on_core(core: Option<usize>) -> Self {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ServiceStats::default());
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("l3ns-services".into())
            .spawn(move || {
                if let Some(id) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                service_loop(rx, s, st)
            })
            .expect("spawn the service thread");
        Services {
            commands: tx,
            stop,
            thread: Some(thread),
            stats,
        }
    }

    pub fn stats(&self) -> &Arc<ServiceStats> {
        &self.stats
    }

    /// Starts `service` on socket `id` (whose binding and queue `rt` holds).
    pub fn start(&mut self, rt: &Runtime, id: SocketId, service: &str) -> Result<(), ControlError> {
        let kind = ServiceKind::parse(service)?;
        let sock = rt.socket_handle(id)?;
        let kind = match kind {
            ServiceKind::Echo => Kind::Echo,
            ServiceKind::Sink => Kind::Sink,
            ServiceKind::Attach(path) => Kind::Attach(Attachment::new(path, id)),
        };
        let entry = Entry {
            sock,
            kind,
            shared: rt.shared.clone(),
            stats: rt.stats.clone(),
        };
        self.commands
            .send(Command::Add(entry))
            .map_err(|_| ControlError::eio("the service thread has stopped; restart l3nsd"))?;
        self.unpark();
        Ok(())
    }

    /// Stops the service of socket `id` (after its socket was closed). Unknown ids are ignored.
    pub fn stop(&mut self, id: SocketId) {
        let _ = self.commands.send(Command::Remove(id));
        self.unpark();
    }

    /// Wakes the thread (parked on its queues) to read a command or `stop`.
    fn unpark(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.unpark();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl crate::api::ServiceHost for Services {
    fn start(&mut self, rt: &Runtime, id: SocketId, service: &str) -> Result<(), ControlError> {
        Services::start(self, rt, id, service)
    }
    fn stop(&mut self, id: SocketId) {
        Services::stop(self, id)
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Entry {
    sock: UdpSocket,
    kind: Kind,
    shared: Arc<Shared>,
    /// Where the thread takes its writer for `ns_gone` from (see `Slots::take_mail`).
    stats: Arc<Stats>,
}

enum Kind {
    Echo,
    Sink,
    Attach(Attachment),
}

/// The service thread's sockets, each in a slot whose index is its queue's bit in the
/// thread's [`ReadySet`](l3ns_dataplane::socket::ReadySet).
#[derive(Default)]
struct Slots {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// The slot of each socket, looked up per run of mail (hashbrown's default hasher: std's
    /// SipHash was 4% of l3nsd's one core at line rate over 100 sinks).
    by_id: HashMap<SocketId, usize>,
    /// Slots of `attach` entries: looked at every round (their processes' replies arrive on
    /// a Unix socket no worker marks).
    attach: Vec<usize>,
    sinks: usize,
}

impl Slots {
    /// Adds `e` (replacing an entry of the same socket); returns its slot.
    fn add(&mut self, e: Entry, waiter: &Arc<Waiter>) -> usize {
        self.remove(e.sock.id());
        let slot = self.free.pop().unwrap_or_else(|| {
            self.entries.push(None);
            self.entries.len() - 1
        });
        e.sock.queue().set_ready_bit(waiter, slot);
        match e.kind {
            Kind::Attach(_) => self.attach.push(slot),
            Kind::Sink => self.sinks += 1,
            Kind::Echo => {}
        }
        self.by_id.insert(e.sock.id(), slot);
        self.entries[slot] = Some(e);
        slot
    }

    fn remove(&mut self, id: SocketId) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        if let Some(e) = self.entries[slot].take() {
            match e.kind {
                Kind::Attach(_) => self.attach.retain(|&s| s != slot),
                Kind::Sink => self.sinks -= 1,
                Kind::Echo => {}
            }
        }
        self.free.push(slot);
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Batches of mail taken per round at most, before the thread looks at its commands and its
/// attached processes again (it does not park while mail waits).
const MAIL_PER_ROUND: usize = 64;

impl Slots {
    /// Hands each datagram of a batch of mail (`Waiter::accept_mail`) to its socket's
    /// service. Datagrams of a socket closed since the worker posted them are counted
    /// `ns_gone`, as those its queue still held are by the control thread.
    fn take_mail(
        &mut self,
        mail: &Batch,
        gone: &mut Option<NsWriter>,
        stats: &ServiceStats,
        now: Instant,
        round: &mut Round,
    ) {
        if mail.one_socket().is_some() {
            // One socket's (with one socket served, every batch): no walk to find the runs.
            return self.take_run(mail, mail.metas(), gone, stats, now, round);
        }
        for run in mail.metas().chunk_by(|a, b| a.socket == b.socket) {
            self.take_run(mail, run, gone, stats, now, round);
        }
    }

    /// Serves `run`, datagrams of `mail` for one socket.
    fn take_run(
        &mut self,
        mail: &Batch,
        run: &[DgramMeta],
        gone: &mut Option<NsWriter>,
        stats: &ServiceStats,
        now: Instant,
        round: &mut Round,
    ) {
        let entry = self
            .by_id
            .get(&run[0].socket)
            .and_then(|&slot| self.entries[slot].as_mut());
        if let Some(e) = &entry {
            e.sock.queue().took_mail(run.len());
        }
        let Some(e) = entry.filter(|e| !e.sock.queue().is_closed()) else {
            if let Some(w) = gone {
                for m in run {
                    w.tx(m.ns).drop(NsDrop::NsGone, 1);
                }
            }
            return;
        };
        round.work += run.len();
        if let Kind::Sink = e.kind {
            round.sunk += run.len() as u64;
            return;
        }
        ServiceStats::add(&stats.received, run.len() as u64);
        for m in run {
            e.handle(m, mail.payload(m), stats, now);
        }
    }
}

fn service_loop(rx: mpsc::Receiver<Command>, stop: Arc<AtomicBool>, stats: Arc<ServiceStats>) {
    let mut slots = Slots::default();
    let waiter = Waiter::current();
    // Taken from the first socket added: the writer for `ns_gone` and the workers' pools,
    // where the batches of mail go back.
    let mut gone: Option<NsWriter> = None;
    let mut pools: Option<Arc<BatchPools>> = None;
    // Slots to look at in the next round: marked ready by a worker, new, attached, or left
    // with datagrams by the last round (ROUND_BUDGET).
    let mut visit: Vec<usize> = Vec::new();
    let mut again: Vec<usize> = Vec::new();
    // Wake-ups in a row that found nothing to do.
    let mut empty_wakes = BUSY_ROUNDS;
    loop {
        loop {
            match rx.try_recv() {
                Ok(Command::Add(e)) => {
                    if gone.is_none() {
                        gone = Some(e.stats.consumer());
                        pools = Some(e.shared.pools.clone());
                    }
                    let slot = slots.add(e, &waiter);
                    if slots.len() >= MAIL_FROM_QUEUES {
                        // From here on workers hand the datagrams of a round for all of
                        // this thread's sockets over as one batch (sockets already handed
                        // batches of their own keep them).
                        waiter.accept_mail();
                    }
                    visit.push(slot);
                }
                Ok(Command::Remove(id)) => slots.remove(id),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut round = Round::default();
        for _ in 0..MAIL_PER_ROUND {
            let Some(mail) = waiter.take_mail() else {
                break;
            };
            slots.take_mail(&mail, &mut gone, &stats, now, &mut round);
            if let Some(p) = &pools {
                p.give_back(mail);
            }
        }
        waiter.ready.take(|slot| visit.push(slot));
        visit.extend_from_slice(&slots.attach);
        visit.sort_unstable();
        visit.dedup();
        for &slot in &visit {
            let Some(e) = slots.entries.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let before = round.work;
            e.poll(&stats, now, &mut round);
            // Stopped by the budget (what it left may sit in the socket's current batch, not
            // in the queue), or handed more since: next round too.
            if round.work - before >= ROUND_BUDGET || !e.sock.queue().is_empty() {
                again.push(slot);
            }
        }
        visit.clear();
        std::mem::swap(&mut visit, &mut again);
        if round.sunk > 0 {
            ServiceStats::add(&stats.received, round.sunk);
            ServiceStats::add(&stats.sunk, round.sunk);
        }
        if round.relayed > 0 {
            // An attached process is answering: look again at once.
            continue;
        }
        if round.work > 0 {
            empty_wakes = 0;
        } else {
            empty_wakes = empty_wakes.saturating_add(1);
        }
        let attach = !slots.attach.is_empty();
        // Only sinks: nobody waits for what they take, so workers leave the thread to its
        // timer until a queue is half full (`Waiter::set_lazy`), and the timer is longer.
        let sinks_only = slots.sinks == slots.len();
        waiter.set_lazy(sinks_only);
        let timeout = if attach {
            MAX_PARK_ATTACH
        } else if empty_wakes > BUSY_ROUNDS {
            MAX_PARK
        } else if sinks_only {
            SINK_PARK
        } else {
            BUSY_PARK
        };
        // Park unless a queue has datagrams again: one left some after its round's budget
        // (`visit`), or a worker marked one ready or posted mail since `take` (`prepare`
        // looks at the bits and the mail after declaring the thread asleep, so a mark or a
        // post after that look wakes it).
        if visit.is_empty() && waiter.prepare(timeout, std::iter::empty()) {
            waiter.park();
        }
    }
}

/// What one round over every entry did (sink counts are added to the stats once per round).
#[derive(Default)]
struct Round {
    /// Datagrams taken from the queues.
    work: usize,
    /// Datagrams sinks consumed.
    sunk: u64,
    /// Messages attached processes sent back.
    relayed: usize,
}

impl Entry {
    /// Serves one datagram (counted in `stats.received` by the caller).
    fn handle(&mut self, meta: &DgramMeta, payload: &[u8], stats: &ServiceStats, now: Instant) {
        match &mut self.kind {
            Kind::Sink => ServiceStats::add(&stats.sunk, 1),
            Kind::Echo => {
                let from = if meta.broadcast {
                    Ipv4Addr::UNSPECIFIED
                } else {
                    meta.dst
                };
                match answer(
                    &self.sock,
                    &self.shared,
                    from,
                    payload,
                    meta.src,
                    meta.src_port,
                ) {
                    Ok(()) => ServiceStats::add(&stats.echoed, 1),
                    Err(_) => ServiceStats::add(&stats.send_errors, 1),
                }
            }
            Kind::Attach(a) => a.forward(meta, payload, stats, now),
        }
    }

    /// One round on this socket.
    fn poll(&mut self, stats: &ServiceStats, now: Instant, round: &mut Round) {
        let mut n = 0;
        if let Kind::Sink = self.kind {
            // A sink needs no payload: take whole batches, count, hand them back. The count
            // is one line to read; an empty `pop_batch` reads two the worker writes.
            let q = self.sock.queue();
            while n < ROUND_BUDGET && !q.is_empty() {
                let Some(b) = q.pop_batch() else { break };
                n += b.len();
                q.recycle(b);
            }
            round.sunk += n as u64;
            round.work += n;
            return;
        }
        while n < ROUND_BUDGET {
            let Some(d) = self.sock.try_recv() else { break };
            n += 1;
            ServiceStats::add(&stats.received, 1);
            self.handle(&d.meta, &d.payload, stats, now);
        }
        round.work += n;
        if let Kind::Attach(a) = &mut self.kind {
            round.relayed += a.relay_back(&self.sock, &self.shared, stats);
        }
    }
}

/// Sends `payload` to `to:port` from `from`, or from the address R13 picks when `from` is
/// not a unicast address of the namespace's own (unspecified, a broadcast, multicast, a
/// subnet's network or broadcast address).
fn answer(
    sock: &UdpSocket,
    shared: &Shared,
    from: Ipv4Addr,
    payload: &[u8],
    to: Ipv4Addr,
    port: u16,
) -> Result<(), Errno> {
    let choose = from.is_unspecified() || from.is_broadcast() || from.is_multicast() || {
        let t = shared.table.load();
        t.namespace(sock.ns()).is_some_and(|v| {
            v.ifaddrs
                .iter()
                .any(|i| i.broadcast == from || i.network() == from && i.prefix < 31)
        })
    };
    if choose {
        sock.send_to(payload, to, port)
    } else {
        sock.send_from(from, payload, to, port)
    }
}

/// An IPv4 address and a port, as the attach header carries them.
pub type AddrPort = (Ipv4Addr, u16);

/// Writes the attach header for `meta` into `out` followed by `payload`.
pub fn encode_attach(out: &mut Vec<u8>, src: AddrPort, dst: AddrPort, payload: &[u8]) {
    out.clear();
    out.extend_from_slice(&src.0.octets());
    out.extend_from_slice(&src.1.to_be_bytes());
    out.extend_from_slice(&dst.0.octets());
    out.extend_from_slice(&dst.1.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Splits an attach message into (source, destination, payload); `None` when too short.
pub fn decode_attach(msg: &[u8]) -> Option<(AddrPort, AddrPort, &[u8])> {
    if msg.len() < ATTACH_HEADER {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(msg[o], msg[o + 1], msg[o + 2], msg[o + 3]);
    let port = |o: usize| u16::from_be_bytes([msg[o], msg[o + 1]]);
    Some(((ip(0), port(4)), (ip(6), port(10)), &msg[ATTACH_HEADER..]))
}

/// The connection of an `attach:PATH` service to its process.
struct Attachment {
    path: PathBuf,
    socket: SocketId,
    conn: Option<UnixDatagram>,
    next_try: Instant,
    warned: bool,
    buf: Vec<u8>,
}

static ATTACH_SEQ: AtomicU64 = AtomicU64::new(0);

impl Attachment {
    fn new(path: PathBuf, socket: SocketId) -> Self {
        let mut a = Attachment {
            path,
            socket,
            conn: None,
            next_try: Instant::now(),
            warned: false,
            buf: Vec::with_capacity(2048),
        };
        a.connect(Instant::now());
        a
    }

    fn connect(&mut self, now: Instant) {
        if self.conn.is_some() || now < self.next_try {
            return;
        }
        self.next_try = now + RECONNECT_EVERY;
        match self.try_connect() {
            Ok(c) => {
                if self.warned {
                    eprintln!(
                        "l3nsd: attach socket {}: connected to {}",
                        self.socket.0,
                        self.path.display()
                    );
                }
                self.warned = false;
                self.conn = Some(c);
            }
            Err(e) => {
                if !self.warned {
                    eprintln!(
                        "l3nsd: attach socket {}: cannot reach {}: {e}; datagrams are dropped until the process binds it (retrying every second)",
                        self.socket.0,
                        self.path.display()
                    );
                    self.warned = true;
                }
            }
        }
    }

    fn try_connect(&self) -> std::io::Result<UnixDatagram> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "l3ns-attach-{}-{}-{}",
            std::process::id(),
            self.socket.0,
            ATTACH_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let s = UnixDatagram::bind_addr(&addr)?;
        s.connect(&self.path)?;
        s.set_nonblocking(true)?;
        Ok(s)
    }

    fn forward(&mut self, meta: &DgramMeta, payload: &[u8], stats: &ServiceStats, now: Instant) {
        self.connect(now);
        let Some(c) = &self.conn else {
            ServiceStats::add(&stats.attach_dropped, 1);
            return;
        };
        encode_attach(
            &mut self.buf,
            (meta.src, meta.src_port),
            (meta.dst, meta.dst_port),
            payload,
        );
        match c.send(&self.buf) {
            Ok(_) => ServiceStats::add(&stats.forwarded, 1),
            Err(e) => {
                ServiceStats::add(&stats.attach_dropped, 1);
                // A full receive buffer is the process's back-pressure: drop, stay connected.
                if e.kind() != ErrorKind::WouldBlock {
                    self.conn = None;
                }
            }
        }
    }

    /// Sends what the process wrote back; returns how many messages were read.
    fn relay_back(&mut self, sock: &UdpSocket, shared: &Shared, stats: &ServiceStats) -> usize {
        let Some(c) = &self.conn else { return 0 };
        let mut buf = [0u8; 65_536];
        let mut n = 0;
        while n < ROUND_BUDGET {
            match c.recv(&mut buf) {
                Ok(len) => {
                    n += 1;
                    match decode_attach(&buf[..len]) {
                        Some(((src, _), (dst, port), payload)) => {
                            match answer(sock, shared, src, payload, dst, port) {
                                Ok(()) => ServiceStats::add(&stats.returned, 1),
                                Err(_) => ServiceStats::add(&stats.send_errors, 1),
                            }
                        }
                        None => ServiceStats::add(&stats.attach_malformed, 1),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.conn = None;
                    break;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use l3ns_dataplane::types::{LoopbackMode, NsId};

    /// Mail for a socket closed after the worker counted it in (its queue closed, or its
    /// entry already removed) is counted `ns_gone`, not lost; mail for an open one is served
    /// and taken out of its queue's count.
    #[test]
    fn mail_for_a_closed_socket_is_counted_ns_gone() {
        let mut rt = Runtime::new(Default::default(), 1, vec!["eth0".into()], 1024);
        let root = NsId::ROOT;
        let ns = rt
            .apply("ns_add", |m| {
                m.ns_add(root, "web1", None, LoopbackMode::Isolated)
            })
            .unwrap();
        let (id, q) = rt.bind(ns, Ipv4Addr::UNSPECIFIED, 9, "sink").unwrap();
        let waiter = Waiter::current();
        let mut slots = Slots::default();
        slots.add(
            Entry {
                sock: rt.socket_handle(id).unwrap(),
                kind: Kind::Sink,
                shared: rt.shared.clone(),
                stats: rt.stats.clone(),
            },
            &waiter,
        );
        let mail = |n: usize| {
            let mut b = Batch::with_capacity(n, 0);
            for _ in 0..n {
                let meta = DgramMeta {
                    socket: id,
                    ns,
                    ..Default::default()
                };
                b.push(meta, b"x");
            }
            b
        };
        let mut gone = Some(rt.stats.consumer());
        let stats = ServiceStats::default();
        let now = Instant::now();
        // Open: served, and out of the queue's count.
        assert_eq!(q.reserve(2), 2);
        let mut round = Round::default();
        slots.take_mail(&mail(2), &mut gone, &stats, now, &mut round);
        assert_eq!((round.work, round.sunk, q.len()), (2, 2, 0));
        // Counted in by a worker, then the socket closed: ns_gone.
        assert_eq!(q.reserve(3), 3);
        rt.close(ns, id).unwrap();
        assert!(q.is_closed());
        let mut round = Round::default();
        slots.take_mail(&mail(3), &mut gone, &stats, now, &mut round);
        assert_eq!((round.work, round.sunk), (0, 0));
        assert_eq!(rt.stats.ns(ns).dropped_ns_gone, 3);
        // Its entry removed too: ns_gone still.
        slots.remove(id);
        slots.take_mail(&mail(1), &mut gone, &stats, now, &mut round);
        assert_eq!(rt.stats.ns(ns).dropped_ns_gone, 4);
    }

    #[test]
    fn parses_the_three_services() {
        assert_eq!(ServiceKind::parse("echo").unwrap(), ServiceKind::Echo);
        assert_eq!(ServiceKind::parse("sink").unwrap(), ServiceKind::Sink);
        assert_eq!(
            ServiceKind::parse("attach:/tmp/x").unwrap(),
            ServiceKind::Attach("/tmp/x".into())
        );
        assert_eq!(
            ServiceKind::parse("attach:").unwrap_err().errno,
            Errno::EINVAL
        );
        assert_eq!(ServiceKind::parse("http").unwrap_err().errno, Errno::EINVAL);
        let long = format!("attach:/{}", "x".repeat(200));
        assert!(ServiceKind::parse(&long)
            .unwrap_err()
            .message
            .contains("at most 107"));
    }

    #[test]
    fn attach_framing_round_trips() {
        let mut b = Vec::new();
        let src = (Ipv4Addr::new(10, 0, 0, 99), 40000);
        let dst = (Ipv4Addr::new(10, 0, 0, 2), 7);
        encode_attach(&mut b, src, dst, b"hi");
        assert_eq!(b.len(), ATTACH_HEADER + 2);
        assert_eq!(&b[..6], &[10, 0, 0, 99, 0x9c, 0x40]);
        assert_eq!(decode_attach(&b), Some((src, dst, &b"hi"[..])));
        assert_eq!(decode_attach(&b[..11]), None);
    }
}
