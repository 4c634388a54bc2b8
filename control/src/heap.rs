//! Where malloc's heap lives: on huge pages by default.
//!
//! With tens of thousands of namespaces the worker is bound by TLB misses on the
//! per-namespace tables (address table, namespace slots, counters), which live on the
//! Rust/glibc heap. glibc (≥ 2.35) can back its heap with 2 MiB pages, but only through the
//! `glibc.malloc.hugetlb` tunable, which it reads from `GLIBC_TUNABLES` when the process
//! starts. So [`apply`], called first thing in `main()` (before any thread and before DPDK's
//! EAL), re-executes the program (`/proc/self/exe`, same argv) with the tunable added to the
//! environment; after that the variable holds the setting and no second re-exec happens.
//! An operator's own `glibc.malloc.hugetlb` in `GLIBC_TUNABLES` always wins.
//!
//! glibc advises only its main arena and the blocks it maps apart; the arenas it makes for
//! other threads (a worker's counters, the control thread's later snapshot updates in
//! l3nsd) stay on 4 KiB pages. Tried and dropped: `glibc.malloc.arena_max=1` (every thread
//! on the main arena) made the worker wait on the control thread's arena lock under churn
//! (100,000 changes/s: 0.82-0.87 of unicast instead of 0.93-0.94); counters in 2 MiB blocks
//! with a fixed mmap threshold cost 5% at one namespace and gained nothing measurable at
//! 100,000 (`bench/RESULTS.md`).

use std::fmt;

/// The tunable's name in `GLIBC_TUNABLES`.
pub const TUNABLE: &str = "glibc.malloc.hugetlb";

/// `--heap`: how malloc's heap is backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HeapMode {
    /// glibc.malloc.hugetlb=1: transparent huge pages via madvise, no reservation; harmless
    /// where THP is off.
    #[default]
    Thp,
    /// glibc.malloc.hugetlb=2: reserved 2 MiB hugetlbfs pages (falls back to normal pages
    /// when none are free; competes with DPDK for them).
    Hugetlb,
    /// Leave malloc alone.
    System,
}

impl HeapMode {
    /// The value of `glibc.malloc.hugetlb` for this mode (`None` for `system`).
    pub fn tunable_value(self) -> Option<u8> {
        match self {
            HeapMode::Thp => Some(1),
            HeapMode::Hugetlb => Some(2),
            HeapMode::System => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HeapMode::Thp => "thp",
            HeapMode::Hugetlb => "hugetlb",
            HeapMode::System => "system",
        }
    }
}

impl fmt::Display for HeapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The help text of `--heap` (shared by l3nsd and the benchmarks).
pub const HELP: &str = "Where malloc's heap lives: on huge pages by default (glibc >= 2.35; \
applied by re-executing the program with GLIBC_TUNABLES=glibc.malloc.hugetlb=N before anything \
else starts; a glibc.malloc.hugetlb already in GLIBC_TUNABLES wins over this option)";

/// The `GLIBC_TUNABLES` value to re-execute with, given the current one; `None` when no
/// re-exec is needed (`system`, or the variable already sets `glibc.malloc.hugetlb`).
pub fn tunables_for(mode: HeapMode, existing: Option<&str>) -> Option<String> {
    let v = mode.tunable_value()?;
    let add = format!("{TUNABLE}={v}");
    match existing {
        Some(e) if sets_hugetlb(e) => None,
        Some(e) if !e.is_empty() => Some(format!("{e}:{add}")),
        _ => Some(add),
    }
}

/// Whether a `GLIBC_TUNABLES` value sets `glibc.malloc.hugetlb`.
fn sets_hugetlb(tunables: &str) -> bool {
    hugetlb_value(tunables).is_some()
}

/// The value `GLIBC_TUNABLES` gives `glibc.malloc.hugetlb` (the last one, as glibc reads
/// them in order).
pub fn hugetlb_value(tunables: &str) -> Option<&str> {
    tunables
        .split(':')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.trim() == TUNABLE)
        .map(|(_, v)| v)
        .next_back()
}

/// What the process runs with, for the start-up line.
#[derive(Debug)]
pub struct HeapStatus {
    /// The requested mode (`--heap`).
    pub requested: HeapMode,
    /// `glibc.malloc.hugetlb` in this process's `GLIBC_TUNABLES`, if any.
    pub tunable: Option<String>,
    /// Why the re-exec did not happen, if it was tried and failed.
    pub exec_error: Option<String>,
}

