//! The control thread and its unix sockets.
//!
//! ```text
//!  root socket (0600) ─────────┐  one accepting    ┌► connection thread ─┐  one JSON line in,
//!  tenant socket web1 (0660) ──┼► thread (epoll) ──┼► connection thread ─┼► one out; crossbeam
//!  tenant socket web2 (0660) ──┘                   └► ...                ┘  channel ─► control
//!                                          thread: apply in order (a batch at a time),
//!                                          publish once, persist, then answer
//! ```
//!
//! * One thread accepts on every socket ([`Acceptor`]); each connection gets a thread while
//!   it lasts. Each socket is a file descriptor: 100,000 namespaces need an open-file limit
//!   above 100,000 (l3nsd raises its soft limit to the hard one at start, `crate::limits`).
//!
//! * Only the control thread touches the [`Runtime`] (one writer). Connection threads only
//!   parse, forward and write back, with read and write timeouts, so a slow or broken client
//!   costs its own thread and never stalls the control thread.
//! * **Identities.** The root socket may act as any namespace (`"as": "web1"`, default
//!   `root`). Every namespace other than `root` gets a tenant socket
//!   `<control>.tenants/<ns>.sock` (see [`tenant_socket_path`]), created when the namespace
//!   appears and removed when it is deleted; on it the identity is that namespace and any
//!   other `as` is `EPERM`. Give the namespace's users the socket's group to let them in.
//! * **Durability.** After a batch in which at least one mutating request succeeded,
//!   `persist(&model)` runs once, before any answer of the batch is sent. If it fails, the
//!   changes stay applied in memory (the dataplane already uses them; undoing a published
//!   change would be a second change nobody asked for) and each of those requests is answered
//!   `EIO` saying so; the next successful save writes them.

use super::handle::execute;
use super::protocol::{Envelope, Reply, Request};
use super::ServiceHost;
use crate::error::{ControlError, Result};
use crate::model::Model;
use crate::runtime::Runtime;
use crate::stop::Stop;
use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use l3ns_dataplane::types::NsId;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The persistence hook: saves the model; called by the control thread before answering.
pub type Persist = Box<dyn FnMut(&Model) -> io::Result<()> + Send>;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// Most requests applied before one save and one round of answers.
const MAX_BATCH: usize = 64;
/// How long a connection's thread waits for the control thread's answer before it looks
/// whether the control thread has closed.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How often an idle control thread looks again for replaced snapshots that workers have let
/// go of, while any are left (otherwise it sleeps until a request or the stop comes).
const RECLAIM_POLL: Duration = Duration::from_millis(50);

/// Where and how the control API listens.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The root control socket (mode 0600).
    pub control: PathBuf,
    /// Directory of tenant sockets; `None`: `<control>.tenants`.
    pub tenants: Option<PathBuf>,
    /// Mode of tenant sockets (default 0660: owner and group).
    pub tenant_mode: u32,
    /// Connections served at once; more are answered `ENOBUFS` and closed.
    pub max_connections: usize,
    /// Read and write timeout of a connection (a silent client is dropped after it).
    pub io_timeout: Duration,
}

impl ServeConfig {
    pub fn new(control: impl Into<PathBuf>) -> Self {
        ServeConfig {
            control: control.into(),
            tenants: None,
            tenant_mode: 0o660,
            max_connections: 64,
            io_timeout: Duration::from_secs(10),
        }
    }

    /// The tenant socket directory.
    pub fn tenant_dir(&self) -> PathBuf {
        self.tenants
            .clone()
            .unwrap_or_else(|| default_tenant_dir(&self.control))
    }
}

fn default_tenant_dir(control: &Path) -> PathBuf {
    let mut s = control.as_os_str().to_owned();
    s.push(".tenants");
    PathBuf::from(s)
}

/// The tenant socket of namespace `ns` for a daemon listening on `control` with the default
/// tenant directory: `<control>.tenants/<ns>.sock`.
pub fn tenant_socket_path(control: &Path, ns: &str) -> PathBuf {
    default_tenant_dir(control).join(format!("{ns}.sock"))
}

