//! `l3nsd` start-up and shutdown.
//!
//! Start-up, in order: load the configuration (or the embedded `config/demo.toml`) and check
//! it against a fresh model → open the ports (memory rings with their generator, AF_PACKET
//! sockets, DPDK queues), one queue per worker → build the model from the configuration, or
//! load the state file instead (the configuration still provides the ports) → `Runtime::new`
//! publishes the first snapshot → one worker thread per configured core, pinned, each owning
//! one queue of every port → the built-in services of every bound socket → the control thread
//! (`api::serve`) → the metrics endpoint → in-daemon senders → the per-namespace table every
//! second until SIGINT, SIGTERM or `--duration`.
//!
//! Shutdown: senders stop; `shared.stop` is set and the workers are joined (each drains what
//! it had staged); the control thread is stopped and joined (it drops the services, whose
//! thread is joined) and gives the runtime back; the metrics thread is joined; the state file
//! is written one last time.

use crate::api::{self, ServeConfig, ServiceHost};
use crate::config::{
    Backend, Config, ConfigError, FlowConfig, FlowKind, Listen, PortConfig, Workers, DEMO_NAME,
};
use crate::error::ControlError;
use crate::metrics::{self, MetricsServer, MetricsSource};
use crate::model::Model;
use crate::runtime::Runtime;
use crate::service::Services;
use crate::state::{self, StateError};
use crate::stop::Stop;
use l3ns_dataplane::api::UdpSocket;
use l3ns_dataplane::counters::{PortDrop, Stats};
use l3ns_dataplane::port::afpacket::{self, AfPacketOptions, AfPacketPort};
use l3ns_dataplane::port::memory::{memory_pair, Generator, MemoryPort, Pace, TxMode};
use l3ns_dataplane::port::{Port, PortInfo};
use l3ns_dataplane::socket::SocketQueue;
use l3ns_dataplane::types::SocketId;
use l3ns_dataplane::wire::{self, FrameAddrs, BROADCAST_MAC, DEFAULT_TTL};
use l3ns_dataplane::worker::{Shared, Worker, WorkerConfig, WorkerPort};
use std::fmt::Write as _;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What `l3nsd` was asked to do (its command line).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The configuration file; `None`: the embedded `config/demo.toml`.
    pub config: Option<PathBuf>,
    /// The state file (see `state`).
    pub state: Option<PathBuf>,
    /// Overrides `[control] socket`.
    pub control: Option<PathBuf>,
    /// Overrides `[metrics] listen`.
    pub metrics: Option<Listen>,
    /// Stop after this long (default: at SIGINT or SIGTERM).
    pub duration: Option<Duration>,
    /// No banner and no per-second table.
    pub quiet: bool,
    /// How often the table is printed (default 1 s).
    pub interval: Option<Duration>,
}

/// Why the daemon could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("port {port}: {message}")]
    Port { port: String, message: String },
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("socket {socket} ({service}): {error}")]
    Service {
        socket: u32,
        service: String,
        error: ControlError,
    },
    #[error("{0}")]
    Thread(String),
}

impl DaemonError {
    /// The process exit code: 2 for a configuration that cannot be used, 1 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// The root control socket when neither `--control` nor `[control] socket` says: the
/// documented `/run/l3ns/control.sock` for root; for other users (who cannot create
/// `/run/l3ns`) `$XDG_RUNTIME_DIR/l3ns/control.sock`, else `/tmp/l3ns-UID/control.sock`.
pub fn default_control_path() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid == 0 {
        return PathBuf::from(api::DEFAULT_CONTROL);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("l3ns/control.sock"),
        _ => PathBuf::from(format!("/tmp/l3ns-{uid}/control.sock")),
    }
}

/// Reads the configuration `opts` names, or the embedded demo.
pub fn load_config(opts: &Options) -> Result<Config, ConfigError> {
    match &opts.config {
        Some(p) => Config::load(p),
        None => Ok(Config::demo()),
    }
}

