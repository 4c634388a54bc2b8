//! The comparison scripts behind bench/RESULTS.md (`bench/scripts/scale.py`, `churn.py`,
//! `accounting.py`, and `all.py` with `report.py`, which write RESULTS.md's generated block)
//! run end to end on a tiny set-up against this build's `l3ns-throughput`, so that the
//! commands RESULTS.md gives cannot silently break. Results go to a scratch directory
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

/// memif.py's runs: per repetition l3nsd's received rate over the fastest testpmd
/// receiver's, as `{median, min, max}`.
fn over_fastest_testpmd(runs: &Value) -> Value {
    let runs = runs.as_array().expect("runs");
    let rx = |r: &Value| r["rx_pps"].as_f64();
    let mut reps: Vec<u64> = runs.iter().filter_map(|r| r["rep"].as_u64()).collect();
    reps.sort_unstable();
    reps.dedup();
    let mut xs: Vec<f64> = reps
        .iter()
        .filter_map(|&rep| {
            let of = |pred: &dyn Fn(&str) -> bool| {
                runs.iter()
                    .filter(|r| r["rep"].as_u64() == Some(rep))
                    .filter(|r| pred(r["server"].as_str().unwrap_or("")))
                    .filter_map(rx)
                    .collect::<Vec<f64>>()
            };
            let l3 = *of(&|s| s == "l3nsd").first()?;
            let best = of(&|s| s.starts_with("testpmd-"))
                .into_iter()
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))?;
            Some(l3 / best)
        })
        .collect();
    assert!(!xs.is_empty(), "no repetition with l3nsd and testpmd");
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let med = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    serde_json::json!({"median": med, "min": xs[0], "max": xs[n - 1]})
}

fn median(v: &Value) -> f64 {
    v["median"]
        .as_f64()
        .unwrap_or_else(|| panic!("no median in {v}"))
}

