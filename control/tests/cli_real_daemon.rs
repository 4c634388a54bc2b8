//! The real `l3nsd` binary (memory port, no root), driven only through the real `l3nsctl`
//! binary: every command of the interface contract (DESIGN.md) once, human and `--json`
//! output, and the errno cases of SEMANTICS.md with the exact stderr form, exit status 1 and
//! nothing changed (all or nothing). One daemon, started once; it is killed by PID if the
//! test fails and stopped with SIGTERM (clean exit) when it passes.
//!
//! The port's built-in generator plays a peer (10.0.0.99) that sends to web1's 10.0.0.2:7 and
//! web2's 10.0.0.3:9, where the test binds an echo and a sink through `l3nsctl`, so `stats`,
//! `sock list` and `top` show real traffic.

mod cli_harness;
mod daemon_util;

use cli_harness::{l3nsctl, wait_for, Out};
use daemon_util::{Guard, TempDir, L3NSD};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon may take to answer `status` after it was started.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long counters may take to move once a service is bound.
const TRAFFIC_DEADLINE: Duration = Duration::from_secs(20);
/// How long a SIGTERM'd daemon may take to exit.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// root keeps 10.0.0.1/24 and 10.0.0.4/24; web1 (L3) owns 10.0.0.2/24, web2 (L3) owns
/// 10.0.0.3/24 (label mem0:web2); one default route. No sockets: the test binds them.
fn config(control: &std::path::Path) -> String {
    format!(
        r#"[dataplane]
workers = 1
idle_sleep_us = 200
queue_depth = 64

[[port]]
name = "mem0"
backend = "memory"
mac = "02:00:00:00:00:01"

[port.generator]
rate = 300
peer_mac = "02:00:00:00:00:99"

[[port.generator.flow]]    # teaches the dataplane the peer's MAC, so echo answers leave
kind = "arp_request"
src = "10.0.0.99:0"
dst = "10.0.0.1:0"

[[port.generator.flow]]    # web1's echo (bound by the test)
src = "10.0.0.99:40001"
dst = "10.0.0.2:7"
payload = "hello web1"

[[port.generator.flow]]    # web2's sink (bound by the test)
src = "10.0.0.99:40002"
dst = "10.0.0.3:9"
payload = "to web2's sink"

[[namespace]]
name = "web1"

[[namespace]]
name = "web2"

[[address]]
address = "10.0.0.1/24"
dev = "mem0"

[[address]]
address = "10.0.0.2/24"
dev = "mem0"
assign_to = "web1"

[[address]]
address = "10.0.0.3/24"
dev = "mem0"
label = "mem0:web2"
assign_to = "web2"

[[address]]
address = "10.0.0.4/24"
dev = "mem0"

[[route]]
dst = "0.0.0.0/0"
via = "10.0.0.254"
dev = "mem0"

[control]
socket = "{control}"

[metrics]
listen = "off"
"#,
        control = control.display()
    )
}

/// The running `l3nsd`. Fields drop in order: the daemon is killed (by PID) before its
/// directory is removed.
struct RealDaemon {
    guard: Option<Guard>,
    dir: TempDir,
    control: PathBuf,
}

