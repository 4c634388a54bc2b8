//! The daemon's TOML configuration (`l3nsd --config FILE`).
//!
//! Sections: `[dataplane]`, `[[port]]` (with an optional `[port.generator]` for the memory
//! backend), `[[namespace]]`, `[[address]]`, `[[route]]`, `[[socket]]`, `[[sender]]` (an
//! in-daemon traffic source for demos), `[control]` and `[metrics]`. `config/demo.toml` is the
//! embedded default and documents every key.
//!
//! Every error names the file, the line and column, and the key, and says what was expected:
//! syntax, type and unknown-key errors come from toml's spans; rule errors (unknown namespace,
//! a bind of an address another namespace owns, duplicate names, an unknown device) come from
//! applying the configuration to a fresh [`Model`] with the model's own operations — this
//! module never re-checks a rule of SEMANTICS.md itself — and carry the model's errno and
//! sentence plus the line of the entry that broke it.

use crate::error::ControlError;
use crate::model::Model;
use l3ns_dataplane::types::{DevId, Ipv4Prefix, LoopbackMode, NsId, Proto, Scope};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use toml::Spanned;

/// The embedded default configuration (`l3nsd` without `--config`).
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");
/// The name the embedded default is reported under.
pub const DEMO_NAME: &str = "<embedded config/demo.toml>";
/// `[metrics] listen` when not given.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9469";

// ---- errors -------------------------------------------------------------------------------

/// A configuration that cannot be used. Displayed as `FILE:LINE:COL: key `KEY`: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration: {message}")]
    Read { file: String, message: String },
    /// Something at a place in the file: a syntax or type error, an unknown key, a value out
    /// of range, or a rule of the model the entry breaks.
    #[error("{file}:{line}:{col}: key `{key}`: {message}")]
    At {
        file: String,
        line: usize,
        col: usize,
        /// Dotted path of the key, e.g. `address.assign_to`.
        key: String,
        /// What was wrong and what is expected; for rule errors `ERRNO: sentence`.
        message: String,
        /// The model's error, when a rule was broken.
        errno: Option<ControlError>,
    },
}

impl ConfigError {
    /// The line (1-based) the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::At { line, .. } => Some(*line),
            ConfigError::Read { .. } => None,
        }
    }
}

/// The text of a configuration file and its name, for turning byte spans into line:col.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub file: String,
    text: Arc<str>,
}

impl Source {
    pub fn new(file: impl Into<String>, text: &str) -> Self {
        Source {
            file: file.into(),
            text: text.into(),
        }
    }

    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let before = &self.text[..floor_char(&self.text, at)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// An error at `span` about `key`.
    pub fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, col) = self.line_col(span.start);
        ConfigError::At {
            file: self.file.clone(),
            line,
            col,
            key: key.to_string(),
            message: message.into(),
            errno: None,
        }
    }

    /// A rule error of the model at `span`.
    pub fn rule(&self, span: Range<usize>, key: &str, e: ControlError) -> ConfigError {
        let (line, col) = self.line_col(span.start);
        ConfigError::At {
            file: self.file.clone(),
            line,
            col,
            key: key.to_string(),
            message: e.to_string(),
            errno: Some(e),
        }
    }

    /// The dotted key at byte offset `at`: the innermost `[table]` header above it, plus the
    /// `key =` of its line, if any.
    fn key_at(&self, at: usize) -> String {
        let at = floor_char(&self.text, at.min(self.text.len()));
        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[at..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i);
        let line = &self.text[line_start..line_end];
        let t = line.trim_start();
        let header = |l: &str| {
            let l = l.trim();
            l.starts_with('[')
                .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        };
        if let Some(h) = header(line) {
            return h;
        }
        let table = self.text[..line_start]
            .lines()
            .rev()
            .find_map(header)
            .unwrap_or_default();
        let key = if t.starts_with('#') {
            String::new()
        } else {
            line.split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        match (table.is_empty(), key.is_empty()) {
            (true, _) => key,
            (false, true) => table,
            (false, false) => format!("{table}.{key}"),
        }
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

// ---- value types with precise "expected" messages ------------------------------------------

/// `A.B.C.D/LEN`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cidr(pub Ipv4Prefix);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IPv4 prefix; expected \"A.B.C.D/LEN\" with LEN 0-32");
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        Ok(Cidr(Ipv4Prefix::new(addr, len)))
    }
}