/// Who is at the other end of a connection, by the socket it came in on.
#[derive(Clone, Debug)]
enum Origin {
    Root,
    /// A tenant socket: limited to the namespace it was made for (by id, so a namespace
    /// deleted and made again under the same name does not inherit old connections).
    Tenant {
        name: String,
        id: NsId,
    },
}

struct Job {
    origin: Origin,
    envelope: Envelope,
    reply: Sender<Reply>,
}

/// What connection threads share.
struct Conns {
    jobs: Sender<Job>,
    /// Set when the control thread has left: nobody will answer queued requests.
    closed: AtomicBool,
    active: AtomicUsize,
    max: usize,
    timeout: Duration,
}

/// A control socket: its path and its token in the [`Acceptor`].
struct Listener {
    path: PathBuf,
    token: Token,
}

impl Listener {
    /// Binds `path` with `mode` and has the acceptor take its connections.
    fn open(path: &Path, mode: u32, origin: Origin, acceptor: &mut Acceptor) -> io::Result<Self> {
        let listener = bind_with_mode(path, mode)?;
        let token = match acceptor.add(listener, origin) {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(e);
            }
        };
        Ok(Listener {
            path: path.to_path_buf(),
            token,
        })
    }

    /// Stops accepting on it (the acceptor closes it) and removes the socket file.
    fn close(self, acceptor: &Acceptor) {
        acceptor.remove(self.token);
        let _ = fs::remove_file(&self.path);
    }
}

/// The token of the acceptor's waker (listeners take tokens from 1 up).
const WAKE: Token = Token(0);

enum AcceptCmd {
    Add(Token, UnixListener, Origin),
    /// Close the listener, then answer.
    Remove(Token, Sender<()>),
    Stop,
}

/// One thread accepting on every control socket, the root one and one per namespace,
/// through epoll (`mio`): a thread and a blocking `accept` per socket took 10,000 threads
/// for 10,000 namespaces. Listeners are added and removed by the control thread through a
/// channel and a waker; connections still get a thread each while they last
/// ([`Conns::max`] of them at most).
struct Acceptor {
    cmds: Sender<AcceptCmd>,
    waker: Arc<Waker>,
    next: usize,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(conns: Arc<Conns>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (cmds, rx) = channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("l3ns-accept".into())
            .stack_size(256 * 1024)
            .spawn(move || accept_loop(poll, rx, &conns))?;
        Ok(Acceptor {
            cmds,
            waker,
            next: 1,
            thread: Some(thread),
        })
    }

    fn send(&self, cmd: AcceptCmd) -> io::Result<()> {
        self.cmds
            .send(cmd)
            .map_err(|_| io::Error::other("the control sockets' accepting thread has stopped"))?;
        self.waker.wake()
    }

    fn add(&mut self, listener: UnixListener, origin: Origin) -> io::Result<Token> {
        listener.set_nonblocking(true)?;
        let token = Token(self.next);
        self.next += 1;
        self.send(AcceptCmd::Add(token, listener, origin))?;
        Ok(token)
    }

