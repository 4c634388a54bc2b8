//! Every errno case of SEMANTICS.md through the real `l3nsctl`: exit status 1, exactly one
//! stderr line `l3nsctl: ERRNO: sentence`, `--json` errors, and nothing changed (all or
//! nothing). Test names carry the rule they check.

mod cli_harness;

use cli_harness::{l3nsctl, Daemon};
use std::sync::atomic::Ordering;

/// Everything an L2 view shows, to compare before and after a refused request.
fn world(d: &Daemon) -> String {
    [
        d.ctl(&["--json", "ns", "list"]).ok_json(),
        d.ctl(&["--json", "addr", "show", "--all"]).ok_json(),
        d.ctl(&["--json", "route", "list"]).ok_json(),
        d.ctl(&["--json", "sock", "list"]).ok_json(),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn r01_r03_r04_r02_l3_identity_cannot_run_l2_operations() {
    let d = Daemon::start("l3_eperm").with_two_tenants();
    let before = world(&d);
    let cases: &[&[&str]] = &[
        &["ns", "add", "child"],
        &["ns", "del", "web2"],
        &["addr", "add", "10.0.0.9/24", "dev", "eth0"],
        &["addr", "del", "10.0.0.2", "dev", "eth0"],
        &["addr", "push", "10.0.0.2", "dev", "eth0", "--to", "web2"],
        &["addr", "pull", "10.0.0.3", "dev", "eth0", "--from", "web2"],
        &[
            "route",
            "add",
            "10.9.0.0/16",
            "via",
            "10.0.0.254",
            "dev",
            "eth0",
        ],
        &["route", "add", "10.9.0.0/16", "dev", "eth0"],
        &["route", "del", "10.9.0.0/16"],
        &["addr", "show", "--all"],
    ];
    for c in cases {
        let out = d.ctl_as("web1", c);
        let sentence = out.errno("EPERM");
        assert!(sentence.contains("web1"), "names the namespace: {out:?}");
        assert!(sentence.contains("(R"), "names the rule: {out:?}");
    }
    assert_eq!(world(&d), before, "refused requests change nothing");
    // The exact form, once in full.
    let out = d.ctl_as("web1", &["ns", "add", "child"]);
    assert!(
        out.stderr
            .starts_with("l3nsctl: EPERM: namespace web1 is an L3 namespace"),
        "{out:?}"
    );
}

#[test]
fn r04_push_to_a_namespace_that_is_not_a_child_is_eperm() {
    let d = Daemon::start("push_not_child").with_two_tenants();
    d.ctl(&["ns", "add", "lab", "--l2"]).ok();
    d.ctl(&["ns", "add", "lab1", "--parent", "lab"]).ok();
    d.ctl(&["addr", "add", "10.0.0.50/24", "dev", "eth0"]).ok();
    d.ctl(&["addr", "push", "10.0.0.50", "dev", "eth0", "--to", "lab1"])
        .errno("EPERM");
    d.ctl(&["addr", "push", "10.0.0.50", "dev", "eth0", "--to", "root"])
        .errno("EPERM");
}

#[test]
fn r01_unknown_namespace_is_enoent() {
    let d = Daemon::start("enoent").with_two_tenants();
    d.ctl(&["ns", "info", "nosuch"]).errno("ENOENT");
    d.ctl(&["ns", "del", "nosuch"]).errno("ENOENT");
    d.ctl(&["ns", "add", "x", "--parent", "nosuch"])
        .errno("ENOENT");
    d.ctl(&["addr", "push", "10.0.0.1", "dev", "eth0", "--to", "nosuch"])
        .errno("ENOENT");
    d.ctl(&[
        "addr", "pull", "10.0.0.2", "dev", "eth0", "--from", "nosuch",
    ])
    .errno("ENOENT");
    d.ctl(&["stats", "--ns", "nosuch"]).errno("ENOENT");
    d.ctl_as("nosuch", &["ns", "list"]).errno("ENOENT");
    d.ctl(&["route", "del", "10.99.0.0/16"]).errno("ENOENT");
    d.ctl(&["sock", "close", "99"]).errno("ENOENT");
}

#[test]
fn r06_l3_sees_no_other_namespace_its_counters_or_sockets() {
    let d = Daemon::start("l3_visibility").with_two_tenants();
    d.ctl_as(
        "web2",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
    )
    .ok();
    // Another namespace is ENOENT, as if it did not exist.
    d.ctl_as("web1", &["ns", "info", "web2"]).errno("ENOENT");
    d.ctl_as("web1", &["ns", "info", "root"]).errno("ENOENT");
    d.ctl_as("web1", &["stats", "--ns", "web2"]).errno("ENOENT");
    d.ctl_as("web1", &["stats", "--ns", "root"]).errno("ENOENT");
    d.ctl_as("web1", &["sock", "close", "1"]).errno("ENOENT");
    let v = d.ctl_as("web1", &["--json", "ns", "list"]).ok_json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let v = d.ctl_as("web1", &["--json", "addr", "show"]).ok_json();
    let shown: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["local"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["127.0.0.1", "10.0.0.2"]);
    let v = d.ctl_as("web1", &["--json", "sock", "list"]).ok_json();
    assert_eq!(v.as_array().unwrap().len(), 0);
    let v = d
        .ctl_as("web1", &["--json", "stats", "--ns", "web1"])
        .ok_json();
    assert_eq!(v["namespaces"].as_array().unwrap().len(), 1);
}

#[test]
fn r01_r03_r02_duplicates_are_eexist() {
    let d = Daemon::start("eexist").with_two_tenants();
    let out = d.ctl(&["ns", "add", "web1"]);
    assert!(out.errno("EEXIST").contains("web1"), "{out:?}");
    d.ctl(&["ns", "add", "root"]).errno("EEXIST");
    d.ctl(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])
        .errno("EEXIST");
    // Even when the existing one was pushed to a child.
    d.ctl(&["addr", "add", "10.0.0.2/16", "dev", "eth0"])
        .errno("EEXIST");
    d.ctl(&["route", "add", "10.5.0.0/16", "dev", "eth0"]).ok();
    d.ctl(&[
        "route",
        "add",
        "10.5.0.0/16",
        "via",
        "10.0.0.9",
        "dev",
        "eth0",
    ])
    .errno("EEXIST");
}

#[test]
fn r01_r03_malformed_requests_are_einval() {
    let d = Daemon::start("einval").with_two_tenants();
    let before = world(&d);
    for bad in ["Web", "a b", "x!", "_x", "n".repeat(33).as_str(), "a/b"] {
        let out = d.ctl(&["ns", "add", bad]);
        assert!(out.errno("EINVAL").contains("R1"), "{bad:?}: {out:?}");
    }
    let cases: &[&[&str]] = &[
        &["addr", "add", "10.0.0.300/24", "dev", "eth0"],
        &["addr", "add", "10.0.0.9", "dev", "eth0"],
        &["addr", "add", "10.0.0.9/33", "dev", "eth0"],
        &["addr", "add", "10.0.0.9/24", "dev"],
        &["addr", "add", "10.0.0.9/24", "dev", "eth0", "colour", "red"],
        &[
            "addr",
            "add",
            "10.0.0.9/24",
            "dev",
            "eth0",
            "scope",
            "galaxy",
        ],
        &[
            "addr",
            "add",
            "10.0.0.9/24",
            "dev",
            "eth0",
            "label",
            "other:1",
        ],
        &["addr", "add", "127.0.0.2/8", "dev", "eth0"],
        &["addr", "add", "10.0.0.9/24", "dev", "lo"],
        &["addr", "push", "10.0.0.x", "dev", "eth0", "--to", "web1"],
        &["route", "add", "10.9.0.1/16", "dev", "eth0"],
        &[
            "route",
            "add",
            "10.9.0.0/16",
            "via",
            "255.255.255.255",
            "dev",
            "eth0",
        ],
        &["sock", "bind", "udp", "0.0.0.0", "--service", "echo"],
        &["sock", "bind", "udp", "0.0.0.0:0", "--service", "echo"],
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "telnet"],
        &["ns", "add", "lab", "--l2", "--parent", "web1"],
    ];
    for c in cases {
        d.ctl(c).errno("EINVAL");
    }
    assert_eq!(world(&d), before);
    // Missing arguments altogether are a usage error (clap, exit 2).
    assert_eq!(d.ctl(&["addr", "add", "10.0.0.9/24"]).code, 2);
}

