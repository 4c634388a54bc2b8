#!/usr/bin/python3
"""Comparison 1: unicast Mpps and process memory vs number of namespaces (memory port).

Runs `l3ns-throughput --namespaces N --addrs-per-ns A --seconds S --only unicast --json` for every N in
--namespaces and A in --addrs, --reps times each (interleaved: rep 1 of every point, then
rep 2, ...), and records the unicast Mpps, the setup time and the child's peak RSS
(ru_maxrss from wait4, i.e. VmHWM). Memory per namespace / per address is the peak-RSS
delta against the 1-namespace point of the same series, divided by N (resp. N*A).
Writes bench/results/scale.json and bench/results/scale.png (or .svg without matplotlib).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def run_point_rss(ns, addrs, seconds, timeout, tunables=""):
    """run_point, but spawn with fork/exec + wait4 to get the child's own ru_maxrss."""
    # Only the unicast scenario: the peak RSS is then the set-up plus the dataplane at work.
    # (A Prometheus render's text is bounded by the metrics' namespace cap, 10,000 by
    # default, not per namespace: RESULTS.md reports it apart.)
    cmd = [common.binary("l3ns-throughput"), "--namespaces", str(ns), "--addrs-per-ns",
           str(addrs), "--seconds", str(seconds), "--only", "unicast", "--json"]
    load = common.loadavg()[0]
    t0 = time.time()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        env = dict(os.environ)
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        else:
            env.pop("GLIBC_TUNABLES", None)
        os.execve(cmd[0], cmd, env)
    os.close(w)
    chunks = []
    deadline = t0 + timeout
    import select
    while True:
        left = deadline - time.time()
        if left <= 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(r)
            return {"namespaces": ns, "addrs_per_ns": addrs, "error": f"timeout {timeout}s"}
        rd, _, _ = select.select([r], [], [], min(left, 1.0))
        if rd:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    os.close(r)
    _, status, ru = os.wait4(pid, 0)
    wall = time.time() - t0
    if status != 0:
        return {"namespaces": ns, "addrs_per_ns": addrs, "error": f"exit status {status}"}
    j = json.loads(b"".join(chunks))
    sc = {s["name"].split(" ")[0]: s for s in j["scenarios"]}
    return {
        "namespaces": ns,
        "addrs_per_ns": addrs,
        "addresses": j["addresses"],
        "setup_seconds": j["setup_seconds"],
        "unicast_mpps": sc["unicast"]["mpps"],
        "unicast_ns_per_packet": sc["unicast"]["ns_per_packet"],
        "unicast_dropped": sc["unicast"]["dropped"],
        "unicast_deliveries": sc["unicast"]["deliveries"],
        "unicast_packets": sc["unicast"]["packets"],
        "peak_rss_kib": ru.ru_maxrss,
        "wall_seconds": wall,
        "loadavg_1m_at_start": load,
        "raw": j,
    }


def plot(series, path_base):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return plot_svg(series, path_base + ".svg")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a, pts in sorted(series.items()):
        xs = [p["namespaces"] for p in pts]
        med = [p["unicast_mpps"]["median"] for p in pts]
        lo = [p["unicast_mpps"]["median"] - p["unicast_mpps"]["min"] for p in pts]
        hi = [p["unicast_mpps"]["max"] - p["unicast_mpps"]["median"] for p in pts]
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"{a} address(es) per namespace")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("namespaces (each with a socket on 0.0.0.0:9)")
    ax.set_ylabel("unicast Mpps, one worker core (median, bars = min..max)")
    ax.set_title("l3ns memory port: throughput vs namespaces")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = path_base + ".png"
    fig.savefig(path, dpi=110)
    print(f"saved {path}")
    return path


