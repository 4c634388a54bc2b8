#!/usr/bin/python3
"""Runs every issue-7 comparison, then writes their results into bench/RESULTS.md.

One after another, each in its own process and each side by side within its run (see the
scripts): scale.py over namespaces (1, 10, 10,000, 100,000) with one socket queue shared by
every socket, and again (1, 10, 1,000, 100,000) with a queue per namespace as l3nsd makes
(`--queue-per-ns`; both in one plot, `scale.svg`, or `.png` with matplotlib), scale.py over
addresses (1,000 namespaces × 1 … 1,000), churn.py
(10,000 and 100,000 changes/s), and as root memif.py (zero-copy, l3nsd on the receiving
core alone and with its service thread on the generator's, against testpmd io-forward,
macswap and rxonly) and kernel.py (1, 10 and 100 namespaces at 100,000 pps); then
report.py with the JSON they wrote. Holds /tmp/l3ns-bench.lock for the whole run so that
nothing else measured on this machine overlaps it. `--skip memif,kernel` leaves
comparisons out (without root they are skipped anyway); `--quick` runs each on a small set-up
with one short repetition (to check the harness, not to quote). Build first (see README.md here).
"""

import argparse
import fcntl
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def steps(quick):
    """(name, JSON written, script and arguments) of each comparison. Quick: small set-ups
    and one short repetition, to check the harness end to end."""
    if quick:
        return [
            ("scale", "scale.json", ["scale.py", "--namespaces", "1,1000", "--addrs", "1",
                                     "--reps", "1", "--seconds", "1", "--frames", "256",
                                     "--out", "scale.json"]),
            ("scale_per_socket", "scale_per_socket.json",
             ["scale.py", "--namespaces", "1,1000", "--addrs", "1", "--reps", "1", "--seconds",
              "1", "--frames", "256", "--queue-per-ns", "--out", "scale_per_socket.json"]),
            ("addrs", "scale_addrs.json", ["scale.py", "--namespaces", "10", "--addrs", "1,10",
                                           "--reps", "1", "--seconds", "1", "--frames", "256",
                                           "--out", "scale_addrs.json"]),
            ("churn", "churn.json", ["churn.py", "--rates", "1000", "--namespaces", "10",
                                     "--addrs-per-ns", "2", "--reps", "1", "--seconds", "1",
                                     "--out", "churn.json"]),
            ("memif", "memif.json", ["memif.py", "--zero-copy", "--reps", "1", "--seconds", "4",
                                     "--baseline", "io", "--out", "memif.json"]),
            ("kernel", "kernel.json", ["kernel.py", "--namespaces", "1", "--rate", "10000",
                                       "--reps", "1", "--seconds", "1", "--modes",
                                       "kernel,memif", "--memif-idle-sleep-us", "1000",
                                       "--out", "kernel.json"]),
        ]
    return [
        ("scale", "scale.json", ["scale.py", "--namespaces", "1,10,10000,100000", "--addrs", "1",
                                 "--reps", "5", "--seconds", "2", "--out", "scale.json"]),
        ("scale_per_socket", "scale_per_socket.json",
         ["scale.py", "--namespaces", "1,10,1000,100000", "--addrs", "1", "--reps", "3",
          "--seconds", "2", "--queue-per-ns", "--out", "scale_per_socket.json"]),
        ("addrs", "scale_addrs.json", ["scale.py", "--namespaces", "1000", "--addrs",
                                       "1,10,100,1000", "--reps", "1", "--seconds", "1",
                                       "--out", "scale_addrs.json"]),
        ("churn", "churn.json", ["churn.py", "--rates", "10000,100000", "--reps", "5",
                                 "--seconds", "1", "--out", "churn.json"]),
        ("memif", "memif.json", ["memif.py", "--zero-copy", "--reps", "3", "--seconds", "8",
                                 "--placement", "one-core,split", "--baseline", "io,macswap,rxonly",
                                 "--out", "memif.json"]),
        ("kernel", "kernel.json", ["kernel.py", "--namespaces", "1,10,100", "--rate", "100000",
                                   "--reps", "3", "--seconds", "3", "--modes", "kernel,memif",
                                   "--memif-idle-sleep-us", "1000,2000",
                                   "--out", "kernel.json"]),
    ]


