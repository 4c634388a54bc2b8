#!/usr/bin/python3
"""Writes the comparisons' latest results into bench/RESULTS.md.

Reads the JSON that scale.py, churn.py, memif.py and kernel.py wrote (file names in
bench/results/, or $L3NS_RESULTS_DIR, given per comparison; a comparison without a file is
left out) and replaces the block between the markers below in the results file (by default
bench/RESULTS.md; the block is put after its first paragraph when there is none yet) with:
a table of every issue-7 target against the medians (and min..max) of those runs, whether it
is met, and per comparison the command, the machine and the table of its points. Nothing
else in the file changes; the hand-written sittings below the block stay as they are.

  bench/scripts/report.py --scale scale.json --churn churn.json --memif memif.json \\
      --kernel kernel_100kpps.json [--addrs scale_addrs.json] \\
      [--scale-per-socket scale_per_socket.json] [--md bench/RESULTS.md]

`--check` exits 1 (and writes nothing) when the block in the file differs from what the
JSON gives: the file is stale.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

BEGIN = "<!-- report.py: begin (generated from bench/results/*.json by bench/scripts/report.py; do not edit by hand) -->"
END = "<!-- report.py: end -->"

# Issue 7's targets.
SCALE_MIN_RATIO = 0.8  # throughput within 20% from 1 to 100,000 namespaces
BYTES_PER_NS_MAX = 1024
BYTES_PER_ADDR_MAX = 100
CHURN_MIN_RATIO = 0.95  # throughput within 5%
MEMIF_MIN_RATIO = 0.8
KERNEL_MIN_RATIO = 10.0


def load(name):
    path = name if os.path.isabs(name) else os.path.join(common.RESULTS, name)
    with open(path) as f:
        return json.load(f)


def spread(s, fmt="{:.2f}"):
    """`median (min..max)` of a summary() dict."""
    if not s:
        return "–"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}..{fmt.format(s['max'])})"


def yes(ok):
    """`ok` None: a row of context, with no target to meet."""
    if ok is None:
        return "–"
    return "**yes**" if ok else "**no**"


def run_of(m, name):
    """Where and when a run was taken, from its `machine` record."""
    date = m.get("date_utc", "?").replace("T", " ").replace("Z", " UTC")
    load1 = (m.get("loadavg_start") or ["?"])[0]
    return (f"`{name}`: {date}, commit `{m.get('commit', '?')}`, {m.get('cpu', '?')} × "
            f"{m.get('nproc', '?')}, kernel {m.get('kernel', '?')}, load {load1} at start")


def mpps_ratio(first, last):
    """The ratio of two scale points' median Mpps, and how the tables show it."""
    a, b = first["unicast_mpps"]["median"], last["unicast_mpps"]["median"]
    return b / a, f"{b / a:.2f}× ({a:.2f} → {b:.2f} Mpps)"


