//! Every command of the interface contract (DESIGN.md), through the real `l3nsctl` binary:
//! human tables and `--json` results.

mod cli_harness;

use cli_harness::{l3nsctl, wait_for, Daemon};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|x| x[key].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ns_add_list_info_del() {
    let d = Daemon::start("ns_cmds");
    assert_eq!(d.ctl(&["ns", "add", "web1"]).ok(), "");
    let v = d
        .ctl(&["--json", "ns", "add", "web2", "--loopback", "shared"])
        .ok_json();
    assert_eq!(v["name"], "web2");
    assert_eq!(v["level"], "l3");
    assert_eq!(v["parent"], "root");
    assert_eq!(v["loopback"], "shared");
    d.ctl(&["ns", "add", "db", "--parent", "root"]).ok();

    let list = d.ctl(&["--json", "ns", "list"]).ok_json();
    assert_eq!(names(&list, "name"), ["root", "web1", "web2", "db"]);
    let table = d.ctl(&["ns", "list"]).ok().to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[0].contains("LEVEL") && lines[0].contains("LOOPBACK"),
        "{table}"
    );
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[1].starts_with("root ") && lines[1].contains("L2"),
        "{table}"
    );
    assert!(
        lines[3].contains("web2") && lines[3].contains("shared"),
        "{table}"
    );
    // Columns are aligned: every row has its LEVEL at the same offset.
    let col = lines[0].find("LEVEL").unwrap();
    for l in &lines[1..] {
        assert!(
            &l[col..col + 2] == "L2" || &l[col..col + 2] == "L3",
            "{table}"
        );
    }

    let info = d.ctl(&["--json", "ns", "info", "root"]).ok_json();
    assert_eq!(info["children"], serde_json::json!(["web1", "web2", "db"]));
    assert_eq!(info["net_admin"], true);
    let text = d.ctl(&["ns", "info", "web1"]).ok().to_string();
    assert!(text.contains("level:") && text.contains("L3"), "{text}");
    assert!(text.contains("parent:") && text.contains("root"), "{text}");

    let del = d.ctl(&["--json", "ns", "del", "db"]).ok_json();
    assert_eq!(del["deleted"], "db");
    let list = d.ctl(&["--json", "ns", "list"]).ok_json();
    assert_eq!(names(&list, "name"), ["root", "web1", "web2"]);
}

#[test]
fn dev_list_shows_lo_and_the_port() {
    let d = Daemon::start("dev_list").with_two_tenants();
    let v = d.ctl(&["--json", "dev", "list"]).ok_json();
    assert_eq!(names(&v, "name"), ["lo", "eth0"]);
    assert_eq!(v[1]["mac"], "02:00:00:00:00:01");
    assert_eq!(v[1]["namespace"], "root");
    // R2: an L3 child uses its parent's devices.
    let v = d.ctl_as("web1", &["--json", "dev", "list"]).ok_json();
    assert_eq!(names(&v, "name"), ["lo", "eth0"]);
    let t = d.ctl(&["dev", "list"]).ok().to_string();
    assert!(
        t.starts_with("NAME") && t.contains("eth0") && t.contains("02:00:00:00:00:01"),
        "{t}"
    );
}

