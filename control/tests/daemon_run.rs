//! The real `l3nsd` binary: the embedded demo, the state file across restarts (with a change
//! made through `l3nsctl` in between), a damaged state file, and the attach service with the
//! Python example client. Every child is killed by PID if a test fails; every wait is bounded.

mod daemon_util;

use daemon_util::*;
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn demo_runs_and_every_namespace_counts() {
    let dir = TempDir::new("demo");
    let ctl = dir.path("c.sock");
    let out = l3nsd(
        &[
            "--duration",
            "2",
            "--metrics",
            "127.0.0.1:0",
            "--control",
            ctl.to_str().unwrap(),
        ],
        LIMIT,
    );
    let stdout = succeeded(&out);
    assert!(stdout.contains("no --config given"), "{stdout}");
    let rows = last_table(&stdout);
    for ns in ["web1", "web2", "web3"] {
        let r = rows
            .get(ns)
            .unwrap_or_else(|| panic!("no row for {ns} in\n{stdout}"));
        assert!(
            r[0] > 0 && r[1] > 0,
            "{ns} rx/delivered did not move: {r:?}\n{stdout}"
        );
    }
    // Broadcasts reached web1 and web2 (their 0.0.0.0 listeners), echo answered (tx).
    assert!(rows["web1"][2] > 0 && rows["web2"][2] > 0, "{stdout}");
    assert!(rows["web1"][6] > 0, "{stdout}");
    // web3's loopback is shared: its sender's datagrams land in root's listener.
    assert!(rows["root"][1] > 0, "{stdout}");
    for reason in [
        "truncated=",
        "bad_checksum=",
        "fragment=",
        "not_ipv4=",
        "unclaimed=",
    ] {
        assert!(stdout.contains(reason), "no {reason} drops in\n{stdout}");
    }
    assert!(stdout.trim_end().ends_with("l3nsd: stopped"), "{stdout}");
    assert!(!ctl.exists(), "the control socket is removed at shutdown");
}

