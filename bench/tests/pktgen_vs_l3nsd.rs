//! Issue 7: a short smoke of `l3ns-pktgen` against `l3nsd`, so neither tool can silently break
//! the other. As root only: `l3nsd` runs in the root network namespace on the host end of a
//! veth pair (`afpacket` port), `l3ns-pktgen` runs inside a test network namespace on the peer
//! end (`--backend afpacket`) and sends 2,000 frames at 4,000 pps:
//!
//! | kind           | share | frames | to                                 | l3nsd counts it as       |
//! |----------------|-------|--------|------------------------------------|--------------------------|
//! | `unicast`      | 15    | 1500   | 10.94.0.2 (web1), 10.94.0.3 (web2) | `delivered`, echoed      |
//! | `unowned`      | 2     | 200    | 10.94.0.200 .. 10.94.0.203         | port drop `unclaimed`    |
//! | `bad_checksum` | 1     | 100    | web1's / web2's address            | port drop `bad_checksum` |
//! | `truncated`    | 1     | 100    | (33 bytes; veth keeps them short)  | port drop `truncated`    |
//! | `bad_ihl`      | 1     | 100    | web1's / web2's address            | port drop `bad_ihl`      |
//!
//! `fragment` is left out on purpose: the AF_PACKET port's fanout group asks the kernel to
//! reassemble (`PACKET_FANOUT_FLAG_DEFRAG`), so a lone first fragment never reaches l3ns (see
//! `control/tests/e2e_linux_client.rs`).
//!
//! Every count is checked exactly: the generator's sent counts per kind, the echo replies it
//! received (= unicast sent), and l3nsd's counters read with `l3nsctl --json stats` (deltas over
//! the run): web1's and web2's `delivered` and `tx_packets` (the echoes), root's (none), and the
//! port's drop reasons (and no drop of any other reason). Exact is expected: l3nsd learns the
//! generator's MAC from its ARP request (`--dst-mac auto`) before the first datagram; every frame
//! of the run fits in the TPACKET rings at once (128 KiB blocks), and each namespace's 750
//! datagrams fit in its socket queue (`queue_depth = 1024`), so even a descheduled worker or echo
//! thread on a loaded machine delays frames but does not drop them. Only l3nsd's worker (pinned
//! to core 0, `idle_sleep_us = 50`) and the generator use CPU, for about a second.
//!
//! `l3nsd` and `l3nsctl` belong to `l3ns-control`: they are taken from `target/<profile>/`
//! next to this test's executable and built with `cargo build -p l3ns-control --bins` (same
//! profile) when missing (and warns when older than a source file cargo lists in their dep-info)
//! (`target/<profile>/l3nsd.d`).
//!
//! Only 10.94.0.0/24 is used, inside the test's veth; names carry the pid; a guard deletes the
//! veth and the namespace and kills l3nsd (through its `Child`, i.e. by PID) even when the test
//! fails; every wait has a deadline (a child that overruns it is killed the same way).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{have, is_root, repo, u};

const PKTGEN: &str = env!("CARGO_BIN_EXE_l3ns-pktgen");
const GENERATOR_IP: &str = "10.94.0.99";
const FRAMES: u64 = 2000;
const RATE_PPS: &str = "4000";
/// Shares; their sum (20) divides `FRAMES`, so every count below is exact.
const MIX: &str = "unicast=15,unowned=2,bad_checksum=1,truncated=1,bad_ihl=1";
const UNICAST: u64 = 1500;
const UNOWNED: u64 = 200;
const MALFORMED: [(&str, u64); 3] = [("bad_checksum", 100), ("truncated", 100), ("bad_ihl", 100)];

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Waits up to `timeout` for `child` to exit and collects its output; kills it (by PID, through
/// the handle) and panics on timeout.
fn wait_bounded(mut child: Child, what: &str, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect killed child");
                panic!(
                    "{what} did not finish within {timeout:?}; killed. stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("waiting for {what}: {e}");
            }
        }
    }
    child.wait_with_output().expect("collect output")
}

// ---------------------------------------------------------------------------------------------
// l3nsd and l3nsctl from l3ns-control

/// `target/<profile>/` of this test executable (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("the test executable is in deps/");
    deps.parent()
        .expect("deps/ is in target/<profile>/")
        .to_path_buf()
}

