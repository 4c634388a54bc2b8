//! Prometheus metrics (R16): what a scrape reads, how it is rendered, and the small HTTP
//! endpoint that serves it. `docs/METRICS.md` lists every series.
//!
//! **Where the numbers live.** Packet counters stay where the hot path writes them: per-worker
//! single-writer cells (`l3ns_dataplane::counters::Stats`). A scrape sums the cells of every
//! writer; it only loads atomics, so it never blocks or slows a worker. Namespace names,
//! sockets and the snapshot version come from the current `OwnerTable` snapshot, so a deleted
//! namespace's series disappear at the next scrape. The control thread's own numbers
//! (operations by kind and result, time to publish a snapshot) are pushed into
//! [`ControlMetrics`] as they happen; recording there never waits for a scrape.
//!
//! **Why `metrics-exporter-prometheus`, and how much of it.** No global recorder is
//! installed. The control-plane numbers go through a long-lived *local* `PrometheusRecorder`
//! owned by [`ControlMetrics`]: a histogram accumulates observations and the crate's
//! recorder does that (fixed buckets, `_sum`, `_count`) and renders it. The dataplane series
//! are different: they are already aggregated (cells summed at scrape time), there are
//! about 12 per namespace, and they must vanish with their namespace. Registering them in a
//! fresh recorder per scrape expresses all of that and was the first version, but measured
//! about 1 s of CPU per scrape in release at 12,000 namespaces (170,000 series: a key
//! allocation, a registry insert and a label re-format per series). So the dataplane series
//! are written straight from the summed cells with the crate's `formatting` helpers (HELP
//! and TYPE lines, label-value escaping) — tens of milliseconds for the same scrape — and the
//! control recorder's rendered families are spliced in at their place. The crate's HTTP
//! listener needs tokio and hyper, which DESIGN keeps out (default features off), so
//! [`serve`] is a small `std::net` HTTP/1.1 thread.
//!
//! **Cardinality.** At most `namespace_cap` namespaces (default 10,000, lowest ids first)
//! get their own `namespace` label; the rest are summed under `namespace="_other"` (a name
//! R1 cannot produce) and `l3ns_namespace_labels_overflow` says how many were folded.