impl RealDaemon {
    fn start(name: &str) -> RealDaemon {
        let dir = TempDir::new(name);
        let control = dir.path("ctl.sock");
        let cfg = dir.path("l3nsd.toml");
        std::fs::write(&cfg, config(&control)).expect("write the configuration");
        let log = std::fs::File::create(dir.path("l3nsd.log")).expect("create the log");
        let child = Command::new(L3NSD)
            .arg("--config")
            .arg(&cfg)
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start l3nsd");
        let mut d = RealDaemon {
            guard: Some(Guard(Some(child))),
            dir,
            control,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if d.ctl(&["status"]).code == 0 {
                return d;
            }
            let child = d.guard.as_mut().unwrap().0.as_mut().unwrap();
            if let Some(st) = child.try_wait().expect("try_wait l3nsd") {
                panic!("l3nsd exited with {st} before answering:\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "l3nsd did not answer `status` within {START_DEADLINE:?}:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("l3nsd.log")).unwrap_or_default()
    }

    /// `l3nsctl --control CTL ARGS`.
    fn ctl(&self, args: &[&str]) -> Out {
        let c = self.control.to_str().unwrap();
        let mut v = vec!["--control", c];
        v.extend_from_slice(args);
        l3nsctl(&v)
    }

    /// `l3nsctl --control CTL --as NS ARGS`.
    fn ctl_as(&self, ns: &str, args: &[&str]) -> Out {
        let c = self.control.to_str().unwrap();
        let mut v = vec!["--control", c, "--as", ns];
        v.extend_from_slice(args);
        l3nsctl(&v)
    }

    /// `--json ARGS` as root; the `ok` value.
    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let mut v = vec!["--json"];
        v.extend_from_slice(args);
        self.ctl(&v).ok_json()
    }

    /// `--json ARGS` as NS; the `ok` value.
    #[track_caller]
    fn json_as(&self, ns: &str, args: &[&str]) -> Value {
        let mut v = vec!["--json"];
        v.extend_from_slice(args);
        self.ctl_as(ns, &v).ok_json()
    }

    /// SIGTERM, then a clean exit within the deadline.
    fn stop(mut self) {
        let g = self.guard.take().expect("running");
        g.terminate();
        let out = g.wait(STOP_DEADLINE);
        assert!(
            out.status.success(),
            "l3nsd exit: {}\n{}",
            out.status,
            self.log()
        );
    }
}

fn strs(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|x| {
            x[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} in {x}"))
                .to_string()
        })
        .collect()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

fn ifaddr(label: &str, local: &str, owner: &str) -> Value {
    json!({
        "dev": if label == "lo" { "lo" } else { "mem0" },
        "label": label,
        "local": local,
        "prefix": if label == "lo" { 8 } else { 24 },
        "broadcast": if label == "lo" { "127.255.255.255" } else { "10.0.0.255" },
        "scope": if label == "lo" { "host" } else { "global" },
        "owner": owner,
    })
}

/// The socket of `list` with `id`.
fn sock(list: &Value, id: u64) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no socket {id} in {list}"))
}