#[test]
fn state_survives_a_restart_and_wins_over_the_config() {
    let dir = TempDir::new("state");
    let state = dir.path("state.json");
    let ctl = dir.path("c.sock");
    let (s, c) = (state.to_str().unwrap(), ctl.to_str().unwrap());

    // Run 1: the demo, changed through the control API, stopped with SIGTERM.
    let d = Guard::spawn(Command::new(L3NSD).args([
        "--state",
        s,
        "--control",
        c,
        "--metrics",
        "off",
        "--quiet",
    ]));
    assert!(
        wait_for_path(&ctl, Duration::from_secs(30)),
        "control socket never appeared"
    );
    let ctl_out = Command::new(env!("CARGO_BIN_EXE_l3nsctl"))
        .args(["--control", c, "ns", "add", "web4"])
        .output()
        .unwrap();
    assert!(
        ctl_out.status.success(),
        "l3nsctl: {}{}",
        text(&ctl_out.stdout),
        text(&ctl_out.stderr)
    );
    // Saved before the answer.
    let saved = l3ns_control::state::load(&state)
        .unwrap()
        .expect("state file written");
    assert!(saved.ns_by_name("web4").is_some());
    d.terminate();
    let out = d.wait(LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = l3ns_control::state::load(&state).unwrap().unwrap();
    assert!(after.ns_by_name("web4").is_some());

    // --check sees the state; run 2 starts from it (web4 is there, the config does not say so).
    let chk = l3nsd(&["--check", "--state", s], LIMIT);
    assert!(
        chk.status.success() && text(&chk.stdout).contains("from the state file"),
        "{}",
        text(&chk.stdout)
    );
    let out = l3nsd(
        &[
            "--state",
            s,
            "--control",
            c,
            "--metrics",
            "off",
            "--duration",
            "1.5",
        ],
        LIMIT,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("state loaded from"), "{stdout}");
    let rows = last_table(&stdout);
    assert!(rows.contains_key("web4") && rows["web1"][1] > 0, "{stdout}");
    let again = l3ns_control::state::load(&state).unwrap().unwrap();
    assert_eq!(
        again, after,
        "a run without changes writes back the same model"
    );
}

#[test]
fn a_damaged_state_file_stops_the_start_and_is_left_alone() {
    let dir = TempDir::new("damaged");
    let state = dir.path("state.json");
    let damaged = b"{\"namespaces\": [ {\"id\": 0, \"name\": \"ro";
    std::fs::write(&state, damaged).unwrap();
    let out = l3nsd(
        &[
            "--state",
            state.to_str().unwrap(),
            "--control",
            dir.path("c.sock").to_str().unwrap(),
            "--metrics",
            "off",
            "--duration",
            "5",
        ],
        LIMIT,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(state.to_str().unwrap()) && err.contains("damaged"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), damaged);
    assert!(!dir.path("state.json.tmp").exists());
}

#[test]
fn attach_hands_datagrams_to_a_python_process_and_sends_its_answers() {
    let dir = TempDir::new("attach");
    let sock = dir.path("app.sock");
    let log = dir.path("app.log");
    let cfg = dir.path("attach.toml");
    std::fs::write(
        &cfg,
        config_with_port(
            r#"
[port.generator]
rate = 200
peer_mac = "02:00:00:00:00:99"

[[port.generator.flow]]
kind = "arp_request"
src = "10.0.0.99:0"
dst = "10.0.0.1:0"

[[port.generator.flow]]
src = "10.0.0.99:40000"
dst = "10.0.0.5:5000"
payload = "ping"
"#,
            &format!(
                r#"
[[namespace]]
name = "app1"

[[address]]
address = "10.0.0.5/24"
dev = "mem0"
assign_to = "app1"

[[socket]]
namespace = "app1"
bind = "0.0.0.0:5000"
service = "attach:{}"
"#,
                sock.display()
            ),
        ),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/attach_client.py");
    let mut client = Guard::spawn(Command::new("python3").args([
        script,
        "--path",
        sock.to_str().unwrap(),
        "--count",
        "5",
        "--timeout",
        "20",
        "--log",
        log.to_str().unwrap(),
    ]));
    let mut first = String::new();
    BufReader::new(client.0.as_mut().unwrap().stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "ready");

    let out = l3nsd(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--control",
            dir.path("c.sock").to_str().unwrap(),
            "--metrics",
            "off",
            "--duration",
            "2",
        ],
        LIMIT,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let c = client.wait(Duration::from_secs(30));
    assert!(c.status.success(), "client: {}", text(&c.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        assert_eq!(l["src"], "10.0.0.99");
        assert_eq!(l["src_port"], 40000);
        assert_eq!(l["dst"], "10.0.0.5");
        assert_eq!(l["dst_port"], 5000);
        assert_eq!(l["payload"], "ping");
    }
    // The client's five answers left from app1.
    let rows = last_table(&stdout);
    assert!(rows["app1"][6] >= 5, "{stdout}");
}

/// Wake-ups (voluntary and involuntary context switches) of each thread of `pid`, by tid,
/// with its name.
fn switches(pid: u32) -> std::collections::BTreeMap<u32, (String, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let t = t.unwrap().path();
        let (Ok(status), Ok(tid)) = (
            std::fs::read_to_string(t.join("status")),
            t.file_name().unwrap().to_string_lossy().parse::<u32>(),
        ) else {
            continue; // the thread left
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let n = field("voluntary_ctxt_switches:")
            .parse::<u64>()
            .unwrap_or(0)
            + field("nonvoluntary_ctxt_switches:")
                .parse::<u64>()
                .unwrap_or(0);
        out.insert(tid, (field("Name:"), n));
    }
    out
}

/// An idle daemon's threads other than workers and services sleep until they have work: the
/// main thread until the stop (with --quiet), the control thread until a request, the metrics
/// thread until a scrape, the signal thread until a signal. They used to poll a stop flag
/// every 20-50 ms (~140 wake-ups a second together), each costing tens of microseconds of CPU
/// on a virtual machine. SIGTERM still stops the daemon at once.
#[test]
fn an_idle_daemon_s_other_threads_sleep_until_they_have_work() {
    let dir = TempDir::new("idle_threads");
    let ctl = dir.path("c.sock");
    let d = Guard::spawn(Command::new(L3NSD).args([
        "--quiet",
        "--metrics",
        "127.0.0.1:0",
        "--control",
        ctl.to_str().unwrap(),
    ]));
    assert!(wait_for_path(&ctl, LIMIT), "no control socket");
    let pid = d.pid();
    // The window over which wake-ups are counted (a measurement, not a wait for an event).
    let window = Duration::from_millis(1500);
    let before = switches(pid);
    std::thread::sleep(window);
    let after = switches(pid);
    let mut checked = Vec::new();
    for (tid, (name, n)) in &after {
        let quiet = *tid == pid
            || [
                "l3ns-control",
                "l3ns-metrics",
                "l3ns-signals",
                "l3ns-accept",
            ]
            .contains(&name.as_str());
        if !quiet {
            continue;
        }
        let woke = n - before.get(tid).map_or(0, |b| b.1);
        checked.push(format!("{name}/{tid}: {woke}"));
        // A few for start-up's last steps (the control thread frees the snapshots the
        // workers let go of), against 30-75 each in this window before.
        assert!(woke <= 5, "{name} ({tid}) woke {woke} times in {window:?}");
    }
    for name in ["l3ns-control", "l3ns-metrics", "l3ns-signals"] {
        assert!(
            checked.iter().any(|c| c.starts_with(name)),
            "no {name} thread: {checked:?}"
        );
    }
    let t = std::time::Instant::now();
    d.terminate();
    let out = d.wait(LIMIT);
    succeeded(&out);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "SIGTERM took {:?}",
        t.elapsed()
    );
    assert!(!ctl.exists(), "the control socket is removed at shutdown");
}

/// The soft and hard "Max open files" of a process, from `/proc/PID/limits`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-file limit in\n{limits}"));
    let f: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (f[0].to_string(), f[1].to_string())
}

#[test]
fn a_low_soft_open_file_limit_is_raised_so_every_tenant_socket_is_made() {
    // 200 namespaces need 200 tenant sockets: more than a soft limit of 64 allows. l3nsd
    // raises the soft limit to the hard one (4,096 here) and makes every one of them.
    const N: usize = 200;
    let dir = TempDir::new("nofile");
    let ctl = dir.path("c.sock");
    let cfg = dir.path("many.toml");
    let mut rest = String::new();
    for i in 0..N {
        rest.push_str(&format!("\n[[namespace]]\nname = \"t{i}\"\n"));
    }
    std::fs::write(&cfg, base_config(&rest)).unwrap();
    let d = Guard::spawn(Command::new("prlimit").args([
        "--nofile=64:4096",
        "--",
        L3NSD,
        "--config",
        cfg.to_str().unwrap(),
        "--control",
        ctl.to_str().unwrap(),
        "--metrics",
        "off",
        "--interval",
        "3600",
    ]));
    assert!(wait_for_path(&ctl, LIMIT), "no control socket");
    // prlimit executes l3nsd in its own process.
    assert_eq!(open_file_limits(d.pid()), ("4096".into(), "4096".into()));
    for i in [0, N / 2, N - 1] {
        let sock = l3ns_control::api::tenant_socket_path(&ctl, &format!("t{i}"));
        assert!(wait_for_path(&sock, LIMIT), "no tenant socket {sock:?}");
        let out = Command::new(env!("CARGO_BIN_EXE_l3nsctl"))
            .args(["--control", sock.to_str().unwrap(), "--json", "status"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
        assert_eq!(v["ok"]["identity"], format!("t{i}").as_str(), "{v}");
    }
    let tenants = l3ns_control::api::tenant_socket_path(&ctl, "t0");
    let made = std::fs::read_dir(tenants.parent().unwrap())
        .unwrap()
        .count();
    assert_eq!(made, N, "tenant sockets made");
    d.terminate();
    let out = d.wait(LIMIT);
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("open files: soft limit raised from 64 to the hard limit, 4096"),
        "{stdout}"
    );
    assert!(
        !text(&out.stderr).contains("tenant socket"),
        "{}",
        text(&out.stderr)
    );
}
