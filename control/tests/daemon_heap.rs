//! `l3nsd --heap`: the real binary re-executes itself with `GLIBC_TUNABLES` so that glibc's
//! malloc puts its heap on huge pages (default `thp`), leaves malloc alone with `--heap
//! system`, and keeps an operator's own `glibc.malloc.hugetlb`. Observed from the outside:
//! the running daemon's `/proc/PID/environ` (the re-exec keeps the PID) and its start-up
//! line. Every child is killed by PID if a test fails; every wait is bounded.

mod daemon_util;

use daemon_util::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// Starts the demo with `args` and `GLIBC_TUNABLES` = `tunables` (unset when `None`), waits
/// for its control socket (created after any re-exec), and returns the daemon's
/// `GLIBC_TUNABLES` as seen in /proc/PID/environ and its stdout after a SIGTERM.
fn run(name: &str, args: &[&str], tunables: Option<&str>) -> (Option<String>, String) {
    let dir = TempDir::new(name);
    let ctl = dir.path("c.sock");
    let mut cmd = Command::new(L3NSD);
    cmd.args([
        "--duration",
        "30",
        "--metrics",
        "off",
        "--control",
        ctl.to_str().unwrap(),
    ])
    .args(args);
    match tunables {
        Some(t) => cmd.env("GLIBC_TUNABLES", t),
        None => cmd.env_remove("GLIBC_TUNABLES"),
    };
    let d = Guard::spawn(&mut cmd);
    assert!(
        wait_for_path(&ctl, Duration::from_secs(20)),
        "no control socket"
    );
    let environ = std::fs::read(format!("/proc/{}/environ", d.pid())).expect("environ");
    let tun = environ
        .split(|b| *b == 0)
        .filter_map(|kv| kv.strip_prefix(b"GLIBC_TUNABLES="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .next();
    d.terminate();
    let out = d.wait(LIMIT);
    let stdout = succeeded(&out);
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    (tun, stdout)
}

#[test]
fn default_heap_is_on_transparent_huge_pages() {
    let (tun, stdout) = run("heap-default", &[], None);
    assert_eq!(tun.as_deref(), Some("glibc.malloc.hugetlb=1"));
    assert!(
        stdout.starts_with("l3nsd: heap thp (glibc.malloc.hugetlb=1"),
        "{stdout}"
    );
    // Other tunables are kept. (glibc 2.36 NUL-terminates each value inside the original
    // environment block while parsing, so /proc/PID/environ shows only the first tunable;
    // the daemon's own line shows the one it added.)
    let (tun, stdout) = run("heap-keep", &[], Some("glibc.malloc.arena_max=2"));
    assert!(
        tun.as_deref()
            .is_some_and(|t| t.starts_with("glibc.malloc.arena_max=2")),
        "{tun:?}"
    );
    assert!(
        stdout.starts_with("l3nsd: heap thp (glibc.malloc.hugetlb=1"),
        "{stdout}"
    );
}

#[test]
fn heap_system_leaves_malloc_alone_and_quiet_stays_quiet() {
    let (tun, stdout) = run("heap-system", &["--heap", "system"], None);
    assert_eq!(tun, None);
    assert!(
        stdout.starts_with("l3nsd: heap system (malloc left alone)"),
        "{stdout}"
    );
    let (tun, stdout) = run("heap-quiet", &["--heap", "hugetlb", "--quiet"], None);
    assert_eq!(tun.as_deref(), Some("glibc.malloc.hugetlb=2"));
    assert_eq!(stdout, "", "--quiet prints nothing");
}

#[test]
fn an_operators_setting_wins() {
    let (tun, stdout) = run("heap-operator", &[], Some("glibc.malloc.hugetlb=0"));
    assert_eq!(tun.as_deref(), Some("glibc.malloc.hugetlb=0"));
    assert!(
        stdout.starts_with("l3nsd: heap from GLIBC_TUNABLES (glibc.malloc.hugetlb=0"),
        "{stdout}"
    );
}
