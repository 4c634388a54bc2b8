//! `bench/scripts/many_ns.py` (l3nsd started on a generated configuration of many namespaces,
//! each with a `sink` socket; bench/RESULTS.md, twelfth sitting) runs end to end against this
//! build's l3nsd, so that the command RESULTS.md gives cannot silently break, and l3nsd with
//! 300 namespaces runs a handful of threads (one accepting thread for every control socket).
//! Bounded: the script stops l3nsd itself; this test kills the script by PID after 2 minutes.
//! Skipped without python3.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn many_ns_py_starts_l3nsd_with_300_namespaces_on_a_few_threads() {
    let python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !python.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: no python3");
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_l3nsd")).parent().unwrap();
    assert!(bin_dir.join("l3nsctl").exists(), "l3nsctl beside l3nsd");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/scripts/many_ns.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--namespaces", "300", "--seconds", "0.5", "--json"])
        .env("L3NS_BIN_DIR", bin_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn many_ns.py");
    let t = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("many_ns.py still running after 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "many_ns.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("many_ns.py --json");
    let r = &v[0];
    assert_eq!(r["namespaces"], 300, "{r}");
    let threads = r["threads"].as_u64().unwrap();
    assert!(threads < 20, "{threads} threads for 300 namespaces: {r}");
    // A tenant socket each, beside the root socket: at least 300 descriptors.
    assert!(r["fds"].as_u64().unwrap() > 300, "{r}");
    assert_eq!(r["errors"].as_array().unwrap().len(), 0, "{r}");
}