/// A MAC address `aa:bb:cc:dd:ee:ff`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a MAC address; expected six hex bytes like \"02:00:00:00:00:01\"")
        };
        let mut m = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        for (o, p) in m.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Mac(m))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// `A.B.C.D:PORT`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Endpoint(pub SocketAddrV4);

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Endpoint).map_err(|_| {
            format!("{s:?} is not an IPv4 address and port; expected \"A.B.C.D:PORT\"")
        })
    }
}

/// An IPv4 address, with the expected form in its error.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Addr(pub Ipv4Addr);

impl FromStr for Addr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map(Addr)
            .map_err(|_| format!("{s:?} is not an IPv4 address; expected \"A.B.C.D\""))
    }
}

/// Where the metrics endpoint listens, or `"off"`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::At)
            .map_err(|_| format!("{s:?} is not a listen address; expected \"ADDR:PORT\" (e.g. \"{DEFAULT_METRICS}\") or \"off\""))
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen::At(DEFAULT_METRICS.parse().expect("valid default"))
    }
}

/// Deserializes any `FromStr` type from a TOML string, keeping its error sentence.
macro_rules! from_string {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    )*};
}
from_string!(Cidr, Mac, Endpoint, Addr, Listen);

/// `[dataplane] workers`: a count, or the list of cores to pin one worker each to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workers {
    /// This many workers, pinned to the first cores the process may use.
    Count(usize),
    /// One worker per listed core id.
    Cores(Vec<usize>),
}

impl Default for Workers {
    fn default() -> Self {
        Workers::Count(1)
    }
}

impl Workers {
    pub fn count(&self) -> usize {
        match self {
            Workers::Count(n) => *n,
            Workers::Cores(c) => c.len(),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of workers (e.g. 2) or a list of core ids (e.g. [0, 1])")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Workers, E> {
                usize::try_from(v)
                    .map(Workers::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Workers, E> {
                Ok(Workers::Count(v as usize))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Workers, A::Error> {
                let mut cores = Vec::new();
                while let Some(c) = seq.next_element::<usize>()? {
                    cores.push(c);
                }
                Ok(Workers::Cores(cores))
            }
        }
        d.deserialize_any(V)
    }
}

// ---- the sections -------------------------------------------------------------------------

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    #[serde(default, rename = "namespace")]
    pub namespaces: Vec<NamespaceConfig>,
    #[serde(default, rename = "address")]
    pub addresses: Vec<AddressConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "socket")]
    pub sockets: Vec<SocketConfig>,
    #[serde(default, rename = "sender")]
    pub senders: Vec<SenderConfig>,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where the configuration came from (for error positions).
    #[serde(skip)]
    pub source: Source,
}

/// `[dataplane]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    #[serde(default = "default_workers")]
    pub workers: Spanned<Workers>,
    /// Frames per receive burst.
    #[serde(default = "default_burst")]
    pub burst: Spanned<usize>,
    /// Datagrams each socket queue holds.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: Spanned<usize>,
    /// ICMP port-unreachable messages per second and worker.
    #[serde(default = "default_icmp_rate")]
    pub icmp_rate: u32,
    /// 0: workers spin when idle (poll mode, lowest latency, one busy core each). N > 0:
    /// after an idle poll a worker sleeps N microseconds (for laptops and shared machines).
    #[serde(default)]
    pub idle_sleep_us: u64,
    /// DPDK EAL arguments (without the program name), used when a port has `backend = "dpdk"`.
    #[serde(default)]
    pub eal_args: Vec<String>,
}

fn default_workers() -> Spanned<Workers> {
    Spanned::new(0..0, Workers::default())
}
fn default_burst() -> Spanned<usize> {
    Spanned::new(0..0, 64)
}
/// Datagrams a socket queue holds unless `[dataplane] queue_depth` says otherwise (also what
/// the benchmarks give a socket's own queue).
pub const DEFAULT_QUEUE_DEPTH: usize = 1024;

fn default_queue_depth() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_QUEUE_DEPTH)
}
fn default_icmp_rate() -> u32 {
    100
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            workers: default_workers(),
            burst: default_burst(),
            queue_depth: default_queue_depth(),
            icmp_rate: default_icmp_rate(),
            idle_sleep_us: 0,
            eal_args: Vec::new(),
        }
    }
}