/// Whether `bin` exists and is at least as new as every source file cargo recorded for it
/// (`<bin>.d`, the dep-info cargo writes next to the binary).
fn fresh(bin: &Path) -> bool {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let mut dep_info = bin.as_os_str().to_owned();
    dep_info.push(".d");
    let Ok(text) = std::fs::read_to_string(&dep_info) else {
        return false;
    };
    let Some((_, deps)) = text.lines().next().and_then(|l| l.split_once(": ")) else {
        return false;
    };
    // Spaces inside paths are escaped as "\ ".
    let deps = deps.replace("\\ ", "\0");
    deps.split_whitespace()
        .map(|d| PathBuf::from(d.replace('\0', " ")))
        .all(|d| {
            d.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m <= built)
        })
}

/// Paths of `l3nsd` and `l3nsctl`, built with cargo (same profile, same target directory) when
/// missing. Binaries older than their sources are only warned about: rebuilding them here could
/// replace, with other features, a binary that tests running in parallel are using.
fn control_binaries() -> (PathBuf, PathBuf) {
    let dir = profile_dir();
    let bins = (dir.join("l3nsd"), dir.join("l3nsctl"));
    if bins.0.is_file() && bins.1.is_file() {
        if !(fresh(&bins.0) && fresh(&bins.1)) {
            eprintln!(
                "warning: {} is older than its sources; run `cargo build -p l3ns-control --bins`",
                bins.0.display()
            );
        }
        return bins;
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile directory name")
        .to_string();
    let target_dir = dir.parent().expect("target/").to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "l3ns-control", "--bins"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    cmd.arg("--target-dir")
        .arg(&target_dir)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "building l3nsd and l3nsctl ({profile}) into {}: {cmd:?}",
        target_dir.display()
    );
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", env!("CARGO")));
    let out = wait_bounded(
        child,
        "cargo build -p l3ns-control --bins",
        Duration::from_secs(900),
    );
    assert!(
        out.status.success() && bins.0.is_file() && bins.1.is_file(),
        "l3nsd and l3nsctl are needed in {} and `cargo build -p l3ns-control --bins` did not \
         make them ({}); build them first:\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    bins
}

// ---------------------------------------------------------------------------------------------
// The network: a namespace with the generator's end of a veth, l3nsd on the host end

struct Env {
    netns: String,
    host_if: String,
    peer_if: String,
    dir: PathBuf,
    l3nsd: PathBuf,
    l3nsctl: PathBuf,
    daemon: Option<Child>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        // Deleting one end deletes the pair; the peer would also go with the namespace.
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Env {
    fn new(l3nsd: PathBuf, l3nsctl: PathBuf) -> Env {
        let pid = std::process::id();
        // Interface names: at most 15 bytes ("l3pvh" + 5 digits).
        let env = Env {
            netns: format!("l3ns-pgvs-{pid}"),
            host_if: format!("l3pvh{}", pid % 100_000),
            peer_if: format!("l3pvp{}", pid % 100_000),
            dir: std::env::temp_dir().join(format!("l3ns-pgvs-{pid}")),
            l3nsd,
            l3nsctl,
            daemon: None,
        };
        let _ = std::fs::remove_dir_all(&env.dir);
        std::fs::create_dir_all(&env.dir).unwrap();
        ok("ip", &["netns", "add", &env.netns]);
        ok(
            "ip",
            &[
                "link",
                "add",
                &env.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &env.peer_if,
                "netns",
                &env.netns,
            ],
        );
        // No IPv6 (router solicitations, MLD) on either end: only the generator's frames and
        // ARP cross the veth. The generator's end has no IPv4 address either, so its kernel
        // neither answers ARP for 10.94.0.99 nor sends ICMP for the echoes (l3ns-pktgen does).
        let _ = run(
            "sysctl",
            &[
                "-qw",
                &format!("net.ipv6.conf.{}.disable_ipv6=1", env.host_if),
            ],
        );
        ok(
            "ip",
            &[
                "netns",
                "exec",
                &env.netns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{}.disable_ipv6=1", env.peer_if),
            ],
        );
        ok("ip", &["link", "set", &env.host_if, "up"]);
        ok("ip", &["-n", &env.netns, "link", "set", &env.peer_if, "up"]);
        env
    }

    fn control(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("l3nsd.log")).unwrap_or_default()
    }

    /// `l3nsctl --json ARGS`, bounded; the `ok` member of the answer.
    fn ctl(&self, args: &[&str]) -> Value {
        let child = Command::new(&self.l3nsctl)
            .arg("--control")
            .arg(self.control())
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run l3nsctl");
        let o = wait_bounded(child, "l3nsctl", Duration::from_secs(10));
        assert!(
            o.status.success(),
            "l3nsctl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "l3nsctl {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        });
        v.get("ok").cloned().unwrap_or(Value::Null)
    }

    /// Starts l3nsd on the host end and waits (bounded) until its control socket answers.
    fn start(&mut self) {
        let config = format!(
            r#"
[dataplane]
workers = [0]
idle_sleep_us = 50
queue_depth = 1024

[[port]]
name = "veth0"
backend = "afpacket"
iface = "{iface}"

[[namespace]]
name = "web1"
[[namespace]]
name = "web2"

[[address]]
address = "10.94.0.1/24"
dev = "veth0"
[[address]]
address = "10.94.0.2/24"
dev = "veth0"
assign_to = "web1"
[[address]]
address = "10.94.0.3/24"
dev = "veth0"
assign_to = "web2"

[[socket]]
bind = "0.0.0.0:7"
service = "echo"
[[socket]]
namespace = "web1"
bind = "0.0.0.0:7"
service = "echo"
[[socket]]
namespace = "web2"
bind = "0.0.0.0:7"
service = "echo"

[control]
socket = "{control}"

[metrics]
listen = "off"
"#,
            iface = self.host_if,
            control = self.control().display(),
        );
        let path = self.dir.join("l3nsd.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(self.dir.join("l3nsd.log")).unwrap();
        let child = Command::new(&self.l3nsd)
            .arg("--config")
            .arg(&path)
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.l3nsd.display()));
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = Command::new(&self.l3nsctl)
                .arg("--control")
                .arg(self.control())
                .arg("status")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if o.status.success() {
                break;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("l3nsd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "l3nsd did not answer within 20 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The counters this test checks, from one `l3nsctl --json stats`.
    fn counters(&self) -> Counters {
        let v = self.ctl(&["stats"]);
        let ns = |name: &str, field: &str| {
            v["namespaces"]
                .as_array()
                .unwrap_or_else(|| panic!("no namespaces in {v:#}"))
                .iter()
                .find(|n| n["namespace"] == name)
                .and_then(|n| n[field].as_u64())
                .unwrap_or_else(|| panic!("no {field} for {name} in {v:#}"))
        };
        let ports = v["ports"]
            .as_array()
            .unwrap_or_else(|| panic!("no ports in {v:#}"));
        let drop = |reason: &str| {
            ports
                .iter()
                .map(|p| p["dropped"][reason].as_u64().unwrap_or(0))
                .sum()
        };
        Counters {
            delivered: [
                ns("root", "delivered"),
                ns("web1", "delivered"),
                ns("web2", "delivered"),
            ],
            echoed: [
                ns("root", "tx_packets"),
                ns("web1", "tx_packets"),
                ns("web2", "tx_packets"),
            ],
            unclaimed: drop("unclaimed"),
            all_drops: ports
                .iter()
                .filter_map(|p| p["dropped"].as_object())
                .flat_map(|d| d.values())
                .filter_map(Value::as_u64)
                .sum(),
            malformed: MALFORMED.map(|(r, _)| drop(r)),
            raw: v,
        }
    }
}

/// `(delivered, echoed, unclaimed, malformed)`.
type Delta = ([u64; 3], [u64; 3], u64, [u64; 3]);

#[derive(Debug)]
struct Counters {
    /// root, web1, web2.
    delivered: [u64; 3],
    /// root, web1, web2: datagrams sent (here: echoes).
    echoed: [u64; 3],
    unclaimed: u64,
    /// Port drops of every reason.
    all_drops: u64,
    /// In `MALFORMED` order.
    malformed: [u64; 3],
    raw: Value,
}

impl Counters {
    /// `(delivered, echoed, unclaimed, malformed)` of `self - before`.
    fn since(&self, before: &Counters) -> Delta {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        (
            std::array::from_fn(|i| d(self.delivered[i], before.delivered[i])),
            std::array::from_fn(|i| d(self.echoed[i], before.echoed[i])),
            d(self.unclaimed, before.unclaimed),
            std::array::from_fn(|i| d(self.malformed[i], before.malformed[i])),
        )
    }
}

#[test]
fn pktgen_over_afpacket_against_l3nsd_counts_match() {
    if !is_root() || !have("ip") {
        eprintln!("skipped: needs root (veth, network namespaces, AF_PACKET)");
        return;
    }
    let started = Instant::now();
    let (l3nsd, l3nsctl) = control_binaries();
    let mut env = Env::new(l3nsd, l3nsctl);
    env.start();
    let before = env.counters();

    // The generator, inside the namespace on the peer end: unicast alternates web1's and web2's
    // address (k % 2), unowned walks 10.94.0.200 .. .203; `--ring` = the frame count, so the
    // ring never wraps and every per-kind, per-address count is exact.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &env.netns, PKTGEN])
        .args(["--backend", "afpacket", "--iface", &env.peer_if])
        .args(["--src-ip", GENERATOR_IP, "--dst-mac", "auto"])
        .args(["--addr-base", "10.94.0.0", "--addr-first", "2"])
        .args(["--namespaces", "2", "--addresses-per-ns", "1"])
        .args(["--unowned-base", "10.94.0.0", "--set", "unowned.first=200"])
        .args(["--unowned-count", "4", "--dst-port", "7"])
        .args(["--mix", MIX, "--set", "run.resolve_timeout=5"])
        .args([
            "--count",
            &FRAMES.to_string(),
            "--ring",
            &FRAMES.to_string(),
        ])
        .args(["--rate", RATE_PPS, "--drain", "2", "--json", "-q"])
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start l3ns-pktgen");
    // Killed through the handle (by PID) on timeout inside wait_bounded.
    let out = wait_bounded(child, "l3ns-pktgen (afpacket)", Duration::from_secs(30));
    assert!(
        out.status.success(),
        "l3ns-pktgen failed ({}): {}\nl3nsd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "l3ns-pktgen: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    println!(
        "l3ns-pktgen report:\n{}",
        serde_json::to_string_pretty(&r).unwrap()
    );

    // What the generator sent.
    assert_eq!(u(&r, "sent.packets"), FRAMES);
    assert_eq!(u(&r, "sent.by_kind.unicast"), UNICAST);
    assert_eq!(u(&r, "sent.by_kind.unowned"), UNOWNED);
    for (kind, n) in MALFORMED {
        assert_eq!(u(&r, &format!("sent.by_kind.{kind}")), n, "{kind} sent");
    }
    for kind in ["limited_broadcast", "directed_broadcast", "fragment"] {
        assert_eq!(u(&r, &format!("sent.by_kind.{kind}")), 0, "{kind} sent");
    }
    assert_eq!(
        r["arp"]["resolved"]
            .as_str()
            .map(|s| s.starts_with("10.94.0.2 is at ")),
        Some(true),
        "--dst-mac auto resolved web1's address with l3nsd's ARP reply"
    );

    // Every unicast datagram echoed (from the address it was sent to: the generator counts a
    // reply only when it carries its tag back to its own address and source port).
    assert_eq!(u(&r, "loss.unicast_sent"), UNICAST);
    assert_eq!(
        u(&r, "loss.unicast_replies"),
        UNICAST,
        "echo replies; l3nsd log:\n{}",
        env.log()
    );
    assert_eq!(r["loss"]["lost"], 0);
    assert_eq!(u(&r, "received.replies"), UNICAST, "nothing else echoed");
    assert_eq!(u(&r, "received.replies_by_kind.unowned"), 0);

    // l3nsd's view. The counters are read after the generator's drain (every echo was back,
    // so every frame sent before them was processed); still, poll briefly for the last ones.
    let want_delivered = [0, UNICAST / 2, UNICAST / 2];
    let want_malformed = MALFORMED.map(|(_, n)| n);
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let now = env.counters();
        if now.since(&before) == (want_delivered, want_delivered, UNOWNED, want_malformed)
            || Instant::now() >= deadline
        {
            break now;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (delivered, echoed, unclaimed, malformed) = after.since(&before);
    let all_drops = after.all_drops - before.all_drops;
    let raw = serde_json::to_string_pretty(&after.raw).unwrap();
    println!("l3nsctl --json stats after the run:\n{raw}");
    assert_eq!(
        delivered, want_delivered,
        "delivered to [root, web1, web2] during the run; stats:\n{raw}"
    );
    assert_eq!(
        echoed, want_delivered,
        "sent (echoes) by [root, web1, web2] during the run; stats:\n{raw}"
    );
    assert_eq!(unclaimed, UNOWNED, "unclaimed drops; stats:\n{raw}");
    assert_eq!(
        malformed,
        want_malformed,
        "drops {:?}; stats:\n{raw}",
        MALFORMED.map(|(r, _)| r)
    );
    assert_eq!(
        all_drops,
        UNOWNED + want_malformed.iter().sum::<u64>(),
        "no port drop of any other reason; stats:\n{raw}"
    );
    assert!(
        env.daemon.as_mut().unwrap().try_wait().unwrap().is_none(),
        "l3nsd still running: {}",
        env.log()
    );
    drop(env);
    println!("pktgen_vs_l3nsd: done in {:.1?}", started.elapsed());
}
