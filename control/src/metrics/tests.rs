use super::*;
use crate::model::Model;
use arc_swap::ArcSwap;
use l3ns_dataplane::counters::NsDrop;
use l3ns_dataplane::owner_table::NsView;
use l3ns_dataplane::socket::{Batch, DgramMeta, SocketQueue};
use l3ns_dataplane::types::{DevId, LoopbackMode, NsId, SocketId};
use l3ns_dataplane::wire::DropReason;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const WEB1: NsId = NsId(1);
const WEB2: NsId = NsId(2);

fn view(id: NsId, name: &str, parent: Option<NsId>, bindings: &[(u32, [u8; 4], u16)]) -> NsView {
    let b: Vec<_> = bindings
        .iter()
        .map(|&(sid, a, port)| (sid, a.into(), port))
        .collect();
    NsView::in_root_family(id, name, parent, Vec::new(), &b)
}

/// root (no sockets), web1 (socket 3 on 0.0.0.0:7, queue depth 4), web2 (socket 6 on
/// 10.0.0.3:53); two workers, ports eth0 and eth1; snapshot version 7.
struct Fixture {
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    control: Arc<ControlMetrics>,
    q3: Arc<SocketQueue>,
}

impl Fixture {
    fn new() -> Self {
        let swap = Arc::new(ArcSwap::from_pointee(OwnerTable::new()));
        let shared = Shared::new(swap.clone(), 2, 64);
        let stats = Stats::new(2, vec!["eth0".into(), "eth1".into()]);
        let q3 = SocketQueue::new(4, shared.pools.clone());
        let q6 = SocketQueue::new(8, shared.pools.clone());
        let mut t = OwnerTable::new();
        t.set_namespace(view(NsId::ROOT, "root", None, &[]));
        t.set_namespace(view(
            WEB1,
            "web1",
            Some(NsId::ROOT),
            &[(3, [0, 0, 0, 0], 7)],
        ));
        t.set_namespace(view(
            WEB2,
            "web2",
            Some(NsId::ROOT),
            &[(6, [10, 0, 0, 3], 53)],
        ));
        t.set_socket_queue(SocketId(3), Some(q3.clone()));
        t.set_socket_queue(SocketId(6), Some(q6));
        t.set_version(7);
        swap.store(Arc::new(t));
        Fixture {
            stats,
            shared,
            control: ControlMetrics::new(),
            q3,
        }
    }

    fn source(&self) -> MetricsSource {
        MetricsSource::new(
            self.stats.clone(),
            self.shared.clone(),
            self.control.clone(),
        )
    }