/// A port's packet I/O backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process rings, optionally fed by a generator (no root, no NIC).
    Memory,
    /// AF_PACKET on a Linux interface (`iface`); needs root or CAP_NET_RAW.
    Afpacket,
    /// A DPDK device (`iface` = DPDK device name, `dpdk_args` = vdev devargs to probe).
    Dpdk,
}

/// `[[port]]`: one device of root, opened with one queue per worker.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The device name in the model (what `addr add ... dev NAME` uses).
    pub name: Spanned<String>,
    pub backend: Spanned<Backend>,
    /// afpacket: the Linux interface; dpdk: the DPDK device name (default: the part of
    /// `dpdk_args` before the first comma).
    pub iface: Option<String>,
    /// dpdk: devargs of a virtual device to probe, e.g. "net_af_packet0,iface=veth0".
    pub dpdk_args: Option<Spanned<String>>,
    /// The port's MAC; afpacket and dpdk default to the device's own address.
    pub mac: Option<Mac>,
    /// Queues to open; must equal the number of workers (each worker owns one queue of every
    /// port). Default: the number of workers.
    pub queues: Option<Spanned<usize>>,
    /// afpacket/dpdk: receive frames for every MAC.
    #[serde(default)]
    pub promiscuous: bool,
    /// memory: frames each ring holds.
    #[serde(default = "default_ring")]
    pub ring_depth: usize,
    /// memory: the built-in traffic generator.
    pub generator: Option<Spanned<GeneratorConfig>>,
}

fn default_ring() -> usize {
    4096
}

/// `[port.generator]`: frames replayed round robin into a memory port, as if received.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Frames per second over all the port's queues; 0 = as fast as the workers poll.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Stop after this many frames (all queues together); default: never.
    pub count: Option<u64>,
    /// The MAC of the simulated peer that sends the frames.
    #[serde(default = "default_peer_mac")]
    pub peer_mac: Mac,
    #[serde(rename = "flow")]
    pub flows: Vec<FlowConfig>,
}

fn default_rate() -> f64 {
    1000.0
}
fn default_peer_mac() -> Mac {
    Mac([0x02, 0, 0, 0, 0, 0x99])
}

/// What a generator flow sends.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// A well-formed UDP datagram `src` → `dst`.
    #[default]
    Udp,
    /// An ARP request from the peer (`src` address) for `dst`: teaches the dataplane the
    /// peer's MAC, so answers to it can leave.
    ArpRequest,
    /// An ICMP echo request `src` → `dst` (answered by the owner of `dst`, R15).
    IcmpEcho,
    /// Malformed: the UDP frame cut after 20 bytes.
    Truncated,
    /// Malformed: the UDP frame with a wrong IPv4 header checksum.
    BadChecksum,
    /// Malformed: the UDP frame marked as a first fragment (l3ns does not reassemble).
    Fragment,
    /// Not IPv4: the UDP frame with the IPv6 EtherType.
    NotIpv4,
}

/// `[[port.generator.flow]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    #[serde(default)]
    pub kind: FlowKind,
    /// Source address and port of the peer.
    pub src: Endpoint,
    /// Destination address and port (the port is ignored for ARP and ICMP).
    pub dst: Endpoint,
    #[serde(default = "default_payload")]
    pub payload: String,
    /// How many copies of this frame each round robin cycle holds.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Destination MAC; default: broadcast for 255.255.255.255 and for the broadcast address
    /// of a configured address on this port, else the port's MAC.
    pub dst_mac: Option<Mac>,
}

fn default_payload() -> String {
    "l3ns demo".to_string()
}
fn default_weight() -> u32 {
    1
}

/// `[[namespace]]`: an L3 child (R1).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub name: Spanned<String>,
    /// An L2 namespace defined before this one; default `root`.
    pub parent: Option<Spanned<String>>,
    #[serde(default)]
    pub loopback: LoopbackMode,
}

/// `[[address]]`: an ifaddr added by root (R3), optionally pushed to a namespace (R4).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressConfig {
    pub address: Spanned<Cidr>,
    pub dev: Spanned<String>,
    pub label: Option<Spanned<String>>,
    pub broadcast: Option<Addr>,
    #[serde(default)]
    pub scope: Scope,
    /// Push the address to this namespace (by its parent).
    pub assign_to: Option<Spanned<String>>,
}

/// `[[route]]`: an explicit route of root (R2).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub dst: Spanned<Cidr>,
    pub via: Option<Addr>,
    pub dev: Spanned<String>,
    #[serde(default)]
    pub scope: Scope,
}