/// What `l3nsd --check` found.
#[derive(Debug)]
pub struct CheckReport {
    pub config: Config,
    /// The model the daemon would start with (from the state file when it exists).
    pub model: Model,
    pub from_state: bool,
}

/// Checks the configuration (and the state file, if given and present) without opening
/// anything.
pub fn check(opts: &Options) -> Result<CheckReport, DaemonError> {
    let config = load_config(opts)?;
    let built = config.build_model(&placeholder_macs(&config))?;
    if let Some(path) = &opts.state {
        if let Some(mut m) = state::load(path)? {
            config.add_devices(&mut m, &placeholder_macs(&config))?;
            return Ok(CheckReport {
                config,
                model: m,
                from_state: true,
            });
        }
    }
    Ok(CheckReport {
        config,
        model: built.model,
        from_state: false,
    })
}

fn placeholder_macs(cfg: &Config) -> Vec<[u8; 6]> {
    cfg.ports
        .iter()
        .enumerate()
        .map(|(i, p)| p.mac.map(|m| m.0).unwrap_or(memory_mac(i)))
        .collect()
}

/// The MAC of memory port `i` when the configuration gives none.
fn memory_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, (i + 1) as u8]
}

// ---- ports --------------------------------------------------------------------------------

/// One queue of any backend: workers are generic over `Port`, the daemon picks at run time.
/// A port is built once and moved into its worker, so the variants' different sizes cost
/// nothing; boxing would add a pointer chase to every burst.
#[allow(clippy::large_enum_variant)]
pub enum AnyPort {
    Memory(MemoryPort),
    AfPacket(AfPacketPort),
    #[cfg(feature = "dpdk")]
    Dpdk(l3ns_dataplane::port::dpdk::DpdkPort),
}

macro_rules! each_port {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            AnyPort::Memory($p) => $e,
            AnyPort::AfPacket($p) => $e,
            #[cfg(feature = "dpdk")]
            AnyPort::Dpdk($p) => $e,
        }
    };
}

impl Port for AnyPort {
    fn info(&self) -> &PortInfo {
        each_port!(self, p => p.info())
    }
    #[inline]
    fn rx_groups<F: FnMut(&[&[u8]])>(&mut self, max: usize, on_group: F) -> usize {
        each_port!(self, p => p.rx_groups(max, on_group))
    }
    #[inline]
    fn tx_frame<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, build: F) -> bool {
        each_port!(self, p => p.tx_frame(len, build))
    }
    fn tx_flush(&mut self) {
        each_port!(self, p => p.tx_flush())
    }
    fn rx_ring_drops(&mut self) -> Option<u64> {
        each_port!(self, p => p.rx_ring_drops())
    }
    fn tx_ring_drops(&mut self) -> Option<u64> {
        each_port!(self, p => p.tx_ring_drops())
    }
    fn maintain(&mut self, now: std::time::Instant) {
        each_port!(self, p => p.maintain(now))
    }
}

/// The opened ports: `queues[port][worker]`, and each port's MAC.
struct Opened {
    queues: Vec<Vec<AnyPort>>,
    macs: Vec<[u8; 6]>,
    #[cfg(feature = "dpdk")]
    eal: Option<l3ns_dataplane::port::dpdk::DpdkEal>,
}

fn open_ports(cfg: &Config) -> Result<Opened, DaemonError> {
    let workers = cfg.worker_count();
    let mut opened = Opened {
        queues: Vec::new(),
        macs: Vec::new(),
        #[cfg(feature = "dpdk")]
        eal: None,
    };
    for (i, p) in cfg.ports.iter().enumerate() {
        let name = p.name.get_ref().clone();
        let queues: Vec<AnyPort> = match p.backend.get_ref() {
            Backend::Memory => open_memory(cfg, p, i, workers)?,
            Backend::Afpacket => {
                let iface = p.iface.clone().unwrap_or_default();
                let opts = AfPacketOptions {
                    name: Some(name.clone()),
                    mac: p.mac.map(|m| m.0),
                    queues: workers,
                    promiscuous: p.promiscuous,
                    ..AfPacketOptions::default()
                };
                afpacket::open(&iface, &opts)
                    .map_err(|e| DaemonError::Port {
                        port: name.clone(),
                        message: format!("cannot open AF_PACKET on interface {iface}: {e}"),
                    })?
                    .into_iter()
                    .map(AnyPort::AfPacket)
                    .collect()
            }
            Backend::Dpdk => open_dpdk(cfg, p, workers, &mut opened)?,
        };
        let mac = queues
            .first()
            .map(|q| q.info().mac)
            .unwrap_or(memory_mac(i));
        opened.macs.push(mac);
        opened.queues.push(queues);
    }
    Ok(opened)
}

