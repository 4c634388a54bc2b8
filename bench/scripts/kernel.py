#!/usr/bin/python3
"""Comparison 4: CPU per delivered packet, Linux kernel vs l3nsd, the same traffic offered.

Every mode gets the same frames from the same generator, `l3ns-pktgen` (pinned to core 1):
64-byte UDP frames (60 bytes without FCS, 18-byte payload) from 10.95.255.254:1234 to port 9,
round robin over the N destination addresses 10.95.1.1, 10.95.1.2, ..., in bursts of 32 at
--rate frames/s, rate * --seconds frames. Modes:
- kernel: netns l3cmp-g, veth g0 (generator, AF_PACKET) <-> h0 in netns l3cmp-h (the veth
  receive path runs in the generator's context, on core 1, unless --rps-cpus); N macvlans
  (bridge) on h0, macvlan i in netns l3cmp-n<i> with address i, one receiver process on
  0.0.0.0:9 in each (C, recvmmsg batches of 64, blocking; --receiver python for the old one).
  The generator sends each namespace's frames to its macvlan's MAC (unicast.dst_macs).
- memif: l3nsd with a DPDK net_memif server port (worker on core 0, dataplane.idle_sleep_us
  from --memif-idle-sleep-us), N L3 namespaces owning address i with a sink socket on
  0.0.0.0:9 each; the generator is the memif client (--backend dpdk), resolves l3nsd's MAC with
  ARP (which also waits for the link). No kernel networking on the packet path.
- afpacket: the same l3nsd configuration on h0 (backend afpacket) behind the veth above; the
  generator sends to h0's MAC.
Everything of the receiving side runs on core 0 and nothing else of the harness's does:
the receivers (taskset) and, by RPS on h0 (--rps-cpus, default 1), the kernel's receive path;
l3nsd and all its threads (taskset). The generator and this script run on core 1.
Measured from the generator's first burst to 0.3 s after its last (its "sending on" and
"sent N frames" lines). The headline, exact: core 0's busy time (wall time less its idle time
in /proc/stat, which a NO_HZ kernel measures at each idle entry and exit) less its busy time
over a window with no traffic, per delivered packet. Tick-sampled figures kept beside it:
softirq ticks from /proc/stat (whole machine, tick-sampled: this kernel has no
IRQ_TIME_ACCOUNTING), and the receivers' (kernel) or l3nsd's (l3ns) CPU: utime + stime of the
whole process (/proc/PID/stat, every thread) and the exact on-CPU time of its threads
(/proc/PID/task/*/schedstat). The generator's own CPU is counted on neither side.
Delivered: the receivers' counts (kernel), the namespaces' `delivered` (l3nsctl stats, read
before the generator leaves); sent: the unicast frames the generator handed to its port
(a frame the memif device refused at flush, `device_dropped`, shows as a loss).
Writes bench/results/<--out>.
"""

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import accounting  # noqa: E402
import common  # noqa: E402

PY = "/usr/bin/python3"
GEN_NS, HOST_NS = "l3cmp-g", "l3cmp-h"
GEN_CORE = "1"
# Everything on the receiving side runs on this core (and nothing else of ours does): the
# kernel's receive path (RPS) and receivers, or l3nsd's every thread.
RECV_CORE = "0"
# Receive packet steering on h0 (hex CPU mask, "0" = off): where the veth receive path runs.
RPS = {"cpus": "1"}
SERVER_MAC = "02:00:00:00:5f:01"
procs = []
netns_made = []

RECEIVER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#define BATCH 64
static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

/* Binds 0.0.0.0:9, receives with blocking recvmmsg (wakes on the first datagram, takes up to
   64), counts; prints "ready", and the count on SIGTERM. */
int main(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int buf = 1 << 20;
    struct timeval tv = {0, 200000};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9)};
    static char data[BATCH][2048];
    struct iovec iov[BATCH];
    struct mmsghdr m[BATCH];
    struct sigaction sa = {.sa_handler = on_term};
    unsigned long long n = 0;
    sigaction(SIGTERM, &sa, NULL);
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    memset(m, 0, sizeof m);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = data[i];
        iov[i].iov_len = sizeof data[i];
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        int r = recvmmsg(s, m, BATCH, MSG_WAITFORONE, NULL);
        if (r > 0) n += (unsigned)r;
    }
    printf("%llu\n", n);
    return 0;
}
"""

RECEIVER_PY = r"""
import signal, socket
stop = False
def term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, term)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", 9))
s.settimeout(0.2)
n = 0
print("ready", flush=True)
while not stop:
    try:
        while True:
            s.recv(2048)
            n += 1
    except (socket.timeout, InterruptedError):
        pass