#[test]
fn r02_r04_unknown_device_is_enodev() {
    let d = Daemon::start("enodev").with_two_tenants();
    let out = d.ctl(&["addr", "add", "10.1.0.1/24", "dev", "eth9"]);
    assert!(out.errno("ENODEV").contains("eth9"), "{out:?}");
    d.ctl(&["addr", "del", "10.0.0.1", "dev", "eth9"])
        .errno("ENODEV");
    d.ctl(&["addr", "push", "10.0.0.1", "dev", "eth9", "--to", "web1"])
        .errno("ENODEV");
    d.ctl(&["addr", "pull", "10.0.0.2", "dev", "eth9", "--from", "web1"])
        .errno("ENODEV");
    d.ctl(&["route", "add", "10.9.0.0/16", "dev", "eth9"])
        .errno("ENODEV");
}

#[test]
fn r05_namespace_with_children_is_ebusy_and_root_is_eperm() {
    let d = Daemon::start("ebusy").with_two_tenants();
    d.ctl(&["ns", "add", "lab", "--l2"]).ok();
    d.ctl(&["ns", "add", "lab1", "--parent", "lab"]).ok();
    let out = d.ctl(&["ns", "del", "lab"]);
    assert!(out.errno("EBUSY").contains("lab1"), "{out:?}");
    d.ctl(&["ns", "del", "root"]).errno("EPERM");
    // A nested L2 may create children, but only root creates nested L2s.
    d.ctl_as("lab", &["ns", "add", "lab2"]).ok();
    d.ctl_as("lab", &["ns", "add", "deeper", "--l2"])
        .errno("EPERM");
    d.ctl_as("lab", &["ns", "del", "web1"]).errno("EPERM");
    d.ctl(&["ns", "del", "lab1"]).ok();
    d.ctl(&["ns", "del", "lab2"]).ok();
    d.ctl(&["ns", "del", "lab"]).ok();
}