#[cfg(feature = "dpdk")]
fn open_dpdk(
    cfg: &Config,
    p: &PortConfig,
    workers: usize,
    opened: &mut Opened,
) -> Result<Vec<AnyPort>, DaemonError> {
    use l3ns_dataplane::port::dpdk::{self, DpdkEal, DpdkPortOptions};
    let name = p.name.get_ref().clone();
    let err = |message: String| DaemonError::Port {
        port: name.clone(),
        message,
    };
    if opened.eal.is_none() {
        let mut args = vec!["l3nsd".to_string()];
        args.extend(cfg.dataplane.eal_args.iter().cloned());
        opened.eal = Some(
            DpdkEal::init(&args)
                .map_err(|e| err(format!("cannot initialise the DPDK EAL with {args:?}: {e}")))?,
        );
    }
    let eal = opened.eal.as_ref().expect("initialised above");
    let devargs = p.dpdk_args.as_ref().map(|a| a.get_ref().clone());
    if let Some(a) = &devargs {
        eal.probe_vdev(a)
            .map_err(|e| err(format!("cannot probe DPDK device {a:?}: {e}")))?;
    }
    let device = p
        .iface
        .clone()
        .or_else(|| {
            devargs
                .as_ref()
                .map(|a| a.split(',').next().unwrap_or_default().to_string())
        })
        .unwrap_or_default();
    // DPDK 22.11's memif client connects only when the port starts: with one worker, l3nsd
    // restarts it while its server is gone, so that it connects again when the server is back.
    let memif_client = devargs
        .as_deref()
        .is_some_and(|a| a.starts_with("net_memif") && a.contains("role=client"));
    let opts = DpdkPortOptions {
        name: Some(name.clone()),
        promiscuous: p.promiscuous,
        restart_when_down: memif_client,
        ..DpdkPortOptions::default()
    };
    let ports = dpdk::open(eal, &device, workers as u16, &opts).map_err(|e| match e {
        // The dataplane's advice names its API; say what an operator changes instead.
        dpdk::DpdkError::RssUnsupported { driver, .. } => err(format!(
            "cannot open DPDK device {device}: l3nsd gives a DPDK port one queue per worker \
             ({workers} workers), and its driver {driver} cannot spread received frames over \
             queues by IPv4 address (no RSS); run l3nsd with one worker (`[dataplane] workers \
             = 1`, or one core) for this port"
        )),
        e => err(format!("cannot open DPDK device {device}: {e}")),
    })?;
    Ok(ports.into_iter().map(AnyPort::Dpdk).collect())
}

#[cfg(not(feature = "dpdk"))]
fn open_dpdk(
    _cfg: &Config,
    p: &PortConfig,
    _workers: usize,
    _opened: &mut Opened,
) -> Result<Vec<AnyPort>, DaemonError> {
    Err(DaemonError::Port {
        port: p.name.get_ref().clone(),
        message: "backend \"dpdk\": l3nsd was built without the dpdk feature; rebuild with `cargo build --release --features dpdk` (needs DPDK 22.11, pkg-config libdpdk)".into(),
    })
}