/// The counters of `ns` in a `stats --json` answer.
fn ns_stats(stats: &Value, ns: &str) -> Value {
    stats["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == ns)
        .cloned()
        .unwrap_or_else(|| panic!("no {ns} in {stats}"))
}

const SOCK_KEYS: [&str; 11] = [
    "addr",
    "depth",
    "high_water",
    "id",
    "namespace",
    "overflow",
    "port",
    "proto",
    "queued",
    "received",
    "service",
];

#[test]
fn real_l3nsd_every_command_and_every_errno_through_l3nsctl() {
    let d = RealDaemon::start("cli_real");
    every_command(&d);
    every_errno(&d);
    d.stop();
}

/// Every command of the contract once, on the real daemon.
fn every_command(d: &RealDaemon) {
    // version, status
    let v = d.json(&["version"]);
    assert_eq!(keys(&v), ["snapshot_version", "version"], "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let snap0 = v["snapshot_version"].as_u64().expect("a number");
    let t = d.ctl(&["version"]).ok().to_string();
    assert!(
        t.starts_with(&format!("l3nsctl {}\n", env!("CARGO_PKG_VERSION"))),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "l3nsd {}, snapshot version ",
            env!("CARGO_PKG_VERSION")
        )),
        "{t}"
    );
    let s = d.json(&["status"]);
    assert_eq!(
        keys(&s),
        [
            "identity",
            "namespaces",
            "ports",
            "snapshot_version",
            "sockets",
            "version",
            "workers"
        ]
    );
    assert_eq!(s["identity"], "root");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["workers"], 1);
    assert_eq!(s["ports"], json!(["mem0"]));
    assert_eq!(s["namespaces"], 3);
    assert_eq!(s["sockets"], 0);
    let s = d.json_as("web1", &["status"]);
    assert_eq!(s["identity"], "web1");
    assert_eq!(s["namespaces"], 1, "an L3 sees only itself");
    let t = d.ctl(&["status"]).ok().to_string();
    for l in [
        "identity:",
        "snapshot_version:",
        "workers:",
        "ports:",
        "namespaces:",
        "sockets:",
    ] {
        assert!(t.lines().any(|x| x.starts_with(l)), "{l} in {t}");
    }
    assert!(
        t.lines()
            .any(|x| x.starts_with("ports:") && x.ends_with(" mem0")),
        "{t}"
    );

    // dev list (R2: an L3 child uses its parent's devices)
    let v = d.json(&["dev", "list"]);
    assert_eq!(strs(&v, "name"), ["lo", "mem0"], "{v}");
    assert_eq!(
        v[1],
        json!({"name": "mem0", "mac": "02:00:00:00:00:01", "namespace": "root"})
    );
    assert_eq!(v[0]["namespace"], "root");
    assert_eq!(d.json_as("web2", &["dev", "list"]), v);
    let t = d.ctl(&["dev", "list"]).ok().to_string();
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("MAC"),
        "{t}"
    );
    assert_eq!(lines.len(), 3, "{t}");
    assert!(
        lines[2].starts_with("mem0 ") && lines[2].contains("02:00:00:00:00:01"),
        "{t}"
    );

    // ns list, ns add, ns info
    let v = d.json(&["ns", "list"]);
    assert_eq!(strs(&v, "name"), ["root", "web1", "web2"], "{v}");
    assert_eq!(strs(&v, "level"), ["l2", "l3", "l3"]);
    assert_eq!(v[0]["parent"], Value::Null);
    assert_eq!(v[0]["children"], json!(["web1", "web2"]));
    assert_eq!(
        v[0]["addresses"], 2,
        "10.0.0.1 and 10.0.0.4 (lo not counted)"
    );
    assert_eq!(v[1]["parent"], "root");
    assert_eq!(v[1]["addresses"], 1);
    assert_eq!(v[2]["addresses"], 1);
    let t = d.ctl(&["ns", "list"]).ok().to_string();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 4, "{t}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LEVEL") && lines[0].contains("PARENT"),
        "{t}"
    );
    assert!(
        lines[1].starts_with("root ") && lines[1].contains("L2"),
        "{t}"
    );
    assert!(
        lines[2].starts_with("web1 ") && lines[2].contains("L3"),
        "{t}"
    );

    let v = d.json(&["ns", "add", "web3", "--loopback", "shared"]);
    let id = v["id"].clone();
    assert!(id.is_u64(), "{v}");
    assert_eq!(
        v,
        json!({
            "id": id,
            "name": "web3",
            "level": "l3",
            "parent": "root",
            "net_admin": false,
            "loopback": "shared",
            "children": [],
            "addresses": 0,
            "sockets": 0,
        })
    );
    assert_eq!(d.json(&["ns", "info", "web3"]), v);
    let v = d.json(&["ns", "info", "root"]);
    assert_eq!(v["level"], "l2");
    assert_eq!(v["net_admin"], true);
    assert_eq!(v["loopback"], "isolated");
    assert_eq!(v["children"], json!(["web1", "web2", "web3"]));
    let t = d.ctl(&["ns", "info", "web3"]).ok().to_string();
    for (k, val) in [
        ("name:", "web3"),
        ("level:", "L3"),
        ("parent:", "root"),
        ("net_admin:", "false"),
        ("loopback:", "shared"),
        ("children:", "-"),
    ] {
        assert!(
            t.lines()
                .any(|l| l.starts_with(k) && l.split_whitespace().nth(1) == Some(val)),
            "{k} {val} in {t}"
        );
    }
    let v = d.json(&["version"]);
    assert!(
        v["snapshot_version"].as_u64().unwrap() > snap0,
        "a change publishes a new snapshot: {v}"
    );

    // addr show, add, push, show --all, pull, del
    let root_view = json!([
        ifaddr("lo", "127.0.0.1", "root"),
        ifaddr("mem0", "10.0.0.1", "root"),
        ifaddr("mem0", "10.0.0.4", "root"),
    ]);
    assert_eq!(d.json(&["addr", "show"]), root_view);
    assert_eq!(
        d.json_as("web2", &["addr", "show"]),
        json!([
            ifaddr("lo", "127.0.0.1", "web2"),
            ifaddr("mem0:web2", "10.0.0.3", "web2"),
        ]),
        "R6: an L3 sees exactly what it owns, plus lo"
    );
    let a = d.json(&[
        "addr",
        "add",
        "10.0.0.5/24",
        "dev",
        "mem0",
        "label",
        "mem0:five",
    ]);
    assert_eq!(a, ifaddr("mem0:five", "10.0.0.5", "root"));
    let p = d.ctl(&["addr", "push", "10.0.0.5", "dev", "mem0", "--to", "web3"]);
    assert_eq!(p.ok(), "", "a change prints nothing: {p:?}");
    assert_eq!(
        d.json(&["addr", "show"]),
        root_view,
        "R4: the address moved"
    );
    assert_eq!(
        d.json_as("web3", &["addr", "show"]),
        json!([
            ifaddr("lo", "127.0.0.1", "web3"),
            ifaddr("mem0:five", "10.0.0.5", "web3"),
        ])
    );
    let all = d.json(&["addr", "show", "--all"]);
    let mut want = vec![
        ifaddr("lo", "127.0.0.1", "root"),
        ifaddr("mem0", "10.0.0.1", "root"),
        ifaddr("mem0", "10.0.0.2", "web1"),
        ifaddr("mem0:web2", "10.0.0.3", "web2"),
        ifaddr("mem0", "10.0.0.4", "root"),
        ifaddr("mem0:five", "10.0.0.5", "web3"),
    ];
    let mut got = all.as_array().unwrap().clone();
    let by_local = |x: &Value| {
        let ip: std::net::Ipv4Addr = x["local"].as_str().unwrap().parse().unwrap();
        u32::from(ip)
    };
    got.sort_by_key(by_local);
    want.sort_by_key(by_local);
    assert_eq!(got, want, "{all}");
    let t = d.ctl(&["addr", "show", "--all"]).ok().to_string();
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("LABEL") && lines[0].ends_with("OWNER"),
        "{t}"
    );
    assert_eq!(lines.len(), 7, "{t}");
    assert!(
        lines.iter().any(|l| l.starts_with("mem0:five ")
            && l.contains("10.0.0.5/24")
            && l.ends_with("web3")),
        "{t}"
    );
    let t = d.ctl(&["addr", "show"]).ok().to_string();
    assert!(
        t.starts_with("LABEL") && !t.contains("OWNER") && !t.contains("10.0.0.5"),
        "{t}"
    );
    let p = d.json(&["addr", "pull", "10.0.0.5", "dev", "mem0", "--from", "web3"]);
    assert_eq!(p, ifaddr("mem0:five", "10.0.0.5", "root"));
    let del = d.json(&["addr", "del", "10.0.0.5", "dev", "mem0"]);
    assert_eq!(del, json!({"deleted": "10.0.0.5", "dev": "mem0"}));
    assert_eq!(d.json(&["addr", "show"]), root_view);

    // route add, list, del (R2: an L3 child sees its parent's routes)
    let r = d.json(&["route", "add", "192.168.7.0/24", "dev", "mem0"]);
    assert_eq!(
        r,
        json!({"dst": "192.168.7.0/24", "via": null, "dev": "mem0", "scope": "link"})
    );
    let r = d.ctl(&[
        "route",
        "add",
        "10.8.0.0/16",
        "via",
        "10.0.0.254",
        "dev",
        "mem0",
    ]);
    assert_eq!(r.ok(), "");
    let default_route =
        json!({"dst": "0.0.0.0/0", "via": "10.0.0.254", "dev": "mem0", "scope": "global"});
    let routes = d.json(&["route", "list"]);
    let mut dsts = strs(&routes, "dst");
    dsts.sort();
    assert_eq!(
        dsts,
        ["0.0.0.0/0", "10.8.0.0/16", "192.168.7.0/24"],
        "{routes}"
    );
    let find = |dst: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dst"] == dst)
            .cloned()
            .unwrap()
    };
    assert_eq!(find("0.0.0.0/0"), default_route);
    assert_eq!(
        find("10.8.0.0/16"),
        json!({"dst": "10.8.0.0/16", "via": "10.0.0.254", "dev": "mem0", "scope": "global"})
    );
    assert_eq!(d.json_as("web1", &["route", "list"]), routes);
    let t = d.ctl(&["route", "list"]).ok().to_string();
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("DESTINATION") && lines[0].contains("VIA"),
        "{t}"
    );
    assert_eq!(lines.len(), 4, "{t}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("192.168.7.0/24 ") && l.contains(" - ") && l.ends_with("link")),
        "{t}"
    );
    assert_eq!(
        d.json(&["route", "del", "192.168.7.0/24"]),
        json!({"deleted": "192.168.7.0/24"})
    );
    d.ctl(&["route", "del", "10.8.0.0/16"]).ok();
    assert_eq!(d.json(&["route", "list"]), json!([default_route]));

    // sock bind (echo, sink), traffic, sock list, stats, top, sock close
    let out = d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "0.0.0.0:7", "--service", "echo"],
    );
    let line = out.ok().to_string();
    let echo_id: u64 = line
        .strip_prefix("socket ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("socket ID: ... : {out:?}"));
    assert_eq!(
        line,
        format!("socket {echo_id}: udp 0.0.0.0:7 in web1, service echo\n")
    );
    let s = d.json_as(
        "web2",
        &["sock", "bind", "udp", "10.0.0.3:9", "--service", "sink"],
    );
    assert_eq!(keys(&s), SOCK_KEYS, "{s}");
    let sink_id = s["id"].as_u64().unwrap();
    assert_ne!(sink_id, echo_id);
    assert_eq!(s["namespace"], "web2");
    assert_eq!(s["proto"], "udp");
    assert_eq!(s["addr"], "10.0.0.3");
    assert_eq!(s["port"], 9);
    assert_eq!(s["service"], "sink");
    assert_eq!(s["depth"], 64, "[dataplane] queue_depth");

    // The generator's datagrams reach both services; the echo answers leave.
    let list = wait_for(TRAFFIC_DEADLINE, || {
        let v = d.json(&["sock", "list"]);
        let ok = [echo_id, sink_id]
            .iter()
            .all(|&id| sock(&v, id)["received"].as_u64().unwrap() > 0);
        ok.then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "the services receive the generator's datagrams: {}",
            d.ctl(&["sock", "list"]).stdout
        )
    });
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let e = sock(&list, echo_id);
    assert_eq!(keys(&e), SOCK_KEYS);
    assert_eq!(
        (&e["namespace"], &e["addr"], &e["port"], &e["service"]),
        (&json!("web1"), &json!("0.0.0.0"), &json!(7), &json!("echo"))
    );
    assert_eq!(e["overflow"], 0);
    let v = d.json_as("web1", &["sock", "list"]);
    assert_eq!(strs(&v, "namespace"), ["web1"], "an L3 sees only its own");
    let t = d.ctl(&["sock", "list"]).ok().to_string();
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("ID")
            && lines[0].contains("SERVICE")
            && lines[0].ends_with("RECEIVED"),
        "{t}"
    );
    assert_eq!(lines.len(), 3, "{t}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" web2 ") && l.contains(" 10.0.0.3 ") && l.contains(" sink ")),
        "{t}"
    );

    let stats = wait_for(TRAFFIC_DEADLINE, || {
        let v = d.json(&["stats"]);
        let w1 = ns_stats(&v, "web1");
        (w1["delivered"].as_u64().unwrap() > 0 && w1["tx_packets"].as_u64().unwrap() > 0)
            .then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "web1 receives and its echo transmits: {}",
            d.ctl(&["stats"]).stdout
        )
    });
    assert_eq!(
        strs(&stats["namespaces"], "namespace"),
        ["root", "web1", "web2", "web3"],
        "{stats}"
    );
    assert_eq!(
        keys(&stats["namespaces"][0]),
        [
            "broadcast_delivered",
            "delivered",
            "dropped_no_socket",
            "dropped_ns_gone",
            "dropped_queue_full",
            "icmp_echo_replied",
            "namespace",
            "rx_bytes",
            "rx_packets",
            "tx_bytes",
            "tx_packets",
            "tx_spoofed",
        ]
    );
    let w1 = ns_stats(&stats, "web1");
    assert!(w1["rx_packets"].as_u64().unwrap() >= w1["delivered"].as_u64().unwrap());
    assert!(w1["rx_bytes"].as_u64().unwrap() > 0 && w1["tx_bytes"].as_u64().unwrap() > 0);
    assert_eq!(w1["tx_spoofed"], 0);
    let w3 = ns_stats(&stats, "web3");
    assert_eq!(w3["rx_packets"], 0, "nobody sends to web3: {stats}");
    assert_eq!(strs(&stats["ports"], "port"), ["mem0"]);
    assert!(stats["ports"][0]["rx_packets"].as_u64().unwrap() > 0);
    assert!(stats["ports"][0]["tx_packets"].as_u64().unwrap() > 0);
    let v = d.json(&["stats", "--ns", "web2"]);
    assert_eq!(strs(&v["namespaces"], "namespace"), ["web2"]);
    assert!(v["namespaces"][0]["delivered"].as_u64().unwrap() > 0, "{v}");
    let v = d.json_as("web1", &["stats"]);
    assert_eq!(strs(&v["namespaces"], "namespace"), ["web1"]);
    assert!(v.get("ports").is_none(), "ports are for L2 only: {v}");
    let t = d.ctl(&["stats"]).ok().to_string();
    assert!(
        t.starts_with("NAMESPACE") && t.contains("DELIVERED") && t.contains("\nPORT"),
        "{t}"
    );
    assert!(t.lines().any(|l| l.starts_with("mem0 ")), "{t}");
    // --ns keeps one namespace row; an L2 identity still gets the port table.
    let t = d.ctl(&["stats", "--ns", "web1"]).ok().to_string();
    let (ns_table, ports) = t.split_once("\n\n").unwrap_or((&t, ""));
    let rows: Vec<&str> = ns_table.lines().collect();
    assert_eq!(rows.len(), 2, "{t}");
    assert!(
        rows[0].starts_with("NAMESPACE") && rows[1].starts_with("web1 "),
        "{t}"
    );
    assert!(
        ports.starts_with("PORT") && ports.contains("\nmem0 "),
        "{t}"
    );
    let t = d.ctl_as("web1", &["stats"]).ok().to_string();
    assert_eq!(
        t.lines().count(),
        2,
        "an L3 gets its own row and no ports: {t}"
    );
    assert!(t.lines().nth(1).unwrap().starts_with("web1 "), "{t}");

    // top --once: web1 (rx and echo tx) is the busiest. Sampled again (bounded) if the
    // worker was descheduled for a whole interval.
    let rows = wait_for(TRAFFIC_DEADLINE, || {
        let v = d.json(&["top", "--once", "--interval", "0.5"]);
        (v[0]["namespace"] == "web1" && v[0]["rx_pps"].as_f64().unwrap() > 0.0).then_some(v)
    })
    .expect("top shows web1 busiest");
    let mut names = strs(&rows, "namespace");
    names.sort();
    assert_eq!(names, ["root", "web1", "web2", "web3"], "{rows}");
    assert!(rows[0]["tx_pps"].as_f64().unwrap() > 0.0, "{rows}");
    assert!(rows[0]["delivered_ps"].as_f64().unwrap() > 0.0, "{rows}");
    let t = d
        .ctl(&["top", "--once", "--interval", "0.1"])
        .ok()
        .to_string();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("l3ns top: 4 namespaces"), "{t}");
    assert!(
        lines[1].starts_with("NAMESPACE") && lines[1].contains("RX_PPS"),
        "{t}"
    );
    // The header, the table's head, four namespaces; a blank line; the one worker's table,
    // which this (real) worker polls.
    assert_eq!(lines.len(), 9, "{t}");
    assert!(lines[7].starts_with("WORKER"), "{t}");
    assert!(lines[8].trim_start().starts_with('0'), "{t}");

    // sock close; ns del
    let c = d.json(&["sock", "close", &sink_id.to_string()]);
    assert_eq!(c, json!({"closed": sink_id}));
    assert_eq!(
        d.ctl_as("web1", &["sock", "close", &echo_id.to_string()])
            .ok(),
        ""
    );
    assert_eq!(d.json(&["sock", "list"]), json!([]));
    let v = d.json(&["ns", "del", "web3"]);
    assert_eq!(v, json!({"deleted": "web3", "closed_sockets": []}));
    assert_eq!(
        strs(&d.json(&["ns", "list"]), "name"),
        ["root", "web1", "web2"]
    );
}

