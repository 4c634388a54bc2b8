#!/usr/bin/python3
"""Comparison 3: l3nsd vs dpdk-testpmd as the receiving side of the same net_memif link.

Client (both cases): `dpdk-testpmd --forward-mode=txonly` on the memif client side, its
forwarding lcore on core 1 (main lcore 0), UDP 64-byte frames to 10.95.0.2:9, bounded with
`timeout -s INT`.
Server, alternately:
- `l3nsd`: one worker on core 0 (EAL -l 0), memif server, 10.95.0.2 owned by namespace web1
  with a sink socket on 0.0.0.0:9; received = `l3nsctl --json stats` ports[0].rx_packets.
  With --placement one-core (default) every l3nsd thread runs on core 0 (`taskset -c 0`),
  the service thread that drains the sink too, so that each receiver has core 0 and the
  generator has core 1 to itself; with split (reported as `l3nsd-split`) l3nsd places its
  service thread on the other core, the generator's, as it does by itself on two cores;
- `dpdk-testpmd` with --baseline io (default): `--forward-mode=io --port-topology=loop`,
  every received burst sent back out of the same memif port (the txonly client does not read
  them: once the ring back is full they are dropped, counted as TX-dropped); or macswap
  (the same, each frame's MAC addresses swapped first: it reads and writes every frame's
  first line); or rxonly (receive and free). Forwarding lcore on core 0 (main lcore 1, idle
  but for the stats); received = its RX-packets (stats printed every second).
  `--baseline io,rxonly` runs both in every repetition.
l3nsd's `delivered` (namespace web1, handed to the sink socket's queue) and
`dropped_queue_full` are sampled with its received count, and so are its worker's polls and
consumer wake-ups: `worker` in each l3nsd run is the share of busy polls, frames per busy
poll and wake-ups per second over the window.
Received packets per second = slope of the cumulative count over the same window (client
start + --skip seconds … client end - 1 s), sampled every second with the script's clock.
With --zero-copy the roles swap: the txonly generator is the memif server and every
receiver (l3nsd, testpmd) a memif client with `zero-copy=yes` (its EAL with
`--single-file-segments`): the generator copies each frame straight into the receiver's mbufs
and the receiver's driver copies nothing. The receiver starts after the generator; the
window runs from the receiver's start + --skip to the generator's end - 1 s.
Needs root (hugepages). Writes bench/results/memif.json.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

# l3nsd must be built with --features dpdk: $L3NS_DPDK_BIN_DIR (default /tmp/tgt-dpdk/release).
DPDK_BIN = common.DPDK_BIN_DIR
SERVER_MAC = "02:00:00:00:5f:01"
children = []


def kill_children():
    for p in children:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGINT)
                p.wait(timeout=3)
            except Exception:
                p.kill()
                p.wait()


# --zero-copy: the generator is the memif server, receivers are zero-copy clients.
ZERO_COPY = False
# --burst: l3nsd's dataplane.burst (None: its default).
BURST = None
# With --zero-copy the generator starts first and runs this much longer than --seconds, the
# time a receiver takes to start and connect.
ZC_LEAD = 4


def receiver_role():
    """The receivers' memif devargs role part (and what their EAL needs for it)."""
    return "role=client,zero-copy=yes" if ZERO_COPY else "role=server"


def client(sock, prefix, seconds, log):
    role = "role=server" if ZERO_COPY else "role=client"
    cmd = ["timeout", "-s", "INT", "-k", "5", str(seconds), "stdbuf", "-oL", "dpdk-testpmd",
           "--in-memory", "-m", "512", "--no-pci", "--file-prefix", prefix,
           "-l", "0,1", "--main-lcore", "0", "--log-level", "lib.eal:error",
           "--vdev", f"net_memif0,{role},socket={sock}", "--",
           "--forward-mode=txonly", "--total-num-mbufs=16384",
           "--tx-ip=10.95.0.99,10.95.0.2", "--tx-udp=1234,9",
           f"--eth-peer=0,{SERVER_MAC}", "--no-lsc-interrupt", "--stats-period=1"]
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    children.append(p)
    return p


def wait_testpmd_started(proc, log_path, timeout=30):
    """Waits until the testpmd writing `log_path` has started its port (a memif server then
    listens: its socket is abstract, there is no file to wait for)."""
    deadline = time.time() + timeout
    while True:
        with open(log_path, errors="replace") as f:
            text = f.read()
        if any(k in text for k in ("Press enter", "Checking link", "Port 0:")):
            return
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError("testpmd generator did not start: " + text[-1000:])
        time.sleep(0.1)


