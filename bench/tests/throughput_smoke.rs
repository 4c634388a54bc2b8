//! `l3ns-throughput` (the harness behind `bench/scripts/scale.py` and RESULTS.md's delivery
//! figures) end to end on a small set-up, so that the tool cannot silently break: its JSON,
//! its accounting (every packet delivered or dropped) and its argument checks. No privileges.

use serde_json::Value;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{output_within, u};

const THROUGHPUT: &str = env!("CARGO_BIN_EXE_l3ns-throughput");

/// Runs the tool to completion within `deadline` (killed by PID if it overruns).
fn run(args: &[&str], deadline: Duration) -> std::process::Output {
    let what = format!("l3ns-throughput {args:?}");
    output_within(Command::new(THROUGHPUT).args(args), deadline, &what)
}

#[test]
fn unicast_on_a_small_setup_accounts_for_every_packet() {
    unicast_accounts_for_every_packet(&[]);
}

/// As l3nsd does, a queue per socket: the consumer finds the ten queues to drain by their
/// ready bits, as l3nsd's service thread does.
#[test]
fn unicast_with_a_queue_per_namespace_accounts_for_every_packet() {
    unicast_accounts_for_every_packet(&["--queue-per-ns"]);
}

fn unicast_accounts_for_every_packet(extra: &[&str]) {
    let j = small_unicast(&[&["--frames", "7"], extra].concat());
    assert_eq!(u(&j, "namespaces"), 10);
    assert_eq!(u(&j, "addresses"), 20);
    let s = &j["scenarios"][0];
    assert_eq!(s["name"], "unicast");
    let packets = u(s, "packets");
    assert!(packets > 0, "no packet went through: {s}");
    assert!(u(s, "deliveries") > 0, "nothing delivered: {s}");
    assert_eq!(
        u(s, "deliveries") + u(s, "dropped"),
        packets,
        "every packet is delivered or counted as dropped: {s}"
    );
    assert_eq!(
        u(s, "consumed"),
        u(s, "deliveries"),
        "the consumer took every datagram delivered: {s}"
    );
    assert!(s["mpps"].as_f64().is_some_and(|m| m > 0.0), "{s}");
}

/// The JSON of a half-second unicast run over 10 namespaces of 2 addresses, with `extra`.
fn small_unicast(extra: &[&str]) -> Value {
    let mut args = vec![
        "--namespaces",
        "10",
        "--addrs-per-ns",
        "2",
        "--seconds",
        "0.5",
        "--only",
        "unicast",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run(&args, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// `--dst-namespaces 3`: the frames go to the first three namespaces' addresses only.
#[test]
fn traffic_can_be_kept_to_the_first_namespaces() {
    let j = small_unicast(&["--dst-namespaces", "3", "--frames", "64"]);
    assert_eq!(u(&j, "destinations_from_namespaces"), 3);
    // 64 frames drawn from 6 addresses reach all three namespaces, and no other.
    assert_eq!(u(&j, "namespaces_received"), 3, "{j}");
    let s = &j["scenarios"][0];
    assert_eq!(u(s, "deliveries") + u(s, "dropped"), u(s, "packets"), "{s}");

    // Without it, every namespace gets traffic.
    let j = small_unicast(&["--frames", "256"]);
    assert_eq!(u(&j, "destinations_from_namespaces"), 10);
    assert_eq!(u(&j, "namespaces_received"), 10, "{j}");
}

#[test]
fn zero_frames_is_refused_with_the_option_named() {
    let out = run(
        &["--frames", "0", "--seconds", "1"],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--frames"), "{err}");
}