def scale_section(d, name, addrs):
    """`d` None: the address series alone."""
    rows, out = [], []
    series = d.get("series", {}) if d else {}
    s1 = series.get("1") or next(iter(series.values()), [])
    if len(s1) >= 2:
        first, last = s1[0], s1[-1]
        ratio, got = mpps_ratio(first, last)
        rows.append((f"throughput from {first['namespaces']:,} to {last['namespaces']:,} "
                     f"namespaces (unicast, one worker core, one socket queue shared by "
                     f"every socket)", got,
                     f"≥ {SCALE_MIN_RATIO}×", ratio >= SCALE_MIN_RATIO, name))
        # Context, not a target: one namespace with one address receives one flow, which the
        # worker handles once per burst; from ten namespaces on every burst goes to many
        # destinations, so the ratio from the second point isolates what more namespaces
        # cost from what many destinations do (bench/RESULTS.md, sixteenth sitting).
        second = s1[1]
        if len(s1) >= 3 and second["namespaces"] <= 100:
            rows.append((f"context: throughput from {second['namespaces']:,} to "
                         f"{last['namespaces']:,} namespaces (every burst to many destinations)",
                         mpps_ratio(second, last)[1], "not a target", None, name))
        per_ns = last.get("rss_bytes_per_namespace")
        if per_ns is not None:
            rows.append(("process memory per namespace (peak RSS)", f"{per_ns:,.0f} B",
                         f"≤ {BYTES_PER_NS_MAX:,} B", per_ns <= BYTES_PER_NS_MAX, name))
    out.append(f"### Scale (`{d['command']}`)\n" if d else "### Scale")
    if d:
        out.append(run_of(d["machine"], name) + "\n")
        stem = os.path.splitext(name)[0]
        plots = [f"{stem}{ext}" for ext in (".png", ".svg")
                 if os.path.exists(os.path.join(common.RESULTS, f"{stem}{ext}"))]
        if plots:
            out.append("Plot of throughput against namespaces: " +
                       ", ".join(f"`bench/results/{p}`" for p in plots) + "\n")
        out.append("| namespaces | addresses each | Mpps median (min..max) | vs the first | peak RSS MiB | B per namespace |")
        out.append("|---|---|---|---|---|---|")
    for per, points in sorted(series.items(), key=lambda kv: int(kv[0])):
        for p in points:
            ratio = p.get("mpps_ratio_vs_smallest")
            bns = p.get("rss_bytes_per_namespace")
            if p["namespaces"] < 1000:
                # A few namespaces add less than the peak RSS's own jitter (a MiB or two).
                bns = None
            out.append(f"| {p['namespaces']:,} | {per} | {spread(p['unicast_mpps'])} | "
                       f"{'–' if ratio is None else f'{ratio:.2f}'} | "
                       f"{p['peak_rss_kib']['median'] / 1024:.1f} | "
                       f"{'–' if bns is None else f'{bns:,.0f}'} |")
    out.append("")
    if addrs:
        a, aname = addrs
        pa = a.get("per_address") or []
        if pa:
            # The widest span: over the smaller ones the peak RSS's own jitter (a MiB or
            # two between runs) is of the order of what they add.
            top = max(pa, key=lambda x: x["to_addresses"] - x["from_addresses"])
            per = top["rss_bytes_per_address_added"]
            rows.append((f"process memory per address added ({top['from_addresses']:,} → "
                         f"{top['to_addresses']:,} addresses)", f"{per:.0f} B",
                         f"≤ {BYTES_PER_ADDR_MAX} B", per <= BYTES_PER_ADDR_MAX, aname))
            out.append(f"Addresses (`{a['command']}`): " + run_of(a["machine"], aname) + "\n")
            out.append("| namespaces | addresses | B per address added |")
            out.append("|---|---|---|")
            for x in pa:
                out.append(f"| {x['namespaces']:,} | {x['from_addresses']:,} → "
                           f"{x['to_addresses']:,} | {x['rss_bytes_per_address_added']:.1f} |")
            out.append("")
    return rows, out


def scale_per_socket_section(d, name):
    """scale.py run with --queue-per-ns: a socket queue per namespace, as l3nsd makes (every
    datagram to another namespace is a hand-off of its own). Context, not a target."""
    rows, out = [], []
    s1 = d.get("series", {}).get("1") or next(iter(d.get("series", {}).values()), [])
    if len(s1) >= 2:
        first, last = s1[0], s1[-1]
        rows.append((f"context: throughput from {first['namespaces']:,} to "
                     f"{last['namespaces']:,} namespaces with a socket queue per namespace, "
                     f"as l3nsd makes", mpps_ratio(first, last)[1],
                     "not a target", None, name))
    out.append(f"### Scale with a socket queue per namespace (`{d['command']}`)\n")
    out.append(run_of(d["machine"], name) + "\n")
    out.append("As l3nsd makes them: each namespace's socket has a queue of its own, bounded "
               "on its own. Below 64 queues the consumer thread finds the queues handed "
               "batches by their ready bits; from 64 on it takes mail, as l3nsd's service "
               "thread does: the worker hands a round's datagrams for all of them over as "
               "one batch, each counted against its own queue's bound. The table above hands "
               "each burst to one queue shared by every socket.\n")
    out.append("| namespaces | addresses each | Mpps median (min..max) | vs the first |")
    out.append("|---|---|---|---|")
    for per, points in sorted(d.get("series", {}).items(), key=lambda kv: int(kv[0])):
        for p in points:
            ratio = p.get("mpps_ratio_vs_smallest")
            out.append(f"| {p['namespaces']:,} | {per} | {spread(p['unicast_mpps'])} | "
                       f"{'–' if ratio is None else f'{ratio:.2f}'} |")
    out.append("")
    return rows, out


def churn_section(d, name):
    rows, out = [], []
    out.append(f"### Churn (`{d['command']}`)\n")
    out.append(run_of(d["machine"], name) + "\n")
    out.append("| changes/s asked | applied/s | unicast Mpps | with churn Mpps | ratio median (min..max) | dropped per run (queue full) |")
    out.append("|---|---|---|---|---|---|")
    for rate, t in sorted(d["table"].items(), key=lambda kv: int(kv[0])):
        r = t["ratio"]
        rows.append((f"throughput under {int(rate):,} push/pull changes per second",
                     spread(r), f"≥ {CHURN_MIN_RATIO}", r["median"] >= CHURN_MIN_RATIO, name))
        out.append(f"| {int(rate):,} | {t['changes_per_second']['median']:,.0f} | "
                   f"{t['unicast_mpps']['median']:.2f} | {t['churn_mpps']['median']:.2f} | "
                   f"{spread(r)} | {t['dropped']['median']:,.0f} |")
    out.append("")
    test = d.get("misdelivery_test")
    out.append("Misdelivery: " + (f"`control/tests/churn.rs` in the same run: {test}" if test else
                                  "checked by `control/tests/churn.rs` (not run with this file)") + "\n")
    return rows, out