fn open_memory(
    cfg: &Config,
    p: &PortConfig,
    index: usize,
    workers: usize,
) -> Result<Vec<AnyPort>, DaemonError> {
    let mac = p.mac.map(|m| m.0).unwrap_or(memory_mac(index));
    let info = PortInfo {
        name: p.name.get_ref().clone(),
        mac,
        max_frame: 1514,
    };
    let frames = match &p.generator {
        Some(_) => Some(
            generator_frames(cfg, p, mac).map_err(|message| DaemonError::Port {
                port: info.name.clone(),
                message,
            })?,
        ),
        None => None,
    };
    let mut out = Vec::with_capacity(workers);
    for q in 0..workers {
        // Transmitted frames are counted by the workers and discarded: nobody reads this wire.
        let (port, _wire) = memory_pair(info.clone(), p.ring_depth, TxMode::Discard);
        let port = match (&p.generator, &frames) {
            (Some(g), Some(frames)) => {
                let g = g.get_ref();
                let pace = if g.rate > 0.0 {
                    Pace::PerSecond(g.rate / workers as f64)
                } else {
                    Pace::Unlimited
                };
                let limit = g
                    .count
                    .map(|c| c / workers as u64 + u64::from((q as u64) < c % workers as u64));
                port.with_generator(Generator::new(frames.clone(), pace, limit))
            }
            _ => port,
        };
        out.push(AnyPort::Memory(port));
    }
    Ok(out)
}

/// The frames of a memory port's generator, built with the dataplane's wire builders: each
/// flow's frame `weight` times, in flow order.
pub fn generator_frames(
    cfg: &Config,
    p: &PortConfig,
    port_mac: [u8; 6],
) -> Result<Vec<Vec<u8>>, String> {
    let Some(g) = &p.generator else {
        return Ok(Vec::new());
    };
    let g = g.get_ref();
    let bcasts = cfg.broadcasts_on(p.name.get_ref());
    let mut frames = Vec::new();
    for f in &g.flows {
        let frame = flow_frame(f, port_mac, g.peer_mac.0, &bcasts)?;
        for _ in 0..f.weight.max(1) {
            frames.push(frame.clone());
        }
    }
    Ok(frames)
}

fn flow_frame(
    f: &FlowConfig,
    port_mac: [u8; 6],
    peer_mac: [u8; 6],
    bcasts: &[Ipv4Addr],
) -> Result<Vec<u8>, String> {
    let (src, dst) = (f.src.0, f.dst.0);
    let dst_mac =
        f.dst_mac
            .map(|m| m.0)
            .unwrap_or(if dst.ip().is_broadcast() || bcasts.contains(dst.ip()) {
                BROADCAST_MAC
            } else {
                port_mac
            });
    let addrs = FrameAddrs {
        src_mac: peer_mac,
        dst_mac,
        src_ip: *src.ip(),
        dst_ip: *dst.ip(),
    };
    let payload = f.payload.as_bytes();
    let mut buf = vec![0u8; 64 + payload.len()];
    let built = match f.kind {
        FlowKind::ArpRequest => wire::build_arp_request(&mut buf, peer_mac, *src.ip(), *dst.ip()),
        FlowKind::IcmpEcho => wire::build_icmp_echo_request(&mut buf, &addrs, 0x6c33, 1, payload),
        _ => wire::build_udp(
            &mut buf,
            &addrs,
            src.port(),
            dst.port(),
            DEFAULT_TTL,
            payload,
        ),
    };
    let n = built.map_err(|e| format!("generator flow {src} -> {dst}: {e}"))?;
    if n > 1514 {
        return Err(format!("generator flow {src} -> {dst}: a {n}-byte frame exceeds 1514 bytes; shorten its payload"));
    }
    buf.truncate(n);
    const IP: usize = 14;
    match f.kind {
        // Cut inside the IPv4 header: `truncated`.
        FlowKind::Truncated => buf.truncate(IP + 10),
        FlowKind::BadChecksum => buf[IP + 10] ^= 0xff,
        FlowKind::Fragment => {
            // MF set, offset 0: the first fragment of a datagram l3ns does not reassemble.
            let mut ip = wire::Ipv4Packet::new_unchecked(&mut buf[IP..]);
            ip.set_flags_and_frag_offset(0x2000);
            ip.fill_checksum();
        }
        FlowKind::NotIpv4 => buf[12..14].copy_from_slice(&[0x86, 0xdd]),
        FlowKind::Udp | FlowKind::ArpRequest | FlowKind::IcmpEcho => {}
    }
    Ok(buf)
}

