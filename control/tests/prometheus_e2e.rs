//! A real Prometheus server scrapes a real `l3nsd` (DESIGN, tests layer 4): the daemon's
//! memory-port generator sends a fixed number of frames — to web1, to web2, to a port nobody
//! listens on, and with a bad checksum — and the test asks Prometheus' HTTP API until the
//! scraped counters equal exactly what was sent. Skipped (with the reason printed) when the
//! `prometheus` binary is not installed. Both processes are killed by PID if the test fails;
//! every wait is bounded.

mod daemon_util;

use daemon_util::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

/// Frames per generator cycle: web1 ×3, web2 ×2, web2:53 (no socket) ×1, bad checksum ×1.
const CYCLES: u64 = 100;

fn config() -> String {
    config_with_port(
        &format!(
            r#"
[port.generator]
rate = 2000
count = {count}

[[port.generator.flow]]
src = "10.0.0.99:40001"
dst = "10.0.0.2:9"
weight = 3

[[port.generator.flow]]
src = "10.0.0.99:40002"
dst = "10.0.0.3:9"
weight = 2

[[port.generator.flow]]
src = "10.0.0.99:40003"
dst = "10.0.0.3:53"

[[port.generator.flow]]
kind = "bad_checksum"
src = "10.0.0.99:40004"
dst = "10.0.0.2:9"
"#,
            count = 7 * CYCLES
        ),
        r#"
[[namespace]]
name = "web1"

[[namespace]]
name = "web2"

[[address]]
address = "10.0.0.2/24"
dev = "mem0"
assign_to = "web1"

[[address]]
address = "10.0.0.3/24"
dev = "mem0"
assign_to = "web2"

[[socket]]
namespace = "web1"
bind = "0.0.0.0:9"
service = "sink"

[[socket]]
namespace = "web2"
bind = "0.0.0.0:9"
service = "sink"
"#,
    )
}

/// One GET over HTTP/1.0; the body.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

/// Prometheus' instant query for a bare metric name: (labels, value) per series.
fn query(prom: SocketAddr, metric: &str) -> Vec<(serde_json::Value, f64)> {
    let Some(body) = get(prom, &format!("/api/v1/query?query={metric}")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| {
                    let val = s["value"][1].as_str()?.parse().ok()?;
                    Some((s["metric"].clone(), val))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn value(series: &[(serde_json::Value, f64)], labels: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .find(|(m, _)| labels.iter().all(|(k, v)| m[*k] == *v))
        .map(|(_, v)| *v)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_scraped_by_real_prometheus_equal_what_was_sent() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED metrics_scraped_by_real_prometheus_equal_what_was_sent: the prometheus binary is not on PATH (Debian: apt-get install prometheus)");
        return;
    }
    let dir = TempDir::new("prometheus-e2e");
    let cfg = dir.path("l3nsd.toml");
    std::fs::write(&cfg, config()).unwrap();
    let ctl = dir.path("c.sock");
    let mut d = Guard::spawn(Command::new(L3NSD).args([
        "--config",
        cfg.to_str().unwrap(),
        "--control",
        ctl.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
        "--duration",
        &LIMIT.as_secs().to_string(),
    ]));
    // Keep reading l3nsd's output (so it never blocks on a full pipe) and find its address.
    let (tx, rx) = mpsc::channel();
    let stdout = d.0.as_mut().unwrap().stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics: SocketAddr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("l3nsd printed its metrics address");
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            break rest.trim_end_matches("/metrics").parse().unwrap();
        }
    };
    assert!(get(metrics, "/metrics").is_some_and(|b| b.contains("l3ns_snapshot_version")));

    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prom_cfg = dir.path("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: l3nsd\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let _prom = Guard::spawn(Command::new("prometheus").args([
        &format!("--config.file={}", prom_cfg.display()),
        &format!("--storage.tsdb.path={}", dir.path("tsdb").display()),
        &format!("--web.listen-address={prom_addr}"),
    ]));

    let want = |delivered: &[(serde_json::Value, f64)],
                dropped: &[(serde_json::Value, f64)],
                port: &[(serde_json::Value, f64)]| {
        [
            value(delivered, &[("namespace", "web1")]) == Some(3.0 * CYCLES as f64),
            value(delivered, &[("namespace", "web2")]) == Some(2.0 * CYCLES as f64),
            value(dropped, &[("namespace", "web2"), ("reason", "no_socket")])
                == Some(CYCLES as f64),
            value(dropped, &[("namespace", "web1"), ("reason", "no_socket")]) == Some(0.0),
            value(dropped, &[("namespace", "web1"), ("reason", "queue_full")]) == Some(0.0),
            value(port, &[("port", "mem0"), ("reason", "bad_checksum")]) == Some(CYCLES as f64),
            value(port, &[("port", "mem0"), ("reason", "unclaimed")]) == Some(0.0),
        ]
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = query(prom_addr, "l3ns_namespace_delivered_packets_total");
        let dropped = query(prom_addr, "l3ns_namespace_dropped_packets_total");
        let port = query(prom_addr, "l3ns_port_dropped_packets_total");
        let ok = want(&delivered, &dropped, &port);
        if ok.iter().all(|x| *x) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the expected counts: {ok:?}\ndelivered {delivered:?}\ndropped {dropped:?}\nport {port:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The start-up publish is timed, and a change made through l3nsctl shows up as an
    // operation, as a new snapshot version and as the new namespace's series.
    let publish = query(prom_addr, "l3ns_snapshot_publish_seconds_count");
    assert!(
        publish.first().is_some_and(|(_, v)| *v >= 1.0),
        "{publish:?}"
    );
    let version = query(prom_addr, "l3ns_snapshot_version");
    let before = version
        .first()
        .map(|(_, v)| *v)
        .expect("l3ns_snapshot_version scraped");
    let out = Command::new(env!("CARGO_BIN_EXE_l3nsctl"))
        .args(["--control", ctl.to_str().unwrap(), "ns", "add", "web9"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "l3nsctl: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    loop {
        let ops = query(prom_addr, "l3ns_control_operations_total");
        let version = query(prom_addr, "l3ns_snapshot_version");
        let info = query(prom_addr, "l3ns_namespace_info");
        if value(&ops, &[("op", "ns_add"), ("result", "ok")]) == Some(1.0)
            && version.first().is_some_and(|(_, v)| *v == before + 1.0)
            && value(
                &info,
                &[("namespace", "web9"), ("level", "l3"), ("parent", "root")],
            ) == Some(1.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the l3nsctl change never showed up:\nops {ops:?}\nversion {version:?} (before {before})\ninfo {info:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    d.terminate();
    d.wait(Duration::from_secs(20));
}