#[test]
fn r04_r07_unowned_addresses_are_eaddrnotavail() {
    let d = Daemon::start("eaddrnotavail").with_two_tenants();
    // Pushing an address nobody has, or one root does not own (web2 owns it).
    d.ctl(&["addr", "push", "10.0.0.9", "dev", "eth0", "--to", "web1"])
        .errno("EADDRNOTAVAIL");
    let out = d.ctl(&["addr", "push", "10.0.0.3", "dev", "eth0", "--to", "web1"]);
    out.errno("EADDRNOTAVAIL");
    // Pulling from the wrong child, or with a label that does not match.
    d.ctl(&["addr", "pull", "10.0.0.3", "dev", "eth0", "--from", "web1"])
        .errno("EADDRNOTAVAIL");
    d.ctl(&[
        "addr", "pull", "10.0.0.2", "dev", "eth0", "label", "eth0:x", "--from", "web1",
    ])
    .errno("EADDRNOTAVAIL");
    // Deleting a child's address: pull it first.
    let out = d.ctl(&["addr", "del", "10.0.0.2", "dev", "eth0"]);
    assert!(out.errno("EADDRNOTAVAIL").contains("pull"), "{out:?}");
    // R7: binding another namespace's address.
    let out = d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "10.0.0.3:53", "--service", "echo"],
    );
    assert!(out.errno("EADDRNOTAVAIL").contains("R7"), "{out:?}");
    d.ctl(&["sock", "bind", "udp", "10.0.0.2:53", "--service", "echo"])
        .errno("EADDRNOTAVAIL");
    // But its own address, network, broadcast, loopback and wildcard are fine.
    for a in [
        "10.0.0.2:1",
        "10.0.0.0:2",
        "10.0.0.255:3",
        "127.0.0.1:4",
        "255.255.255.255:5",
        "0.0.0.0:6",
    ] {
        d.ctl_as("web1", &["sock", "bind", "udp", a, "--service", "sink"])
            .ok();
    }
}