// ---- workers and senders ------------------------------------------------------------------

/// The core each worker is pinned to: the listed ones, or the first cores the process may
/// use for a count (unpinned when there are fewer).
///
/// `usable` is the process's CPU set as it was at start-up: DPDK's EAL narrows the calling
/// thread's affinity to its lcores, so reading it after the ports are open would see only
/// those (and every thread spawned afterwards would inherit them).
fn worker_cores(w: &Workers, usable: &[usize]) -> Vec<Option<usize>> {
    match w {
        Workers::Cores(c) => c.iter().map(|c| Some(*c)).collect(),
        Workers::Count(n) => (0..*n).map(|i| usable.get(i).copied()).collect(),
    }
}

/// The core for the service thread (built-in echo/sink/attach services): the first usable
/// core no worker is pinned to, so that services neither share a busy-polling worker's core
/// nor inherit the EAL's affinity. `None` (left as inherited) when workers hold every core.
fn service_core(workers: &[Option<usize>], usable: &[usize]) -> Option<usize> {
    usable
        .iter()
        .copied()
        .find(|c| !workers.contains(&Some(*c)))
}

/// The cores this process may run on, read before anything narrows them.
fn usable_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// An in-daemon client of `[[sender]]`: sends from an unbound ephemeral port.
struct Sender {
    sock: UdpSocket,
    to: std::net::SocketAddrV4,
    rate: f64,
    payload: Vec<u8>,
    sent: u64,
}

fn spawn_senders(cfg: &Config, rt: &Runtime, stop: Arc<AtomicBool>) -> Option<JoinHandle<()>> {
    let mut senders = Vec::new();
    for (i, s) in cfg.senders.iter().enumerate() {
        let Ok(ns) = rt.model().ns_id(s.namespace.get_ref()) else {
            // Only possible with a state file, which may have deleted the namespace.
            eprintln!(
                "l3nsd: sender {i}: namespace {} does not exist (deleted in the state file?); not started",
                s.namespace.get_ref()
            );
            continue;
        };
        let port = s.src_port.unwrap_or(49152 + i as u16);
        // Not bound in the model: a private queue nobody delivers to, used only to send.
        let q = SocketQueue::new(1, rt.shared.pools.clone());
        let sock = UdpSocket::new(
            SocketId(0),
            ns,
            Ipv4Addr::UNSPECIFIED,
            port,
            q,
            rt.shared.clone(),
        );
        senders.push(Sender {
            sock,
            to: s.to.0,
            rate: *s.rate.get_ref(),
            payload: s.payload.clone().into_bytes(),
            sent: 0,
        });
    }
    if senders.is_empty() {
        return None;
    }
    let t = std::thread::Builder::new()
        .name("l3ns-senders".into())
        .spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = start.elapsed().as_secs_f64();
                for s in &mut senders {
                    let due = (t * s.rate) as u64 + 1;
                    while s.sent < due {
                        // A refused send (no source address, full queue) is simply not retried.
                        let _ = s.sock.send_to(&s.payload, *s.to.ip(), s.to.port());
                        s.sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
    t.ok()
}

// ---- the table ----------------------------------------------------------------------------

/// The per-namespace table: cumulative counters of every namespace in the current snapshot,
/// then one line per port.
pub fn render_table(shared: &Shared, stats: &Stats, elapsed: Duration) -> String {
    let table = shared.table.load_full();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "--- l3nsd t={:.0}s snapshot v{} ---",
        elapsed.as_secs_f64(),
        table.version()
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "namespace",
        "rx_pkts",
        "delivered",
        "bcast",
        "no_socket",
        "queue_full",
        "ns_gone",
        "tx_pkts",
        "spoofed"
    );
    let mut views: Vec<_> = table.namespaces().map(|v| (v.id, v.name.clone())).collect();
    views.sort_by_key(|(id, _)| *id);
    for (id, name) in views {
        let s = stats.ns(id);
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8} {:>10} {:>8}",
            name,
            s.rx_packets,
            s.delivered,
            s.broadcast_delivered,
            s.dropped_no_socket,
            s.dropped_queue_full,
            s.dropped_ns_gone,
            s.tx_packets,
            s.tx_spoofed
        );
    }
    for (i, name) in stats.port_names.iter().enumerate() {
        let rx = stats.port_sum(i, |p| p.rx_packets.get());
        let tx = stats.port_sum(i, |p| p.tx_packets.get());
        let drops: Vec<String> = PortDrop::all()
            .filter_map(|d| {
                let n = stats.port_dropped(i, d);
                (n > 0).then(|| format!("{}={n}", d.as_str()))
            })
            .collect();
        let _ = writeln!(
            out,
            "port {name}: rx {rx} tx {tx} dropped: {}",
            if drops.is_empty() {
                "-".to_string()
            } else {
                drops.join(" ")
            }
        );
    }
    out
}