def memif_section(d, name):
    rows, out = [], []
    out.append(f"### l3nsd vs dpdk-testpmd on net_memif (`{d['command']}`)\n")
    placed = ("; l3nsd (all its threads on the receiving core) and l3nsd-split (its service "
              "thread on the generator's core)" if "split" in d.get("placements", []) else "")
    out.append(run_of(d["machine"], name) + (", zero-copy" if d.get("zero_copy") else "") +
               placed + "\n")
    out.append("| receiver | received pps median (min..max) |")
    out.append("|---|---|")
    for server, s in d["pps"].items():
        out.append(f"| {server} | {spread(s, '{:,.0f}')} |")
    out.append("")
    ratios = dict(d["ratios"])
    baselines = {r["server"] for r in d.get("runs", []) if r.get("server", "").startswith("testpmd-")}
    if len(baselines) > 1 and "l3nsd_received_over_testpmd_best" not in ratios:
        ratios["l3nsd_received_over_testpmd_best"] = common.memif_over_best(d["runs"])
    for key, r in ratios.items():
        out.append(f"- {key}: {spread(r)}")
    # l3nsd on the receiving core alone (`--placement one-core`, the default since the
    # fourteenth sitting; before it, l3nsd's service thread ran on the generator's core).
    # With several testpmd modes in the run, against the fastest of them in each repetition:
    # the VM halves some processes' speed at times, and io-forward alone in its slow state
    # would make l3nsd look better than it is.
    best = ratios.get("l3nsd_received_over_testpmd_best")
    io = ratios.get("l3nsd_received_over_testpmd_io")
    if best:
        rows.append(("l3nsd received / testpmd received, same link and core (per repetition, "
                     "the fastest of testpmd io-forward, macswap, rxonly)", spread(best),
                     f"≥ {MEMIF_MIN_RATIO}", best["median"] >= MEMIF_MIN_RATIO, name))
    elif io:
        rows.append(("l3nsd received / testpmd io-forward received, same link and core",
                     spread(io), f"≥ {MEMIF_MIN_RATIO}", io["median"] >= MEMIF_MIN_RATIO, name))
    out.append("")
    for kind in ("l3nsd", "l3nsd-split"):
        ws = [r["worker"] for r in d.get("runs", []) if r.get("server") == kind and r.get("worker")]
        if not ws:
            continue

        def med(key):
            xs = sorted(w[key] for w in ws if w.get(key) is not None)
            return xs[len(xs) // 2] if xs else None
        busy, fpp, wk = med("busy_share"), med("frames_per_busy_poll"), med("consumer_wakeups_per_s")
        out.append(f"{kind}'s worker over the window (median of {len(ws)} runs): "
                   f"{'–' if busy is None else f'{busy:.0%}'} of its polls busy, "
                   f"{'–' if fpp is None else f'{fpp:.1f}'} frames a busy poll (64 at most: "
                   f"fewer, and the generator set the pace), "
                   f"{'–' if wk is None else f'{wk:,.0f}'} consumer wake-ups a second.\n")
    return rows, out


def kernel_section(d, name):
    rows, out = [], []
    cmds = d.get("commands") or [d.get("command", "?")]
    out.append("### Linux kernel vs l3nsd, CPU per delivered packet (" +
               "; ".join(f"`{c}`" for c in cmds) + ")\n")
    for m in d.get("machines") or [d.get("machine", {})]:
        out.append(run_of(m, name) + "\n")
        if m.get("sleep_wake_oncpu_us"):
            out.append(f"One sleep-and-wake of a thread on the receiving core costs "
                       f"{m['sleep_wake_oncpu_us']:.1f} µs of CPU on this machine.\n")
    # The exact figures (the receiving core's busy time) where the run has them; runs from
    # before them only have the tick-sampled ones.
    exact = any(isinstance(v, dict) and (v.get("ratio_core_kernel_over_l3ns") or {}).get("n")
                for per_n in d["tables"].values() for t in per_n.values() for v in t.values())
    how = "receiving core's exact busy time" if exact else "tick-sampled"
    out.append(f"| rate pps | namespaces | kernel µs/pkt | l3nsd mode | l3nsd µs/pkt | "
               f"kernel / l3nsd ({how}) |")
    out.append("|---|---|---|---|---|---|")
    for rate, per_n in sorted(d["tables"].items(), key=lambda kv: float(kv[0])):
        for n, t in sorted(per_n.items(), key=lambda kv: int(kv[0])):
            for mode, v in t.items():
                if not isinstance(v, dict) or "ratio_kernel_over_l3ns" not in v:
                    continue
                if exact:
                    r, k, l3 = (v["ratio_core_kernel_over_l3ns"], t["kernel_us_core"],
                                v["us_core"])
                else:
                    r, k, l3 = v["ratio_kernel_over_l3ns"], t["kernel_us_kernel"], v["us_total"]
                if not r:
                    continue
                rows.append((f"kernel CPU per packet / l3nsd's ({mode}), {int(n):,} "
                             f"namespace{'s' if int(n) != 1 else ''}, {float(rate):,.0f} pps",
                             spread(r, "{:.1f}×"), f"≥ {KERNEL_MIN_RATIO:.0f}×",
                             r["median"] >= KERNEL_MIN_RATIO, name))
                out.append(f"| {float(rate):,.0f} | {int(n):,} | {spread(k, '{:.3f}')} | "
                           f"{mode} | {spread(l3, '{:.3f}')} | {spread(r, '{:.1f}')} |")
    out.append("")
    return rows, out


def render(args):
    rows, sections = [], []
    if args.scale or args.addrs:
        addrs = (load(args.addrs), args.addrs) if args.addrs else None
        r, s = scale_section(load(args.scale) if args.scale else None, args.scale, addrs)
        rows += r
        sections += s
    if args.scale_per_socket:
        r, s = scale_per_socket_section(load(args.scale_per_socket), args.scale_per_socket)
        rows += r
        sections += s
    for arg, fn in ((args.churn, churn_section), (args.memif, memif_section),
                    (args.kernel, kernel_section)):
        if arg:
            r, s = fn(load(arg), arg)
            rows += r
            sections += s
    out = [BEGIN, "## Latest runs against issue 7's targets (generated)", ""]
    out.append("Medians over the repetitions of each run, min..max in brackets; every ratio is "
               "taken within one run, side by side. Sources in `bench/results/`; the sittings "
               "below explain them.\n")
    out.append("| what | median (min..max) | target | met? | from |")
    out.append("|---|---|---|---|---|")
    for what, got, want, ok, src in rows:
        out.append(f"| {what} | {got} | {want} | {yes(ok)} | `{src}` |")
    out.append("")
    out += sections
    out.append(END)
    return "\n".join(out) + "\n"


def splice(text, block):
    """`text` with the generated block replaced by `block` (or inserted after the first
    paragraph that follows the title)."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + block.rstrip("\n") + tail
    parts = text.split("\n\n")
    keep = min(2, len(parts))
    return "\n\n".join(parts[:keep]) + "\n\n" + block + "\n" + "\n\n".join(parts[keep:])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", help="scale.py JSON (namespaces series)")
    ap.add_argument("--addrs", help="scale.py JSON with a per-address series (--namespaces 1000 --addrs 1,10,100,1000)")
    ap.add_argument("--scale-per-socket", metavar="JSON",
                    help="scale.py JSON of a run with --queue-per-ns (context rows and table)")
    ap.add_argument("--churn", help="churn.py JSON")
    ap.add_argument("--memif", help="memif.py JSON")
    ap.add_argument("--kernel", help="kernel.py JSON")
    ap.add_argument("--md", default=os.path.join(common.REPO, "bench", "RESULTS.md"))
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when the file's block differs from the JSON's (write nothing)")
    args = ap.parse_args()
    if not any((args.scale, args.addrs, args.scale_per_socket, args.churn, args.memif,
                args.kernel)):
        ap.error("give at least one of --scale, --addrs, --scale-per-socket, --churn, --memif, "
                 "--kernel")
    try:
        block = render(args)
    except OSError as e:
        print(f"report.py: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as e:
        print(f"report.py: a result file is not what its script writes: {e!r}", file=sys.stderr)
        return 2
    try:
        with open(args.md) as f:
            text = f.read()
    except OSError as e:
        print(f"report.py: {args.md}: {e.strerror}", file=sys.stderr)
        return 2
    new = splice(text, block)
    if args.check:
        if new != text:
            print(f"{args.md}: the generated block is stale (run report.py without --check)")
            return 1
        print(f"{args.md}: up to date")
        return 0
    with open(args.md, "w") as f:
        f.write(new)
    print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