    /// Known counts in every kind of cell, spread over both workers and the control writer.
    fn count(&self) {
        let mut w0 = self.stats.workers[0].writer();
        let mut w1 = self.stats.workers[1].writer();
        let a = w0.ns(WEB1);
        a.rx_packets.add(3);
        a.rx_bytes.add(100);
        a.delivered.add(3);
        let a = w0.tx(WEB1);
        a.drop(NsDrop::NoSocket, 1);
        a.tx_packets.add(7);
        a.tx_bytes.add(700);
        a.tx_spoofed.inc();
        a.icmp_echo_replied.add(2);
        let b = w1.ns(WEB1);
        b.rx_packets.add(2);
        b.rx_bytes.add(50);
        b.delivered.inc();
        b.broadcast_delivered.inc();
        self.stats.control.writer().tx(WEB1).drop(NsDrop::NsGone, 2);
        w1.ns(WEB2).delivered.add(9);
        w1.tx(WEB2).drop(NsDrop::QueueFull, 4);

        let (p0, p1) = (&self.stats.workers[0].ports, &self.stats.workers[1].ports);
        p0[0].rx_packets.add(10);
        p1[0].rx_packets.add(5);
        p0[0].rx_bytes.add(640);
        p0[0].tx_packets.add(6);
        p0[0].tx_bytes.add(600);
        p0[0].drop(PortDrop::Malformed(DropReason::BadChecksum));
        p1[0].drop(PortDrop::Malformed(DropReason::BadChecksum));
        p1[1].drop(PortDrop::Unclaimed);
        p0[0].arp_requests_answered.inc();
        p0[0].arp_requests_sent.add(2);
        p1[0].icmp_unreachable_sent.add(3);
        p1[0].icmp_rate_limited.add(4);
        self.stats.workers[0].busy_polls.add(10);
        self.stats.workers[0].idle_polls.add(90);
        self.stats.workers[1].busy_polls.inc();
        self.stats.workers[1].consumer_wakeups.add(5);

        // Socket 3 (depth 4): 3 queued, then of 2 one fits and one drops, then 1 more drops
        // (full), then the application takes the first 3: 1 left, high water 4, overflow 2.
        let batch = |n: usize| {
            let mut b = Batch::with_capacity(n, 0);
            for _ in 0..n {
                b.push(
                    DgramMeta {
                        socket: SocketId(3),
                        ns: WEB1,
                        ..Default::default()
                    },
                    b"x",
                );
            }
            b
        };
        assert_eq!(self.q3.offer(batch(3)).unwrap(), 3);
        assert_eq!(self.q3.offer(batch(2)).unwrap(), 1);
        assert!(self.q3.offer(batch(1)).is_err());
        let taken = self.q3.pop_batch().unwrap();
        assert_eq!(taken.len(), 3);
        self.q3.recycle(taken);

        self.shared
            .neigh
            .learn(DevId(1), Ipv4Addr::new(10, 0, 0, 99), [2, 0, 0, 0, 0, 0x99]);
        self.control.op("ns_add", true);
        self.control.op("ns_add", true);
        self.control.op("ns_add", false);
        self.control.published(Duration::from_micros(30));
        self.control.published(Duration::from_millis(2));
    }
}