def generator_first(d, log_name, sock, prefix, seconds):
    """Opens the generator's log in `d`; with --zero-copy also starts the generator, which is
    then the memif server the receiver connects to, and waits for it to listen. Returns (log
    path, log, generator or None: without --zero-copy the receiver is the server, and the
    caller starts the generator once the receiver is up)."""
    log_path = os.path.join(d, log_name)
    log = open(log_path, "w")
    c = None
    if ZERO_COPY:
        c = client(sock, prefix, seconds + ZC_LEAD, log)
        wait_testpmd_started(c, log_path)
    return log_path, log, c


def parse_testpmd_counts(path, key):
    """Every `key` value testpmd printed (cumulative counts like TX-packets, rates like Rx-pps), in order."""
    vals = []
    with open(path, errors="replace") as f:
        for line in f:
            m = re.search(key + r":\s+(\d+)", line)
            if m:
                vals.append(int(m.group(1)))
    return vals


def slope(samples, t_from, t_to):
    s = [(t, v) for t, v in samples if t_from <= t <= t_to]
    if len(s) < 2:
        return None, s
    (t0, v0), (t1, v1) = s[0], s[-1]
    return (v1 - v0) / (t1 - t0), s


def worker_window(rx, workers, t_from, t_to):
    """The worker's share of busy polls, frames per busy poll and consumer wake-ups per
    second over the window (`l3nsctl stats` samples): whether l3nsd kept up with what the
    generator offered (busy near 1 and full bursts: it did not) and what waking the sink cost
    it. None when the window has fewer than two samples."""
    pts = [(t, r, w) for (t, r), w in zip(rx, workers)
           if t_from <= t <= t_to and None not in w[1:]]
    if len(pts) < 2:
        return None
    (t0, r0, w0), (t1, r1, w1) = pts[0], pts[-1]
    busy, idle, wakes = (w1[i] - w0[i] for i in (1, 2, 3))
    return {
        "busy_share": busy / (busy + idle) if busy + idle else None,
        "frames_per_busy_poll": (r1 - r0) / busy if busy else None,
        "consumer_wakeups_per_s": wakes / (t1 - t0),
    }