/// What a refused request must leave alone: every ifaddr with its owner, plus namespaces
/// and routes.
fn world(d: &RealDaemon) -> Value {
    json!({
        "addrs": d.json(&["addr", "show", "--all"]),
        "ns": d.json(&["ns", "list"]),
        "routes": d.json(&["route", "list"]),
    })
}

/// Runs `args` (as `as_ns`, or root), expects `errno` in the exact form with exit status 1
/// and nothing changed; returns the sentence.
#[track_caller]
fn refused(d: &RealDaemon, as_ns: Option<&str>, args: &[&str], errno: &str) -> String {
    let before = world(d);
    let out = match as_ns {
        Some(ns) => d.ctl_as(ns, args),
        None => d.ctl(args),
    };
    let sentence = out.errno(errno).to_string();
    assert_eq!(out.stdout, "", "nothing on stdout: {out:?}");
    assert_eq!(
        out.stderr,
        format!("l3nsctl: {errno}: {sentence}\n"),
        "{out:?}"
    );
    assert_eq!(
        world(d),
        before,
        "all or nothing: {as_ns:?} {args:?} changed something"
    );
    sentence
}

/// The errno cases of SEMANTICS.md through the CLI.
fn every_errno(d: &RealDaemon) {
    // A nested L2 parent with an L3 child, for EBUSY.
    d.ctl(&["ns", "add", "lab", "--l2"]).ok();
    d.ctl(&["ns", "add", "lab1", "--parent", "lab"]).ok();

    // R1-R4: an L3 identity holds no NET_ADMIN.
    let l3_cases: &[&[&str]] = &[
        &["addr", "push", "10.0.0.2", "dev", "mem0", "--to", "web2"],
        &["addr", "pull", "10.0.0.3", "dev", "mem0", "--from", "web2"],
        &["ns", "add", "child"],
        &["addr", "add", "10.0.0.9/24", "dev", "mem0"],
        &[
            "route",
            "add",
            "10.9.0.0/16",
            "via",
            "10.0.0.254",
            "dev",
            "mem0",
        ],
    ];
    for c in l3_cases {
        let s = refused(d, Some("web1"), c, "EPERM");
        assert!(s.contains("web1"), "names the namespace: {s}");
    }

    // R1: unknown namespace.
    let s = refused(d, None, &["ns", "info", "nosuch"], "ENOENT");
    assert!(s.contains("nosuch"), "{s}");
    refused(d, None, &["ns", "del", "nosuch"], "ENOENT");
    refused(
        d,
        None,
        &["addr", "push", "10.0.0.4", "dev", "mem0", "--to", "nosuch"],
        "ENOENT",
    );
    refused(d, Some("nosuch"), &["ns", "list"], "ENOENT");

    // R1: duplicate names, R3: the same local address twice.
    let s = refused(d, None, &["ns", "add", "web1"], "EEXIST");
    assert!(s.contains("web1"), "{s}");
    refused(d, None, &["ns", "add", "lab1"], "EEXIST");
    refused(
        d,
        None,
        &["addr", "add", "10.0.0.1/24", "dev", "mem0"],
        "EEXIST",
    );

    // R1: bad names.
    let long = "n".repeat(33);
    for bad in ["Web4", "a b", "_x", "x!", long.as_str()] {
        let s = refused(d, None, &["ns", "add", bad], "EINVAL");
        assert!(s.contains("R1"), "{bad:?}: {s}");
    }

    // R2, R4: unknown device.
    let s = refused(
        d,
        None,
        &["addr", "add", "10.1.0.1/24", "dev", "eth9"],
        "ENODEV",
    );
    assert!(s.contains("eth9"), "{s}");
    refused(
        d,
        None,
        &["addr", "push", "10.0.0.4", "dev", "eth9", "--to", "web1"],
        "ENODEV",
    );
    refused(
        d,
        None,
        &["route", "add", "10.9.0.0/16", "dev", "eth9"],
        "ENODEV",
    );

    // R5: a namespace with children.
    let s = refused(d, None, &["ns", "del", "lab"], "EBUSY");
    assert!(s.contains("lab1"), "names the child: {s}");

    // R4: pushing an address the caller does not own (web2 owns 10.0.0.3; nobody 10.0.0.9).
    refused(
        d,
        None,
        &["addr", "push", "10.0.0.3", "dev", "mem0", "--to", "web1"],
        "EADDRNOTAVAIL",
    );
    refused(
        d,
        None,
        &["addr", "push", "10.0.0.9", "dev", "mem0", "--to", "web1"],
        "EADDRNOTAVAIL",
    );

    // R7: binding another namespace's address.
    let socks_before = strs(&d.json(&["sock", "list"]), "namespace");
    let s = refused(
        d,
        Some("web1"),
        &["sock", "bind", "udp", "10.0.0.3:53", "--service", "echo"],
        "EADDRNOTAVAIL",
    );
    assert!(s.contains("R7"), "{s}");
    refused(
        d,
        Some("web2"),
        &["sock", "bind", "udp", "10.0.0.4:53", "--service", "sink"],
        "EADDRNOTAVAIL",
    );
    assert_eq!(strs(&d.json(&["sock", "list"]), "namespace"), socks_before);

    // R7: the same bind twice in one namespace; the refused one leaves no socket.
    let first = d.json_as(
        "web1",
        &["sock", "bind", "udp", "10.0.0.2:5353", "--service", "sink"],
    );
    let s = refused(
        d,
        Some("web1"),
        &["sock", "bind", "udp", "10.0.0.2:5353", "--service", "sink"],
        "EADDRINUSE",
    );
    assert!(s.contains("5353"), "{s}");
    let v = d.json(&["sock", "list"]);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["id"], first["id"]);

    // R7: across namespaces binds never conflict: web1 and web2 both on 0.0.0.0:53.
    let a = d.json_as(
        "web1",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
    );
    let b = d.json_as(
        "web2",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
    );
    for (s, ns) in [(&a, "web1"), (&b, "web2")] {
        assert_eq!(
            (&s["namespace"], &s["addr"], &s["port"], &s["service"]),
            (&json!(ns), &json!("0.0.0.0"), &json!(53), &json!("echo")),
            "{s}"
        );
    }
    let v = d.json(&["sock", "list"]);
    let mut on53: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["port"] == 53)
        .map(|s| s["namespace"].as_str().unwrap().to_string())
        .collect();
    on53.sort();
    assert_eq!(on53, ["web1", "web2"], "{v}");

    // `--json` errors carry the same errno and sentence.
    let before = world(d);
    let out = d.ctl_as(
        "web1",
        &[
            "--json", "addr", "push", "10.0.0.2", "dev", "mem0", "--to", "web2",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let v = out.json();
    assert_eq!(v["error"]["errno"], "EPERM", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert_eq!(out.stderr, format!("l3nsctl: EPERM: {msg}\n"));
    assert_eq!(world(d), before);

    // Clean up the nested family: children first.
    d.ctl(&["ns", "del", "lab1"]).ok();
    assert_eq!(d.json(&["ns", "del", "lab"])["deleted"], "lab");
}
