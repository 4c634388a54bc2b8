#!/usr/bin/python3
"""Comparison 2: unicast throughput under address churn (memory port).

For every rate in --rates, runs `l3ns-throughput --churn-rate R --seconds S --json`
--reps times (interleaved) and records, from the same process, the plain unicast Mpps,
the unicast Mpps while the control thread applies R push/pull changes per second, their
ratio, the changes actually applied per second and the packets counted as dropped.
Misdelivery is not observable here (the benchmark's sockets share one queue); it is
checked by control/tests/churn.rs (`--with-test` runs it once and records its output).
Writes bench/results/churn.json (`--out`).
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="10000,100000")
    ap.add_argument("--namespaces", type=int, default=1000)
    ap.add_argument("--addrs-per-ns", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="churn.json", help="file name in bench/results/")
    ap.add_argument("--with-test", action="store_true",
                    help="also run cargo test --release -p l3ns-control --test churn")
    args = ap.parse_args()
    rates = [int(x) for x in args.rates.split(",")]
    info = common.machine()
    print(f"machine: {info}")
    runs = []
    for rep in range(args.reps):
        for rate in rates:
            cmd = [common.binary("l3ns-throughput"), "--namespaces", str(args.namespaces),
                   "--addrs-per-ns", str(args.addrs_per_ns), "--seconds", str(args.seconds),
                   "--churn-rate", str(rate), "--json"]
            load = common.loadavg()[0]
            p = subprocess.run(cmd, capture_output=True, timeout=600)
            if p.returncode != 0:
                print(f"rate {rate}: ERROR {p.stderr.decode()[-300:]}")
                continue
            j = json.loads(p.stdout)
            sc = {s["name"].split(" ")[0] + ("+churn" if "churn" in s["name"] else ""): s
                  for s in j["scenarios"]}
            u, c = sc["unicast"], sc["unicast+churn"]
            r = {
                "rep": rep, "rate": rate, "loadavg_1m_at_start": load,
                "unicast_mpps": u["mpps"], "churn_mpps": c["mpps"],
                "ratio": c["mpps"] / u["mpps"],
                "changes_applied": c["changes_applied"],
                "changes_per_second": c["changes_applied"] / c["seconds"],
                "churn_dropped": c["dropped"], "churn_packets": c["packets"],
                "churn_deliveries": c["deliveries"], "raw": j,
            }
            runs.append(r)
            print(f"rep {rep} rate {rate:>7}/s: unicast {u['mpps']:.2f} Mpps, with churn "
                  f"{c['mpps']:.2f} Mpps (ratio {r['ratio']:.2f}), applied "
                  f"{r['changes_per_second']:.0f} changes/s, dropped {c['dropped']} "
                  f"(load {load})", flush=True)
    table = {}
    for rate in rates:
        rr = [r for r in runs if r["rate"] == rate]
        table[str(rate)] = {
            "unicast_mpps": common.summary([r["unicast_mpps"] for r in rr]),
            "churn_mpps": common.summary([r["churn_mpps"] for r in rr]),
            "ratio": common.summary([r["ratio"] for r in rr]),
            "changes_per_second": common.summary([r["changes_per_second"] for r in rr]),
            "dropped": common.summary([r["churn_dropped"] for r in rr]),
        }
    print()
    print(f"{'rate/s':>8} {'unicast Mpps':>13} {'churn Mpps':>11} {'ratio med (min..max)':>22} "
          f"{'applied/s':>10}")
    for rate, t in table.items():
        print(f"{rate:>8} {t['unicast_mpps']['median']:>13.2f} {t['churn_mpps']['median']:>11.2f} "
              f"{t['ratio']['median']:>8.2f} ({t['ratio']['min']:.2f}..{t['ratio']['max']:.2f}) "
              f"{t['changes_per_second']['median']:>10.0f}")
    test = None
    if args.with_test:
        p = subprocess.run(["cargo", "test", "--release", "-p", "l3ns-control", "--test", "churn",
                            "--", "--nocapture"], capture_output=True, text=True,
                           cwd=common.REPO, timeout=1200)
        lines = [ln for ln in (p.stdout + p.stderr).splitlines()
                 if "moves during" in ln or "test result" in ln or "panicked" in ln]
        test = {"returncode": p.returncode, "lines": lines}
        print("control/tests/churn.rs:", test)
    info["loadavg_end"] = common.loadavg()
    common.save(args.out, {
        "machine": info,
        "command": "bench/scripts/churn.py " + " ".join(sys.argv[1:]),
        "what": "ratio = unicast Mpps with churn / plain unicast Mpps, same process, same run",
        "table": table, "runs": runs, "misdelivery_test": test,
    })


if __name__ == "__main__":
    main()