#[test]
fn addr_add_show_push_pull_del() {
    let d = Daemon::start("addr_cmds");
    d.ctl(&["ns", "add", "web1"]).ok();
    let a = d
        .ctl(&[
            "--json",
            "addr",
            "add",
            "10.0.0.2/24",
            "dev",
            "eth0",
            "label",
            "eth0:web",
            "broadcast",
            "10.0.0.255",
            "scope",
            "link",
        ])
        .ok_json();
    assert_eq!(a["label"], "eth0:web");
    assert_eq!(a["local"], "10.0.0.2");
    assert_eq!(a["prefix"], 24);
    assert_eq!(a["scope"], "link");
    assert_eq!(a["owner"], "root");
    d.ctl(&["addr", "add", "10.0.0.1/24", "dev", "eth0"]).ok();
    let v = d.ctl(&["--json", "addr", "show"]).ok_json();
    assert_eq!(names(&v, "local"), ["127.0.0.1", "10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        v[1]["broadcast"], "10.0.0.255",
        "R3: directed broadcast by default"
    );

    // R4: push moves it; the parent no longer sees it.
    let p = d
        .ctl(&[
            "--json", "addr", "push", "10.0.0.2", "dev", "eth0", "label", "eth0:web", "--to",
            "web1",
        ])
        .ok_json();
    assert_eq!(p["owner"], "web1");
    let v = d.ctl(&["--json", "addr", "show"]).ok_json();
    assert_eq!(names(&v, "local"), ["127.0.0.1", "10.0.0.1"]);
    let v = d.ctl_as("web1", &["--json", "addr", "show"]).ok_json();
    assert_eq!(names(&v, "local"), ["127.0.0.1", "10.0.0.2"]);
    let all = d.ctl(&["--json", "addr", "show", "--all"]).ok_json();
    assert_eq!(names(&all, "owner"), ["root", "root", "web1"]);
    let t = d.ctl(&["addr", "show", "--all"]).ok().to_string();
    assert!(t.lines().next().unwrap().ends_with("OWNER"), "{t}");
    assert!(t.contains("10.0.0.2/24") && t.contains("web1"), "{t}");

    // Pull it back (contract form without a label) and delete it.
    let p = d
        .ctl(&[
            "--json", "addr", "pull", "10.0.0.2", "dev", "eth0", "--from", "web1",
        ])
        .ok_json();
    assert_eq!(p["owner"], "root");
    d.ctl(&["addr", "del", "10.0.0.2", "dev", "eth0"]).ok();
    let v = d.ctl(&["--json", "addr", "show", "--all"]).ok_json();
    assert_eq!(names(&v, "local"), ["127.0.0.1", "10.0.0.1"]);
}

#[test]
fn route_add_list_del() {
    let d = Daemon::start("route_cmds").with_two_tenants();
    let r = d
        .ctl(&[
            "--json",
            "route",
            "add",
            "0.0.0.0/0",
            "via",
            "10.0.0.254",
            "dev",
            "eth0",
        ])
        .ok_json();
    assert_eq!(r["dst"], "0.0.0.0/0");
    assert_eq!(r["via"], "10.0.0.254");
    assert_eq!(r["scope"], "global");
    let r = d
        .ctl(&["--json", "route", "add", "192.168.7.0/24", "dev", "eth0"])
        .ok_json();
    assert_eq!(r["via"], Value::Null);
    assert_eq!(r["scope"], "link", "a connected route has link scope");
    let v = d.ctl(&["--json", "route", "list"]).ok_json();
    assert_eq!(names(&v, "dst"), ["0.0.0.0/0", "192.168.7.0/24"]);
    // R2: an L3 child sees its parent's routes.
    let v = d.ctl_as("web1", &["--json", "route", "list"]).ok_json();
    assert_eq!(names(&v, "dst"), ["0.0.0.0/0", "192.168.7.0/24"]);
    let t = d.ctl(&["route", "list"]).ok().to_string();
    assert!(
        t.starts_with("DESTINATION") && t.contains("10.0.0.254"),
        "{t}"
    );
    d.ctl(&["route", "del", "192.168.7.0/24"]).ok();
    let v = d.ctl(&["--json", "route", "list"]).ok_json();
    assert_eq!(names(&v, "dst"), ["0.0.0.0/0"]);
}

#[test]
fn sock_bind_list_close_start_and_stop_services() {
    let d = Daemon::start("sock_cmds").with_two_tenants();
    let out = d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
    );
    assert!(
        out.ok()
            .starts_with("socket 1: udp 0.0.0.0:53 in web1, service echo"),
        "{out:?}"
    );
    let s = d
        .ctl_as(
            "web2",
            &[
                "--json",
                "sock",
                "bind",
                "udp",
                "10.0.0.3:7",
                "--service",
                "sink",
            ],
        )
        .ok_json();
    assert_eq!(s["id"], 2);
    assert_eq!(s["namespace"], "web2");
    assert_eq!(s["depth"], 64);
    d.ctl(&[
        "sock",
        "bind",
        "udp",
        "127.0.0.1:9",
        "--service",
        "attach:/tmp/x.sock",
    ])
    .ok();
    assert_eq!(
        d.events(),
        ["start 1 echo", "start 2 sink", "start 3 attach:/tmp/x.sock"]
    );

    let v = d.ctl(&["--json", "sock", "list"]).ok_json();
    assert_eq!(names(&v, "namespace"), ["root", "web1", "web2"]);
    let v = d.ctl_as("web1", &["--json", "sock", "list"]).ok_json();
    assert_eq!(
        names(&v, "namespace"),
        ["web1"],
        "an L3 sees only its own sockets"
    );

    // Queue depth and overflow are visible: fill web2's sink queue (no consumer in tests).
    for i in 0..80u8 {
        d.inject_udp(Ipv4Addr::new(10, 0, 0, 3), 7, &[i]);
    }
    let q = wait_for(Duration::from_secs(10), || {
        let v = d.ctl(&["--json", "sock", "list"]).ok_json();
        let s = v
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == 2)
            .cloned()
            .unwrap();
        (s["queued"].as_u64().unwrap() + s["overflow"].as_u64().unwrap() >= 80).then_some(s)
    })
    .expect("the worker delivers to the queue");
    assert_eq!(q["queued"], 64);
    assert_eq!(q["overflow"], 16);
    assert_eq!(q["high_water"], 64);
    let t = d.ctl(&["sock", "list"]).ok().to_string();
    assert!(
        t.starts_with("ID") && t.contains("OVERFLOW") && t.contains("QUEUED"),
        "{t}"
    );

    let c = d.ctl(&["--json", "sock", "close", "2"]).ok_json();
    assert_eq!(c["closed"], 2);
    d.ctl_as("web1", &["sock", "close", "1"]).ok();
    assert_eq!(d.events()[3..], ["stop 2", "stop 1"]);
    // R5: queued datagrams of a closed socket count as ns_gone.
    let st = d.ctl(&["--json", "stats", "--ns", "web2"]).ok_json();
    assert_eq!(st["namespaces"][0]["dropped_ns_gone"], 64);
    assert_eq!(st["namespaces"][0]["dropped_queue_full"], 16);
}

