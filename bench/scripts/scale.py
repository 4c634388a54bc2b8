#!/usr/bin/python3
"""Comparison 1: unicast Mpps and process memory vs number of namespaces (memory port).

Runs `l3ns-throughput --namespaces N --addrs-per-ns A --seconds S --only unicast --json` for every N in
--namespaces and A in --addrs, --reps times each (interleaved: rep 1 of every point, then
rep 2, ...), and records the unicast Mpps, the setup time and the child's peak RSS
(ru_maxrss from wait4, i.e. VmHWM). --heap (default thp) is passed to l3ns-throughput, which
puts malloc's heap on huge pages as l3nsd does. Memory = peak RSS + the most hugetlbfs pages
seen mapped (--heap hugetlb; those are not in RSS). Memory per namespace / per address is its
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


def hugetlb_kib(pid):
    """The hugetlbfs pages the process maps now (/proc/PID/status HugetlbPages; not in RSS)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("HugetlbPages:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_point_rss(ns, addrs, seconds, timeout, heap="thp", frames=16384, queue_per_ns=False):
    """run_point, but spawn with fork/exec + wait4 to get the child's own ru_maxrss."""
    # Only the unicast scenario: the peak RSS is then the set-up plus the dataplane at work.
    # (A Prometheus render's text is bounded by the metrics' namespace cap, 10,000 by
    # default, not per namespace: RESULTS.md reports it apart.)
    cmd = [common.binary("l3ns-throughput"), "--namespaces", str(ns), "--addrs-per-ns",
           str(addrs), "--seconds", str(seconds), "--only", "unicast", "--json", "--heap", heap,
           "--frames", str(frames)] + (["--queue-per-ns"] if queue_per_ns else [])
    load = common.loadavg()[0]
    t0 = time.time()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        # The benchmark re-executes itself with GLIBC_TUNABLES=glibc.malloc.hugetlb=N for
        # --heap thp|hugetlb (same PID, so wait4's ru_maxrss still covers it); a tunable
        # inherited from this shell would win over --heap, so it is dropped.
        env = dict(os.environ)
        env.pop("GLIBC_TUNABLES", None)
        os.execve(cmd[0], cmd, env)
    os.close(w)
    chunks = []
    huge_max = 0
    deadline = t0 + timeout
    import select
    while True:
        left = deadline - time.time()
        if left <= 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(r)
            return {"namespaces": ns, "addrs_per_ns": addrs, "error": f"timeout {timeout}s"}
        # --heap hugetlb: hugetlbfs pages are not in ru_maxrss; sample them (5 times a second:
        # glibc keeps its arenas' top pages, so the last samples hold the peak in practice).
        huge_max = max(huge_max, hugetlb_kib(pid))
        rd, _, _ = select.select([r], [], [], min(left, 0.2))
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
        "hugetlb_kib_max": huge_max,
        "memory_kib": ru.ru_maxrss + huge_max,
        "heap": heap,
        "frames": frames,
        "glibc_malloc_hugetlb": j.get("glibc_malloc_hugetlb"),
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
    for a, pts in sorted(series.items(), key=lambda kv: str(kv[0])):
        xs = [p["namespaces"] for p in pts]
        med = [p["unicast_mpps"]["median"] for p in pts]
        lo = [p["unicast_mpps"]["median"] - p["unicast_mpps"]["min"] for p in pts]
        hi = [p["unicast_mpps"]["max"] - p["unicast_mpps"]["median"] for p in pts]
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3,
                    label=a if isinstance(a, str) else f"{a} address(es) per namespace")
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
    # Hand-written log-log SVG (used only if matplotlib is missing): both axes with ticks,
    # each point labelled with its median, one colour per series.
    import math
    W, H, L, R, T, B = 720, 440, 70, 170, 40, 60
    allp = [p for pts in series.values() for p in pts]
    xs = [math.log10(p["namespaces"]) for p in allp]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 += 1
    mpps = [p["unicast_mpps"]["median"] for p in allp]
    # y: log scale over the 1-2-5 ticks that bracket the data.
    ticks = [m * 10 ** e for e in range(-1, 4) for m in (1, 2, 5)]
    lo = max([t for t in ticks if t <= min(mpps)] or [ticks[0]])
    hi = min([t for t in ticks if t >= max(mpps)] or [ticks[-1]])
    if hi <= lo:
        hi = lo * 2
    y0, y1 = math.log10(lo), math.log10(hi)

    def X(v):
        return L + (math.log10(v) - x0) / (x1 - x0) * (W - L - R)

    def Y(v):
        return H - B - (math.log10(max(v, 1e-3)) - y0) / (y1 - y0) * (H - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
    for e in range(int(math.floor(x0)), int(math.ceil(x1)) + 1):
        v = 10 ** e
        x = X(v)
        out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{v:,}</text>')
    for t in ticks:
        if lo <= t <= hi:
            y = Y(t)
            out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for i, (a, pts) in enumerate(sorted(series.items(), key=lambda kv: str(kv[0]))):
        c = colors[i % len(colors)]
        d = " ".join(f"{X(p['namespaces']):.1f},{Y(p['unicast_mpps']['median']):.1f}" for p in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for p in pts:
            x, y = X(p["namespaces"]), Y(p["unicast_mpps"]["median"])
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{c}"/>')
            out.append(f'<text x="{x + 4:.1f}" y="{y - 6 - 12 * i:.1f}" fill="{c}" '
                       f'font-size="10">{p["unicast_mpps"]["median"]:.1f}</text>')
        name = a if isinstance(a, str) else f"{a} address(es) per namespace"
        out.append(f'<text x="{W - R + 10}" y="{T + 16 + 16 * i}" fill="{c}">{name}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 15}" text-anchor="middle">'
               'namespaces (log), each with a socket on 0.0.0.0:9</text>')
    out.append(f'<text x="14" y="{(T + H - B) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(T + H - B) / 2})">unicast Mpps, one worker core '
               '(median, log)</text>')
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
    ap.add_argument("--frames", type=int, default=16384,
                    help="prepared frames replayed (l3ns-throughput --frames), each to a random "
                         "owned address: below the number of addresses, only that many "
                         "namespaces (at most) get traffic")
    ap.add_argument("--heap", choices=["thp", "hugetlb", "system"], default="thp",
                    help="passed to l3ns-throughput --heap (as l3nsd's --heap): thp = "
                         "glibc.malloc.hugetlb=1, malloc's heap on transparent huge pages (madvise), "
                         "the default; hugetlb = glibc.malloc.hugetlb=2, reserved 2 MiB hugetlbfs "
                         "pages (normal pages when none are free); system = malloc left alone")
    ap.add_argument("--queue-per-ns", action="store_true",
                    help="a socket queue per namespace, as l3nsd makes (l3ns-throughput "
                         "--queue-per-ns), instead of one queue shared by every socket")
    ap.add_argument("--out", default="scale.json")
    ap.add_argument("--plot-only", metavar="JSON[=LABEL],...",
                    help="only redraw: merge the series of these result files (labelled LABEL "
                         "when given) into the plot named by --out")
    args = ap.parse_args()
    if args.plot_only:
        series = {}
        for item in args.plot_only.split(","):
            f, _, label = item.partition("=")
            with open(os.path.join(common.RESULTS, f)) as fh:
                for a, pts in json.load(fh)["series"].items():
                    series[label or int(a)] = pts
        plot(series, os.path.join(common.RESULTS, os.path.splitext(args.out)[0]))
        return
    nss = [int(x) for x in args.namespaces.split(",")]
    addrs = [int(x) for x in args.addrs.split(",")]
    info = common.machine()
    print(f"machine: {info}")
    runs = []
    for rep in range(args.reps):
        for a in addrs:
            for n in nss:
                r = run_point_rss(n, a, args.seconds, args.timeout, args.heap, args.frames,
                                  args.queue_per_ns)
                r["rep"] = rep
                runs.append(r)
                if "error" in r:
                    print(f"rep {rep} ns={n} a={a}: ERROR {r['error']}", flush=True)
                else:
                    print(f"rep {rep} ns={n:>6} a={a:>2} addrs={r['addresses']:>7} "
                          f"setup={r['setup_seconds']:7.1f}s unicast={r['unicast_mpps']:6.2f} Mpps "
                          f"peakRSS={r['peak_rss_kib'] / 1024:7.1f} MiB hugetlb={r['hugetlb_kib_max'] / 1024:5.1f} MiB load={r['loadavg_1m_at_start']}",
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
                "hugetlb_kib_max": common.summary([r["hugetlb_kib_max"] for r in ok]),
                "memory_kib": common.summary([r["memory_kib"] for r in ok]),
            }
            if n == min(nss):
                base = p
            if base is not None and n > base["namespaces"]:
                d = (p["memory_kib"]["median"] - base["memory_kib"]["median"]) * 1024
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
          f"{'vs 1 ns':>7} {'setup s':>8} {'peak RSS MiB':>12} {'hugetlb MiB':>11} {'B/ns':>7} {'B/addr':>7}")
    for a, pts in series.items():
        for p in pts:
            u = p["unicast_mpps"]
            print(f"{a:>7} {p['namespaces']:>10} {p['addresses']:>9} {u['median']:>9.2f} "
                  f"{u['min']:>6.2f}..{u['max']:<6.2f} {p.get('mpps_ratio_vs_smallest', 1):>7.2f} "
                  f"{p['setup_seconds']['median']:>8.1f} {p['peak_rss_kib']['median'] / 1024:>12.1f} "
                  f"{p['hugetlb_kib_max']['median'] / 1024:>11.1f} "
                  f"{p.get('rss_bytes_per_namespace', float('nan')):>7.0f} "
                  f"{p.get('rss_bytes_per_address', float('nan')):>7.0f}")
    # The marginal cost of an address: at a fixed number of namespaces, the memory delta
    # between the fewest and each larger number of addresses per namespace.
    per_address = []
    for n in nss:
        pts = [p for a in addrs for p in series.get(a, []) if p["namespaces"] == n]
        if len(pts) < 2:
            continue
        lo = min(pts, key=lambda p: p["addresses"])
        for p in pts:
            if p["addresses"] > lo["addresses"]:
                d = (p["memory_kib"]["median"] - lo["memory_kib"]["median"]) * 1024
                e = {"namespaces": n, "from_addresses": lo["addresses"], "to_addresses": p["addresses"],
                     "rss_bytes_per_address_added": d / (p["addresses"] - lo["addresses"])}
                per_address.append(e)
                print(f"{n} namespaces, {lo['addresses']} -> {p['addresses']} addresses: "
                      f"{e['rss_bytes_per_address_added']:.0f} B of peak RSS (+ hugetlb) per address added")
    info["loadavg_end"] = common.loadavg()
    info["heap"] = args.heap
    info["frames"] = args.frames
    info["queue_per_ns"] = args.queue_per_ns
    info["glibc_malloc_hugetlb"] = sorted({str(r.get("glibc_malloc_hugetlb")) for r in runs
                                           if "error" not in r})
    with open(common.HUGEPAGES_FREE) as f:
        info["free_hugepages_2m_at_end"] = int(f.read().strip() or 0)
    out = {
        "per_address": per_address,
        "machine": info,
        "command": "bench/scripts/scale.py " + " ".join(sys.argv[1:]),
        "what": "l3ns-throughput unicast Mpps (one worker core, memory port) and child peak RSS "
                "(wait4 ru_maxrss = VmHWM); memory per namespace/address = delta of peak RSS + hugetlbfs pages mapped vs the "
                "smallest point of the series",
        "series": {str(a): pts for a, pts in series.items()},
        "runs": runs,
    }
    common.save(args.out, out)
    plot(series, os.path.join(common.RESULTS, os.path.splitext(args.out)[0]))


if __name__ == "__main__":
    main()