// ---- the daemon ---------------------------------------------------------------------------

/// A running daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    workers: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<Runtime>>,
    control_stop: Stop,
    metrics: Option<MetricsServer>,
    senders: Option<JoinHandle<()>>,
    senders_stop: Arc<AtomicBool>,
    state: Option<PathBuf>,
    started: Instant,
    /// Where the control API listens.
    pub control_path: PathBuf,
    /// Where the metrics endpoint listens (the real port when 0 was asked for).
    pub metrics_addr: Option<SocketAddr>,
    /// What was started, for the banner.
    pub banner: String,
}

impl Daemon {
    /// Starts everything (see the module doc). On error, whatever was started is stopped.
    pub fn start(opts: &Options) -> Result<Daemon, DaemonError> {
        let cfg = load_config(opts)?;
        // Every rule is checked on a fresh model before anything is opened.
        cfg.build_model(&placeholder_macs(&cfg))?;
        let state_model = match &opts.state {
            Some(p) => {
                let m = state::load(p)?;
                state::check_writable(p)?;
                m
            }
            None => None,
        };
        let usable = usable_cores();
        let mut opened = open_ports(&cfg)?;
        let from_state = state_model.is_some();
        let (model, devices) = match state_model {
            Some(mut m) => {
                let devs = cfg.add_devices(&mut m, &opened.macs)?;
                (m, devs)
            }
            None => {
                let b = cfg.build_model(&opened.macs)?;
                (b.model, b.devices)
            }
        };
        if let Some(p) = &opts.state {
            state::save(p, &model)?;
        }
        let workers = cfg.worker_count();
        let rt = Runtime::new(
            model,
            workers,
            cfg.port_names(),
            *cfg.dataplane.queue_depth.get_ref(),
        );
        let shared = rt.shared.clone();
        let stats = rt.stats.clone();
        let mut banner = String::new();
        let _ = writeln!(
            banner,
            "l3nsd: config {}, {} worker(s), {} port(s), {} namespace(s), {} socket(s){}",
            cfg.source.file,
            workers,
            cfg.ports.len(),
            rt.model().namespaces().count(),
            rt.model().sockets().count(),
            match &opts.state {
                Some(p) if from_state => format!(", state loaded from {}", p.display()),
                Some(p) => format!(", state saved to {}", p.display()),
                None => String::new(),
            }
        );

        // Services for every bound socket, before traffic flows.
        let worker_pins = worker_cores(cfg.dataplane.workers.get_ref(), &usable);
        let services_on = service_core(&worker_pins, &usable);
        let mut services = Services::on_core(services_on);
        for s in rt.model().sockets() {
            services
                .start(&rt, s.binding.id, &s.service)
                .map_err(|error| DaemonError::Service {
                    socket: s.binding.id.0,
                    service: s.service.to_string(),
                    error,
                })?;
        }

        let mut d = Daemon {
            shared: shared.clone(),
            stats: stats.clone(),
            workers: Vec::new(),
            control: None,
            control_stop: Stop::new(),
            metrics: None,
            senders: None,
            senders_stop: Arc::new(AtomicBool::new(false)),
            state: opts.state.clone(),
            started: Instant::now(),
            control_path: PathBuf::new(),
            metrics_addr: None,
            banner,
        };

        // Workers: worker w owns queue w of every port.
        let cores = worker_pins.clone();
        let mut per_port: Vec<std::vec::IntoIter<AnyPort>> = std::mem::take(&mut opened.queues)
            .into_iter()
            .map(|q| q.into_iter())
            .collect();
        for (w, core) in cores.into_iter().enumerate() {
            let ports: Vec<WorkerPort<AnyPort>> = per_port
                .iter_mut()
                .enumerate()
                .map(|(i, q)| WorkerPort {
                    port: q.next().expect("one queue per worker"),
                    dev: devices[i],
                    index: i,
                })
                .collect();
            let wcfg = WorkerConfig {
                id: w,
                burst: *cfg.dataplane.burst.get_ref(),
                icmp_rate: cfg.dataplane.icmp_rate,
                idle_sleep: Duration::from_micros(cfg.dataplane.idle_sleep_us),
                ..WorkerConfig::default()
            };
            let worker = Worker::new(wcfg, ports, shared.clone(), stats.workers[w].clone());
            #[cfg(feature = "dpdk")]
            let eal = opened.eal.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("l3ns-worker-{w}"))
                .spawn(move || {
                    #[cfg(feature = "dpdk")]
                    if let Some(eal) = &eal {
                        // A registered thread gets an lcore id and so the mempool's per-core cache.
                        let _ = eal.register_thread();
                    }
                    worker.run(core);
                    #[cfg(feature = "dpdk")]
                    if let Some(eal) = &eal {
                        eal.unregister_thread();
                    }
                });
            match spawned {
                Ok(h) => d.workers.push(h),
                Err(e) => {
                    d.stop_all();
                    return Err(DaemonError::Thread(format!("cannot start worker {w}: {e}")));
                }
            }
        }
        let mut pins: Vec<String> = worker_pins
            .iter()
            .enumerate()
            .map(|(w, c)| {
                c.map_or(format!("worker {w} unpinned"), |c| {
                    format!("worker {w} on core {c}")
                })
            })
            .collect();
        pins.push(services_on.map_or("services unpinned".to_string(), |c| {
            format!("services, control and metrics on core {c}")
        }));
        // The control thread, the metrics server, the senders and this thread (the
        // per-second table) are spawned from here on and inherit this: the services' core,
        // never a worker's (DPDK's EAL left this thread on the first worker's lcore, where a
        // push/pull burst would take turns with a busy-polling worker).
        if let Some(c) = services_on {
            core_affinity::set_for_current(core_affinity::CoreId { id: c });
        }
        let _ = writeln!(d.banner, "l3nsd: {}", pins.join(", "));

