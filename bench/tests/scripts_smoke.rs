//! The comparison scripts behind bench/RESULTS.md (`bench/scripts/scale.py`, `churn.py`) run
//! end to end on a tiny set-up against this build's `l3ns-throughput`, so that the commands
//! RESULTS.md gives cannot silently break. Results go to a scratch directory
//! (`L3NS_RESULTS_DIR`), removed afterwards; every run has a deadline and is killed by PID
//! when it overruns. Skipped without python3.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{have, output_within, repo};

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("l3ns-scripts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `bench/scripts/<script> <args>` (split at spaces) with this build's binaries and its
/// results in a fresh scratch directory, within 5 minutes; returns the directory and the JSON
/// file `json` the script wrote there. `None` (the test is skipped) without python3.
fn run_script(script: &str, args: &str, json: &str) -> Option<(Scratch, Value)> {
    if !have("python3") {
        eprintln!("SKIP: no python3");
        return None;
    }
    let dir = Scratch::new(script);
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_l3ns-throughput"))
        .parent()
        .expect("binary dir");
    let out = output_within(
        Command::new("python3")
            .arg(repo().join("bench/scripts").join(script))
            .args(args.split(' '))
            .env("L3NS_BIN_DIR", bin_dir)
            .env("L3NS_RESULTS_DIR", &dir.0),
        Duration::from_secs(300),
        &format!("{script} {args}"),
    );
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.0.join(json);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let j = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    Some((dir, j))
}

fn median(v: &Value) -> f64 {
    v["median"]
        .as_f64()
        .unwrap_or_else(|| panic!("no median in {v}"))
}

#[test]
fn scale_py_measures_a_small_series_and_writes_json_and_plot() {
    let args = "--namespaces 1,50 --addrs 1 --reps 1 --seconds 1 --timeout 120 --frames 64 \
                --out smoke.json";
    let Some((dir, j)) = run_script("scale.py", args, "smoke.json") else {
        return;
    };
    let points = j["series"]["1"].as_array().expect("series 1");
    let ns: Vec<u64> = points
        .iter()
        .map(|p| p["namespaces"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [1, 50], "{j:#}");
    for p in points {
        assert!(median(&p["unicast_mpps"]) > 0.0, "{p}");
        assert!(median(&p["peak_rss_kib"]) > 0.0, "{p}");
    }
    assert!(
        points[1]["mpps_ratio_vs_smallest"].as_f64().is_some(),
        "{j:#}"
    );
    assert_eq!(j["machine"]["frames"], 64);
    let plotted = ["smoke.png", "smoke.svg"]
        .iter()
        .any(|f| dir.0.join(f).exists());
    assert!(plotted, "no plot written next to smoke.json");
}

#[test]
fn churn_py_applies_changes_beside_traffic_and_writes_its_table() {
    let args = "--rates 1000 --namespaces 10 --addrs-per-ns 2 --reps 1 --seconds 1";
    let Some((_dir, j)) = run_script("churn.py", args, "churn.json") else {
        return;
    };
    let row = &j["table"]["1000"];
    assert!(median(&row["unicast_mpps"]) > 0.0, "{row}");
    assert!(median(&row["churn_mpps"]) > 0.0, "{row}");
    // The control thread kept up with 1,000 changes/s (a 1 s run applies most of them).
    assert!(median(&row["changes_per_second"]) > 500.0, "{row}");
}