def plot_svg(series, path):
    # Minimal hand-written log-log SVG (used only if matplotlib is missing).
    import math
    W, H, M = 640, 400, 60
    allp = [p for pts in series.values() for p in pts]
    xs = [math.log10(p["namespaces"]) for p in allp]
    ys = [math.log10(max(p["unicast_mpps"]["median"], 1e-3)) for p in allp]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys))
    if y1 == y0:
        y1 += 1

    def X(v):
        return M + (math.log10(v) - x0) / ((x1 - x0) or 1) * (W - 2 * M)

    def Y(v):
        return H - M - (math.log10(max(v, 1e-3)) - y0) / (y1 - y0) * (H - 2 * M)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    colors = ["#1f77b4", "#d62728", "#2ca02c"]
    for i, (a, pts) in enumerate(sorted(series.items())):
        c = colors[i % len(colors)]
        d = " ".join(f"{X(p['namespaces']):.1f},{Y(p['unicast_mpps']['median']):.1f}" for p in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{c}"/>')
        out.append(f'<text x="{W - M - 150}" y="{M + 15 * i}" fill="{c}">{a} addr/ns</text>')
    out.append(f'<text x="{W / 2 - 80}" y="{H - 15}">namespaces (log)</text>')
    out.append(f'<text x="5" y="{M - 20}">unicast Mpps (log)</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print(f"saved {path}")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--namespaces", default="1,10,100,1000,10000,100000")
    ap.add_argument("--addrs", default="1,10", help="addresses per namespace (series)")
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per scenario")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--huge-pages", action="store_true",
                    help="run the benchmark with GLIBC_TUNABLES=glibc.malloc.hugetlb=1: glibc's malloc "
                         "then asks for transparent huge pages (madvise) for its heap, which cuts the "
                         "TLB misses of the per-namespace data at large counts")
    ap.add_argument("--out", default="scale.json")
    ap.add_argument("--plot-only", metavar="JSON,JSON",
                    help="only redraw: merge the series of these result files into scale.png")
    args = ap.parse_args()
    if args.plot_only:
        series = {}
        for f in args.plot_only.split(","):
            with open(os.path.join(common.RESULTS, f)) as fh:
                for a, pts in json.load(fh)["series"].items():
                    series[int(a)] = pts
        plot(series, os.path.join(common.RESULTS, "scale"))
        return
    nss = [int(x) for x in args.namespaces.split(",")]
    addrs = [int(x) for x in args.addrs.split(",")]
    info = common.machine()
    print(f"machine: {info}")
    runs = []
    for rep in range(args.reps):
        for a in addrs:
            for n in nss:
                r = run_point_rss(n, a, args.seconds, args.timeout,
                                  "glibc.malloc.hugetlb=1" if args.huge_pages else "")
                r["rep"] = rep
                runs.append(r)
                if "error" in r:
                    print(f"rep {rep} ns={n} a={a}: ERROR {r['error']}", flush=True)
                else:
                    print(f"rep {rep} ns={n:>6} a={a:>2} addrs={r['addresses']:>7} "
                          f"setup={r['setup_seconds']:7.1f}s unicast={r['unicast_mpps']:6.2f} Mpps "
                          f"peakRSS={r['peak_rss_kib'] / 1024:7.1f} MiB load={r['loadavg_1m_at_start']}",
                          flush=True)
    series = {}
    for a in addrs:
        pts = []
        base = None
        for n in nss:
            ok = [r for r in runs if r["namespaces"] == n and r["addrs_per_ns"] == a and "error" not in r]
            if not ok:
                continue
            p = {
                "namespaces": n,
                "addrs_per_ns": a,
                "addresses": n * a,
                "unicast_mpps": common.summary([r["unicast_mpps"] for r in ok]),
                "setup_seconds": common.summary([r["setup_seconds"] for r in ok]),
                "peak_rss_kib": common.summary([r["peak_rss_kib"] for r in ok]),
            }
            if n == min(nss):
                base = p
            if base is not None and n > base["namespaces"]:
                d = (p["peak_rss_kib"]["median"] - base["peak_rss_kib"]["median"]) * 1024
                dn = n - base["namespaces"]
                p["rss_delta_bytes_vs_smallest"] = d
                p["rss_bytes_per_namespace"] = d / dn
                p["rss_bytes_per_address"] = d / (dn * a)
            if base is not None:
                p["mpps_ratio_vs_smallest"] = p["unicast_mpps"]["median"] / base["unicast_mpps"]["median"]
            pts.append(p)
        series[a] = pts
    print()
    print(f"{'addr/ns':>7} {'namespaces':>10} {'addresses':>9} {'Mpps med':>9} {'min..max':>14} "
          f"{'vs 1 ns':>7} {'setup s':>8} {'peak RSS MiB':>12} {'B/ns':>7} {'B/addr':>7}")
    for a, pts in series.items():
        for p in pts:
            u = p["unicast_mpps"]
            print(f"{a:>7} {p['namespaces']:>10} {p['addresses']:>9} {u['median']:>9.2f} "
                  f"{u['min']:>6.2f}..{u['max']:<6.2f} {p.get('mpps_ratio_vs_smallest', 1):>7.2f} "
                  f"{p['setup_seconds']['median']:>8.1f} {p['peak_rss_kib']['median'] / 1024:>12.1f} "
                  f"{p.get('rss_bytes_per_namespace', float('nan')):>7.0f} "
                  f"{p.get('rss_bytes_per_address', float('nan')):>7.0f}")
    # The marginal cost of an address: at a fixed number of namespaces, the peak-RSS delta
    # between the fewest and each larger number of addresses per namespace.
    per_address = []
    for n in nss:
        pts = [p for a in addrs for p in series.get(a, []) if p["namespaces"] == n]
        if len(pts) < 2:
            continue
        lo = min(pts, key=lambda p: p["addresses"])
        for p in pts:
            if p["addresses"] > lo["addresses"]:
                d = (p["peak_rss_kib"]["median"] - lo["peak_rss_kib"]["median"]) * 1024
                e = {"namespaces": n, "from_addresses": lo["addresses"], "to_addresses": p["addresses"],
                     "rss_bytes_per_address_added": d / (p["addresses"] - lo["addresses"])}
                per_address.append(e)
                print(f"{n} namespaces, {lo['addresses']} -> {p['addresses']} addresses: "
                      f"{e['rss_bytes_per_address_added']:.0f} B of peak RSS per address added")
    info["loadavg_end"] = common.loadavg()
    info["glibc_tunables"] = "glibc.malloc.hugetlb=1" if args.huge_pages else ""
    out = {
        "per_address": per_address,
        "machine": info,
        "command": "bench/scripts/scale.py " + " ".join(sys.argv[1:]),
        "what": "l3ns-throughput unicast Mpps (one worker core, memory port) and child peak RSS "
                "(wait4 ru_maxrss = VmHWM); memory per namespace/address = peak-RSS delta vs the "
                "smallest point of the series",
        "series": {str(a): pts for a, pts in series.items()},
        "runs": runs,
    }
    common.save(args.out, out)
    plot(series, os.path.join(common.RESULTS, os.path.splitext(args.out)[0]))


if __name__ == "__main__":
    main()