# The scale plot's two series (short, to fit its legend; no commas: `scale.py --plot-only`
# splits on them).
SHARED_LABEL = "one shared queue"
PER_SOCKET_LABEL = "queue per namespace"

# What the benchmark binaries are built from: a binary older than the newest of these files
# was probably built before the last change (cargo relinks a binary whenever one of them
# changes, unless the change cannot reach it: a warning, not an error).
SOURCES = ["dataplane/src", "dataplane/csrc", "control/src", "bench/src"]


def stale_binaries(paths):
    """(binary, newest source, its path) for each binary in `paths` older than the newest
    source file under SOURCES (and the Cargo files)."""
    newest, newest_path = 0.0, None
    files = [os.path.join(common.REPO, "Cargo.lock")]
    for d in SOURCES:
        for root, _, names in os.walk(os.path.join(common.REPO, d)):
            files += [os.path.join(root, n) for n in names]
    for f in files:
        try:
            m = os.path.getmtime(f)
        except OSError:
            continue
        if m > newest:
            newest, newest_path = m, f
    out = []
    for b in paths:
        try:
            if os.path.getmtime(b) < newest:
                out.append((b, os.path.relpath(newest_path, common.REPO)))
        except OSError:
            out.append((b, None))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip", default="",
                    help="comma-separated: scale,scale_per_socket,addrs,churn,memif,kernel")
    ap.add_argument("--quick", action="store_true", help="one short repetition each")
    ap.add_argument("--tag", default="",
                    help="appended to every output name (scale_TAG.json, ...), so that a run "
                         "keeps earlier results")
    ap.add_argument("--lock", default="/tmp/l3ns-bench.lock")
    ap.add_argument("--md", default=os.path.join(common.REPO, "bench", "RESULTS.md"))
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    if os.geteuid() != 0:
        print("all.py: not root: memif and kernel comparisons skipped", file=sys.stderr)
        skip |= {"memif", "kernel"}
    used = [common.binary("l3ns-throughput")]
    if not {"memif", "kernel"} <= skip:
        used += [common.dpdk_binary("l3nsd"), common.dpdk_binary("l3nsctl")]
    for b, src in stale_binaries(used):
        if src is None:
            print(f"all.py: {b} is missing: build it first (README.md here)", file=sys.stderr)
            return 2
        print(f"all.py: warning: {b} is older than {src}: rebuilt since the last change? "
              "(cargo build --release; the dpdk ones with --features dpdk into "
              "$L3NS_DPDK_BIN_DIR)", file=sys.stderr)
    lock = open(args.lock, "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    written, failed = {}, []
    for name, out, cmd in steps(args.quick):
        if name in skip:
            continue
        if args.tag:
            tagged = out.replace(".json", f"_{args.tag}.json")
            cmd = [tagged if a == out else a for a in cmd]
            out = tagged
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        r = subprocess.run([sys.executable, os.path.join(HERE, cmd[0])] + cmd[1:])
        if r.returncode == 0:
            written[name] = out
        else:
            failed.append(name)
            print(f"all.py: {name} failed (exit {r.returncode})", file=sys.stderr)
    if "scale" in written and "scale_per_socket" in written:
        # One plot of both: the shared queue and a queue per namespace, as l3nsd makes.
        both = (f"{written['scale']}={SHARED_LABEL},"
                f"{written['scale_per_socket']}={PER_SOCKET_LABEL}")
        subprocess.run([sys.executable, os.path.join(HERE, "scale.py"), "--plot-only", both,
                        "--out", written["scale"]], check=True)
    report = [sys.executable, os.path.join(HERE, "report.py"), "--md", args.md]
    for name, flag in (("scale", "--scale"), ("addrs", "--addrs"),
                       ("scale_per_socket", "--scale-per-socket"), ("churn", "--churn"),
                       ("memif", "--memif"), ("kernel", "--kernel")):
        if name in written:
            report += [flag, written[name]]
    if written:
        subprocess.run(report, check=True)
    if failed:
        print(f"all.py: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