#[test]
fn ns_del_closes_sockets_and_stops_their_services() {
    let d = Daemon::start("ns_del_socks").with_two_tenants();
    d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
    )
    .ok();
    d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "10.0.0.2:54", "--service", "sink"],
    )
    .ok();
    let v = d.ctl(&["--json", "ns", "del", "web1"]).ok_json();
    assert_eq!(v["closed_sockets"], serde_json::json!([1, 2]));
    assert_eq!(d.events()[2..], ["stop 1", "stop 2"]);
    // R5: the address went back to the parent.
    let v = d.ctl(&["--json", "addr", "show"]).ok_json();
    assert!(names(&v, "local").contains(&"10.0.0.2".to_string()));
}

#[test]
fn stats_counts_per_namespace_and_ports_for_l2() {
    let d = Daemon::start("stats_cmd").with_two_tenants();
    d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "sink"],
    )
    .ok();
    for _ in 0..3 {
        d.inject_udp(Ipv4Addr::new(10, 0, 0, 2), 53, b"hello");
    }
    d.inject_udp(Ipv4Addr::new(10, 0, 0, 3), 53, b"nobody");
    let v = wait_for(Duration::from_secs(10), || {
        let v = d.ctl(&["--json", "stats"]).ok_json();
        (v["namespaces"][1]["delivered"] == 3 && v["namespaces"][2]["dropped_no_socket"] == 1)
            .then_some(v)
    })
    .expect("counters move");
    assert_eq!(
        names(&v["namespaces"], "namespace"),
        ["root", "web1", "web2"]
    );
    assert_eq!(v["namespaces"][1]["rx_packets"], 3);
    assert_eq!(v["ports"][0]["port"], "eth0");
    assert!(v["ports"][0]["rx_packets"].as_u64().unwrap() >= 4);
    // The worker polled, and handled the injected frames in some of its polls.
    assert_eq!(v["workers"][0]["worker"], 0);
    assert!(v["workers"][0]["busy_polls"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["workers"][0]["consumer_wakeups"].is_u64(), "{v}");

    // An L3 identity sees only itself, and no ports or workers.
    let v = d.ctl_as("web1", &["--json", "stats"]).ok_json();
    assert_eq!(names(&v["namespaces"], "namespace"), ["web1"]);
    assert!(v.get("ports").is_none(), "{v}");
    assert!(v.get("workers").is_none(), "{v}");
    let v = d.ctl(&["--json", "stats", "--ns", "web2"]).ok_json();
    assert_eq!(names(&v["namespaces"], "namespace"), ["web2"]);

    let t = d.ctl(&["stats"]).ok().to_string();
    assert!(
        t.starts_with("NAMESPACE")
            && t.contains("NO_SOCKET")
            && t.contains("PORT")
            && t.contains("WAKEUPS"),
        "{t}"
    );
    let t = d.ctl_as("web1", &["stats"]).ok().to_string();
    assert!(!t.contains("PORT") && !t.contains("web2"), "{t}");
}

