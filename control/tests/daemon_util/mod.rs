//! Helpers for the daemon tests: temporary directories, child processes killed by PID when a
//! test fails, bounded waits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const L3NSD: &str = env!("CARGO_BIN_EXE_l3nsd");

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("l3nsd-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed (by its PID) and reaped if the test does not wait for it.
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Guard {
        Guard(Some(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn"),
        ))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Waits at most `limit` for the process to exit; kills it past that (and panics).
    pub fn wait(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "process {} did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM (through kill(1)) to the process.
    pub fn terminate(&self) {
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1)");
        assert!(st.success());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `l3nsd` with `args` to completion (bounded by `limit`).
pub fn l3nsd(args: &[&str], limit: Duration) -> Output {
    Guard::spawn(Command::new(L3NSD).args(args)).wait(limit)
}

/// The stdout of a run that must have exited 0 (else the test fails showing both outputs).
pub fn succeeded(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    stdout
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits until `path` exists (bounded).
pub fn wait_for_path(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The rows of the last table `l3nsd` printed: namespace → (rx, delivered, bcast, no_socket,
/// queue_full, ns_gone, tx, spoofed).
pub fn last_table(stdout: &str) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut rows = std::collections::BTreeMap::new();
    let last = stdout.rsplit("--- l3nsd t=").next().unwrap_or("");
    for line in last.lines().skip(2) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 9 {
            if let Ok(nums) = cols[1..]
                .iter()
                .map(|c| c.parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
            {
                rows.insert(cols[0].to_string(), nums);
            }
        }
    }
    rows
}

/// A configuration with one memory port and root's 10.0.0.1/24, followed by `rest`.
pub fn base_config(rest: &str) -> String {
    config_with_port("", rest)
}

/// Like `base_config`, with `port_extra` (e.g. a `[port.generator]`) inside the port entry.
pub fn config_with_port(port_extra: &str, rest: &str) -> String {
    format!(
        r#"[dataplane]
workers = 1
idle_sleep_us = 200

[[port]]
name = "mem0"
backend = "memory"
mac = "02:00:00:00:00:01"
{port_extra}
[[address]]
address = "10.0.0.1/24"
dev = "mem0"
{rest}"#
    )
}

/// Stops l3nsd with SIGTERM, so that it shuts down and cleans up (its DPDK runtime directory
/// among the rest), and kills it if it has not exited within 10 s.
pub fn stop_gently(d: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(d.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = d.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = d.kill();
    let _ = d.wait();
}
