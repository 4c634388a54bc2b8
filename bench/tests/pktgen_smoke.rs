//! `l3ns-pktgen` and `pktgen-scripts/` end to end: the binary on the `memory` backend (no
//! privileges), on AF_PACKET against the Linux kernel in a network namespace (root only), and
//! the testpmd driver script on `net_null0` (when `dpdk-testpmd` is installed and we are root).
//!
//! Every child process is held by a guard that kills it by PID; namespaces are deleted by a
//! guard too; every wait has a deadline.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::{have, is_root, repo, u};

const PKTGEN: &str = env!("CARGO_BIN_EXE_l3ns-pktgen");

fn scripts() -> PathBuf {
    repo().join("pktgen-scripts")
}

/// A child process killed (by PID) and reaped when dropped.
struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    fn spawn(cmd: &mut Command, what: &str) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        ChildGuard {
            child: Some(child),
            what: what.to_string(),
        }
    }

    /// Waits up to `timeout` for the process to exit and collects its output; kills it and
    /// panics on timeout.
    fn wait_with_deadline(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("not waited yet");
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().expect("collect killed child");
                    panic!(
                        "{} did not finish within {timeout:?}; killed. stderr:\n{}",
                        self.what,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        }
        child.wait_with_output().expect("collect output")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs l3ns-pktgen with `args`, bounded by `timeout`.
fn pktgen(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(PKTGEN);
    cmd.args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::spawn(&mut cmd, "l3ns-pktgen").wait_with_deadline(timeout)
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "l3ns-pktgen failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

const KINDS: [(&str, Option<&str>); 8] = [
    ("unicast", None),
    ("limited_broadcast", None),
    ("directed_broadcast", None),
    ("unowned", None),
    ("bad_checksum", Some("dropped_bad_checksum")),
    ("truncated", Some("dropped_truncated")),
    ("fragment", Some("dropped_fragment")),
    ("bad_ihl", Some("dropped_bad_ihl")),
];

#[test]
fn memory_backend_sends_10000_and_every_echo_comes_back() {
    let out = pktgen(
        &["--backend", "memory", "--count", "10000", "--json", "-q"],
        Duration::from_secs(60),
    );
    let r = json_of(&out);
    assert_eq!(r["backend"], "memory");
    assert_eq!(u(&r, "sent.packets"), 10000);
    assert_eq!(u(&r, "sent.by_kind.unicast"), 10000);
    assert_eq!(
        u(&r, "sent.bytes"),
        10000 * 60,
        "64-byte frames are 60 bytes without FCS"
    );
    assert_eq!(u(&r, "received.replies"), 10000);
    assert_eq!(u(&r, "received.replies_by_kind.unicast"), 10000);
    assert_eq!(u(&r, "loss.unicast_sent"), 10000);
    assert_eq!(u(&r, "loss.unicast_replies"), 10000);
    assert_eq!(r["loss"]["lost"], 0);
    assert_eq!(u(&r, "sink.unicast"), 10000);
    assert!(r["sent"]["pps"].as_f64().unwrap() > 0.0);
}

#[test]
fn memory_backend_every_kind_is_what_the_l3ns_parser_sees() {
    let profile = scripts().join("malformed.toml");
    let out = pktgen(
        &[
            "--backend",
            "memory",
            "--profile",
            profile.to_str().unwrap(),
            "--mix",
            "unicast=8,limited_broadcast=1,directed_broadcast=1,unowned=2,bad_checksum=1,truncated=1,fragment=1,bad_ihl=1",
            "--rate",
            "0",
            "--count",
            "16000",
            "--dst-mac",
            "auto",
            "--json",
            "-q",
        ],
        Duration::from_secs(60),
    );
    let r = json_of(&out);
    assert_eq!(u(&r, "sent.packets"), 16000);
    // Exact shares: 16000 is a whole number of round-robin periods (16).
    assert_eq!(u(&r, "sent.by_kind.unicast"), 8000);
    assert_eq!(u(&r, "sent.by_kind.unowned"), 2000);
    for (kind, drop) in KINDS {
        let sent = u(&r, &format!("sent.by_kind.{kind}"));
        assert!(sent > 0, "{kind} was sent");
        let seen = u(&r, &format!("sink.{}", drop.unwrap_or(kind)));
        assert_eq!(seen, sent, "{kind}: the sink saw {seen}, {sent} sent");
    }
    assert_eq!(u(&r, "received.replies_by_kind.unicast"), 8000);
    assert_eq!(r["loss"]["lost"], 0);
    assert_eq!(
        r["arp"]["resolved"], "10.1.0.1 is at 02:00:00:00:00:01",
        "dst_mac = auto resolved over ARP"
    );
    assert_eq!(
        u(&r, "sink.arp_request_answered"),
        u(&r, "arp.requests_sent")
    );
}

#[test]
fn memory_backend_paces_with_the_token_bucket() {
    // 400 frames at 2000 pps: the first burst of 32 leaves at once, the rest take ~0.18 s.
    let out = pktgen(
        &[
            "--backend",
            "memory",
            "--rate",
            "2000",
            "--count",
            "400",
            "--json",
            "-q",
        ],
        Duration::from_secs(60),
    );
    let r = json_of(&out);
    assert_eq!(u(&r, "sent.packets"), 400);
    let secs = r["duration_s"].as_f64().unwrap();
    assert!(secs >= 0.1, "400 frames at 2000 pps took only {secs}s");
    assert_eq!(r["rate_limit_pps"].as_f64(), Some(2000.0));
}

#[test]
fn every_profile_loads_and_runs_on_memory() {
    let mut n = 0;
    for e in std::fs::read_dir(scripts()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        n += 1;
        let p = path.to_str().unwrap();
        let printed = pktgen(
            &["--profile", p, "--print-profile"],
            Duration::from_secs(30),
        );
        assert!(printed.status.success(), "{p}: {printed:?}");
        let out = pktgen(
            &[
                "--backend",
                "memory",
                "--profile",
                p,
                "--rate",
                "0",
                "--count",
                "2000",
                "--drain",
                "0.2",
                "--json",
                "-q",
            ],
            Duration::from_secs(60),
        );
        let r = json_of(&out);
        assert_eq!(u(&r, "sent.packets"), 2000, "{p}");
        let sent_uni = u(&r, "sent.by_kind.unicast");
        assert_eq!(u(&r, "received.replies_by_kind.unicast"), sent_uni, "{p}");
    }
    assert!(
        n >= 4,
        "unicast, broadcast-mix, malformed and scale profiles exist"
    );
}

#[test]
fn bad_arguments_fail_with_a_message() {
    for (args, needle) in [
        (vec!["--set", "frame.nope=1"], "nope"),
        (vec!["--mix", "multicast=3"], "unknown kind"),
        (vec!["--frame-size", "20"], "frame_size"),
        (vec!["--src-mac", "zz"], "MAC"),
        (vec!["--backend", "afpacket"], "--iface"),
        (vec!["--backend", "memory", "--iface", "lo"], "afpacket"),
    ] {
        let out = pktgen(&args, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("l3ns-pktgen: error:") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn scripts_pass_luac_and_shellcheck() {
    let mut cmd = Command::new("bash");
    cmd.arg(scripts().join("check.sh"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = ChildGuard::spawn(&mut cmd, "check.sh").wait_with_deadline(Duration::from_secs(120));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "check.sh failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn testpmd_script_checks_its_arguments() {
    let script = scripts().join("testpmd-gen.sh");
    let run = |args: &[&str]| {
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ChildGuard::spawn(&mut cmd, "testpmd-gen.sh").wait_with_deadline(Duration::from_secs(30))
    };
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--eth-peer"));
    for bad in [
        vec!["--vdev", "net_null0", "--mode", "rxonly"],
        vec![],
        vec!["--vdev", "net_null0", "--memif", "/tmp/x.sock"],
        vec!["--vdev", "net_null0", "--eth-peer", "nope"],
        vec!["--vdev", "net_null0", "--duration"],
    ] {
        let out = run(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {:?}", out);
    }
    let dry = run(&[
        "--memif",
        "/run/l3ns.sock",
        "--mode",
        "flowgen",
        "--flows",
        "64",
        "--dry-run",
    ]);
    let cmd = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success());
    assert!(
        cmd.contains("net_memif0")
            && cmd.contains("--forward-mode=flowgen")
            && cmd.contains("--flowgen-flows=64"),
        "{cmd}"
    );
}

#[test]
fn testpmd_txonly_on_net_null_prints_tx_counts() {
    if !is_root() || !have("dpdk-testpmd") {
        eprintln!("skipped: needs root and dpdk-testpmd");
        return;
    }
    let mut cmd = Command::new("bash");
    cmd.arg(scripts().join("testpmd-gen.sh"))
        .args(["--vdev", "net_null0", "--duration", "2", "--mem", "256"])
        .args([
            "--file-prefix",
            &format!("l3ns-pgtest-{}", std::process::id()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out =
        ChildGuard::spawn(&mut cmd, "testpmd-gen.sh").wait_with_deadline(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "testpmd-gen.sh failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "sent")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no TX count in: {text}"));
    assert!(sent > 0, "{text}");
}

/// Two network namespaces joined by a veth pair, deleted (with the pair) on drop.
struct Netns {
    gen: String,
    echo: String,
}

impl Netns {
    fn create(gen_if: &str, echo_if: &str) -> Netns {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Netns {
            gen: format!("l3pg-gen-{tag}"),
            echo: format!("l3pg-echo-{tag}"),
        };
        ip(&["netns", "add", &ns.gen]);
        ip(&["netns", "add", &ns.echo]);
        ip(&[
            "link", "add", gen_if, "netns", &ns.gen, "type", "veth", "peer", "name", echo_if,
            "netns", &ns.echo,
        ]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.gen, &self.echo] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

const ECHO_SERVER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", 7))
s.settimeout(0.2)
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        continue
    s.sendto(data, addr)
"#;

#[test]
fn afpacket_against_the_kernel_and_a_python_echo_server() {
    if !is_root() || !have("ip") || !have("python3") {
        eprintln!("skipped: needs root, ip and python3");
        return;
    }
    let id = std::process::id() % 100_000;
    let (gen_if, echo_if) = (format!("pg{id}g"), format!("pg{id}e"));
    let ns = Netns::create(&gen_if, &echo_if);
    ip(&["-n", &ns.gen, "link", "set", &gen_if, "up"]);
    // Two namespaces x two addresses, as the profile's formula lays them out: 10.98.0.1 ... .4.
    for a in 1..=4 {
        ip(&[
            "-n",
            &ns.echo,
            "addr",
            "add",
            &format!("10.98.0.{a}/24"),
            "dev",
            &echo_if,
        ]);
    }
    ip(&["-n", &ns.echo, "link", "set", &echo_if, "up"]);
    ip(&["-n", &ns.echo, "link", "set", "lo", "up"]);

    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.echo,
        "python3",
        "-c",
        ECHO_SERVER,
        "60",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut server = ChildGuard::spawn(&mut cmd, "python echo server");
    let stdout = server.child.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("echo server ready within 20 s");
    assert_eq!(ready.trim(), "ready");

    // The receiver's MAC, fixed: the kernel then has to ARP for 10.98.0.99 before it can
    // reply (it would learn our MAC from our own ARP request with dst_mac = auto).
    let link = Command::new("ip")
        .args(["-n", &ns.echo, "-br", "link", "show", "dev", &echo_if])
        .output()
        .expect("ip link show");
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    let echo_mac = link
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in {link:?}"))
        .to_string();

    let run = |extra: &[&str]| {
        let profile = scripts().join("broadcast-mix.toml");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.gen, PKTGEN])
            .args(["--backend", "afpacket", "--iface", &gen_if])
            .args(["--profile", profile.to_str().unwrap()])
            .args(["--src-ip", "10.98.0.99", "--gratuitous-arp"])
            .args([
                "--addr-base",
                "10.98.0.0",
                "--namespaces",
                "2",
                "--addresses-per-ns",
                "2",
            ])
            .args([
                "--broadcast-addr",
                "10.98.0.255",
                "--unowned-base",
                "10.98.1.0",
            ])
            .args(["--rate", "2000", "--drain", "2", "--json", "-q"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = ChildGuard::spawn(&mut cmd, "l3ns-pktgen (afpacket)")
            .wait_with_deadline(Duration::from_secs(60));
        let r = json_of(&out);
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        r
    };

    let r = run(&["--dst-mac", &echo_mac, "--count", "2000"]);
    assert_eq!(u(&r, "sent.packets"), 2000);
    assert_eq!(u(&r, "sent.by_kind.unicast"), 1600);
    assert_eq!(u(&r, "sent.by_kind.limited_broadcast"), 100);
    assert_eq!(u(&r, "sent.by_kind.directed_broadcast"), 100);
    assert_eq!(u(&r, "sent.by_kind.unowned"), 200);
    assert_eq!(u(&r, "arp.gratuitous_sent"), 1);
    assert!(
        u(&r, "arp.requests_for_us") >= 1,
        "the kernel asked for 10.98.0.99"
    );
    assert!(u(&r, "arp.replies_sent") >= 1, "and we answered");
    // The kernel echoes everything addressed to it; 1% slack for a loaded 2-core machine.
    let replies = u(&r, "loss.unicast_replies");
    assert!(
        (1584..=1600).contains(&replies),
        "unicast replies {replies} of 1600"
    );
    assert!(u(&r, "received.replies_by_kind.limited_broadcast") >= 99);
    assert!(u(&r, "received.replies_by_kind.directed_broadcast") >= 99);
    assert_eq!(
        u(&r, "received.replies_by_kind.unowned"),
        0,
        "not the kernel's: dropped"
    );

    // dst_mac = auto: resolved with the kernel's ARP reply.
    let r = run(&[
        "--dst-mac",
        "auto",
        "--count",
        "200",
        "--mix",
        "limited_broadcast=0,directed_broadcast=0,unowned=0",
    ]);
    assert_eq!(
        r["arp"]["resolved"].as_str(),
        Some(format!("10.98.0.1 is at {echo_mac}").as_str())
    );
    assert_eq!(u(&r, "sent.by_kind.unicast"), 200);
    assert!(u(&r, "loss.unicast_replies") >= 198);
    drop(server);
    drop(ns);
}