use crate::runtime::Runtime;
use l3ns_dataplane::counters::{NsDrop, NsSnapshot, PortCounters, PortDrop, Stats};
use l3ns_dataplane::owner_table::OwnerTable;
use l3ns_dataplane::types::{Level, LoopbackMode};
use l3ns_dataplane::worker::Shared;
use metrics::{Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::formatting::{
    sanitize_label_value, write_help_line, write_type_line,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Namespaces that get their own label, by default.
pub const DEFAULT_NAMESPACE_CAP: usize = 10_000;

/// The `namespace` (and `socket`) label value that namespaces past the cap are summed under.
pub const OTHER: &str = "_other";

/// Upper bounds (seconds) of `l3ns_snapshot_publish_seconds` buckets: 10 µs to 1 s.
pub const PUBLISH_BUCKETS: [f64; 16] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// The Prometheus text exposition format version served.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: name, type and help. Every series rendered is one of these.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

const NS_RX_PACKETS: &str = "l3ns_namespace_rx_packets_total";
const NS_RX_BYTES: &str = "l3ns_namespace_rx_bytes_total";
const NS_DELIVERED: &str = "l3ns_namespace_delivered_packets_total";
const NS_BCAST_DELIVERED: &str = "l3ns_namespace_broadcast_delivered_packets_total";
const NS_DROPPED: &str = "l3ns_namespace_dropped_packets_total";
const NS_TX_PACKETS: &str = "l3ns_namespace_tx_packets_total";
const NS_TX_BYTES: &str = "l3ns_namespace_tx_bytes_total";
const NS_TX_SPOOFED: &str = "l3ns_namespace_tx_spoofed_packets_total";
const NS_ECHO_REPLIED: &str = "l3ns_namespace_icmp_echo_replied_total";
const NS_INFO: &str = "l3ns_namespace_info";
const NS_COUNT: &str = "l3ns_namespaces";
const NS_OVERFLOW: &str = "l3ns_namespace_labels_overflow";
const SOCK_DEPTH: &str = "l3ns_socket_queue_depth";
const SOCK_CAPACITY: &str = "l3ns_socket_queue_capacity";
const SOCK_HIGH_WATER: &str = "l3ns_socket_queue_high_water";
const SOCK_OVERFLOW: &str = "l3ns_socket_queue_overflow_total";
const SOCK_RECEIVED: &str = "l3ns_socket_received_packets_total";
const PORT_RX_PACKETS: &str = "l3ns_port_rx_packets_total";
const PORT_RX_BYTES: &str = "l3ns_port_rx_bytes_total";
const PORT_TX_PACKETS: &str = "l3ns_port_tx_packets_total";
const PORT_TX_BYTES: &str = "l3ns_port_tx_bytes_total";
const PORT_DROPPED: &str = "l3ns_port_dropped_packets_total";
const ARP_ANSWERED: &str = "l3ns_arp_requests_answered_total";
const ARP_SENT: &str = "l3ns_arp_requests_sent_total";
const NEIGH_ENTRIES: &str = "l3ns_neighbour_entries";
const ICMP_UNREACH_SENT: &str = "l3ns_icmp_unreachable_sent_total";
const ICMP_RATE_LIMITED: &str = "l3ns_icmp_unreachable_rate_limited_total";
const WORKER_POLLS: &str = "l3ns_worker_polls_total";
const WORKER_WAKEUPS: &str = "l3ns_worker_consumer_wakeups_total";
const CONTROL_OPS: &str = "l3ns_control_operations_total";
const SNAPSHOT_VERSION: &str = "l3ns_snapshot_version";
const PUBLISH_SECONDS: &str = "l3ns_snapshot_publish_seconds";
const BUILD_INFO: &str = "l3ns_build_info";

use Kind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric family l3ns exports (docs/METRICS.md documents each; a test checks that).
const FAMILIES: &[Family] = &[
    family(NS_RX_PACKETS, C, "IPv4 packets addressed to the namespace: unicast to an address it owns (delivered or not), broadcast copies for its sockets, host-local deliveries."),
    family(NS_RX_BYTES, C, "Bytes of the packets in l3ns_namespace_rx_packets_total (IPv4 total length; UDP payload for host-local deliveries)."),
    family(NS_DELIVERED, C, "Unicast UDP datagrams handed to one of the namespace's socket queues."),
    family(NS_BCAST_DELIVERED, C, "Broadcast copies handed to the namespace's socket queues (one per listening socket, R10)."),
    family(NS_DROPPED, C, "Packets for the namespace that were dropped, by reason: no_socket (no listener, R9), queue_full (socket queue full), ns_gone (queued when its socket or namespace went away, R5)."),
    family(NS_TX_PACKETS, C, "Datagrams the namespace's sockets sent that passed the egress check (R14)."),
    family(NS_TX_BYTES, C, "UDP payload bytes of l3ns_namespace_tx_packets_total."),
    family(NS_TX_SPOOFED, C, "Sends refused because the namespace does not own their source address (R14)."),
    family(NS_ECHO_REPLIED, C, "ICMP echo requests to the namespace's addresses answered by l3ns (R15)."),
    family(NS_INFO, G, "Always 1: one series per labelled namespace, with its level, parent and loopback mode."),
    family(NS_COUNT, G, "Namespaces in the current snapshot, by level."),
    family(NS_OVERFLOW, G, "Namespaces past the label cap whose counters are summed under namespace=\"_other\"."),
    family(SOCK_DEPTH, G, "Datagrams waiting in the socket's receive queue now."),
    family(SOCK_CAPACITY, G, "Datagrams the socket's receive queue holds at most."),
    family(SOCK_HIGH_WATER, G, "Highest number of datagrams the socket's queue has held."),
    family(SOCK_OVERFLOW, C, "Datagrams refused because the socket's queue was full (counted queue_full in its namespace)."),
    family(SOCK_RECEIVED, C, "Datagrams the application or service took from the socket's queue."),
    family(PORT_RX_PACKETS, C, "Frames received on the port."),
    family(PORT_RX_BYTES, C, "Bytes of the frames received on the port."),
    family(PORT_TX_PACKETS, C, "Frames transmitted on the port (datagrams, ARP and ICMP included)."),
    family(PORT_TX_BYTES, C, "Bytes of the frames transmitted on the port."),
    family(PORT_DROPPED, C, "Frames the port dropped before any namespace, by reason: the parser's reasons for malformed frames, unclaimed, multicast, broadcast_unheard, other_host, icmp_unhandled, tx_ring_full, arp_unresolved, no_route."),
    family(ARP_ANSWERED, C, "ARP requests for local addresses answered on the port (R15)."),
    family(ARP_SENT, C, "ARP requests sent on the port to resolve a next hop."),
    family(NEIGH_ENTRIES, G, "Entries in the neighbour (ARP) table, all devices."),
    family(ICMP_UNREACH_SENT, C, "ICMP port-unreachable messages sent on the port."),
    family(ICMP_RATE_LIMITED, C, "ICMP port-unreachable messages not sent because of the rate limit."),
    family(WORKER_POLLS, C, "Polls of a worker: busy (handled at least one packet) or idle."),
    family(WORKER_WAKEUPS, C, "Parked consumer threads a worker woke after handing datagrams to their queues (each a cross-core wake-up, a system call on the worker's core)."),
    family(CONTROL_OPS, C, "Control operations applied, by operation and result (ok or error)."),
    family(SNAPSHOT_VERSION, G, "Version of the snapshot workers currently read."),
    family(PUBLISH_SECONDS, H, "Time to build and publish a snapshot after a successful control operation."),
    family(BUILD_INFO, G, "Always 1, labelled with the l3ns version."),
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Describes every family to `rec` (a description without series renders nothing).
fn describe_all(rec: &PrometheusRecorder) {
    for f in FAMILIES {
        let (name, help) = (
            KeyName::from_const_str(f.name),
            SharedString::const_str(f.help),
        );
        match f.kind {
            Kind::Counter => rec.describe_counter(name, None, help),
            Kind::Gauge => rec.describe_gauge(name, None, help),
            Kind::Histogram => rec.describe_histogram(name, None, help),
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect::<Vec<_>>(),
    )
}

/// The control thread's metrics: operations by kind and result, and the publish-latency
/// histogram. The control thread records; scrapes render. Recording is a lock-free counter
/// add or histogram append (a short shared lock only the first time a new `(op, result)`
/// pair appears), so the control thread never waits for a scrape.
#[derive(Debug)]
pub struct ControlMetrics {
    recorder: PrometheusRecorder,
    publish: Histogram,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(PUBLISH_SECONDS.to_string()), &PUBLISH_BUCKETS)
            .expect("PUBLISH_BUCKETS is not empty")
            .build_recorder();
        describe_all(&recorder);
        let publish = recorder.register_histogram(&key(PUBLISH_SECONDS, &[]), &METADATA);
        ControlMetrics { recorder, publish }
    }
}

impl ControlMetrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts one control operation `op` that succeeded (`ok`) or was refused.
    pub fn op(&self, op: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.recorder
            .register_counter(
                &key(CONTROL_OPS, &[("op", op), ("result", result)]),
                &METADATA,
            )
            .increment(1);
    }

    /// Records how long one snapshot publish took.
    pub fn published(&self, took: Duration) {
        self.publish.record(took.as_secs_f64());
    }

    fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

/// Everything a scrape reads. Cheap to clone; holds only `Arc`s.
#[derive(Clone)]
pub struct MetricsSource {
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    control: Arc<ControlMetrics>,
    namespace_cap: usize,
}

impl MetricsSource {
    /// A source over the dataplane counters, the shared snapshot (`shared.table`) and
    /// neighbour table, and the control thread's metrics.
    pub fn new(stats: Arc<Stats>, shared: Arc<Shared>, control: Arc<ControlMetrics>) -> Self {
        MetricsSource {
            stats,
            shared,
            control,
            namespace_cap: DEFAULT_NAMESPACE_CAP,
        }
    }

    /// The source for a control runtime's dataplane.
    pub fn from_runtime(rt: &Runtime) -> Self {
        Self::new(rt.stats.clone(), rt.shared.clone(), rt.metrics.clone())
    }

    /// At most `cap` namespaces get their own label; the rest are summed under `_other`.
    pub fn with_namespace_cap(mut self, cap: usize) -> Self {
        self.namespace_cap = cap;
        self
    }

    /// Renders every series in the Prometheus text format (version 0.0.4), families in the
    /// order of `FAMILIES`, series in namespace-id, port and worker order.
    pub fn render(&self) -> String {
        let table = self.shared.table.load_full();
        let ns = self.namespace_rows(&table);
        let st = &*self.stats;
        let mut control = control_blocks(&self.control.render());
        let mut t = Text(String::with_capacity(
            1024 + ns.rows.len() * 1400 + ns.sockets.len() * 600,
        ));

        let rows = &ns.rows;
        let per_ns =
            |f: fn(&NsSnapshot) -> u64| rows.iter().map(move |r| (r.labels.as_str(), f(&r.c)));
        t.family(NS_RX_PACKETS, per_ns(|c| c.rx_packets));
        t.family(NS_RX_BYTES, per_ns(|c| c.rx_bytes));
        t.family(NS_DELIVERED, per_ns(|c| c.delivered));
        t.family(NS_BCAST_DELIVERED, per_ns(|c| c.broadcast_delivered));
        t.family(
            NS_DROPPED,
            rows.iter().flat_map(|r| {
                NsDrop::ALL.iter().map(|why| {
                    (
                        format!("{},reason=\"{}\"", r.labels, why.as_str()),
                        r.c.dropped(*why),
                    )
                })
            }),
        );
        t.family(NS_TX_PACKETS, per_ns(|c| c.tx_packets));
        t.family(NS_TX_BYTES, per_ns(|c| c.tx_bytes));
        t.family(NS_TX_SPOOFED, per_ns(|c| c.tx_spoofed));
        t.family(NS_ECHO_REPLIED, per_ns(|c| c.icmp_echo_replied));
        t.family(NS_INFO, ns.info.iter().map(|l| (l.as_str(), 1u64)));
        t.family(NS_COUNT, [("level=\"l2\"", ns.l2), ("level=\"l3\"", ns.l3)]);
        t.family(NS_OVERFLOW, [("", ns.folded)]);

        let socks = &ns.sockets;
        let per_sock =
            |f: fn(&SocketRow) -> u64| socks.iter().map(move |s| (s.labels.as_str(), f(s)));
        t.family(SOCK_DEPTH, per_sock(|s| s.depth));
        t.family(SOCK_CAPACITY, per_sock(|s| s.capacity));
        t.family(SOCK_HIGH_WATER, per_sock(|s| s.high_water));
        t.family(SOCK_OVERFLOW, per_sock(|s| s.overflow));
        t.family(SOCK_RECEIVED, per_sock(|s| s.received));

        let ports: Vec<String> = st
            .port_names
            .iter()
            .map(|p| format!("port=\"{}\"", sanitize_label_value(p)))
            .collect();
        let per_port = |f: fn(&PortCounters) -> u64| {
            ports
                .iter()
                .enumerate()
                .map(move |(i, l)| (l.as_str(), st.port_sum(i, f)))
        };
        t.family(PORT_RX_PACKETS, per_port(|p| p.rx_packets.get()));
        t.family(PORT_RX_BYTES, per_port(|p| p.rx_bytes.get()));
        t.family(PORT_TX_PACKETS, per_port(|p| p.tx_packets.get()));
        t.family(PORT_TX_BYTES, per_port(|p| p.tx_bytes.get()));
        t.family(
            PORT_DROPPED,
            ports.iter().enumerate().flat_map(|(i, l)| {
                PortDrop::all().map(move |why| {
                    (
                        format!("{l},reason=\"{}\"", why.as_str()),
                        st.port_dropped(i, why),
                    )
                })
            }),
        );
        t.family(ARP_ANSWERED, per_port(|p| p.arp_requests_answered.get()));
        t.family(ARP_SENT, per_port(|p| p.arp_requests_sent.get()));
        t.family(NEIGH_ENTRIES, [("", self.shared.neigh.len() as u64)]);
        t.family(
            ICMP_UNREACH_SENT,
            per_port(|p| p.icmp_unreachable_sent.get()),
        );
        t.family(ICMP_RATE_LIMITED, per_port(|p| p.icmp_rate_limited.get()));

        t.family(
            WORKER_POLLS,
            st.workers.iter().enumerate().flat_map(|(i, w)| {
                [
                    (format!("worker=\"{i}\",kind=\"busy\""), w.busy_polls.get()),
                    (format!("worker=\"{i}\",kind=\"idle\""), w.idle_polls.get()),
                ]
            }),
        );
        t.family(
            WORKER_WAKEUPS,
            st.workers
                .iter()
                .enumerate()
                .map(|(i, w)| (format!("worker=\"{i}\""), w.consumer_wakeups.get())),
        );
        for name in [CONTROL_OPS, PUBLISH_SECONDS] {
            // Rendered by the control recorder; absent until its first series exists.
            if let Some(block) = control.remove(name) {
                t.0.push_str(&block);
            }
        }
        t.family(SNAPSHOT_VERSION, [("", table.version())]);
        t.family(
            BUILD_INFO,
            [(concat!("version=\"", env!("CARGO_PKG_VERSION"), "\""), 1u64)],
        );
        t.0
    }

    /// One row per labelled namespace in id order, then the `_other` fold if any, and the
    /// same for their sockets.
    fn namespace_rows(&self, table: &OwnerTable) -> NsRows {
        let mut out = NsRows::default();
        let mut other = NsSnapshot::default();
        let mut other_sock = SocketRow {
            labels: format!("namespace=\"{OTHER}\",socket=\"{OTHER}\",local=\"{OTHER}\""),
            ..Default::default()
        };
        let mut other_sockets = 0;
        for (i, v) in table.namespaces().enumerate() {
            match v.level {
                Level::L2 => out.l2 += 1,
                Level::L3 => out.l3 += 1,
            }
            let c = self.stats.ns(v.id);
            let own = i < self.namespace_cap;
            let label = format!("namespace=\"{}\"", sanitize_label_value(&v.name));
            if own {
                let parent = v
                    .parent
                    .and_then(|p| table.namespace(p))
                    .map(|p| &*p.name)
                    .unwrap_or("");
                let level = if v.level == Level::L2 { "l2" } else { "l3" };
                let loopback = match v.loopback {
                    LoopbackMode::Isolated => "isolated",
                    LoopbackMode::Shared => "shared",
                };
                out.info.push(format!(
                    "{label},level=\"{level}\",parent=\"{}\",loopback=\"{loopback}\"",
                    sanitize_label_value(parent)
                ));
            } else {
                out.folded += 1;
                other.add(&c);
            }
            for b in &v.bindings {
                let Some(q) = table.socket_queue(b.id) else {
                    continue;
                };
                let mut row = SocketRow {
                    labels: String::new(),
                    depth: q.len() as u64,
                    capacity: q.depth() as u64,
                    high_water: q.high_water.load(Ordering::Relaxed) as u64,
                    overflow: q.overflow.load(Ordering::Relaxed),
                    received: q.received.load(Ordering::Relaxed),
                };
                if own {
                    row.labels = format!(
                        "{label},socket=\"{}\",local=\"{}:{}\"",
                        b.id.0, b.addr, b.port
                    );
                    out.sockets.push(row);
                } else {
                    other_sock.add(&row);
                    other_sockets += 1;
                }
            }
            if own {
                out.rows.push(NsRow { labels: label, c });
            }
        }
        if out.folded > 0 {
            out.rows.push(NsRow {
                labels: format!("namespace=\"{OTHER}\""),
                c: other,
            });
        }
        if other_sockets > 0 {
            out.sockets.push(other_sock);
        }
        out
    }
}

#[derive(Default)]
struct NsRows {
    rows: Vec<NsRow>,
    sockets: Vec<SocketRow>,
    /// Label sets of `l3ns_namespace_info`.
    info: Vec<String>,
    l2: u64,
    l3: u64,
    folded: u64,
}

/// A namespace's labels (`namespace="…"`) and its counters summed over every writer.
struct NsRow {
    labels: String,
    c: NsSnapshot,
}

/// A socket queue's labels and numbers read at one moment.
#[derive(Default)]
struct SocketRow {
    labels: String,
    depth: u64,
    capacity: u64,
    high_water: u64,
    overflow: u64,
    received: u64,
}

impl SocketRow {
    fn add(&mut self, o: &SocketRow) {
        self.depth += o.depth;
        self.capacity += o.capacity;
        self.high_water += o.high_water;
        self.overflow += o.overflow;
        self.received += o.received;
    }
}

/// The text being rendered. Label sets arrive pre-formatted (`k="v",…`, values escaped with
/// the exporter's `sanitize_label_value`); HELP and TYPE lines are the exporter's.
struct Text(String);

impl Text {
    /// Writes family `name` (HELP and TYPE from `FAMILIES`) and its series.
    fn family<L: AsRef<str>, V: std::fmt::Display>(
        &mut self,
        name: &str,
        series: impl IntoIterator<Item = (L, V)>,
    ) {
        let f = FAMILIES
            .iter()
            .find(|f| f.name == name)
            .expect("every rendered family is declared");
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        write_help_line(&mut self.0, name, f.help);
        write_type_line(&mut self.0, name, kind);
        for (labels, v) in series {
            let labels = labels.as_ref();
            self.0.push_str(name);
            if !labels.is_empty() {
                self.0.push('{');
                self.0.push_str(labels);
                self.0.push('}');
            }
            let _ = writeln!(self.0, " {v}");
        }
        self.0.push('\n');
    }
}

/// Splits the control recorder's output into one block per family (HELP and TYPE first,
/// counter series sorted; histogram lines keep the exporter's `le` order).
fn control_blocks(text: &str) -> HashMap<String, String> {
    let mut blocks = HashMap::new();
    for block in text.split("\n\n") {
        let (mut head, mut series): (Vec<&str>, Vec<&str>) = block
            .lines()
            .filter(|l| !l.trim().is_empty())
            .partition(|l| l.starts_with('#'));
        let Some(ty) = head.iter().find_map(|h| h.strip_prefix("# TYPE ")) else {
            continue;
        };
        let mut parts = ty.split(' ');
        let name = parts.next().unwrap_or("").to_string();
        if matches!(parts.next(), Some("counter") | Some("gauge")) {
            series.sort_unstable();
        }
        head.extend(series);
        let mut s = head.join("\n");
        s.push_str("\n\n");
        blocks.insert(name, s);
    }
    blocks
}

/// How long one request may take to arrive, and its largest accepted head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Serves `GET /metrics` on `addr` from a thread of its own until [`MetricsServer::stop`].
/// Connections are answered one at a time and closed after the response; a request must
/// arrive within a few seconds. The thread blocks in `accept` (a scrape is answered at once,
/// and an idle daemon does not wake for it); stopping wakes it with a connection of its own.
pub fn serve(addr: SocketAddr, source: MetricsSource) -> io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("l3ns-metrics".into())
        .spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    // The stop's own connection (or one racing with it) is not answered.
                    Ok(_) if flag.load(Ordering::SeqCst) => break,
                    Ok((stream, _)) => {
                        // A client that goes away mid-request is its own problem, not the server's.
                        let _ = answer(stream, &source);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // EMFILE and the like: back off rather than spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok(MetricsServer {
        addr: local,
        stop,
        thread: Some(thread),
    })
}

/// The metrics endpoint's thread (see [`serve`]).
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread and closes the listener. Bounded: the `accept` is woken by a
    /// connection of our own (to the loopback address when the listener is on every
    /// address); if that connection cannot be made, the thread is left to end with the
    /// process rather than waited for.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut to = self.addr;
        if to.ip().is_unspecified() {
            to.set_ip(match to {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let woke = TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_ok();
        if let (true, Some(t)) = (woke, self.thread.take()) {
            let _ = t.join();
        }
    }
}

/// Reads one request head and writes one response.
fn answer(mut stream: TcpStream, source: &MetricsSource) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let head = match read_head(&mut stream)? {
        Some(h) => h,
        None => {
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                b"bad request\n",
                true,
            )
        }
    };
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = source.render();
            respond(
                &mut stream,
                "200 OK",
                CONTENT_TYPE,
                body.as_bytes(),
                method == "GET",
            )
        }
        (_, "/metrics") => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"use GET\n",
            true,
        ),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"not found; metrics are at /metrics\n",
            true,
        ),
    }
}

/// The request head up to the blank line, or `None` if it is too long, not text, or does not
/// arrive within `REQUEST_DEADLINE`.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let start = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let left = REQUEST_DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() || buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8(buf).ok())
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests;