print(n, flush=True)
"""


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def addr(i):
    return str(ipaddress.IPv4Address("10.95.1.1") + i)


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except Exception:
                pass
    procs.clear()
    for ns in reversed(netns_made):
        sh("ip", "netns", "del", ns, check=False)
    netns_made.clear()


def mkns(name):
    sh("ip", "netns", "del", name, check=False)
    sh("ip", "netns", "add", name)
    netns_made.append(name)
    sh("ip", "-n", name, "link", "set", "lo", "up")


def base_topology():
    """g0 (generator, netns l3cmp-g) <-> h0 (netns l3cmp-h); returns h0's MAC."""
    mkns(GEN_NS)
    mkns(HOST_NS)
    sh("ip", "-n", GEN_NS, "link", "add", "g0", "type", "veth", "peer", "name", "h0",
       "netns", HOST_NS)
    sh("ip", "-n", GEN_NS, "addr", "add", "10.95.255.254/16", "dev", "g0")
    sh("ip", "-n", GEN_NS, "link", "set", "g0", "up")
    sh("ip", "-n", HOST_NS, "link", "set", "h0", "up")
    sh("ip", "netns", "exec", HOST_NS, "sh", "-c",
       f"echo {RPS['cpus']} > /sys/class/net/h0/queues/rx-0/rps_cpus")
    return sh("ip", "netns", "exec", HOST_NS, "cat", "/sys/class/net/h0/address").stdout.strip()


def softirq():
    return common.proc_stat_cpu()["softirq"]


def write_profile(d, n, rate, seconds, dst_mac, dst_macs=None, drain=0.3):
    path = os.path.join(d, "profile.toml")
    macs = ""
    if dst_macs:
        macs = "dst_macs = [" + ", ".join(f'"{m}"' for m in dst_macs) + "]\n"
    with open(path, "w") as f:
        f.write(f"""name = "kernel-cmp"
[frame]
dst_mac = "{dst_mac}"
src_mac = "auto"
src_ip = "10.95.255.254"
src_port = 1234
src_ports = 1
dst_port = 9
frame_size = 64
echo = false
[unicast]
namespaces = {n}
addresses_per_namespace = 1
base = "10.95.1.0"
first = 1
stride = 1
{macs}[mix]
unicast = 100
[run]
rate = {rate}
count = {int(rate * seconds)}
duration = {seconds + 2}
burst = 32
drain = {drain}
resolve_timeout = 20.0
""")
    return path