impl fmt::Display for HeapStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = |v: &str| match v {
            "0" => "malloc's default pages",
            "1" => "transparent huge pages",
            "2" => "hugetlbfs pages, normal pages when none are free",
            _ => "unknown value",
        };
        match (&self.tunable, &self.exec_error) {
            (_, Some(e)) => write!(
                f,
                "heap {} not applied (re-exec failed: {e}), malloc left alone",
                self.requested
            ),
            (None, None) => write!(f, "heap {} (malloc left alone)", self.requested),
            (Some(v), None) => {
                let ours = self.requested.tunable_value().map(|n| n.to_string());
                if ours.as_deref() == Some(v.as_str()) {
                    write!(f, "heap {} ({TUNABLE}={v}: {})", self.requested, what(v))
                } else {
                    write!(
                        f,
                        "heap from GLIBC_TUNABLES ({TUNABLE}={v}: {}; --heap {} not applied)",
                        what(v),
                        self.requested
                    )
                }
            }
        }
    }
}

/// Puts malloc's heap where `mode` says: re-executes the program with `GLIBC_TUNABLES`
/// extended when needed (Linux only; then this does not return). Call it first thing in
/// `main()`, before any thread is spawned and before DPDK's EAL starts. When the re-exec
/// fails, prints a warning to stderr and returns (the program runs with malloc's default).
pub fn apply(mode: HeapMode) -> HeapStatus {
    let existing = std::env::var("GLIBC_TUNABLES").ok();
    let mut exec_error = None;
    if let Some(value) = tunables_for(mode, existing.as_deref()) {
        if let Err(e) = reexec(&value) {
            let prog = std::env::args_os()
                .next()
                .and_then(|a| {
                    std::path::Path::new(&a)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "l3ns".into());
            eprintln!(
                "{prog}: warning: --heap {mode}: cannot re-execute with GLIBC_TUNABLES={value}: \
                 {e}; malloc's heap stays on normal pages"
            );
            exec_error = Some(e.to_string());
        }
    }
    HeapStatus {
        requested: mode,
        tunable: std::env::var("GLIBC_TUNABLES")
            .ok()
            .and_then(|t| hugetlb_value(&t).map(str::to_string)),
        exec_error,
    }
}

#[cfg(target_os = "linux")]
fn reexec(tunables: &str) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    // Only returns on failure.
    Err(cmd.args(args).env("GLIBC_TUNABLES", tunables).exec())
}

#[cfg(not(target_os = "linux"))]
fn reexec(_tunables: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "only on Linux (glibc)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunables_for_each_mode_and_existing_value() {
        use HeapMode::*;
        assert_eq!(
            tunables_for(Thp, None).as_deref(),
            Some("glibc.malloc.hugetlb=1")
        );
        assert_eq!(
            tunables_for(Hugetlb, None).as_deref(),
            Some("glibc.malloc.hugetlb=2")
        );
        assert_eq!(tunables_for(System, None), None);
        assert_eq!(tunables_for(System, Some("glibc.malloc.hugetlb=1")), None);
        assert_eq!(
            tunables_for(Thp, Some("")).as_deref(),
            Some("glibc.malloc.hugetlb=1")
        );
        assert_eq!(
            tunables_for(Thp, Some("glibc.malloc.tcache_count=7")).as_deref(),
            Some("glibc.malloc.tcache_count=7:glibc.malloc.hugetlb=1")
        );
        // Other tunables are kept, ours is appended.
        assert_eq!(
            tunables_for(Thp, Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
        );
        // An operator's own setting wins (no re-exec), whatever its value and place.
        for e in [
            "glibc.malloc.hugetlb=0",
            "glibc.malloc.hugetlb=2",
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0",
            "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=2",
        ] {
            assert_eq!(tunables_for(Thp, Some(e)), None, "{e}");
            assert_eq!(tunables_for(Hugetlb, Some(e)), None, "{e}");
        }
        // A look-alike name is not the setting.
        assert_eq!(
            tunables_for(Thp, Some("glibc.malloc.hugetlbx=0")).as_deref(),
            Some("glibc.malloc.hugetlbx=0:glibc.malloc.hugetlb=1")
        );
    }

    #[test]
    fn hugetlb_value_is_the_last_one() {
        assert_eq!(hugetlb_value("glibc.malloc.hugetlb=1"), Some("1"));
        assert_eq!(
            hugetlb_value("glibc.malloc.hugetlb=1:glibc.malloc.hugetlb=0"),
            Some("0")
        );
        assert_eq!(hugetlb_value("glibc.malloc.arena_max=2"), None);
        assert_eq!(hugetlb_value(""), None);
    }

    #[test]
    fn status_line() {
        let s = |requested, tunable: Option<&str>| {
            HeapStatus {
                requested,
                tunable: tunable.map(str::to_string),
                exec_error: None,
            }
            .to_string()
        };
        assert_eq!(
            s(HeapMode::Thp, Some("1")),
            "heap thp (glibc.malloc.hugetlb=1: transparent huge pages)"
        );
        assert_eq!(s(HeapMode::System, None), "heap system (malloc left alone)");
        assert!(s(HeapMode::Thp, Some("0")).starts_with("heap from GLIBC_TUNABLES"));
    }
}
