//! DPDK between two processes (issue 5): `l3nsd` on the server side of a `net_memif` link,
//! `dpdk-testpmd` generating UDP on the client side; packets are delivered and counted. The
//! frames never touch a kernel network: memif is shared memory between the two processes.
//! Needs root (hugepages for memif's shared regions) and the `dpdk` feature.
#![cfg(feature = "dpdk")]

mod daemon_util;

use daemon_util::stop_gently;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const L3NSD: &str = env!("CARGO_BIN_EXE_l3nsd");
const L3NSCTL: &str = env!("CARGO_BIN_EXE_l3nsctl");
const HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

struct Guard {
    dir: PathBuf,
    daemon: Option<Child>,
    hugepages_before: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            stop_gently(&mut d);
        }
        // testpmd leaves its EAL runtime directory behind (l3nsd removes its own when it
        // stops): this process's testpmd prefixes end in its pid.
        let pid = format!("-{}", std::process::id());
        if let Ok(dirs) = std::fs::read_dir("/var/run/dpdk") {
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                if name.starts_with("l3ns-tp-") && name.ends_with(&pid) {
                    let _ = std::fs::remove_dir_all(d.path());
                }
            }
        }
        if let Some(n) = &self.hugepages_before {
            let _ = std::fs::write(HUGEPAGES, n);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ctl(control: &std::path::Path, args: &[&str]) -> Value {
    let o = Command::new(L3NSCTL)
        .arg("--control")
        .arg(control)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "l3nsctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice::<Value>(&o.stdout).unwrap()["ok"].clone()
}

/// Whether the test can run here (root, `dpdk-testpmd` installed).
fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !root {
        eprintln!("skipped: needs root (reserves hugepages for memif's shared memory)");
        return false;
    }
    if Command::new("dpdk-testpmd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!("dpdk-testpmd is missing: install Debian's dpdk package (scripts/test.sh does)");
    }
    true
}

/// Starts `l3nsd` with a memif server port (web1 owns 10.97.0.2, a sink on 0.0.0.0:9) in a
/// scratch directory named after `tag`; returns the guard (which stops it and cleans up),
/// the memif socket and the control socket.
fn start_l3nsd(tag: &str, role: &str) -> (Guard, PathBuf, PathBuf) {
    start_l3nsd_at(tag, role, None)
}

/// Raises the hugepage pool to 768 pages if it is smaller; returns the size to give back.
fn raise_hugepages() -> Option<String> {
    let before = std::fs::read_to_string(HUGEPAGES)
        .unwrap_or_default()
        .trim()
        .to_string();
    if before.parse::<u32>().unwrap_or(0) < 768 {
        std::fs::write(HUGEPAGES, "768").unwrap();
        return Some(before);
    }
    None
}