#[test]
fn r07_same_port_twice_in_one_namespace_is_eaddrinuse_across_namespaces_never() {
    let d = Daemon::start("eaddrinuse").with_two_tenants();
    d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
    )
    .ok();
    d.ctl_as(
        "web2",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
    )
    .ok();
    d.ctl(&["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"])
        .ok();
    let out = d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "sink"],
    );
    assert!(out.errno("EADDRINUSE").contains("53"), "{out:?}");
    d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "10.0.0.2:53", "--service", "sink"],
    )
    .errno("EADDRINUSE");
    d.ctl_as(
        "web2",
        &["sock", "bind", "udp", "10.0.0.3:80", "--service", "sink"],
    )
    .ok();
    d.ctl_as(
        "web2",
        &["sock", "bind", "udp", "0.0.0.0:80", "--service", "sink"],
    )
    .errno("EADDRINUSE");
    let v = d.ctl(&["--json", "sock", "list"]).ok_json();
    assert_eq!(v.as_array().unwrap().len(), 4);
}

#[test]
fn json_errors_are_machine_readable() {
    let d = Daemon::start("json_errors").with_two_tenants();
    let out = d.ctl_as("web1", &["--json", "ns", "add", "x"]);
    assert_eq!(out.code, 1);
    let v = out.json();
    assert_eq!(v["error"]["errno"], "EPERM");
    let msg = v["error"]["message"].as_str().unwrap();
    assert_eq!(out.stderr.trim_end(), format!("l3nsctl: EPERM: {msg}"));
    // A locally detected malformed argument has the same shape.
    let out = d.ctl(&["--json", "addr", "add", "10.0.0.300/24", "dev", "eth0"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["error"]["errno"], "EINVAL");
}

#[test]
fn unreachable_daemon_exits_2_with_a_clear_message() {
    let dir = cli_harness::test_dir("unreachable");
    let sock = dir.join("nobody.sock");
    let out = l3nsctl(&["--control", sock.to_str().unwrap(), "ns", "list"]);
    assert_eq!(out.code, 2, "{out:?}");
    let want = format!("l3nsctl: cannot reach l3nsd at {}: ", sock.display());
    assert!(out.stderr.starts_with(&want), "{out:?}");
    assert!(
        out.stderr.contains("is l3nsd running? (--control)"),
        "{out:?}"
    );
    let out = l3nsctl(&["--json", "--control", sock.to_str().unwrap(), "version"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.json()["error"]["errno"], "ENOENT");
    // Usage errors are clap's: exit 2.
    assert_eq!(l3nsctl(&["ns", "frobnicate"]).code, 2);
    assert_eq!(l3nsctl(&["ns", "add", "x", "--loopback", "maybe"]).code, 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_service_that_cannot_start_undoes_its_bind() {
    let d = Daemon::start("service_refused").with_two_tenants();
    let out = d.ctl_as(
        "web1",
        &[
            "sock",
            "bind",
            "udp",
            "0.0.0.0:53",
            "--service",
            "attach:/refuse.sock",
        ],
    );
    out.errno("ENOENT");
    let v = d.ctl(&["--json", "sock", "list"]).ok_json();
    assert_eq!(v.as_array().unwrap().len(), 0, "{v}");
    // The port is free again.
    d.ctl_as(
        "web1",
        &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
    )
    .ok();
}

#[test]
fn a_change_that_cannot_be_saved_is_eio_and_stays_applied() {
    let d = Daemon::start("persist_eio");
    d.ctl(&["ns", "add", "web1"]).ok();
    let saves = d.saves.load(Ordering::SeqCst);
    assert!(saves >= 1, "a change is saved before the answer");
    d.fail_saves.store(true, Ordering::SeqCst);
    let out = d.ctl(&["ns", "add", "web2"]);
    let s = out.errno("EIO");
    assert!(s.contains("applied in memory"), "{out:?}");
    // Reads still work and are not saved.
    let v = d.ctl(&["--json", "ns", "list"]).ok_json();
    assert_eq!(
        v.as_array().unwrap().len(),
        3,
        "the change stays applied: {v}"
    );
    d.fail_saves.store(false, Ordering::SeqCst);
    d.ctl(&["ns", "add", "web3"]).ok();
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&d.state).unwrap()).unwrap();
    let names: Vec<&str> = saved["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["root", "web1", "web2", "web3"],
        "the next save has it"
    );
    // Refused and read-only requests do not save.
    let n = d.saves.load(Ordering::SeqCst);
    d.ctl(&["ns", "add", "web3"]).errno("EEXIST");
    d.ctl(&["ns", "list"]).ok();
    assert_eq!(d.saves.load(Ordering::SeqCst), n);
}