#[test]
fn scale_py_measures_a_small_series_and_writes_json_and_plot() {
    // With a queue per namespace (the option is passed through; the shared queue is the
    // throughput smoke tests' default).
    let args = "--namespaces 1,50 --addrs 1 --reps 1 --seconds 1 --timeout 120 --frames 64 \
                --queue-per-ns --out smoke.json";
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
    assert_eq!(j["machine"]["queue_per_ns"], true);
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

/// `accounting.py`, whose premise `kernel.py`'s headline rests on: a CPU's busy time taken as
/// wall time less its idle time sees a thread's work however it falls against the scheduler
/// tick (here, woken every 4 ms at fixed phases), at least as much as the thread's own exact
/// on-CPU time, less the 1/100 s resolution of /proc/stat.
#[test]
fn accounting_py_sees_phase_locked_work_by_idle_time() {
    if !have("python3") {
        eprintln!("SKIP: no python3");
        return;
    }
    let out = succeed(
        Command::new("python3")
            .arg(repo().join("bench/scripts/accounting.py"))
            .args(["--json", "--seconds", "1"]),
        "accounting.py",
    );
    let j: Value = serde_json::from_slice(&out).expect("accounting.py --json");
    let runs = j["phase_locked"].as_object().expect("phase_locked");
    assert_eq!(runs.len(), 3, "{j}");
    for (offset, r) in runs {
        let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
        // 250 wakes spinning 200 µs: about 0.05 s; a loaded machine runs fewer.
        assert!(f("oncpu") > 0.01, "offset {offset}: {r}");
        assert!(f("exact") >= f("oncpu") - 0.02, "offset {offset}: {r}");
        assert!(f("ticks") >= 0.0, "offset {offset}: {r}");
    }
    assert!(j["sleep_wake_oncpu_us"].as_f64().unwrap() > 0.0, "{j}");
}

/// Runs `cmd` within a minute and asserts that it succeeded; its standard output.
fn succeed(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = output_within(cmd, Duration::from_secs(60), what);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn verdict(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "no"
    }
}

/// A scratch directory holding a results file `RESULTS.md` with `text`; `None` (the test is
/// skipped) without python3.
fn results_file(name: &str, text: &str) -> Option<(Scratch, PathBuf)> {
    if !have("python3") {
        eprintln!("SKIP: no python3");
        return None;
    }
    let dir = Scratch::new(name);
    let md = dir.0.join("RESULTS.md");
    std::fs::write(&md, text).unwrap();
    Some((dir, md))
}

/// `median (min..max)` of a summary as report.py prints it, with `digits` decimals and
/// `unit` after each figure.
fn spread(v: &Value, digits: usize, unit: &str) -> String {
    let f = |k: &str| format!("{:.*}{unit}", digits, v[k].as_f64().unwrap());
    format!("{} ({}..{})", f("median"), f("min"), f("max"))
}

/// `all.py --quick` runs the comparisons it can (here the two on the memory port; memif and
/// kernel need root and DPDK and are skipped) and `report.py` writes their results into the
/// results file: the generated block appears after the file's first paragraph, its figures
/// are the JSON's, the rest of the file is untouched, and a second report leaves it as it is
/// (`--check` agrees).
#[test]
fn all_py_runs_the_comparisons_and_report_py_writes_them_into_the_results_file() {
    let original = "# results\n\nAbout the machine.\n\n## A sitting\n\nHand-written.\n";
    let Some((dir, md)) = results_file("all", original) else {
        return;
    };
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_l3ns-throughput"))
        .parent()
        .expect("binary dir");
    let script = |name: &str| repo().join("bench/scripts").join(name);
    let run = |cmd: &mut Command, what: &str| {
        let out = output_within(
            cmd.env("L3NS_BIN_DIR", bin_dir)
                .env("L3NS_RESULTS_DIR", &dir.0),
            Duration::from_secs(300),
            what,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(
        Command::new("python3")
            .arg(script("all.py"))
            .args(["--quick", "--skip", "memif,kernel", "--md"])
            .arg(&md)
            .arg("--lock")
            .arg(dir.0.join("lock")),
        "all.py --quick",
    );
    assert_eq!(
        code,
        Some(0),
        "all.py\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let text = std::fs::read_to_string(&md).unwrap();
    let begin = text.find("<!-- report.py: begin").expect("block written");
    let end = text.find("<!-- report.py: end -->").expect("block closed");
    assert!(text.starts_with("# results\n\nAbout the machine.\n\n<!-- report.py: begin"));
    assert!(text.ends_with("<!-- report.py: end -->\n\n## A sitting\n\nHand-written.\n"));
    let block = &text[begin..end];
    // The figures are the JSON's.
    let json = |f: &str| read_json(&dir.0.join(f));
    let churn = json("churn.json");
    let ratio = &churn["table"]["1000"]["ratio"];
    let want = format!(
        "| throughput under 1,000 push/pull changes per second | {} | ≥ 0.95 | **{}** |",
        spread(ratio, 2, ""),
        verdict(median(ratio) >= 0.95)
    );
    assert!(block.contains(&want), "{want}\nnot in\n{block}");
    let scale = json("scale.json");
    let points = scale["series"]["1"].as_array().unwrap();
    let (a, b) = (
        median(&points[0]["unicast_mpps"]),
        median(&points[1]["unicast_mpps"]),
    );
    let want = format!(
        "| throughput from 1 to 1,000 namespaces (unicast, one worker core, one socket queue shared by every socket) | {:.2}× ({a:.2} → {b:.2} Mpps) |",
        b / a
    );
    assert!(block.contains(&want), "{want}\nnot in\n{block}");
    // The same with a socket queue per namespace, as l3nsd makes: a row of context, its
    // table, and its series in the one plot.
    let per_socket = json("scale_per_socket.json");
    assert_eq!(per_socket["machine"]["queue_per_ns"], true);
    let points = per_socket["series"]["1"].as_array().unwrap();
    let (a, b) = (
        median(&points[0]["unicast_mpps"]),
        median(&points[1]["unicast_mpps"]),
    );
    let want = format!(
        "| context: throughput from 1 to 1,000 namespaces with a socket queue per namespace, as l3nsd makes | {:.2}× ({a:.2} → {b:.2} Mpps) | not a target | – |",
        b / a
    );
    assert!(block.contains(&want), "{want}\nnot in\n{block}");
    assert!(
        block.contains("### Scale with a socket queue per namespace"),
        "{block}"
    );
    let plot = ["scale.svg", "scale.png"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.0.join(f)).ok())
        .expect("a plot next to scale.json");
    if plot.starts_with("<svg") {
        assert!(
            plot.contains("one shared queue") && plot.contains("queue per namespace"),
            "both series in the plot: {plot}"
        );
    }
    assert!(
        block.contains("Plot of throughput against namespaces: `bench/results/scale."),
        "{block}"
    );
    assert!(
        block.contains("process memory per address added (10 → 100 addresses)"),
        "{block}"
    );
    // Again: the file is unchanged, and `--check` says it is current.
    let report = |extra: &[&str]| {
        run(
            Command::new("python3")
                .arg(script("report.py"))
                .args(["--scale", "scale.json", "--addrs", "scale_addrs.json"])
                .args(["--scale-per-socket", "scale_per_socket.json"])
                .args(["--churn", "churn.json", "--md"])
                .arg(&md)
                .args(extra),
            "report.py",
        )
    };
    assert_eq!(report(&[]).0, Some(0));
    assert_eq!(std::fs::read_to_string(&md).unwrap(), text);
    assert_eq!(report(&["--check"]).0, Some(0));
    // A stale block is caught.
    let stale = text.replace("## Latest runs", "## Older runs");
    assert_ne!(stale, text);
    std::fs::write(&md, &stale).unwrap();
    assert_eq!(report(&["--check"]).0, Some(1));
    assert_eq!(
        std::fs::read_to_string(&md).unwrap(),
        stale,
        "--check writes nothing"
    );
}

/// `report.py` on the memif and kernel results kept in `bench/results/` (those comparisons
/// need root and DPDK, so the smoke above cannot make them): the targets' rows carry the
/// JSON's medians and verdicts. Kernel runs from before the exact per-core figures
/// (`kernel_s9.json`) are reported by their tick-sampled ratio, later ones by the exact one.
#[test]
fn report_py_renders_the_memif_and_kernel_comparisons_from_their_json() {
    let results = repo().join("bench/results");
    let json = |f: &str| read_json(&results.join(f));
    let memif = "memif_zc_s9.json";
    for (kernel, ratio) in [
        ("kernel_s9.json", "ratio_kernel_over_l3ns"),
        ("kernel_exact_s10.json", "ratio_core_kernel_over_l3ns"),
    ] {
        let Some((_dir, md)) = results_file("report", "# results\n\nAbout the machine.\n") else {
            return;
        };
        succeed(
            Command::new("python3")
                .arg(repo().join("bench/scripts/report.py"))
                .args(["--memif", memif, "--kernel", kernel, "--md"])
                .arg(&md)
                .env("L3NS_RESULTS_DIR", &results),
            "report.py",
        );
        let text = std::fs::read_to_string(&md).unwrap();
        // The run had testpmd io-forward and rxonly: the target row compares l3nsd with the
        // faster of the two in each repetition.
        let r = over_fastest_testpmd(&json(memif)["runs"]);
        let want = format!(
            "| l3nsd received / testpmd received, same link and core (per repetition, the \
             fastest of testpmd io-forward, macswap, rxonly) | {} | ≥ 0.8 | **{}** |",
            spread(&r, 2, ""),
            verdict(median(&r) >= 0.8)
        );
        assert!(text.contains(&want), "{want}\nnot in\n{text}");
        let io = &json(memif)["ratios"]["l3nsd_received_over_testpmd_io"];
        assert!(
            text.contains(&format!(
                "- l3nsd_received_over_testpmd_io: {}",
                spread(io, 2, "")
            )),
            "{text}"
        );
        let k = &json(kernel)["tables"]["100000"]["10"]["memif:1000"][ratio];
        let want = format!(
            "| kernel CPU per packet / l3nsd's (memif:1000), 10 namespaces, 100,000 pps | {} | ≥ 10× | **{}** |",
            spread(k, 1, "×"),
            verdict(median(k) >= 10.0)
        );
        assert!(text.contains(&want), "{kernel}: {want}\nnot in\n{text}");
    }
}