def run_l3nsd(d, rep, seconds, skip, idle_sleep_us, queue_depth, one_core):
    sock = os.path.join(d, f"memif-l3ns-{rep}.sock")
    control = os.path.join(d, f"ctl-{rep}.sock")
    cfg = os.path.join(d, f"l3nsd-{rep}.toml")
    pid = os.getpid()
    zc_eal = ' "--single-file-segments",' if ZERO_COPY else ""
    with open(cfg, "w") as f:
        f.write(f"""
[dataplane]
workers = [0]
idle_sleep_us = {idle_sleep_us}
queue_depth = {queue_depth}
{f"burst = {BURST}" if BURST else ""}
eal_args = ["--in-memory",{zc_eal} "-m", "256", "--no-pci", "--file-prefix", "l3ns-cmp-{pid}-{rep}", "-l", "0", "--log-level", "lib.eal:error"]

[[port]]
name = "memif0"
backend = "dpdk"
dpdk_args = "net_memif{pid}{rep},{receiver_role()},socket={sock},mac={SERVER_MAC}"

[[namespace]]
name = "web1"

[[address]]
address = "10.95.0.1/24"
dev = "memif0"

[[address]]
address = "10.95.0.2/24"
dev = "memif0"
assign_to = "web1"

[[socket]]
namespace = "web1"
bind = "0.0.0.0:9"
service = "sink"

[control]
socket = "{control}"

[metrics]
listen = "off"
""")
    clog_path, clog, c = generator_first(d, f"client-l3ns-{rep}.log", sock,
                                         f"l3ns-cmp-cli-{pid}-{rep}", seconds)
    log = open(os.path.join(d, f"l3nsd-{rep}.log"), "w")
    taskset = ["taskset", "-c", "0"] if one_core else []
    srv = subprocess.Popen(["timeout", "-s", "INT", "-k", "5", str(seconds + 30)] + taskset +
                           [os.path.join(DPDK_BIN, "l3nsd"), "--config", cfg, "--quiet"],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    children.append(srv)
    ctl = [os.path.join(DPDK_BIN, "l3nsctl"), "--control", control, "--json"]
    deadline = time.time() + 30
    while subprocess.run(ctl + ["status"], capture_output=True).returncode != 0:
        if time.time() > deadline or srv.poll() is not None:
            raise RuntimeError("l3nsd did not start: " + open(log.name).read()[-1000:])
        time.sleep(0.1)

    def rx():
        for _ in range(5):
            o = subprocess.run(ctl + ["stats"], capture_output=True, timeout=10)
            try:
                j = json.loads(o.stdout)["ok"]
                return j["ports"][0]["rx_packets"], j
            except (ValueError, KeyError):
                time.sleep(0.1)
        raise RuntimeError(f"l3nsctl stats failed: {o.stdout[-300:]!r} {o.stderr[-300:]!r}")

    # timeout's child is l3nsd: find it for CPU accounting.
    l3pid = None
    for _ in range(20):
        kids = subprocess.run(["pgrep", "-P", str(srv.pid)], capture_output=True, text=True).stdout.split()
        if kids:
            l3pid = int(kids[0])
            break
        time.sleep(0.05)
    affinity = common.thread_affinity(l3pid) if l3pid else None
    cpu0 = common.task_cpu(l3pid) if l3pid else None
    t_start = time.monotonic()
    if c is None:
        c = client(sock, f"l3ns-cmp-cli-{pid}-{rep}", seconds, clog)
    samples, delivered, queue_full, workers = [], [], [], []
    j, exited = None, False
    while c.poll() is None and time.monotonic() - t_start < seconds + 10:
        try:
            v, j = rx()
        except RuntimeError:  # l3nsd gone: see below
            if j is None:
                raise
            exited = True
            break
        now = time.monotonic()
        w = next(n for n in j["namespaces"] if n["namespace"] == "web1")
        samples.append((now, v))
        delivered.append((now, w["delivered"]))
        queue_full.append((now, w["dropped_queue_full"]))
        wk = (j.get("workers") or [{}])[0]
        workers.append((now, wk.get("busy_polls"), wk.get("idle_polls"),
                        wk.get("consumer_wakeups")))
        time.sleep(1.0)
    t_end = time.monotonic()
    cpu1 = common.task_cpu(l3pid) if l3pid else None
    # DPDK 22.11's memif server could die when its client left (a race the shim's burst guard
    # now closes); should l3nsd be gone anyway, the last sample taken while the client ran is
    # the final count.
    try:
        _, stats = rx() if not exited else (None, j)
    except RuntimeError:
        if j is None:
            raise
        stats, exited = j, True
    web1 = next(n for n in stats["namespaces"] if n["namespace"] == "web1")
    common.stop(srv, 10)
    clog.close()
    rate, used = slope(samples, t_start + skip, t_end - 1.0)
    dl_rate, _ = slope(delivered, t_start + skip, t_end - 1.0)
    qf_rate, _ = slope(queue_full, t_start + skip, t_end - 1.0)
    tx = parse_testpmd_counts(clog_path, "TX-packets")
    txpps = parse_testpmd_counts(clog_path, "Tx-pps")
    return {
        "worker": worker_window(samples, workers, t_start + skip, t_end - 1.0),
        "server": "l3nsd" if one_core else "l3nsd-split", "rep": rep, "rx_pps": rate,
        "samples": samples,
        "delivered_pps": dl_rate, "queue_full_pps": qf_rate,
        "delivered_samples": delivered, "queue_full_samples": queue_full,
        "thread_affinity": affinity, "window_samples": len(used),
        "client_tx_packets": max(tx) if tx else None,
        "client_tx_pps_samples": txpps,
        "l3nsd_cpu": common.cpu_delta(cpu0, cpu1),
        "port_rx_total": stats["ports"][0]["rx_packets"],
        "l3nsd_exited_when_client_left": exited,
        "web1": web1,
    }


def run_testpmd(d, rep, seconds, skip, mode):
    sock = os.path.join(d, f"memif-tp-{mode}-{rep}.sock")
    fwd = ([f"--forward-mode={mode}", "--port-topology=loop"] if mode in ("io", "macswap")
           else ["--forward-mode=rxonly"])
    pid = os.getpid()
    clog_path, clog, c = generator_first(d, f"client-tp-{mode}-{rep}.log", sock,
                                         f"l3ns-cmp-cli-{pid}-tp{mode}{rep}", seconds)
    slog_path = os.path.join(d, f"server-tp-{mode}-{rep}.log")
    slog = open(slog_path, "w")
    zc_eal = ["--single-file-segments"] if ZERO_COPY else []
    srv = subprocess.Popen(["timeout", "-s", "INT", "-k", "5", str(seconds + 30),
                            "stdbuf", "-oL", "dpdk-testpmd", "--in-memory"] + zc_eal + ["-m", "512",
                            "--no-pci", "--file-prefix", f"l3ns-cmp-srv-{pid}-{rep}",
                            "-l", "0,1", "--main-lcore", "1", "--log-level", "lib.eal:error",
                            "--vdev", f"net_memif0,{receiver_role()},socket={sock},mac={SERVER_MAC}",
                            "--"] + fwd + ["--total-num-mbufs=16384",
                                           "--no-lsc-interrupt", "--stats-period=1"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, text=True, errors="replace")
    children.append(srv)
    samples = []
    started = threading.Event()

    def reader():
        for line in srv.stdout:
            slog.write(line)
            if "RX-packets:" in line:
                started.set()
                m = re.search(r"RX-packets:\s+(\d+)", line)
                samples.append((time.monotonic(), int(m.group(1))))
            if "Press enter" in line or "Checking link" in line or "Port 0:" in line:
                started.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    deadline = time.time() + 30
    # memif sockets are abstract by default (no file): wait for testpmd's port start.
    while not started.wait(0.1):
        if time.time() > deadline or srv.poll() is not None:
            raise RuntimeError("testpmd server did not start")
        time.sleep(0.1)
    time.sleep(0.5)
    t_start = time.monotonic()
    if c is None:
        c = client(sock, f"l3ns-cmp-cli-{pid}-tp{mode}{rep}", seconds, clog)
    c.wait(timeout=seconds + ZC_LEAD + 20)
    t_end = time.monotonic()
    time.sleep(1.2)
    common.stop(srv, 10)
    th.join(timeout=5)
    slog.close()
    clog.close()
    rate, used = slope(samples, t_start + skip, t_end - 1.0)
    tx = parse_testpmd_counts(clog_path, "TX-packets")
    return {
        "server": f"testpmd-{mode}", "rep": rep, "rx_pps": rate, "samples": samples,
        "window_samples": len(used),
        "server_rx_pps_samples": parse_testpmd_counts(slog_path, "Rx-pps"),
        "server_tx_pps_samples": parse_testpmd_counts(slog_path, "Tx-pps"),
        "server_tx_dropped": (parse_testpmd_counts(slog_path, "TX-dropped") or [None])[-1],
        "client_tx_packets": max(tx) if tx else None,
        "client_tx_pps_samples": parse_testpmd_counts(clog_path, "Tx-pps"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=8, help="client run time (timeout)")
    ap.add_argument("--skip", type=float, default=2.5, help="seconds ignored after client start")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--idle-sleep-us", type=int, default=0, help="l3nsd dataplane.idle_sleep_us")
    ap.add_argument("--queue-depth", type=int, default=1024,
                    help="l3nsd dataplane.queue_depth (the sink socket's buffer, in datagrams; "
                         "l3nsd's default 1024)")
    ap.add_argument("--burst", type=int, default=None,
                    help="l3nsd dataplane.burst (frames per receive burst; default l3nsd's)")
    ap.add_argument("--baseline", default="io",
                    help="testpmd server mode(s), comma-separated, each run in every "
                         "repetition: io (forward back out of the port, frames untouched), "
                         "macswap (the same, swapping each frame's MAC addresses: a "
                         "forwarder that reads and writes every frame's first line, as any "
                         "classifier must read it), rxonly (receive and free)")
    ap.add_argument("--zero-copy", action="store_true",
                    help="generator as memif server, every receiver a zero-copy memif client")
    ap.add_argument("--placement", default="one-core",
                    help="where l3nsd's threads run, comma-separated, each in every "
                         "repetition: one-core (all of them on the receiving core, "
                         "`taskset -c 0`, the sink's service thread too: the generator's core "
                         "is left to the generator, as with a testpmd receiver; reported as "
                         "l3nsd) and/or split (the service thread on the generator's core, "
                         "l3nsd's own choice on two cores; reported as l3nsd-split)")
    ap.add_argument("--out", default="memif.json", help="file name in bench/results/")
    args = ap.parse_args()
    global ZERO_COPY, BURST
    ZERO_COPY = args.zero_copy
    BURST = args.burst
    if os.geteuid() != 0:
        sys.exit("needs root (hugepages)")
    baselines = args.baseline.split(",")
    if not set(baselines) <= {"io", "macswap", "rxonly"}:
        sys.exit("--baseline: io, macswap and/or rxonly")
    d = tempfile.mkdtemp(prefix="l3ns-cmp-memif-")
    huge = None

    def cleanup(*_):
        kill_children()
        if huge:
            huge.restore()
        if not os.environ.get("KEEP"):
            shutil.rmtree(d, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *a: (cleanup(), sys.exit(1)))
    try:
        # l3nsd 256 MB + client 512 MB, or testpmd server 512 MB + client 512 MB.
        huge = common.Hugepages(520)
        info = common.machine()
        info["bin_dir"] = DPDK_BIN
        print(f"machine: {info}")
        runs = []
        placements = args.placement.split(",")
        if not set(placements) <= {"one-core", "split"}:
            sys.exit("--placement: one-core and/or split")
        l3_kinds = [{"one-core": "l3nsd", "split": "l3nsd-split"}[p] for p in placements]
        kinds = l3_kinds + [f"testpmd-{b}" for b in baselines]
        if os.environ.get("ONLY"):
            kinds = [k for k in kinds if k.startswith(tuple(os.environ["ONLY"].split(",")))]
        for rep in range(args.reps):
            for kind in kinds:
                load = common.loadavg()[0]
                cpu0 = common.proc_stat_cpu()
                try:
                    r = (run_l3nsd(d, rep, args.seconds, args.skip, args.idle_sleep_us,
                                   args.queue_depth, kind == "l3nsd")
                         if kind.startswith("l3nsd") else
                         run_testpmd(d, rep, args.seconds, args.skip, kind.split("-", 1)[1]))
                except Exception as e:  # record and go on: one failed run must not lose the rest
                    kill_children()
                    r = {"server": kind, "rep": rep, "rx_pps": None, "window_samples": 0,
                         "client_tx_packets": None, "error": str(e)[-500:]}
                r["loadavg_1m_at_start"] = load
                r["machine_cpu_shares"] = common.cpu_shares(cpu0, common.proc_stat_cpu())
                runs.append(r)
                extra = ""
                if kind.startswith("l3nsd") and r.get("delivered_pps") is not None:
                    extra = (f", delivered {r['delivered_pps']:,.0f} pps, queue full "
                             f"{r['queue_full_pps']:,.0f} pps")
                    if r.get("worker"):
                        w = r["worker"]
                        extra += (f"; worker busy {w['busy_share'] or 0:.0%}, "
                                  f"{w['frames_per_busy_poll'] or 0:.1f} frames a busy poll, "
                                  f"{w['consumer_wakeups_per_s']:,.0f} wake-ups/s")
                print(f"rep {rep} {r['server']:>15}: received {r['rx_pps'] or 0:,.0f} pps{extra} "
                      f"(window samples {r['window_samples']}), client sent {r['client_tx_packets']} "
                      f"(load {load}, steal {r['machine_cpu_shares']['steal']:.0%})", flush=True)
        summaries = {k: common.summary([r["rx_pps"] for r in runs if r["server"] == k])
                     for k in kinds}
        for k in l3_kinds:
            summaries[f"{k}_delivered"] = common.summary(
                [r.get("delivered_pps") for r in runs if r["server"] == k])
        ratios = {}
        for k in l3_kinds:
            for b in baselines:
                xs = []
                for rep in range(args.reps):
                    a = [r["rx_pps"] for r in runs if r["rep"] == rep and r["server"] == k]
                    t = [r["rx_pps"] for r in runs
                         if r["rep"] == rep and r["server"] == f"testpmd-{b}"]
                    if a and t and a[0] and t[0]:
                        xs.append(a[0] / t[0])
                ratios[f"{k.replace('-', '_')}_received_over_testpmd_{b}"] = common.summary(xs)
            if len(baselines) > 1:
                ratios[f"{k.replace('-', '_')}_received_over_testpmd_best"] = \
                    common.memif_over_best(runs, k)
        print()
        for name, x in summaries.items():
            if x:
                print(f"{name:>16} pps: median {x['median']:,.0f} ({x['min']:,.0f}..{x['max']:,.0f})")
        for name, x in ratios.items():
            if x:
                print(f"{name}: median {x['median']:.2f} ({x['min']:.2f}..{x['max']:.2f})")
        info["loadavg_end"] = common.loadavg()
        common.save(args.out, {
            "machine": info, "command": "bench/scripts/memif.py " + " ".join(sys.argv[1:]),
            "what": "received packets/s on the receiving side (slope of the cumulative "
                    "counter over the window); generator testpmd txonly, forwarding lcore 1; "
                    + ("zero-copy: generator memif server, receivers zero-copy clients"
                       if ZERO_COPY else "generator memif client, receivers memif servers"),
            "zero_copy": ZERO_COPY, "placements": placements,
            "pps": summaries, "ratios": ratios, "runs": runs,
        })
    finally:
        cleanup()


if __name__ == "__main__":
    main()