    /// Returns once the listener is closed (or the acceptor is gone, or after a second).
    fn remove(&self, token: Token) {
        let (tx, rx) = channel::bounded(1);
        if self.send(AcceptCmd::Remove(token, tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
    }

    /// Closes every listener and ends the thread.
    fn stop(mut self) {
        if self.send(AcceptCmd::Stop).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// How soon a listener whose `accept` failed (out of file descriptors, say) is tried again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

fn accept_loop(mut poll: Poll, cmds: Receiver<AcceptCmd>, conns: &Arc<Conns>) {
    let mut events = Events::with_capacity(256);
    let mut listeners: HashMap<Token, (UnixListener, Origin)> = HashMap::new();
    let mut retry: Vec<Token> = Vec::new();
    let mut ready: Vec<Token> = Vec::new();
    loop {
        let timeout = (!retry.is_empty()).then_some(ACCEPT_RETRY);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("l3nsd: the control sockets' epoll failed ({e}); no more control connections are accepted");
            return;
        }
        ready.clear();
        ready.append(&mut retry);
        ready.extend(events.iter().map(|e| e.token()));
        for &token in &ready {
            if token == WAKE {
                for cmd in cmds.try_iter() {
                    match cmd {
                        AcceptCmd::Add(t, l, origin) => {
                            let fd = l.as_raw_fd();
                            match poll.registry().register(
                                &mut SourceFd(&fd),
                                t,
                                Interest::READABLE,
                            ) {
                                Ok(()) => {
                                    listeners.insert(t, (l, origin));
                                }
                                Err(e) => eprintln!("l3nsd: cannot watch a control socket ({e})"),
                            }
                        }
                        AcceptCmd::Remove(t, done) => {
                            if let Some((l, _)) = listeners.remove(&t) {
                                let fd = l.as_raw_fd();
                                let _ = poll.registry().deregister(&mut SourceFd(&fd));
                            }
                            let _ = done.send(());
                        }
                        AcceptCmd::Stop => return,
                    }
                }
                continue;
            }
            let Some((l, origin)) = listeners.get(&token) else {
                continue;
            };
            // Edge-triggered: take every pending connection.
            loop {
                match l.accept() {
                    Ok((stream, _)) => start_connection(stream, origin, conns),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // EMFILE and friends: try again shortly instead of spinning.
                        retry.push(token);
                        break;
                    }
                }
            }
        }
    }
}

/// Serves one accepted connection on a thread of its own, or answers `ENOBUFS` when
/// [`Conns::max`] are being served.
fn start_connection(stream: UnixStream, origin: &Origin, conns: &Arc<Conns>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(conns.timeout));
    let _ = stream.set_write_timeout(Some(conns.timeout));
    if conns.active.fetch_add(1, Ordering::SeqCst) >= conns.max {
        conns.active.fetch_sub(1, Ordering::SeqCst);
        let busy = ControlError::enobufs(
            "l3nsd is serving too many control connections; retry in a moment",
        );
        let _ = write_reply(&stream, &Reply::Error(busy));
        return;
    }
    let (origin, c) = (origin.clone(), conns.clone());
    let spawned = std::thread::Builder::new()
        .name("l3ns-conn".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            serve_connection(stream, origin, &c);
            c.active.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        conns.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Binds `path` with `mode` without a window in which it has wider rights: bind a temporary
/// name, set the mode, rename into place.
fn bind_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "socket path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let l = UnixListener::bind(&tmp)?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(l)
}

/// Makes `path` free for this daemon: missing, or a stale socket nobody answers on (removed).
/// Another daemon answering, or a file that is not a socket, is an error.
fn claim_control_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if !md.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; remove it or choose another control path",
                path.display()
            ),
        )),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another l3nsd answers on {}; stop it first or choose another control path",
                    path.display()
                ),
            )),
            Err(_) => fs::remove_file(path),
        },
    }
}

/// Reads requests (one JSON line each) until EOF, a timeout or an I/O error, and answers
/// each one.
fn serve_connection(stream: UnixStream, origin: Origin, conns: &Conns) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half.take(0));
    loop {
        let mut line = String::new();
        reader.get_mut().set_limit(MAX_REQUEST);
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with('\n') && reader.get_ref().limit() == 0 {
            let e = ControlError::einval(format!(
                "the request is longer than {MAX_REQUEST} bytes; send one JSON object per line"
            ));
            let _ = write_reply(&stream, &Reply::Error(e));
            return;
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Envelope>(&line) {
            Err(e) => Reply::Error(ControlError::einval(format!(
                "the request is not a valid command ({e}); send {{\"as\": NS?, \"request\": {{\"cmd\": ...}}}}"
            ))),
            Ok(envelope) => forward(conns, origin.clone(), envelope),
        };
        if write_reply(&stream, &reply).is_err() {
            return;
        }
    }
}