/// `[[socket]]`: a UDP socket bound in a namespace (R7) and the service that consumes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Default `root`.
    pub namespace: Option<Spanned<String>>,
    pub bind: Spanned<Endpoint>,
    /// `echo`, `sink` or `attach:PATH`.
    pub service: Spanned<String>,
}

/// `[[sender]]`: an in-daemon client that sends datagrams from a namespace at a fixed rate
/// (for demos: loopback traffic, local delivery). It sends from an unbound ephemeral port and
/// is not part of the model or the state file; answers to it are counted `no_socket`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    pub namespace: Spanned<String>,
    pub to: Endpoint,
    /// Datagrams per second.
    #[serde(default = "default_sender_rate")]
    pub rate: Spanned<f64>,
    #[serde(default = "default_payload")]
    pub payload: String,
    /// Source port; default 49152 + the sender's index.
    pub src_port: Option<u16>,
}

fn default_sender_rate() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

/// `[control]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// The root control socket (mode 0600); default: see `daemon::default_control_path`.
    pub socket: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ADDR:PORT` (default 127.0.0.1:9469) or `"off"`.
    #[serde(default)]
    pub listen: Listen,
}

// ---- loading and checking -----------------------------------------------------------------

/// What building the model from a configuration gives: the model and each port's device.
#[derive(Debug)]
pub struct Built {
    pub model: Model,
    /// `devices[i]` is the device of `ports[i]`.
    pub devices: Vec<DevId>,
}

impl Config {
    /// Reads and parses `path` (structure, types and the checks of [`Config::check`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Config::parse(&file, &text)
    }

    /// The embedded `config/demo.toml`.
    pub fn demo() -> Config {
        Config::parse(DEMO_NAME, DEMO_TOML).expect("the embedded demo configuration is valid")
    }

    /// Parses `text`, reporting errors against `file`.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let source = Source::new(file, text);
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = source.key_at(span.start);
            source.error(span, &key, e.message().trim_end().to_string())
        })?;
        cfg.source = source;
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks of the file's own structure (not rules of the model): sizes, which keys go
    /// with which backend.
    fn check(&self) -> Result<(), ConfigError> {
        let src = &self.source;
        let dp = &self.dataplane;
        let workers = dp.workers.get_ref().count();
        if workers == 0 || workers > 64 {
            return Err(src.error(
                dp.workers.span(),
                "dataplane.workers",
                format!(
                    "{workers} workers; expected 1 to 64 workers (a count or a list of core ids)"
                ),
            ));
        }
        if let Workers::Cores(c) = dp.workers.get_ref() {
            let mut sorted = c.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != c.len() {
                return Err(src.error(
                    dp.workers.span(),
                    "dataplane.workers",
                    "a core id is listed twice; expected one worker per distinct core",
                ));
            }
        }
        if !(1..=256).contains(dp.burst.get_ref()) {
            return Err(src.error(
                dp.burst.span(),
                "dataplane.burst",
                format!(
                    "burst {} is out of range; expected 1 to 256",
                    dp.burst.get_ref()
                ),
            ));
        }
        if !(1..=1 << 20).contains(dp.queue_depth.get_ref()) {
            return Err(src.error(
                dp.queue_depth.span(),
                "dataplane.queue_depth",
                format!(
                    "queue_depth {} is out of range; expected 1 to 1048576",
                    dp.queue_depth.get_ref()
                ),
            ));
        }
        for p in &self.ports {
            let name = p.name.get_ref();
            if let Some(q) = &p.queues {
                if *q.get_ref() != workers {
                    return Err(src.error(q.span(), "port.queues", format!("port {name} has {} queues but there are {workers} workers; each worker owns one queue of every port, so expected queues = {workers} (or leave it out)", q.get_ref())));
                }
            }
            match p.backend.get_ref() {
                Backend::Memory => {
                    if p.iface.is_some() || p.dpdk_args.is_some() {
                        return Err(src.error(p.backend.span(), "port.backend", format!("port {name}: a memory port has no iface or dpdk_args; expected backend = \"afpacket\" or \"dpdk\" for those")));
                    }
                    if let Some(g) = &p.generator {
                        if g.get_ref().flows.is_empty() {
                            return Err(src.error(
                                g.span(),
                                "port.generator.flow",
                                "a generator needs at least one [[port.generator.flow]]",
                            ));
                        }
                        if !(g.get_ref().rate >= 0.0 && g.get_ref().rate.is_finite()) {
                            return Err(src.error(
                                g.span(),
                                "port.generator.rate",
                                "expected a rate >= 0 frames per second (0 = unlimited)",
                            ));
                        }
                    }
                }
                Backend::Afpacket => {
                    if p.iface.is_none() {
                        return Err(src.error(
                            p.backend.span(),
                            "port.iface",
                            format!(
                                "port {name} uses afpacket; expected iface = \"LINUX_INTERFACE\""
                            ),
                        ));
                    }
                    if let Some(g) = &p.generator {
                        return Err(src.error(
                            g.span(),
                            "port.generator",
                            "only memory ports have a generator",
                        ));
                    }
                }
                Backend::Dpdk => {
                    if p.iface.is_none() && p.dpdk_args.is_none() {
                        return Err(src.error(p.backend.span(), "port.dpdk_args", format!("port {name} uses dpdk; expected dpdk_args = \"VDEV,ARGS\" or iface = \"DPDK_DEVICE\"")));
                    }
                    if let Some(g) = &p.generator {
                        return Err(src.error(
                            g.span(),
                            "port.generator",
                            "only memory ports have a generator",
                        ));
                    }
                }
            }
        }
        for s in &self.senders {
            let rate = *s.rate.get_ref();
            if !(rate > 0.0 && rate <= 1_000_000.0) {
                let span = if s.rate.span().is_empty() {
                    s.namespace.span()
                } else {
                    s.rate.span()
                };
                return Err(src.error(
                    span,
                    "sender.rate",
                    format!("rate {rate}; expected more than 0 and at most 1000000 datagrams per second"),
                ));
            }
        }
        Ok(())
    }

    pub fn worker_count(&self) -> usize {
        self.dataplane.workers.get_ref().count()
    }

    pub fn port_names(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| p.name.get_ref().clone())
            .collect()
    }

    /// Applies everything to a fresh model with the model's operations, as root (and as the
    /// namespace for binds): devices for ports (`macs[i]` for `ports[i]`), namespaces,
    /// addresses (pushed by the target's parent), routes, sockets. The first rule broken is
    /// returned with the model's errno and sentence and the line of the entry.
    pub fn build_model(&self, macs: &[[u8; 6]]) -> Result<Built, ConfigError> {
        let mut m = Model::new();
        let devices = self.add_devices(&mut m, macs)?;
        let src = &self.source;
        let root = NsId::ROOT;
        for n in &self.namespaces {
            let parent = n.parent.as_ref().map(|p| p.get_ref().as_str());
            m.ns_add(root, n.name.get_ref(), parent, n.loopback)
                .map_err(|e| {
                    let key = match (&n.parent, e.errno) {
                        (Some(p), l3ns_dataplane::Errno::ENOENT | l3ns_dataplane::Errno::EPERM) => {
                            ("namespace.parent", p.span())
                        }
                        _ => ("namespace.name", n.name.span()),
                    };
                    src.rule(key.1, key.0, e)
                })?;
        }
        for a in &self.addresses {
            let Cidr(p) = *a.address.get_ref();
            let dev = a.dev.get_ref();
            let label = a.label.as_ref().map(|l| l.get_ref().as_str());
            m.addr_add(
                root,
                dev,
                p.addr,
                p.len,
                label,
                a.broadcast.map(|b| b.0),
                a.scope,
            )
            .map_err(|e| {
                let (key, span) = match e.errno {
                    l3ns_dataplane::Errno::ENODEV => ("address.dev", a.dev.span()),
                    _ => match &a.label {
                        Some(l) if e.message.contains("label") => ("address.label", l.span()),
                        _ => ("address.address", a.address.span()),
                    },
                };
                src.rule(span, key, e)
            })?;
            if let Some(to) = &a.assign_to {
                // R4: the push is done by the target's parent (root unless nested L2s appear).
                let caller = m
                    .ns_by_name(to.get_ref())
                    .and_then(|n| n.parent)
                    .unwrap_or(root);
                m.addr_push(caller, dev, p.addr, None, to.get_ref())
                    .map_err(|e| src.rule(to.span(), "address.assign_to", e))?;
            }
        }
        for r in &self.routes {
            let Cidr(dst) = *r.dst.get_ref();
            m.route_add(root, dst, r.via.map(|v| v.0), r.dev.get_ref(), r.scope)
                .map_err(|e| {
                    let (key, span) = if e.errno == l3ns_dataplane::Errno::ENODEV {
                        ("route.dev", r.dev.span())
                    } else {
                        ("route.dst", r.dst.span())
                    };
                    src.rule(span, key, e)
                })?;
        }
        for s in &self.sockets {
            let ns = match &s.namespace {
                Some(n) => m
                    .ns_id(n.get_ref())
                    .map_err(|e| src.rule(n.span(), "socket.namespace", e))?,
                None => root,
            };
            let Endpoint(b) = *s.bind.get_ref();
            m.sock_bind(ns, Proto::Udp, *b.ip(), b.port(), s.service.get_ref())
                .map_err(|e| {
                    let (key, span) = if e.errno == l3ns_dataplane::Errno::EINVAL
                        && e.message.contains("service")
                    {
                        ("socket.service", s.service.span())
                    } else {
                        ("socket.bind", s.bind.span())
                    };
                    src.rule(span, key, e)
                })?;
        }
        self.check_senders(&m)?;
        Ok(Built { model: m, devices })
    }

    /// Makes sure every configured port has a device in `model` (adding the missing ones with
    /// `macs[i]`) and returns the device of each port, in order. A loaded state file keeps
    /// its devices; a port the state does not know yet is added.
    pub fn add_devices(
        &self,
        model: &mut Model,
        macs: &[[u8; 6]],
    ) -> Result<Vec<DevId>, ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut devs = Vec::with_capacity(self.ports.len());
        for (i, p) in self.ports.iter().enumerate() {
            let name = p.name.get_ref();
            let mac = macs
                .get(i)
                .copied()
                .or(p.mac.map(|m| m.0))
                .unwrap_or([0; 6]);
            if !seen.insert(name.clone()) {
                // Same rule and sentence as the model's (the device exists from the first port).
                let e = model
                    .add_device(name, mac)
                    .expect_err("a second device of the same name is rejected");
                return Err(self.source.rule(p.name.span(), "port.name", e));
            }
            let dev = match model.resolve_dev(NsId::ROOT, name) {
                Ok(d) if d != DevId::LO => d,
                _ => model
                    .add_device(name, mac)
                    .map_err(|e| self.source.rule(p.name.span(), "port.name", e))?,
            };
            devs.push(dev);
        }
        Ok(devs)
    }

    /// Senders name existing namespaces.
    pub fn check_senders(&self, model: &Model) -> Result<(), ConfigError> {
        for s in &self.senders {
            model
                .ns_id(s.namespace.get_ref())
                .map_err(|e| self.source.rule(s.namespace.span(), "sender.namespace", e))?;
        }
        Ok(())
    }

    /// The broadcast addresses of the configured addresses on port `name` (for the
    /// generator's default destination MAC).
    pub fn broadcasts_on(&self, name: &str) -> Vec<Ipv4Addr> {
        self.addresses
            .iter()
            .filter(|a| a.dev.get_ref() == name)
            .map(|a| {
                let Cidr(p) = *a.address.get_ref();
                a.broadcast
                    .map(|b| b.0)
                    .unwrap_or_else(|| Ipv4Addr::from(u32::from(p.addr) | !p.mask()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_and_keys() {
        let s = Source::new(
            "f.toml",
            "[dataplane]\nburst = 3\n\n[[port]]\nname = \"x\"\n",
        );
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(12), (2, 1));
        assert_eq!(s.line_col(20), (2, 9));
        assert_eq!(s.key_at(20), "dataplane.burst");
        assert_eq!(s.key_at(s.text.find("name").unwrap()), "port.name");
        assert_eq!(s.key_at(s.text.find("[[port").unwrap()), "port");
    }

    #[test]
    fn demo_parses_and_builds() {
        let c = Config::demo();
        let built = c.build_model(&[]).unwrap();
        assert!(built.model.ns_by_name("web1").is_some());
        assert_eq!(built.devices.len(), c.ports.len());
    }

    #[test]
    fn value_types_explain_what_they_expect() {
        assert!("10.0.0.1/33"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("A.B.C.D/LEN"));
        assert!("02:00".parse::<Mac>().unwrap_err().contains("hex bytes"));
        assert_eq!("off".parse::<Listen>().unwrap(), Listen::Off);
        assert!("10.0.0.1"
            .parse::<Endpoint>()
            .unwrap_err()
            .contains("A.B.C.D:PORT"));
    }
}
