//! Control sockets: the root socket (0600), per-namespace tenant sockets (0660) limited to
//! their namespace, several clients at once, slow and broken clients, stale sockets and a
//! second daemon.

mod cli_harness;

use cli_harness::{test_dir, Daemon};
use l3ns_control::api::{serve, tenant_socket_path, NoServices, ServeConfig};
use l3ns_control::model::Model;
use l3ns_control::runtime::Runtime;
use l3ns_control::stop::Stop;
use l3ns_dataplane::types::{LoopbackMode, NsId};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn tenant_sockets_follow_namespaces_with_their_modes() {
    let d = Daemon::start("tenant_files");
    assert_eq!(mode(&d.control), 0o600, "the root socket is owner-only");
    let web1 = tenant_socket_path(&d.control, "web1");
    assert!(!web1.exists());
    d.ctl(&["ns", "add", "web1"]).ok();
    assert!(
        web1.exists(),
        "ns add returns once the tenant socket exists"
    );
    assert_eq!(mode(&web1), 0o660);
    assert_eq!(
        web1.parent().unwrap(),
        Path::new(&format!("{}.tenants", d.control.display()))
    );
    d.ctl(&["ns", "del", "web1"]).ok();
    assert!(!web1.exists(), "ns del removes it");
    let out = d.ctl_on(&web1, &["ns", "list"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn a_tenant_socket_acts_only_as_its_namespace() {
    let d = Daemon::start("tenant_identity").with_two_tenants();
    let web1 = tenant_socket_path(&d.control, "web1");
    let v = d.ctl_on(&web1, &["--json", "status"]).ok_json();
    assert_eq!(v["identity"], "web1");
    let v = d.ctl_on(&web1, &["--json", "ns", "list"]).ok_json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "web1");
    // `--as` itself is allowed; any other identity is EPERM.
    let c = web1.to_str().unwrap();
    cli_harness::l3nsctl(&["--control", c, "--as", "web1", "ns", "list"]).ok();
    for other in ["web2", "root", "nosuch"] {
        let out = cli_harness::l3nsctl(&["--control", c, "--as", other, "ns", "list"]);
        let s = out.errno("EPERM");
        assert!(s.contains("belongs to namespace web1"), "{out:?}");
    }
    // L3 rules apply and nothing else is visible.
    d.ctl_on(&web1, &["ns", "add", "x"]).errno("EPERM");
    d.ctl_on(
        &web1,
        &["addr", "push", "10.0.0.2", "dev", "eth0", "--to", "web2"],
    )
    .errno("EPERM");
    d.ctl_on(&web1, &["stats", "--ns", "web2"]).errno("ENOENT");
    let v = d.ctl_on(&web1, &["--json", "addr", "show"]).ok_json();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let v = d.ctl_on(&web1, &["--json", "stats"]).ok_json();
    assert_eq!(v["namespaces"].as_array().unwrap().len(), 1);
    // A tenant binds in its own namespace.
    let s = d
        .ctl_on(
            &web1,
            &[
                "--json",
                "sock",
                "bind",
                "udp",
                "0.0.0.0:53",
                "--service",
                "echo",
            ],
        )
        .ok_json();
    assert_eq!(s["namespace"], "web1");
    d.ctl_on(
        &web1,
        &["sock", "bind", "udp", "10.0.0.3:54", "--service", "echo"],
    )
    .errno("EADDRNOTAVAIL");
}

#[test]
fn namespaces_present_at_start_get_tenant_sockets() {
    let dir = test_dir("tenant_at_start");
    let mut m = Model::new();
    m.ns_add(NsId::ROOT, "db", None, LoopbackMode::Isolated)
        .unwrap();
    // A stale tenant socket of a namespace that no longer exists is cleaned up.
    let tenants = dir.join("ctl.sock.tenants");
    std::fs::create_dir_all(&tenants).unwrap();
    drop(UnixListener::bind(tenants.join("gone.sock")).unwrap());
    let d = Daemon::start_in(dir, m);
    let db = tenant_socket_path(&d.control, "db");
    let v = d.ctl_on(&db, &["--json", "status"]).ok_json();
    assert_eq!(v["identity"], "db");
    assert!(!tenants.join("gone.sock").exists());
}

/// Threads of this process whose name is `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

/// One thread accepts on every control socket: a thread per tenant socket took 10,000
/// threads for 10,000 namespaces (and l3nsd could not start 50,000).
#[test]
fn a_thousand_tenant_sockets_are_served_by_one_accepting_thread() {
    let dir = test_dir("tenant_thousand");
    let mut m = Model::new();
    for i in 0..1000 {
        m.ns_add(NsId::ROOT, &format!("t{i}"), None, LoopbackMode::Isolated)
            .unwrap();
    }
    let d = Daemon::start_in(dir, m);
    for i in [0, 1, 499, 998, 999] {
        let name = format!("t{i}");
        let v = d
            .ctl_on(
                &tenant_socket_path(&d.control, &name),
                &["--json", "status"],
            )
            .ok_json();
        assert_eq!(v["identity"], name.as_str());
    }
    // Other tests of this binary may run daemons at the same time (one accepting thread
    // each), never a thousand.
    let accepting = threads_named("l3ns-accept");
    assert!(
        (1..100).contains(&accepting),
        "{accepting} accepting threads for 1,000 tenant sockets"
    );
    // A namespace deleted takes its socket with it; the others keep answering.
    d.ctl(&["ns", "del", "t500"]).ok();
    let gone = tenant_socket_path(&d.control, "t500");
    assert!(!gone.exists());
    assert_eq!(d.ctl_on(&gone, &["status"]).code, 2);
    let v = d
        .ctl_on(
            &tenant_socket_path(&d.control, "t501"),
            &["--json", "status"],
        )
        .ok_json();
    assert_eq!(v["identity"], "t501");
}

#[test]
fn a_second_daemon_is_refused_and_a_stale_socket_is_replaced() {
    let d = Daemon::start("second_daemon");
    let rt = Runtime::new(Model::new(), 1, vec![], 16);
    let err = serve(
        ServeConfig::new(&d.control),
        rt,
        Box::new(NoServices),
        None,
        Stop::new(),
    )
    .expect_err("a daemon already answers");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("another l3nsd answers"), "{err}");
    d.ctl(&["ns", "list"]).ok();

    // A socket file nobody answers on is stale: removed and replaced.
    let dir = test_dir("stale_socket");
    let path = dir.join("ctl.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let stop = Stop::new();
    let h = serve(
        ServeConfig::new(&path),
        Runtime::new(Model::new(), 1, vec![], 16),
        Box::new(NoServices),
        None,
        stop.clone(),
    )
    .expect("a stale socket does not block the start");
    let v = d.ctl_on(&path, &["--json", "status"]).ok_json();
    assert_eq!(v["identity"], "root");
    // A file that is not a socket is left alone.
    let other = dir.join("plain");
    std::fs::write(&other, b"x").unwrap();
    let err = serve(
        ServeConfig::new(&other),
        Runtime::new(Model::new(), 1, vec![], 16),
        Box::new(NoServices),
        None,
        Stop::new(),
    )
    .expect_err("not a socket");
    assert!(err.to_string().contains("not a socket"), "{err}");
    // Stopping is bounded and removes the socket.
    let t = Instant::now();
    stop.stop();
    let rt = h.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(rt.model().namespaces().count(), 1);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn several_clients_at_once_all_get_answers() {
    let d = Arc::new(Daemon::start("many_clients"));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || {
                let name = format!("ns{i}");
                d.ctl(&["ns", "add", &name]).ok();
                d.ctl_as(
                    &name,
                    &["sock", "bind", "udp", "0.0.0.0:53", "--service", "echo"],
                )
                .ok();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = d.ctl(&["--json", "sock", "list"]).ok_json();
    assert_eq!(v.as_array().unwrap().len(), 8);
}

#[test]
fn slow_and_broken_clients_do_not_stall_the_control_thread() {
    let d = Daemon::start("slow_clients");
    // A client that sends half a request and waits.
    let mut slow = UnixStream::connect(&d.control).unwrap();
    slow.write_all(b"{\"request\": {\"cmd\":").unwrap();
    // A client that connects and sends nothing.
    let _idle = UnixStream::connect(&d.control).unwrap();
    let t = Instant::now();
    d.ctl(&["ns", "add", "web1"]).ok();
    assert!(t.elapsed() < Duration::from_secs(5));
    // Garbage is EINVAL on the wire, and the connection still serves the next request.
    let s = UnixStream::connect(&d.control).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    w.write_all(b"not json\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["error"]["errno"], "EINVAL", "{line}");
    // The documented wire form.
    w.write_all(b"{\"as\":\"web1\",\"request\":{\"cmd\":\"sock_bind\",\"proto\":\"udp\",\"addr\":\"0.0.0.0\",\"port\":53,\"service\":\"echo\"}}\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"]["namespace"], "web1", "{line}");
    assert_eq!(v["ok"]["port"], 53, "{line}");
    w.write_all(b"{\"request\":{\"cmd\":\"addr_push\",\"local\":\"10.0.0.2\",\"dev\":\"eth0\",\"to\":\"web1\"}}\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["error"]["errno"], "EADDRNOTAVAIL", "{line}");
    drop(slow);
}