/// `start_l3nsd` with the memif socket `sock` (one in its scratch directory when `None`).
fn start_l3nsd_at(
    tag: &str,
    role: &str,
    sock: Option<&std::path::Path>,
) -> (Guard, PathBuf, PathBuf) {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("l3ns-memif-{tag}-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = Guard {
        dir: dir.clone(),
        daemon: None,
        hugepages_before: None,
    };
    g.hugepages_before = raise_hugepages();
    let sock = sock.map_or_else(|| dir.join("memif.sock"), |s| s.to_path_buf());
    let control = dir.join("ctl.sock");
    let config = format!(
        r#"
[dataplane]
workers = [0]
idle_sleep_us = 0
eal_args = ["--in-memory", "-m", "256", "--no-pci", "--file-prefix", "l3ns-memif-{tag}-{pid}", "-l", "0", "--log-level", "lib.eal:error"]

[[port]]
name = "memif0"
backend = "dpdk"
dpdk_args = "net_memif{pid},role={role},socket={sock},mac=02:00:00:00:0a:01"

[[namespace]]
name = "web1"

[[address]]
address = "10.97.0.1/24"
dev = "memif0"

[[address]]
address = "10.97.0.2/24"
dev = "memif0"
assign_to = "web1"

[[socket]]
namespace = "web1"
bind = "0.0.0.0:9"
service = "sink"

[control]
socket = "{control}"

[metrics]
listen = "off"
"#,
        sock = sock.display(),
        control = control.display()
    );
    std::fs::write(dir.join("l3nsd.toml"), config).unwrap();
    let log = std::fs::File::create(dir.join("l3nsd.log")).unwrap();
    g.daemon = Some(
        Command::new(L3NSD)
            .arg("--config")
            .arg(dir.join("l3nsd.toml"))
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Command::new(L3NSCTL)
        .arg("--control")
        .arg(&control)
        .arg("status")
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "l3nsd did not start: {}",
            std::fs::read_to_string(dir.join("l3nsd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (g, sock, control)
}

/// `dpdk-testpmd` as the memif client, sending UDP to web1:9 for `seconds` (then SIGINT).
fn testpmd_client(sock: &std::path::Path, tag: &str, seconds: u32) -> Child {
    testpmd_generator(sock, tag, seconds, "client")
}

/// `dpdk-testpmd` sending UDP to web1:9 over memif in `role` (`client` or `server`) for
/// `seconds` (then SIGINT).
fn testpmd_generator(sock: &std::path::Path, tag: &str, seconds: u32, role: &str) -> Child {
    let pid = std::process::id();
    Command::new("timeout")
        .args([
            "-s",
            "INT",
            "-k",
            "5",
            &seconds.to_string(),
            "dpdk-testpmd",
            "--in-memory",
            "-m",
            "512",
            "--no-pci",
            "--file-prefix",
            &format!("l3ns-tp-{tag}-{pid}"),
            "-l",
            "0-1",
        ])
        .arg("--vdev")
        .arg(format!("net_memif0,role={role},socket={}", sock.display()))
        .args([
            "--",
            "--forward-mode=txonly",
            "--total-num-mbufs=16384",
            "--tx-ip=10.97.0.99,10.97.0.2",
            "--tx-udp=1234,9",
            "--eth-peer=0,02:00:00:00:0a:01",
            "--no-lsc-interrupt",
            "--stats-period=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The daemon's log, for failure messages.
fn daemon_log(g: &Guard) -> String {
    std::fs::read_to_string(g.dir.join("l3nsd.log")).unwrap_or_default()
}

/// One test, two scenarios in sequence: each raises the hugepage pool while it runs and
/// gives it back at its end, so two at once would shrink the pool under the other.
#[test]
fn l3nsd_and_testpmd_over_memif() {
    if !can_run() {
        return;
    }
    l3nsd_on_memif_receives_from_testpmd_in_another_process();
    l3nsd_survives_memif_clients_leaving_and_serves_the_next();
    l3nsd_as_memif_client_reconnects_to_a_restarted_server();
}

fn l3nsd_on_memif_receives_from_testpmd_in_another_process() {
    let (mut g, sock, control) = start_l3nsd("rx", "server");
    // testpmd as the client side, generating UDP to web1:9 for a bounded time.
    let testpmd = testpmd_client(&sock, "rx", 8);
    // While testpmd sends: frames arrive, are classified to web1 and delivered or counted.
    // The counters are read while the worker runs: at any one moment web1 may lag the port by
    // the frames of the group in progress (the port counts a group first), and the readings
    // of one `stats` are not of one moment (namespaces first, then ports), so web1's count is
    // bracketed by the port's in the call before and in its own call.
    let deadline = Instant::now() + Duration::from_secs(8);
    let port_rx = |stats: &Value| stats["ports"][0]["rx_packets"].as_u64().unwrap();
    let mut port_before;
    let during = loop {
        port_before = port_rx(&ctl(&control, &["stats"]));
        if port_before > 10_000 {
            break ctl(&control, &["stats"]);
        }
        assert!(
            Instant::now() < deadline,
            "l3nsd received only {port_before} frames from testpmd"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let web1_during = during["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == "web1")
        .unwrap()
        .clone();
    let port_during = port_rx(&during);
    let rx_during = web1_during["rx_packets"].as_u64().unwrap();
    assert!(
        port_before.saturating_sub(64) <= rx_during && rx_during <= port_during,
        "web1 {rx_during} outside port {port_before} (less a group of 64) .. {port_during}"
    );
    assert!(web1_during["delivered"].as_u64().unwrap() > 0);
    let out = testpmd.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let sent: u64 = text
        .lines()
        .filter(|l| l.contains("TX-packets:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .max()
        .unwrap_or_else(|| {
            panic!(
                "no testpmd TX counts: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(sent > 1000, "testpmd sent only {sent}");
    // The client has gone: l3nsd survives it (DPDK 22.11's memif server could crash here
    // before the burst guard; see `l3nsd_survives_memif_clients_leaving_and_serves_the_next`),
    // and every frame it took is accounted for exactly.
    assert!(
        g.daemon.as_mut().unwrap().try_wait().unwrap().is_none(),
        "l3nsd exited when the memif client left: {}",
        daemon_log(&g)
    );
    let stats = ctl(&control, &["stats"]);
    let port_rx = stats["ports"][0]["rx_packets"].as_u64().unwrap();
    let web1 = stats["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == "web1")
        .unwrap()
        .clone();
    let n = |k: &str| web1[k].as_u64().unwrap();
    assert!(
        port_rx > 1000 && port_rx <= sent,
        "received {port_rx} of {sent}"
    );
    assert_eq!(n("rx_packets"), port_rx, "every frame classified to web1");
    assert_eq!(
        n("delivered") + n("dropped_queue_full") + n("dropped_no_socket"),
        port_rx,
        "delivered or counted"
    );
    assert!(n("delivered") > 0);
    eprintln!(
        "testpmd sent {sent}, l3nsd received {port_rx}, delivered {}, queue_full {}",
        n("delivered"),
        n("dropped_queue_full")
    );
}

/// Clients come and go: l3nsd stays up after every departure and receives from the next
/// client. A departing client makes DPDK 22.11's memif server unmap the shared memory from
/// the interrupt thread while the worker may be inside a burst on it; before the shim's burst
/// guard, the release build of l3nsd died of SIGSEGV on 3 of 5 departures in one run (the
/// debug build this test runs is inside a burst less of the time and rarely hit it: the
/// reliable check of the guard is `memif_peer_leaving_mid_burst` in `dataplane/tests/dpdk.rs`).
fn l3nsd_survives_memif_clients_leaving_and_serves_the_next() {
    const ROUNDS: usize = 4;
    let (mut g, sock, control) = start_l3nsd("reconnect", "server");
    let rx = |control: &std::path::Path| {
        ctl(control, &["stats"])["ports"][0]["rx_packets"]
            .as_u64()
            .unwrap()
    };
    let mut last = rx(&control);
    for round in 1..=ROUNDS {
        // Each client sends until l3nsd has frames from it (a testpmd starting on a fresh
        // hugepage pool can take seconds), at most 20 s, then is stopped: its departure.
        let mut client = testpmd_client(&sock, &format!("rc{round}"), 20);
        let deadline = Instant::now() + Duration::from_secs(20);
        let now = loop {
            let now = rx(&control);
            if now > last + 1000 {
                break now;
            }
            assert!(
                Instant::now() < deadline && client.try_wait().unwrap().is_none(),
                "round {round}: l3nsd received {} frames from this client",
                now - last
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // SIGINT to `timeout`, which passes it on: testpmd stops and closes its port.
        let stopped = Command::new("kill")
            .args(["-INT", &client.id().to_string()])
            .status()
            .unwrap();
        assert!(stopped.success(), "round {round}: could not stop testpmd");
        let out = client.wait_with_output().unwrap();
        assert!(
            out.status.code().is_some(),
            "round {round}: testpmd did not exit cleanly ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            g.daemon.as_mut().unwrap().try_wait().unwrap().is_none(),
            "round {round}: l3nsd exited when the memif client left: {}",
            daemon_log(&g)
        );
        last = rx(&control).max(now);
    }
    eprintln!("{ROUNDS} memif clients came and went; l3nsd received {last} frames and is running");
}

/// l3nsd as the memif client: its server (testpmd) goes away and a new one comes up on the
/// same socket. DPDK 22.11's memif client connects only when its port starts; l3nsd (one
/// worker) restarts the port while the link is down, so it receives from the new server.
fn l3nsd_as_memif_client_reconnects_to_a_restarted_server() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("l3ns-memif-srv-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("memif.sock");
    // Hugepages for the server, given back last (after l3nsd's guard).
    let pool = Guard {
        dir: dir.clone(),
        daemon: None,
        hugepages_before: raise_hugepages(),
    };
    // The server listens before l3nsd's port starts (its first connect).
    let mut server = testpmd_generator(&sock, "srv1", 30, "server");
    let wait_listening = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .contains(sock.to_str().unwrap())
    {
        assert!(
            Instant::now() < wait_listening && server.try_wait().unwrap().is_none(),
            "testpmd did not listen on {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut g, _, control) = start_l3nsd_at("client", "client", Some(&sock));
    let rx = |control: &std::path::Path| {
        ctl(control, &["stats"])["ports"][0]["rx_packets"]
            .as_u64()
            .unwrap()
    };
    let wait_rx = |from: u64, what: &str, g: &mut Guard| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = rx(&control);
            if now > from + 1000 {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: l3nsd received {} frames: {}",
                now - from,
                daemon_log(g)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = wait_rx(0, "first server", &mut g);
    // The server goes away; l3nsd stays up.
    Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .unwrap();
    let _ = server.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        g.daemon.as_mut().unwrap().try_wait().unwrap().is_none(),
        "l3nsd exited when its memif server left: {}",
        daemon_log(&g)
    );
    let after = rx(&control);
    // A new server on the same socket: l3nsd connects again and receives from it.
    let _ = std::fs::remove_file(&sock);
    let mut server = testpmd_generator(&sock, "srv2", 30, "server");
    let again = wait_rx(after, "the restarted server", &mut g);
    Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .unwrap();
    let _ = server.wait();
    eprintln!(
        "l3nsd (memif client): {first} frames from the first server, {} from the second",
        again - after
    );
    drop(g);
    drop(pool);
}