class Generator:
    """l3ns-pktgen on core 1; `started` is set at its "sending on" line (first burst),
    `done` at its "sent N frames" line (last burst)."""

    def __init__(self, cmd, log_path):
        self.log = open(log_path, "w")
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True, errors="replace")
        procs.append(self.p)
        self.started = threading.Event()
        self.done = threading.Event()
        self.th = threading.Thread(target=self._read_stderr, daemon=True)
        self.th.start()

    def _read_stderr(self):
        for line in self.p.stderr:
            self.log.write(line)
            if "sending on" in line:
                self.started.set()
            elif line.startswith("l3ns-pktgen: sent "):
                self.done.set()

    def wait_started(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.started.wait(0.05):
            if self.p.poll() is not None or time.monotonic() > deadline:
                self.p.kill()
                out = self.p.stdout.read()
                self.th.join(2)
                self.log.flush()
                raise RuntimeError(f"l3ns-pktgen did not start sending: {out[-300:]!r} "
                                   + open(self.log.name).read()[-800:])

    def wait_done(self, seconds):
        """Waits for the last burst (at most 2 * seconds + 5 s), then 0.3 s for the frames
        in flight to be processed."""
        self.done.wait(2 * seconds + 5)
        time.sleep(0.3)

    def report(self, timeout):
        out, _ = self.p.communicate(timeout=timeout)
        self.th.join(2)
        self.log.close()
        return json.loads(out)


def pktgen_afpacket(profile, log):
    return Generator(["timeout", "-k", "3", "60", "ip", "netns", "exec", GEN_NS, "taskset", "-c",
                      GEN_CORE, common.dpdk_binary("l3ns-pktgen"), "--backend", "afpacket",
                      "--iface", "g0", "--profile", profile, "--json"], log)


def pktgen_memif(profile, sock, prefix, log):
    eal = (f"--no-pci --in-memory -m 256 --file-prefix {prefix} -l {GEN_CORE} "
           f"--log-level lib.eal:error --vdev net_memif0,role=client,socket={sock}")
    return Generator(["timeout", "-k", "3", "90", "taskset", "-c", GEN_CORE,
                      common.dpdk_binary("l3ns-pktgen"), "--backend", "dpdk", "--device",
                      "net_memif0", "--dpdk-args", eal, "--profile", profile, "--json"], log)


def sent_of(rep):
    # device_dropped (DPDK): frames refused at flush, here the ARP requests sent before the
    # memif link was up (data frames only start once l3nsd has answered one); kept apart.
    return rep["sent"]["by_kind"]["unicast"], rep["sent"].get("device_dropped")


def receiver_binary(d, kind):
    if kind == "python":
        return [PY, "-c", RECEIVER_PY]
    exe = os.path.join(d, "l3cmp-recv")
    if not os.path.exists(exe):
        src = exe + ".c"
        with open(src, "w") as f:
            f.write(RECEIVER_C)
        sh("cc", "-O2", "-Wall", "-o", exe, src)
    return [exe]


def run_kernel(n, rate, seconds, d, receiver):
    base_topology()
    macs = []
    for i in range(n):
        ns = f"l3cmp-n{i}"
        mkns(ns)
        sh("ip", "-n", HOST_NS, "link", "add", "link", "h0", "name", f"mv{i}", "type", "macvlan",
           "mode", "bridge")
        sh("ip", "-n", HOST_NS, "link", "set", f"mv{i}", "netns", ns)
        sh("ip", "-n", ns, "addr", "add", addr(i) + "/16", "dev", f"mv{i}")
        sh("ip", "-n", ns, "link", "set", f"mv{i}", "up")
        macs.append(sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/mv{i}/address")
                    .stdout.strip())
    recv = []
    for i in range(n):
        # `ip netns exec` execs the program: the Popen pid is the receiver's.
        p = subprocess.Popen(["ip", "netns", "exec", f"l3cmp-n{i}", "taskset", "-c", RECV_CORE]
                             + receiver_binary(d, receiver),
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        recv.append(p)
    for p in recv:
        line = p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"receiver said {line!r}")
    profile = write_profile(d, n, rate, seconds, macs[0], macs)
    g = pktgen_afpacket(profile, os.path.join(d, "pktgen.log"))
    g.wait_started(30)
    c0 = [common.task_cpu(p.pid) for p in recv]
    s0 = softirq()
    k0 = common.core_idle(int(RECV_CORE))
    t0 = time.monotonic()
    g.wait_done(seconds)
    k1 = common.core_idle(int(RECV_CORE))
    s1 = softirq()
    c1 = [common.task_cpu(p.pid) for p in recv]
    t1 = time.monotonic()
    rep = g.report(seconds + 20)
    for p in recv:
        p.send_signal(signal.SIGTERM)
    counts = []
    for p in recv:
        out, _ = p.communicate(timeout=10)
        counts.append(int(out.split()[-1]))
    deltas = [common.cpu_delta(a, b) for a, b in zip(c0, c1)]
    sent, dev_dropped = sent_of(rep)
    cleanup()
    return {
        "mode": "kernel", "receiver": receiver, "namespaces": n, "sent": sent,
        "device_dropped": dev_dropped, "generator_pps": rep["sent"]["pps"],
        "delivered": sum(counts), "delivered_min_per_ns": min(counts),
        "interval_s": t1 - t0, "softirq_s": (s1 - s0) / common.TICK,
        "proc_user_s": sum(x["user_s"] for x in deltas),
        "proc_sys_s": sum(x["sys_s"] for x in deltas),
        "proc_oncpu_s": sum(x["oncpu_s"] for x in deltas),
        "core_busy_s": common.core_busy(k0, k1), "rps_cpus": RPS["cpus"],
    }


def l3nsd_config(d, n, idle_sleep_us, port):
    control = os.path.join(d, "ctl.sock")
    cfg = os.path.join(d, "l3nsd.toml")
    head = f"""
[dataplane]
workers = [0]
idle_sleep_us = {idle_sleep_us}
"""
    if port["backend"] == "dpdk":
        head += f'eal_args = [{", ".join(json.dumps(a) for a in port["eal"])}]\n'
        head += f"""
[[port]]
name = "p0"
backend = "dpdk"
dpdk_args = "{port['dpdk_args']}"
"""
    else:
        head += """
[[port]]
name = "p0"
backend = "afpacket"
iface = "h0"
"""
    head += f"""
[control]
socket = "{control}"

[metrics]
listen = "off"
"""
    lines = [head]
    for i in range(n):
        lines.append(f"""
[[namespace]]
name = "t{i}"

[[address]]
address = "{addr(i)}/16"
dev = "p0"
assign_to = "t{i}"

[[socket]]
namespace = "t{i}"
bind = "0.0.0.0:9"
service = "sink"
""")
    with open(cfg, "w") as f:
        f.write("".join(lines))
    return cfg, control


def start_l3nsd(cmd, cfg, control, log_path):
    log = open(log_path, "w")
    srv = subprocess.Popen(["timeout", "-s", "INT", "-k", "3", "120"] + cmd
                           + ["taskset", "-c", RECV_CORE, common.dpdk_binary("l3nsd"),
                              "--config", cfg, "--quiet"],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(srv)
    ctl = [common.dpdk_binary("l3nsctl"), "--control", control, "--json"]
    deadline = time.time() + 30
    while subprocess.run(ctl + ["status"], capture_output=True).returncode != 0:
        if time.time() > deadline or srv.poll() is not None:
            raise RuntimeError("l3nsd did not start: " + open(log_path).read()[-800:])
        time.sleep(0.1)
    kids = sh("pgrep", "-P", str(srv.pid)).stdout.split()
    pid = int(kids[0])  # timeout -> l3nsd (`ip netns exec` and taskset exec it)
    return srv, pid, ctl


def run_l3ns(mode, n, rate, seconds, idle_sleep_us, d, rep):
    tag = f"{os.getpid()}-{rep}-{n}-{idle_sleep_us}"
    if mode == "memif":
        sock = os.path.join(d, f"memif-{tag}.sock")
        port = {"backend": "dpdk",
                "eal": ["--in-memory", "-m", "256", "--no-pci", "--file-prefix", f"l3cmp-d-{tag}",
                        "-l", "0", "--log-level", "lib.eal:error"],
                "dpdk_args": f"net_memif{os.getpid()}{rep},role=server,socket={sock},"
                             f"mac={SERVER_MAC}"}
        cfg, control = l3nsd_config(d, n, idle_sleep_us, port)
        srv, pid, ctl = start_l3nsd([], cfg, control, os.path.join(d, "l3nsd.log"))
        # A long drain keeps the memif client connected while the counters are read.
        profile = write_profile(d, n, rate, seconds, "auto", drain=2.5)
        g = pktgen_memif(profile, sock, f"l3cmp-g-{tag}", os.path.join(d, "pktgen.log"))
    else:
        mac = base_topology()
        cfg, control = l3nsd_config(d, n, idle_sleep_us, {"backend": "afpacket"})
        srv, pid, ctl = start_l3nsd(["ip", "netns", "exec", HOST_NS], cfg, control,
                                    os.path.join(d, "l3nsd.log"))
        profile = write_profile(d, n, rate, seconds, mac)
        g = pktgen_afpacket(profile, os.path.join(d, "pktgen.log"))
    affinity = common.thread_affinity(pid)
    g.wait_started(40)
    c0 = common.task_cpu(pid)
    s0 = softirq()
    k0 = common.core_idle(int(RECV_CORE))
    t0 = time.monotonic()
    g.wait_done(seconds)
    k1 = common.core_idle(int(RECV_CORE))
    s1 = softirq()
    c1 = common.task_cpu(pid)
    t1 = time.monotonic()
    # Read the counters while the generator drains (a memif server may exit when its client
    # leaves).
    o = subprocess.run(ctl + ["stats"], capture_output=True, timeout=10)
    stats = json.loads(o.stdout)["ok"]
    rep_json = g.report(seconds + 30)
    common.stop(srv, 5)
    cleanup()
    sent, dev_dropped = sent_of(rep_json)
    cpu = common.cpu_delta(c0, c1)
    nss = [x for x in stats["namespaces"] if x["namespace"].startswith("t")]
    return {
        "mode": mode, "idle_sleep_us": idle_sleep_us, "namespaces": n, "sent": sent,
        "device_dropped": dev_dropped, "generator_pps": rep_json["sent"]["pps"],
        "delivered": sum(x["delivered"] for x in nss),
        "delivered_min_per_ns": min(x["delivered"] for x in nss),
        "dropped_queue_full": sum(x["dropped_queue_full"] for x in nss),
        "dropped_no_socket": sum(x["dropped_no_socket"] for x in nss),
        "port": stats["ports"][0], "interval_s": t1 - t0,
        "softirq_s": (s1 - s0) / common.TICK, "proc_user_s": cpu["user_s"],
        "proc_sys_s": cpu["sys_s"], "proc_oncpu_s": cpu["oncpu_s"],
        "threads_oncpu_s": cpu["threads_oncpu_s"], "thread_affinity": affinity,
        "threads_context_switches": cpu["threads_context_switches"],
        "core_busy_s": common.core_busy(k0, k1), "rps_cpus": RPS["cpus"],
    }


def per_packet(r):
    """µs per delivered packet: process (utime+stime / on-CPU), softirq, and the totals."""
    dl = r.get("delivered")  # none in a failed run's record
    if not dl:
        return r
    us = 1e6 / dl
    r["us_softirq"] = r["softirq_s"] * us
    r["us_proc_ticks"] = (r["proc_user_s"] + r["proc_sys_s"]) * us
    r["us_proc_sys"] = r["proc_sys_s"] * us
    r["us_proc_oncpu"] = r["proc_oncpu_s"] * us
    # The headline figures: softirq + the process's utime+stime (all of it for l3nsd; for the
    # kernel, "kernel" = softirq + the receivers' system time, "total" adds their user time).
    r["us_total"] = r["us_softirq"] + r["us_proc_ticks"]
    if r["mode"] == "kernel":
        r["us_kernel"] = r["us_softirq"] + r["us_proc_sys"]
    # Exact: the receiving core's busy time less its busy time with no traffic. Only when the
    # whole receiving side is on that core (for the veth modes, RPS steers it there).
    if r["mode"] == "memif" or r.get("rps_cpus") == RECV_MASK:
        r["us_core"] = (r["core_busy_s"] - r["core_base_busy_per_s"] * r["interval_s"]) * us
    return r


RECV_MASK = format(1 << int(RECV_CORE), "x")


def label(r):
    return "kernel" if r["mode"] == "kernel" else f"{r['mode']}:{r['idle_sleep_us']}"


def tabulate(runs, rate):
    table = {}
    for n in sorted({r["namespaces"] for r in runs}):
        at = [r for r in runs if r["namespaces"] == n and r.get("rate") == rate]
        k = {r["rep"]: r for r in at if r["mode"] == "kernel" and "us_total" in r}
        row = {"kernel_us_kernel": common.summary([r["us_kernel"] for r in k.values()]),
               "kernel_us_core": common.summary([r["us_core"] for r in k.values()
                                                 if "us_core" in r]),
               "kernel_us_total": common.summary([r["us_total"] for r in k.values()]),
               "kernel_delivered_over_sent": common.summary(
                   [r["delivered"] / r["sent"] for r in k.values() if r["sent"]])}
        for lab in sorted({label(r) for r in at if r["mode"] != "kernel"}):
            l3 = [r for r in at if label(r) == lab and "us_total" in r]
            row[lab] = {
                "us_total": common.summary([r["us_total"] for r in l3]),
                "us_proc_ticks": common.summary([r["us_proc_ticks"] for r in l3]),
                "us_proc_oncpu": common.summary([r["us_proc_oncpu"] for r in l3]),
                "us_softirq": common.summary([r["us_softirq"] for r in l3]),
                "us_core": common.summary([r["us_core"] for r in l3 if "us_core" in r]),
                "ratio_core_kernel_over_l3ns": common.summary(
                    [k[r["rep"]]["us_core"] / r["us_core"] for r in l3
                     if r["rep"] in k and "us_core" in k[r["rep"]] and r.get("us_core", 0) > 0]),
                "delivered_over_sent": common.summary(
                    [r["delivered"] / r["sent"] for r in l3 if r["sent"]]),
                "ratio_kernel_over_l3ns": common.summary(
                    [k[r["rep"]]["us_kernel"] / r["us_total"] for r in l3 if r["rep"] in k]),
                "ratio_kernel_total_over_l3ns": common.summary(
                    [k[r["rep"]]["us_total"] / r["us_total"] for r in l3 if r["rep"] in k]),
            }
        table[str(n)] = row
    return table


def fmt(x, p=2):
    return f"{x['median']:.{p}f} ({x['min']:.{p}f}..{x['max']:.{p}f})" if x else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namespaces", default="1,10,100")
    ap.add_argument("--rate", type=float, default=50000)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--modes", default="kernel,memif,afpacket",
                    help="any of kernel, memif, afpacket (comma-separated)")
    ap.add_argument("--memif-idle-sleep-us", default="200",
                    help="l3nsd dataplane.idle_sleep_us values for memif (one run each)")
    ap.add_argument("--afpacket-idle-sleep-us", type=int, default=50)
    ap.add_argument("--busy-poll", action="store_true",
                    help="also run memif with idle_sleep_us = 0 (busy poll), repetition 0 only")
    ap.add_argument("--receiver", choices=("c", "python"), default="c")
    ap.add_argument("--rps-cpus", default=RECV_MASK,
                    help=f"RPS mask of h0 (hex; default {RECV_MASK} = core {RECV_CORE}, the "
                         "receiving core, whose exact busy time is the headline; 0 = off: the "
                         "receive path runs in the generator's context on core "
                         f"{GEN_CORE} and only the tick-sampled figures apply)")
    ap.add_argument("--out", default="kernel.json", help="file name in bench/results/")
    ap.add_argument("--append", action="store_true",
                    help="add to the runs already in --out (tables are recomputed over all)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, hugepages)")
    modes = args.modes.split(",")
    RPS["cpus"] = args.rps_cpus
    idles = [int(x) for x in args.memif_idle_sleep_us.split(",")]
    d = tempfile.mkdtemp(prefix="l3ns-cmp-kernel-")
    huge = None

    def finish(*_):
        cleanup()
        if huge:
            huge.restore()
        shutil.rmtree(d, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *a: (finish(), sys.exit(1)))
    # Nothing of the harness's own on the receiving core.
    os.sched_setaffinity(0, {int(GEN_CORE)})
    info = common.machine()
    info["bin_dir"] = common.DPDK_BIN_DIR
    info["rps_cpus"] = args.rps_cpus
    info["sleep_wake_oncpu_us"] = common.sleep_cost_us(int(RECV_CORE))
    # Whether the receiving core's idle time is exact here (accounting.py): a phase-locked
    # load's on-CPU time against the core's busy time by idle time and by ticks.
    info["accounting_check"] = accounting.phase_locked(int(RECV_CORE), 1.0, 0.001)
    info["receiver"] = args.receiver
    print(f"machine: {info}")
    runs = []
    try:
        if "memif" in modes:
            huge = common.Hugepages(300)
        # Softirq of the machine with no traffic, over one window.
        s0 = softirq()
        k0 = common.core_idle(int(RECV_CORE))
        time.sleep(args.seconds + 0.3)
        k1 = common.core_idle(int(RECV_CORE))
        idle_softirq = (softirq() - s0) / common.TICK
        base = common.core_busy(k0, k1) / (k1[0] - k0[0])
        print(f"no traffic over {args.seconds + 0.3:.1f} s: softirq {idle_softirq:.2f} s, core "
              f"{RECV_CORE} busy {base:.1%}")
        for n in [int(x) for x in args.namespaces.split(",")]:
            for rep in range(args.reps):
                todo = []
                if "kernel" in modes:
                    todo.append(("kernel", None))
                if "memif" in modes:
                    todo += [("memif", i) for i in idles]
                    if args.busy_poll and rep == 0 and 0 not in idles:
                        todo.append(("memif", 0))
                if "afpacket" in modes:
                    todo.append(("afpacket", args.afpacket_idle_sleep_us))
                for mode, idle in todo:
                    load = common.loadavg()[0]
                    cpu0 = common.proc_stat_cpu()
                    try:
                        if mode == "kernel":
                            r = run_kernel(n, args.rate, args.seconds, d, args.receiver)
                        else:
                            r = run_l3ns(mode, n, args.rate, args.seconds, idle, d, rep)
                    except Exception as e:  # record it; one failed run must not lose the rest
                        cleanup()
                        r = {"mode": mode, "idle_sleep_us": idle, "namespaces": n,
                             "error": str(e)[-600:]}
                        print(f"N={n} rep {rep} {mode} idle {idle}: FAILED {e}", flush=True)
                    r.update(rep=rep, rate=args.rate, seconds=args.seconds,
                             core_base_busy_per_s=base,
                             loadavg_1m_at_start=load,
                             machine_cpu_shares=common.cpu_shares(cpu0, common.proc_stat_cpu()))
                    per_packet(r)
                    runs.append(r)
                    if "us_total" in r:
                        extra = (f" kernel {r['us_kernel']:.2f}" if mode == "kernel" else
                                 f" on-CPU {r['us_proc_oncpu']:.2f}")
                        if "us_core" in r:
                            extra += f" core {RECV_CORE} {r['us_core']:.3f}"
                        print(f"N={n:>3} rep {rep} {label(r):<14} sent {r['sent']:>7} delivered "
                              f"{r['delivered']:>7}  softirq {r['softirq_s']:.2f}s user "
                              f"{r['proc_user_s']:.2f}s sys {r['proc_sys_s']:.2f}s on-CPU "
                              f"{r['proc_oncpu_s']:.3f}s -> us/pkt total {r['us_total']:.2f}"
                              f"{extra} queue-full {r.get('dropped_queue_full', '-')} "
                              f"(load {load})", flush=True)
    finally:
        finish()
    path = os.path.join(common.RESULTS, args.out)
    old = {}
    if args.append and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        runs = old.get("runs", []) + runs
    rates = sorted({r["rate"] for r in runs})
    tables = {str(int(rate)): tabulate(runs, rate) for rate in rates}
    print()
    for rate, table in tables.items():
        for n, row in table.items():
            print(f"{rate} pps N={n}: kernel {fmt(row['kernel_us_kernel'])} us/pkt (total "
                  f"{fmt(row['kernel_us_total'])}, core {RECV_CORE} "
                  f"{fmt(row['kernel_us_core'], 3)})")
            for lab, x in row.items():
                if isinstance(x, dict) and "us_total" in x:
                    print(f"    {lab:<14} {fmt(x['us_total'], 3)} us/pkt (on-CPU "
                          f"{fmt(x['us_proc_oncpu'], 3)}), kernel/l3ns "
                          f"{fmt(x['ratio_kernel_over_l3ns'], 1)}; core {RECV_CORE} "
                          f"{fmt(x['us_core'], 3)}, kernel/l3ns "
                          f"{fmt(x['ratio_core_kernel_over_l3ns'], 1)}")
    info["loadavg_end"] = common.loadavg()
    info["softirq_idle_s_per_window"] = idle_softirq if runs else None
    info["core_base_busy_per_s"] = base if runs else None
    machines = old.get("machines", []) + [info]
    commands = old.get("commands", []) + ["bench/scripts/kernel.py " + " ".join(sys.argv[1:])]
    common.save(args.out, {
        "machines": machines, "commands": commands,
        "what": "CPU seconds per delivered packet from the generator's first burst to 0.3 s "
                "after its last. Headline ('us_core', 'ratio_core_kernel_over_l3ns'): the exact "
                f"busy time of core {RECV_CORE} (wall less its NO_HZ idle time, /proc/stat), "
                "which runs the whole receiving side (kernel: RPS and receivers; l3ns: every "
                "l3nsd thread) and nothing else of ours, less its busy time with no traffic. "
                "Tick-sampled (miss work phase-locked with the generator's bursts): "
                "kernel: softirq (/proc/stat, whole machine) + receivers' stime ('us_kernel'), "
                "+ their utime ('us_total'). l3ns: l3nsd utime+stime of every thread "
                "+ softirq ('us_total'); 'us_proc_oncpu' = l3nsd threads' exact on-CPU time. "
                "ratio_kernel_over_l3ns = kernel us_kernel / l3ns us_total, same repetition.",
        "tables": tables, "runs": runs,
    })


if __name__ == "__main__":
    main()