/// Hands a request to the control thread and waits for its answer.
fn forward(conns: &Conns, origin: Origin, envelope: Envelope) -> Reply {
    let (tx, rx) = channel::bounded(1);
    let gone = || {
        Reply::Error(ControlError::eio(
            "l3nsd is shutting down and did not apply the request; retry when it is back",
        ))
    };
    let job = Job {
        origin,
        envelope,
        reply: tx,
    };
    if conns.jobs.send_timeout(job, conns.timeout).is_err() {
        return gone();
    }
    loop {
        match rx.recv_timeout(STOP_POLL) {
            Ok(r) => return r,
            Err(RecvTimeoutError::Disconnected) => return gone(),
            Err(RecvTimeoutError::Timeout) if conns.closed.load(Ordering::SeqCst) => return gone(),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

fn write_reply(mut stream: &UnixStream, reply: &Reply) -> io::Result<()> {
    let mut s = serde_json::to_string(reply).map_err(io::Error::other)?;
    s.push('\n');
    stream.write_all(s.as_bytes())?;
    stream.flush()
}

/// Starts the control thread on `cfg.control` and returns its handle; joining it after
/// `stop` is asked for ([`Stop::stop`], which wakes it) gives the [`Runtime`] back. Fails
/// (before any thread starts) if another daemon answers on the control path or the socket
/// cannot be made.
pub fn serve(
    cfg: ServeConfig,
    rt: Runtime,
    host: Box<dyn ServiceHost>,
    persist: Option<Persist>,
    stop: Stop,
) -> io::Result<JoinHandle<Runtime>> {
    if let Some(dir) = cfg.control.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    claim_control_path(&cfg.control)?;
    let (jobs_tx, jobs_rx) = channel::bounded::<Job>(1024);
    let conns = Arc::new(Conns {
        jobs: jobs_tx,
        closed: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        max: cfg.max_connections.max(1),
        timeout: cfg.io_timeout,
    });
    let mut acceptor = Acceptor::start(conns.clone())?;
    let root = match Listener::open(&cfg.control, 0o600, Origin::Root, &mut acceptor) {
        Ok(l) => l,
        Err(e) => {
            acceptor.stop();
            return Err(e);
        }
    };
    let tenant_dir = cfg.tenant_dir();
    let prepared = fs::create_dir_all(&tenant_dir)
        .and_then(|()| fs::set_permissions(&tenant_dir, fs::Permissions::from_mode(0o711)));
    if let Err(e) = prepared {
        root.close(&acceptor);
        acceptor.stop();
        return Err(e);
    }
    remove_stale_tenant_sockets(&tenant_dir);
    let mut ctl = Control {
        rt,
        host,
        persist,
        conns,
        acceptor,
        tenant_dir,
        tenant_mode: cfg.tenant_mode,
        tenants: BTreeMap::new(),
    };
    ctl.reconcile_tenants();
    std::thread::Builder::new()
        .name("l3ns-control".into())
        .spawn(move || ctl.run(jobs_rx, root, &stop))
}

fn remove_stale_tenant_sockets(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let is_sock = e.file_type().is_ok_and(|t| t.is_socket());
        if is_sock {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The control thread's state.
struct Control {
    rt: Runtime,
    host: Box<dyn ServiceHost>,
    persist: Option<Persist>,
    conns: Arc<Conns>,
    acceptor: Acceptor,
    tenant_dir: PathBuf,
    tenant_mode: u32,
    tenants: BTreeMap<String, (NsId, Listener)>,
}

impl Control {
    fn run(mut self, jobs: Receiver<Job>, root: Listener, stop: &Stop) -> Runtime {
        while !stop.is_stopped() {
            // Idle, the thread sleeps until a request or the stop comes; only while replaced
            // snapshots are still held does it look again every RECLAIM_POLL to free them.
            let reclaim = if self.rt.retired() > 0 {
                channel::after(RECLAIM_POLL)
            } else {
                channel::never()
            };
            let first = crossbeam::select! {
                recv(jobs) -> j => match j {
                    Ok(j) => j,
                    Err(_) => break,
                },
                recv(stop.closed()) -> _ => break,
                recv(reclaim) -> _ => {
                    self.rt.reclaim();
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
        // The acceptor closes every listener as it stops; then the files go.
        self.acceptor.stop();
        let _ = fs::remove_file(&root.path);
        for (_, (_, l)) in std::mem::take(&mut self.tenants) {
            let _ = fs::remove_file(&l.path);
        }
        // Requests still queued are not applied; their threads answer EIO.
        self.conns.closed.store(true, Ordering::SeqCst);
        drop(jobs);
        self.rt
    }

    /// Applies a batch in order, publishes what it changed in one snapshot, saves once if
    /// anything changed, then answers: an answer is sent only once its change is visible to
    /// workers.
    fn run_batch(&mut self, batch: Vec<Job>) {
        let mut answers: Vec<(Sender<Reply>, Result<serde_json::Value>, bool)> = Vec::new();
        let (mut dirty, mut ns_changed) = (false, false);
        self.rt.begin_batch();
        for job in batch {
            let mutating = job.envelope.request.is_mutating();
            let result = self.run_one(&job.origin, &job.envelope).map(|(v, fx)| {
                ns_changed |= fx.namespaces_changed;
                v
            });
            let changed = mutating && result.is_ok();
            dirty |= changed;
            answers.push((job.reply, result, changed));
        }
        self.rt.end_batch();
        if ns_changed {
            // Before answering, so that `ns add` returns once the tenant socket exists.
            self.reconcile_tenants();
        }
        let saved = match (&mut self.persist, dirty) {
            (Some(p), true) => p(self.rt.model()),
            _ => Ok(()),
        };
        for (reply, result, changed) in answers {
            let result = match (&saved, changed) {
                (Err(e), true) => Err(ControlError::eio(format!(
                    "the change is applied in memory but could not be saved ({e}); it is lost if l3nsd restarts before a later change is saved, fix the state file's location"
                ))),
                _ => result,
            };
            let _ = reply.send(result.into());
        }
    }

    fn run_one(
        &mut self,
        origin: &Origin,
        env: &Envelope,
    ) -> Result<(serde_json::Value, super::handle::Effects)> {
        let caller = self.identity(origin, env.as_ns.as_deref())?;
        let req: &Request = &env.request;
        execute(&mut self.rt, self.host.as_mut(), caller, req)
    }

    /// The identity a request runs as (see the module doc).
    fn identity(&self, origin: &Origin, as_ns: Option<&str>) -> Result<NsId> {
        let m = self.rt.model();
        match origin {
            Origin::Root => as_ns.map_or(Ok(NsId::ROOT), |n| m.ns_id(n)),
            Origin::Tenant { name, id } => {
                if let Some(other) = as_ns.filter(|a| a != name) {
                    return Err(ControlError::eperm(format!(
                        "this control socket belongs to namespace {name} and cannot act as {other}; drop --as or use the root control socket"
                    )));
                }
                match m.ns_by_name(name) {
                    Some(ns) if ns.id == *id => Ok(*id),
                    _ => Err(ControlError::enoent(format!(
                        "namespace {name} of this control socket no longer exists (R5)"
                    ))),
                }
            }
        }
    }

    /// Makes the tenant sockets match the namespaces: one per namespace other than `root`.
    fn reconcile_tenants(&mut self) {
        let m = self.rt.model();
        let want: BTreeMap<String, NsId> = m
            .namespaces()
            .filter(|n| n.id != NsId::ROOT)
            .map(|n| (n.name.to_string(), n.id))
            .collect();
        let stale: Vec<String> = self
            .tenants
            .iter()
            .filter(|(name, (id, _))| want.get(*name) != Some(id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, l)) = self.tenants.remove(&name) {
                l.close(&self.acceptor);
            }
        }
        // One line per failure would be one per namespace when the open-file limit is
        // reached: the first is printed, the rest counted.
        let mut failed = 0usize;
        for (name, id) in want {
            if self.tenants.contains_key(&name) {
                continue;
            }
            let path = self.tenant_dir.join(format!("{name}.sock"));
            let origin = Origin::Tenant {
                name: name.clone(),
                id,
            };
            match Listener::open(&path, self.tenant_mode, origin, &mut self.acceptor) {
                Ok(l) => {
                    self.tenants.insert(name, (id, l));
                }
                Err(e) => {
                    failed += 1;
                    if failed > 1 {
                        continue;
                    }
                    let hint = if e.raw_os_error() == Some(libc::EMFILE) {
                        " (each namespace's tenant socket takes a file descriptor, and l3nsd already runs at its hard open-file limit: raise that, LimitNOFILE= or ulimit -Hn)"
                    } else {
                        ""
                    };
                    eprintln!(
                        "l3nsd: cannot create the tenant socket {} of namespace {name}: {e}{hint}",
                        path.display()
                    )
                }
            }
        }
        if failed > 1 {
            eprintln!(
                "l3nsd: {} more namespaces have no tenant socket (tried again at the next namespace change)",
                failed - 1
            );
        }
    }
}