#[test]
fn top_once_prints_rates_busiest_first() {
    let d = Daemon::start("top_once").with_two_tenants();
    d.ctl_as(
        "web2",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "sink"],
    )
    .ok();
    // Traffic for web2 keeps arriving while top samples.
    let wire = d.wire.clone();
    let pump = std::thread::spawn(move || {
        for i in 0..60u32 {
            for _ in 0..5 {
                let _ = wire.inject(cli_harness::udp_frame(
                    Ipv4Addr::new(10, 0, 0, 3),
                    53,
                    &i.to_be_bytes(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let out = d.ctl(&["--json", "top", "--once", "--interval", "0.3"]);
    let v = out.ok_json();
    pump.join().unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["namespace"], "web2", "busiest first: {v}");
    assert!(rows[0]["rx_pps"].as_f64().unwrap() > 0.0, "{v}");
    assert!(rows[0]["delivered_ps"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(rows[1]["rx_pps"].as_f64().unwrap(), 0.0);

    let t = d
        .ctl(&["top", "--once", "--interval", "0.1"])
        .ok()
        .to_string();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("l3ns top: 3 namespaces"), "{t}");
    assert!(
        lines[1].starts_with("NAMESPACE") && lines[1].contains("RX_PPS"),
        "{t}"
    );
    // An L2 identity sees the worker too, polling.
    let w = lines
        .iter()
        .position(|l| l.starts_with("WORKER"))
        .unwrap_or_else(|| panic!("no worker table: {t}"));
    assert!(
        lines[w].contains("BUSY") && lines[w + 1].trim_start().starts_with('0'),
        "{t}"
    );
    assert!(
        lines[1].contains("NO_SOCK/S") && lines[1].contains("QFULL/S"),
        "{t}"
    );
    // The header, the table's head and three namespaces; a blank line; the workers' table.
    assert_eq!(lines.len(), 8, "{t}");
}

#[test]
fn version_and_status() {
    let d = Daemon::start("version_status").with_two_tenants();
    let v = d.ctl(&["--json", "version"]).ok_json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let before = v["snapshot_version"].as_u64().unwrap();
    d.ctl(&["ns", "add", "web3"]).ok();
    let v = d.ctl(&["--json", "version"]).ok_json();
    assert!(v["snapshot_version"].as_u64().unwrap() > before);
    let s = d.ctl(&["--json", "status"]).ok_json();
    assert_eq!(s["workers"], 1);
    assert_eq!(s["ports"], serde_json::json!(["eth0"]));
    assert_eq!(s["namespaces"], 4);
    assert_eq!(s["identity"], "root");
    let s = d.ctl_as("web1", &["--json", "status"]).ok_json();
    assert_eq!(s["identity"], "web1");
    assert_eq!(s["namespaces"], 1);
    let t = d.ctl(&["status"]).ok().to_string();
    assert!(
        t.contains("snapshot_version:") && t.contains("workers:"),
        "{t}"
    );
    let t = d.ctl(&["version"]).ok().to_string();
    assert!(
        t.contains("l3nsd ") && t.contains("snapshot version"),
        "{t}"
    );
}

#[test]
fn every_command_has_help_that_names_its_rule() {
    let cmds: &[&[&str]] = &[
        &["ns", "add"],
        &["ns", "del"],
        &["ns", "list"],
        &["ns", "info"],
        &["dev", "list"],
        &["addr", "add"],
        &["addr", "del"],
        &["addr", "push"],
        &["addr", "pull"],
        &["addr", "show"],
        &["route", "add"],
        &["route", "del"],
        &["route", "list"],
        &["sock", "bind"],
        &["sock", "list"],
        &["sock", "close"],
        &["stats"],
        &["top"],
        &["version"],
        &["status"],
    ];
    for c in cmds {
        let mut args = c.to_vec();
        args.push("--help");
        let out = l3nsctl(&args);
        let text = out.ok();
        assert!(text.contains("Usage:"), "{args:?}: {text}");
        let first = text.lines().next().unwrap();
        assert!(first.len() > 20, "{args:?} has a sentence: {first}");
    }
    for (c, rule) in [
        ("ns", "R1"),
        ("addr", "R4"),
        ("route", "R2"),
        ("sock", "R7"),
    ] {
        let out = l3nsctl(&[c, "--help"]);
        assert!(out.ok().contains(rule), "{c} --help names {rule}: {out:?}");
    }
    let out = l3nsctl(&["--help"]);
    assert!(out.ok().contains("Exit status"), "{out:?}");
    let out = l3nsctl(&["addr", "push", "--help"]);
    assert!(
        out.ok()
            .contains("addr push A.B.C.D dev DEV [label LABEL] --to NS"),
        "{out:?}"
    );
}

/// A snapshot a change replaced is freed once the worker has let it go: the control thread,
/// idle, looks for it again until it can free it (and otherwise sleeps).
#[test]
fn a_replaced_snapshot_is_freed_when_the_control_thread_is_idle() {
    let d = Daemon::start("reclaim");
    // Held as a worker holds the snapshot of its poll, across the change: the publisher
    // keeps it among the replaced ones.
    let held = d.snapshot();
    let old = std::sync::Arc::downgrade(&held);
    d.ctl(&["ns", "add", "web1"]).ok();
    assert!(
        !std::ptr::eq(old.as_ptr(), std::sync::Arc::as_ptr(&d.snapshot())),
        "the change published a new snapshot"
    );
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while old.upgrade().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replaced snapshot was not freed"
        );
        std::thread::yield_now();
    }
}