        d.senders = spawn_senders(&cfg, &rt, d.senders_stop.clone());

        // Metrics, then the control thread (which takes the runtime).
        let listen = opts.metrics.unwrap_or(cfg.metrics.listen);
        if let Listen::At(addr) = listen {
            match metrics::serve(addr, MetricsSource::from_runtime(&rt)) {
                Ok(server) => {
                    let bound = server.addr();
                    d.metrics_addr = Some(bound);
                    d.metrics = Some(server);
                    let _ = writeln!(d.banner, "l3nsd: metrics on http://{bound}/metrics");
                }
                Err(source) => {
                    d.stop_all();
                    return Err(DaemonError::Metrics { addr, source });
                }
            }
        }
        let control_path = opts
            .control
            .clone()
            .or_else(|| cfg.control.socket.clone())
            .unwrap_or_else(default_control_path);
        let persist: Option<api::Persist> = opts.state.clone().map(|p| {
            Box::new(move |m: &Model| {
                state::save(&p, m).map_err(|e| std::io::Error::other(e.to_string()))
            }) as api::Persist
        });
        let host: Box<dyn ServiceHost> = Box::new(services);
        match api::serve(
            ServeConfig::new(&control_path),
            rt,
            host,
            persist,
            d.control_stop.clone(),
        ) {
            Ok(h) => d.control = Some(h),
            Err(source) => {
                d.stop_all();
                return Err(DaemonError::Control {
                    path: control_path,
                    source,
                });
            }
        }
        let _ = writeln!(
            d.banner,
            "l3nsd: control socket {} (l3nsctl --control {})",
            control_path.display(),
            control_path.display()
        );
        d.control_path = control_path;
        Ok(d)
    }

    /// The per-namespace table now.
    pub fn table(&self) -> String {
        render_table(&self.shared, &self.stats, self.started.elapsed())
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Stops everything in order and writes the state file. Returns the final model.
    pub fn shutdown(mut self) -> Result<Option<Model>, DaemonError> {
        let rt = self.stop_all();
        let model = rt.map(|rt| rt.model().clone());
        if let (Some(p), Some(m)) = (&self.state, &model) {
            state::save(p, m)?;
        }
        Ok(model)
    }

    fn stop_all(&mut self) -> Option<Runtime> {
        self.senders_stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.senders.take() {
            let _ = h.join();
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        self.control_stop.stop();
        let rt = self.control.take().and_then(|h| h.join().ok());
        if let Some(m) = self.metrics.take() {
            m.stop();
        }
        rt
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.workers.is_empty() || self.control.is_some() {
            self.stop_all();
        }
    }
}

/// Runs the daemon until `stop` is asked for or `opts.duration` has passed, printing the
/// banner and the table to `out` (unless `quiet`), then shuts down. The calling thread sleeps
/// until the next table, the end or the stop (with `quiet` and no duration: the stop alone).
pub fn run(opts: &Options, stop: &Stop, out: &mut dyn Write) -> Result<(), DaemonError> {
    let d = Daemon::start(opts)?;
    if !opts.quiet {
        let _ = write!(out, "{}", d.banner);
        if opts.config.is_none() {
            let _ = writeln!(
                out,
                "l3nsd: no --config given: running {DEMO_NAME} (see l3nsd --help)"
            );
        }
        let _ = out.flush();
    }
    let interval = opts.interval.unwrap_or(Duration::from_secs(1));
    let deadline = opts.duration.map(|t| Instant::now() + t);
    let mut next_table = Instant::now() + interval;
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|t| now >= t) {
            break;
        }
        if !opts.quiet && now >= next_table {
            let _ = write!(out, "{}", d.table());
            let _ = out.flush();
            // After a stall, the next table is an interval on, not a burst of missed ones.
            next_table = (next_table + interval).max(now + interval / 2);
        }
        let wake = [deadline, (!opts.quiet).then_some(next_table)]
            .into_iter()
            .flatten()
            .min();
        if stop.wait(wake.map(|t| t.saturating_duration_since(Instant::now()))) {
            break;
        }
    }
    let table = d.table();
    d.shutdown()?;
    if !opts.quiet {
        let _ = writeln!(out, "{table}l3nsd: stopped");
        let _ = out.flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_take_the_first_core_no_worker_holds() {
        let usable = [0, 1, 2, 3];
        let w = worker_cores(&Workers::Cores(vec![0, 2]), &usable);
        assert_eq!(w, vec![Some(0), Some(2)]);
        assert_eq!(service_core(&w, &usable), Some(1));
        // Counted workers take the first usable cores, as read at start-up.
        let w = worker_cores(&Workers::Count(2), &[4, 5, 6]);
        assert_eq!(w, vec![Some(4), Some(5)]);
        assert_eq!(service_core(&w, &[4, 5, 6]), Some(6));
        // More workers than cores: the rest are unpinned, and services too.
        let w = worker_cores(&Workers::Count(3), &[0, 1]);
        assert_eq!(w, vec![Some(0), Some(1), None]);
        assert_eq!(service_core(&w, &[0, 1]), None);
    }
}