/// Sample lines as `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line has a value");
            (
                k.to_string(),
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

fn has_label(text: &str, label: &str) -> bool {
    text.lines()
        .any(|l| !l.starts_with('#') && l.contains(label))
}

#[test]
fn metrics_render_exact_values_summed_over_writers() {
    let f = Fixture::new();
    f.count();
    let text = f.source().render();
    let s = samples(&text);
    let want: &[(&str, f64)] = &[
        (r#"l3ns_namespace_rx_packets_total{namespace="web1"}"#, 5.0),
        (r#"l3ns_namespace_rx_bytes_total{namespace="web1"}"#, 150.0),
        (
            r#"l3ns_namespace_delivered_packets_total{namespace="web1"}"#,
            4.0,
        ),
        (
            r#"l3ns_namespace_broadcast_delivered_packets_total{namespace="web1"}"#,
            1.0,
        ),
        (
            r#"l3ns_namespace_dropped_packets_total{namespace="web1",reason="no_socket"}"#,
            1.0,
        ),
        (
            r#"l3ns_namespace_dropped_packets_total{namespace="web1",reason="queue_full"}"#,
            0.0,
        ),
        (
            r#"l3ns_namespace_dropped_packets_total{namespace="web1",reason="ns_gone"}"#,
            2.0,
        ),
        (r#"l3ns_namespace_tx_packets_total{namespace="web1"}"#, 7.0),
        (r#"l3ns_namespace_tx_bytes_total{namespace="web1"}"#, 700.0),
        (
            r#"l3ns_namespace_tx_spoofed_packets_total{namespace="web1"}"#,
            1.0,
        ),
        (
            r#"l3ns_namespace_icmp_echo_replied_total{namespace="web1"}"#,
            2.0,
        ),
        (
            r#"l3ns_namespace_delivered_packets_total{namespace="web2"}"#,
            9.0,
        ),
        (
            r#"l3ns_namespace_dropped_packets_total{namespace="web2",reason="queue_full"}"#,
            4.0,
        ),
        (r#"l3ns_namespace_rx_packets_total{namespace="root"}"#, 0.0),
        (
            r#"l3ns_namespace_info{namespace="web1",level="l3",parent="root",loopback="isolated"}"#,
            1.0,
        ),
        (
            r#"l3ns_namespace_info{namespace="root",level="l2",parent="",loopback="isolated"}"#,
            1.0,
        ),
        (r#"l3ns_namespaces{level="l2"}"#, 1.0),
        (r#"l3ns_namespaces{level="l3"}"#, 2.0),
        ("l3ns_namespace_labels_overflow", 0.0),
        (
            r#"l3ns_socket_queue_depth{namespace="web1",socket="3",local="0.0.0.0:7"}"#,
            1.0,
        ),
        (
            r#"l3ns_socket_queue_capacity{namespace="web1",socket="3",local="0.0.0.0:7"}"#,
            4.0,
        ),
        (
            r#"l3ns_socket_queue_high_water{namespace="web1",socket="3",local="0.0.0.0:7"}"#,
            4.0,
        ),
        (
            r#"l3ns_socket_queue_overflow_total{namespace="web1",socket="3",local="0.0.0.0:7"}"#,
            2.0,
        ),
        (
            r#"l3ns_socket_received_packets_total{namespace="web1",socket="3",local="0.0.0.0:7"}"#,
            3.0,
        ),
        (
            r#"l3ns_socket_queue_depth{namespace="web2",socket="6",local="10.0.0.3:53"}"#,
            0.0,
        ),
        (r#"l3ns_port_rx_packets_total{port="eth0"}"#, 15.0),
        (r#"l3ns_port_rx_bytes_total{port="eth0"}"#, 640.0),
        (r#"l3ns_port_tx_packets_total{port="eth0"}"#, 6.0),
        (r#"l3ns_port_tx_bytes_total{port="eth0"}"#, 600.0),
        (r#"l3ns_port_rx_packets_total{port="eth1"}"#, 0.0),
        (
            r#"l3ns_port_dropped_packets_total{port="eth0",reason="bad_checksum"}"#,
            2.0,
        ),
        (
            r#"l3ns_port_dropped_packets_total{port="eth0",reason="unclaimed"}"#,
            0.0,
        ),
        (
            r#"l3ns_port_dropped_packets_total{port="eth1",reason="unclaimed"}"#,
            1.0,
        ),
        (r#"l3ns_arp_requests_answered_total{port="eth0"}"#, 1.0),
        (r#"l3ns_arp_requests_sent_total{port="eth0"}"#, 2.0),
        ("l3ns_neighbour_entries", 1.0),
        (r#"l3ns_icmp_unreachable_sent_total{port="eth0"}"#, 3.0),
        (
            r#"l3ns_icmp_unreachable_rate_limited_total{port="eth0"}"#,
            4.0,
        ),
        (r#"l3ns_worker_polls_total{worker="0",kind="busy"}"#, 10.0),
        (r#"l3ns_worker_polls_total{worker="0",kind="idle"}"#, 90.0),
        (r#"l3ns_worker_polls_total{worker="1",kind="busy"}"#, 1.0),
        (r#"l3ns_worker_polls_total{worker="1",kind="idle"}"#, 0.0),
        (r#"l3ns_worker_consumer_wakeups_total{worker="0"}"#, 0.0),
        (r#"l3ns_worker_consumer_wakeups_total{worker="1"}"#, 5.0),
        (
            r#"l3ns_control_operations_total{op="ns_add",result="ok"}"#,
            2.0,
        ),
        (
            r#"l3ns_control_operations_total{op="ns_add",result="error"}"#,
            1.0,
        ),
        ("l3ns_snapshot_version", 7.0),
        (
            r#"l3ns_snapshot_publish_seconds_bucket{le="0.000025"}"#,
            0.0,
        ),
        (r#"l3ns_snapshot_publish_seconds_bucket{le="0.00005"}"#, 1.0),
        (r#"l3ns_snapshot_publish_seconds_bucket{le="0.001"}"#, 1.0),
        (r#"l3ns_snapshot_publish_seconds_bucket{le="0.0025"}"#, 2.0),
        (r#"l3ns_snapshot_publish_seconds_bucket{le="+Inf"}"#, 2.0),
        ("l3ns_snapshot_publish_seconds_count", 2.0),
    ];
    for (k, v) in want {
        assert_eq!(s.get(*k), Some(v), "{k} in\n{text}");
    }
    assert!((s["l3ns_snapshot_publish_seconds_sum"] - 0.00203).abs() < 1e-9);
    // Every drop label of both kinds is present, even at zero.
    for why in PortDrop::all() {
        assert!(s.contains_key(&format!(
            r#"l3ns_port_dropped_packets_total{{port="eth1",reason="{}"}}"#,
            why.as_str()
        )));
    }
    for why in NsDrop::ALL {
        assert!(s.contains_key(&format!(
            r#"l3ns_namespace_dropped_packets_total{{namespace="root",reason="{}"}}"#,
            why.as_str()
        )));
    }
    // Every family is rendered, each with one HELP and one TYPE line of the right kind.
    for fam in FAMILIES {
        let ty = match fam.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert_eq!(
            text.matches(&format!("# HELP {} ", fam.name)).count(),
            1,
            "HELP of {}",
            fam.name
        );
        assert_eq!(
            text.matches(&format!("# TYPE {} {ty}\n", fam.name)).count(),
            1,
            "TYPE of {}",
            fam.name
        );
    }
    // And nothing is rendered that is not a declared family.
    for k in s.keys() {
        let name = k.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|x| name.strip_suffix(x))
            .filter(|b| *b == PUBLISH_SECONDS);
        assert!(
            FAMILIES.iter().any(|f| f.name == base.unwrap_or(name)),
            "undeclared series {k}"
        );
    }
    assert_eq!(text, f.source().render(), "rendering is stable");
}

#[test]
fn metrics_namespaces_past_the_cap_fold_into_other() {
    let f = Fixture::new();
    f.count();
    let text = f.source().with_namespace_cap(1).render();
    let s = samples(&text);
    assert_eq!(s["l3ns_namespace_labels_overflow"], 2.0);
    assert_eq!(
        s[r#"l3ns_namespace_delivered_packets_total{namespace="_other"}"#], 13.0,
        "web1's 4 + web2's 9"
    );
    assert_eq!(
        s[r#"l3ns_namespace_rx_packets_total{namespace="_other"}"#],
        5.0
    );
    assert_eq!(
        s[r#"l3ns_namespace_dropped_packets_total{namespace="_other",reason="queue_full"}"#],
        4.0
    );
    assert_eq!(
        s[r#"l3ns_namespace_dropped_packets_total{namespace="_other",reason="ns_gone"}"#],
        2.0
    );
    assert_eq!(
        s[r#"l3ns_namespace_delivered_packets_total{namespace="root"}"#], 0.0,
        "lowest id keeps its label"
    );
    assert_eq!(
        s[r#"l3ns_socket_queue_capacity{namespace="_other",socket="_other",local="_other"}"#],
        12.0
    );
    assert_eq!(
        s[r#"l3ns_socket_queue_overflow_total{namespace="_other",socket="_other",local="_other"}"#],
        2.0
    );
    assert!(!has_label(&text, r#"namespace="web1""#) && !has_label(&text, r#"namespace="web2""#));
    assert_eq!(
        s.keys()
            .filter(|k| k.starts_with("l3ns_namespace_info"))
            .count(),
        1,
        "info only for labelled namespaces"
    );
    assert_eq!(
        s[r#"l3ns_namespaces{level="l3"}"#], 2.0,
        "counts are not capped"
    );

    let none = samples(&f.source().with_namespace_cap(0).render());
    assert_eq!(none["l3ns_namespace_labels_overflow"], 3.0);
    assert_eq!(
        none[r#"l3ns_namespace_delivered_packets_total{namespace="_other"}"#],
        13.0
    );
    let all = f.source().render();
    assert_eq!(samples(&all)["l3ns_namespace_labels_overflow"], 0.0);
    assert!(
        !has_label(&all, "_other"),
        "no _other series when nothing is folded"
    );
}

#[test]
fn metrics_deleted_namespaces_series_disappear() {
    let f = Fixture::new();
    f.count();
    assert!(has_label(&f.source().render(), r#"namespace="web2""#));
    let mut t = (**f.shared.table.load()).clone();
    t.remove_namespace(WEB2);
    t.set_socket_queue(SocketId(6), None);
    t.set_version(8);
    f.shared.table.store(Arc::new(t));
    let text = f.source().render();
    assert!(!has_label(&text, "web2"), "{text}");
    let s = samples(&text);
    assert_eq!(
        s[r#"l3ns_namespace_delivered_packets_total{namespace="web1"}"#],
        4.0
    );
    assert_eq!(s[r#"l3ns_namespaces{level="l3"}"#], 1.0);
    assert_eq!(s["l3ns_snapshot_version"], 8.0);
}

#[test]
fn metrics_runtime_counts_operations_and_publishes() {
    let mut rt = Runtime::new(Model::default(), 1, vec!["eth0".into()], 16);
    rt.add_device("eth0", [2, 0, 0, 0, 0, 1]).unwrap();
    rt.apply("ns_add", |m| {
        m.ns_add(NsId::ROOT, "web1", None, LoopbackMode::Isolated)
    })
    .unwrap();
    assert!(rt
        .apply("ns_add", |m| m.ns_add(
            NsId::ROOT,
            "web1",
            None,
            LoopbackMode::Isolated
        ))
        .is_err());
    let s = samples(&MetricsSource::from_runtime(&rt).render());
    for ((op, result), n) in &rt.ops {
        assert_eq!(
            s[&format!(r#"l3ns_control_operations_total{{op="{op}",result="{result}"}}"#)],
            *n as f64
        );
    }
    assert_eq!(
        s[r#"l3ns_control_operations_total{op="ns_add",result="error"}"#],
        1.0
    );
    assert_eq!(
        s["l3ns_snapshot_publish_seconds_count"], 3.0,
        "the start-up build, dev_add and the first ns_add published"
    );
    assert_eq!(s["l3ns_snapshot_version"], rt.version() as f64);
    assert_eq!(
        s[r#"l3ns_namespace_info{namespace="web1",level="l3",parent="root",loopback="isolated"}"#],
        1.0
    );
}

#[test]
fn metrics_pass_promtool_check() {
    let f = Fixture::new();
    f.count();
    let empty = MetricsSource::new(
        Stats::new(1, Vec::new()),
        Fixture::new().shared,
        ControlMetrics::new(),
    );
    for (what, text) in [
        ("full", f.source().render()),
        ("folded", f.source().with_namespace_cap(1).render()),
        ("empty", empty.render()),
    ] {
        let out = match std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            Ok(mut child) => {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("SKIPPED metrics_pass_promtool_check: promtool is not on PATH (Debian: apt-get install prometheus)");
                return;
            }
            Err(e) => panic!("running promtool: {e}"),
        };
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool on the {what} output: {said}\n{text}"
        );
    }
}

/// One HTTP/1.1 exchange: (status line, headers, body).
fn http(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

#[test]
fn metrics_serve_answers_get_metrics_over_tcp() {
    let f = Fixture::new();
    f.count();
    let server = serve("127.0.0.1:0".parse().unwrap(), f.source()).unwrap();
    let addr = server.addr();
    assert_ne!(addr.port(), 0);

    let (status, headers, body) = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("Content-Length: {}", body.len())),
        "{headers}"
    );
    assert_eq!(
        samples(&body)[r#"l3ns_namespace_delivered_packets_total{namespace="web2"}"#],
        9.0
    );

    let (status, _, body) = http(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("# TYPE l3ns_snapshot_version gauge"));
    let (status, _, body) = http(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    assert_eq!(
        http(addr, "GET / HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        http(addr, "GET /metricsx HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );

    // A client that connects and says nothing does not stop the next one forever: its
    // request times out and the server moves on.
    let _silent = TcpStream::connect(addr).unwrap();
    let (status, _, _) = http(addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");

    // The thread sleeps in `accept`; stopping wakes it and waits for it.
    let t = Instant::now();
    server.stop();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener closed after stop"
    );
}

/// docs/METRICS.md documents every family, and the Grafana dashboard only queries families
/// that exist.
#[test]
fn metrics_docs_and_dashboard_match_the_families() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/METRICS.md")).unwrap();
    for f in FAMILIES {
        assert!(
            doc.contains(&format!("`{}`", f.name)),
            "docs/METRICS.md does not document {}",
            f.name
        );
    }
    let dash = std::fs::read_to_string(root.join("config/grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dash).expect("dashboard is JSON");
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let mut used = 0;
    for (i, _) in dash.match_indices("l3ns_") {
        let name: String = dash[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|x| name.strip_suffix(x))
            .unwrap_or(&name);
        assert!(
            FAMILIES.iter().any(|f| f.name == base || f.name == name),
            "dashboard queries unknown {name}"
        );
        used += 1;
    }
    assert!(used > 5);

    // Every panel query parses as PromQL (Grafana variables replaced by plain values).
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|x| collect(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
            _ => {}
        }
    }
    collect(&json, &mut exprs);
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$namespace", ".*")
            .replace("$port", ".*");
        rules.push_str(&format!(
            "  - record: l3ns:dashboard_{i}\n    expr: '{}'\n",
            e.replace('\'', "''")
        ));
    }
    let file =
        std::env::temp_dir().join(format!("l3ns-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    match std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "dashboard queries do not parse: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("SKIPPED dashboard PromQL check: promtool is not on PATH (Debian: apt-get install prometheus)")
        }
        Err(e) => panic!("running promtool: {e}"),
    }
    let _ = std::fs::remove_file(&file);
}
/// The default cap at scale: 12,003 namespaces, each with a socket; 10,000 keep their label.
#[test]
fn metrics_default_cap_folds_namespaces_past_ten_thousand() {
    let f = Fixture::new();
    let mut t = (**f.shared.table.load()).clone();
    for i in 3..12_003u32 {
        t.set_namespace(view(
            NsId(i),
            &format!("ns{i}"),
            Some(NsId::ROOT),
            &[(100 + i, [0, 0, 0, 0], 7)],
        ));
        t.set_socket_queue(
            SocketId(100 + i),
            Some(SocketQueue::new(4, f.shared.pools.clone())),
        );
    }
    f.shared.table.store(Arc::new(t));
    let mut w = f.stats.workers[0].writer();
    w.ns(NsId(9_999)).delivered.add(5);
    w.ns(NsId(10_000)).delivered.add(7);
    w.ns(NsId(12_002)).delivered.add(11);
    let text = f.source().render();
    let s = samples(&text);
    assert_eq!(s["l3ns_namespace_labels_overflow"], 2_003.0);
    assert_eq!(
        s[r#"l3ns_namespace_delivered_packets_total{namespace="ns9999"}"#],
        5.0
    );
    assert_eq!(
        s[r#"l3ns_namespace_delivered_packets_total{namespace="_other"}"#],
        18.0
    );
    assert!(!s.contains_key(r#"l3ns_namespace_delivered_packets_total{namespace="ns10000"}"#));
    assert_eq!(
        s.keys()
            .filter(|k| k.starts_with("l3ns_namespace_delivered_packets_total{"))
            .count(),
        10_001
    );
    assert_eq!(
        s[r#"l3ns_socket_queue_capacity{namespace="_other",socket="_other",local="_other"}"#],
        2_003.0 * 4.0
    );
    assert_eq!(
        s.keys()
            .filter(|k| k.starts_with("l3ns_socket_queue_depth{"))
            .count(),
        9_999 + 1,
        "web1, web2, ns3..=ns9999 and _other"
    );
}
