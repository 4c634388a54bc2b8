#!/usr/bin/python3
"""Comparison 4: CPU per delivered packet, Linux kernel vs l3nsd (AF_PACKET), same traffic.

Topology (created per run, removed on exit, addresses in 10.95.0.0/16 only):
  netns l3cmp-g: veth g0 (10.95.255.254) <-> veth h0 in netns l3cmp-h.
- kernel: N macvlans (bridge mode) on h0, macvlan i moved to netns l3cmp-n<i> with
  10.95.<1+i//250>.<1+i%250>/16; in each, one python3 process bound on 0.0.0.0:9 counting.
- l3ns: l3nsd in netns l3cmp-h, port on h0 (backend afpacket), N L3 namespaces each owning
  the same address and a sink socket on 0.0.0.0:9 (dataplane.idle_sleep_us as given).
Traffic (both): a python3 AF_PACKET generator in l3cmp-g sends 60-byte UDP frames to port 9,
round robin over the N addresses, at --rate frames/s for --seconds (bounded in count and
time). Only the destination MAC differs: the macvlan's own MAC (kernel) or h0's (l3ns).
The generator's own CPU is not counted on either side.
Measured over the generator's run (+0.3 s): softirq ticks from /proc/stat (whole machine),
the receivers' utime/stime (kernel) or l3nsd's utime/stime (l3ns) from /proc/PID/stat;
delivered = the receivers' counts (kernel) or the namespaces' `delivered` (l3nsctl stats).
Writes bench/results/kernel.json.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

PY = "/usr/bin/python3"
GEN_NS, HOST_NS = "l3cmp-g", "l3cmp-h"
procs = []
netns_made = []

RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", 9))
s.settimeout(0.2)
deadline = time.time() + float(sys.argv[1])
n = 0
print("ready", flush=True)
while time.time() < deadline:
    try:
        while True:
            s.recv(2048)
            n += 1
    except socket.timeout:
        pass
print(n, flush=True)
"""

GENERATOR = r"""
import socket, struct, sys, time
iface, dsts, rate, seconds = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3]), float(sys.argv[4])
src_mac = bytes.fromhex(open(f"/sys/class/net/{iface}/address").read().strip().replace(":", ""))
src_ip = socket.inet_aton("10.95.255.254")
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack(f"!{len(b)//2}H", b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
frames = []
for d in dsts:
    mac, ip = d.split("@")
    dip = socket.inet_aton(ip)
    payload = b"\xab" * 18
    udp_len = 8 + len(payload)
    ph = src_ip + dip + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", 1234, 9, udp_len, 0) + payload
    uc = csum(ph + udp) or 0xffff
    udp = struct.pack("!HHHH", 1234, 9, udp_len, uc) + payload
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, src_ip, dip)
    iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
    frames.append(bytes.fromhex(mac.replace(":", "")) + src_mac + b"\x08\x00" + iph + udp)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
total = int(rate * seconds)
burst = 32
sent = 0
t0 = time.time()
k = 0
nf = len(frames)
while sent < total and time.time() - t0 < seconds + 2:
    due = (time.time() - t0) * rate
    if sent >= due:
        time.sleep(min(0.002, (sent - due) / rate + 1e-4))
        continue
    for _ in range(min(burst, total - sent)):
        try:
            s.send(frames[k])
        except OSError:
            pass
        k += 1
        if k == nf: k = 0
        sent += 1
print(sent, time.time() - t0, flush=True)
"""


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def addr(i):
    return f"10.95.{1 + i // 250}.{1 + i % 250}"


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
    mkns(GEN_NS)
    mkns(HOST_NS)
    sh("ip", "-n", GEN_NS, "link", "add", "g0", "type", "veth", "peer", "name", "h0",
       "netns", HOST_NS)
    sh("ip", "-n", GEN_NS, "addr", "add", "10.95.255.254/16", "dev", "g0")
    sh("ip", "-n", GEN_NS, "link", "set", "g0", "up")
    sh("ip", "-n", HOST_NS, "link", "set", "h0", "up")
    return sh("ip", "netns", "exec", HOST_NS, "cat", "/sys/class/net/h0/address").stdout.strip()


def softirq():
    return common.proc_stat_cpu()["softirq"]


def generator(dsts, rate, seconds):
    p = subprocess.Popen(["timeout", "-k", "3", str(seconds + 10), "ip", "netns", "exec", GEN_NS,
                          PY, "-c", GENERATOR, "g0", ",".join(dsts), str(rate), str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def run_kernel(n, rate, seconds):
    base_topology()
    dsts = []
    recv = []
    for i in range(n):
        ns = f"l3cmp-n{i}"
        mkns(ns)
        sh("ip", "-n", HOST_NS, "link", "add", "link", "h0", "name", f"mv{i}", "type", "macvlan",
           "mode", "bridge")
        sh("ip", "-n", HOST_NS, "link", "set", f"mv{i}", "netns", ns)
        sh("ip", "-n", ns, "addr", "add", addr(i) + "/16", "dev", f"mv{i}")
        sh("ip", "-n", ns, "link", "set", f"mv{i}", "up")
        mac = sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/mv{i}/address").stdout.strip()
        dsts.append(f"{mac}@{addr(i)}")
    for i in range(n):
        p = subprocess.Popen(["ip", "netns", "exec", f"l3cmp-n{i}", PY, "-c", RECEIVER,
                              str(seconds + 3)], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        recv.append(p)
    for p in recv:
        assert p.stdout.readline().strip() == "ready"
    # `ip netns exec` execs the program: the Popen pid is python's.
    c0 = {p.pid: common.cpu_ticks(p.pid) for p in recv}
    st0 = {p.pid: stat_ut_st(p.pid) for p in recv}
    s0 = softirq()
    t0 = time.monotonic()
    g = generator(dsts, rate, seconds)
    gout, _ = g.communicate(timeout=seconds + 15)
    time.sleep(0.3)
    s1 = softirq()
    t1 = time.monotonic()
    st1 = {p.pid: stat_ut_st(p.pid) for p in recv}
    counts = []
    for p in recv:
        out, _ = p.communicate(timeout=seconds + 10)
        counts.append(int(out.split()[-1]))
    sent = int(gout.split()[0])
    ut = sum(st1[k][0] - st0[k][0] for k in st0) / common.TICK
    stt = sum(st1[k][1] - st0[k][1] for k in st0) / common.TICK
    sirq = (s1 - s0) / common.TICK
    delivered = sum(counts)
    cleanup()
    return {
        "side": "kernel", "namespaces": n, "sent": sent, "delivered": delivered,
        "interval_s": t1 - t0, "softirq_s": sirq, "proc_user_s": ut, "proc_sys_s": stt,
        "us_per_pkt_kernel_only": (sirq + stt) / delivered * 1e6 if delivered else None,
        "us_per_pkt_total": (sirq + stt + ut) / delivered * 1e6 if delivered else None,
        "_c0": len(c0),
    }


def stat_ut_st(pid):
    with open(f"/proc/{pid}/stat") as f:
        fl = f.read().rsplit(")", 1)[1].split()
    return int(fl[11]), int(fl[12])


def run_l3ns(n, rate, seconds, idle_sleep_us, d):
    mac = base_topology()
    control = os.path.join(d, "ctl.sock")
    cfg = os.path.join(d, "l3nsd.toml")
    lines = [f"""
[dataplane]
workers = [0]
idle_sleep_us = {idle_sleep_us}

[[port]]
name = "h0"
backend = "afpacket"
iface = "h0"

[control]
socket = "{control}"

[metrics]
listen = "off"
"""]
    for i in range(n):
        lines.append(f"""
[[namespace]]
name = "t{i}"

[[address]]
address = "{addr(i)}/16"
dev = "h0"
assign_to = "t{i}"

[[socket]]
namespace = "t{i}"
bind = "0.0.0.0:9"
service = "sink"
""")
    with open(cfg, "w") as f:
        f.write("".join(lines))
    log = open(os.path.join(d, "l3nsd.log"), "w")
    srv = subprocess.Popen(["timeout", "-k", "3", str(seconds + 40), "ip", "netns", "exec",
                            HOST_NS, common.binary("l3nsd"), "--config", cfg, "--quiet"],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(srv)
    ctl = [common.binary("l3nsctl"), "--control", control, "--json"]
    deadline = time.time() + 20
    while subprocess.run(ctl + ["status"], capture_output=True).returncode != 0:
        if time.time() > deadline or srv.poll() is not None:
            raise RuntimeError("l3nsd did not start: " + open(log.name).read()[-800:])
        time.sleep(0.1)
    kids = sh("pgrep", "-P", str(srv.pid)).stdout.split()
    pid = int(kids[0])  # timeout -> (ip netns exec execs) l3nsd
    time.sleep(0.5)

    def delivered():
        j = json.loads(subprocess.run(ctl + ["stats"], capture_output=True).stdout)["ok"]
        return sum(x["delivered"] for x in j["namespaces"]), j

    dsts = [f"{mac}@{addr(i)}" for i in range(n)]
    d0, _ = delivered()
    u0 = stat_ut_st(pid)
    s0 = softirq()
    t0 = time.monotonic()
    g = generator(dsts, rate, seconds)
    gout, _ = g.communicate(timeout=seconds + 15)
    time.sleep(0.3)
    s1 = softirq()
    u1 = stat_ut_st(pid)
    t1 = time.monotonic()
    d1, stats = delivered()
    srv.send_signal(signal.SIGINT)
    try:
        srv.wait(timeout=5)
    except subprocess.TimeoutExpired:
        srv.kill()
    cleanup()
    sent = int(gout.split()[0])
    dl = d1 - d0
    ut, stt = (u1[0] - u0[0]) / common.TICK, (u1[1] - u0[1]) / common.TICK
    sirq = (s1 - s0) / common.TICK
    return {
        "side": f"l3ns (idle_sleep_us={idle_sleep_us})", "idle_sleep_us": idle_sleep_us,
        "namespaces": n, "sent": sent, "delivered": dl, "interval_s": t1 - t0,
        "softirq_s": sirq, "proc_user_s": ut, "proc_sys_s": stt,
        "us_per_pkt_l3nsd_only": (ut + stt) / dl * 1e6 if dl else None,
        "us_per_pkt_total": (ut + stt + sirq) / dl * 1e6 if dl else None,
        "port": stats["ports"][0],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--namespaces", default="1,10,100")
    ap.add_argument("--rate", type=float, default=50000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--idle-sleep-us", type=int, default=50)
    ap.add_argument("--busy-poll", action="store_true",
                    help="also run l3nsd with idle_sleep_us = 0 (busy poll), once per N")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    signal.signal(signal.SIGTERM, lambda *a: (cleanup(), sys.exit(1)))
    d = tempfile.mkdtemp(prefix="l3ns-cmp-kernel-")
    info = common.machine()
    print(f"machine: {info}")
    runs = []
    try:
        for n in [int(x) for x in args.namespaces.split(",")]:
            for rep in range(args.reps):
                for side in ("kernel", "l3ns") + (("busy",) if args.busy_poll and rep == 0 else ()):
                    load = common.loadavg()[0]
                    if side == "kernel":
                        r = run_kernel(n, args.rate, args.seconds)
                    else:
                        r = run_l3ns(n, args.rate, args.seconds,
                                     0 if side == "busy" else args.idle_sleep_us, d)
                    r["rep"], r["loadavg_1m_at_start"] = rep, load
                    runs.append(r)
                    print(f"N={n:>3} rep {rep} {r['side']:<26} sent {r['sent']:>7} delivered "
                          f"{r['delivered']:>7}  softirq {r['softirq_s']:.2f}s user {r['proc_user_s']:.2f}s "
                          f"sys {r['proc_sys_s']:.2f}s -> {r['us_per_pkt_total']:.2f} us/pkt total "
                          f"(load {load})", flush=True)
    finally:
        cleanup()
        shutil.rmtree(d, ignore_errors=True)
    table = {}
    for n in sorted({r["namespaces"] for r in runs}):
        k = [r for r in runs if r["namespaces"] == n and r["side"] == "kernel"]
        l3 = [r for r in runs if r["namespaces"] == n and r["side"].startswith("l3ns") and r["idle_sleep_us"] != 0]
        bz = [r for r in runs if r["namespaces"] == n and r["side"].startswith("l3ns") and r["idle_sleep_us"] == 0]
        ratios = [a["us_per_pkt_total"] / b["us_per_pkt_total"] for a, b in zip(k, l3)
                  if a["us_per_pkt_total"] and b["us_per_pkt_total"]]
        table[str(n)] = {
            "kernel_us_per_pkt_total": common.summary([r["us_per_pkt_total"] for r in k]),
            "kernel_us_per_pkt_kernel_only": common.summary([r["us_per_pkt_kernel_only"] for r in k]),
            "kernel_delivered_ratio": common.summary([r["delivered"] / r["sent"] for r in k]),
            "l3ns_us_per_pkt_total": common.summary([r["us_per_pkt_total"] for r in l3]),
            "l3ns_us_per_pkt_l3nsd_only": common.summary([r["us_per_pkt_l3nsd_only"] for r in l3]),
            "l3ns_delivered_ratio": common.summary([r["delivered"] / r["sent"] for r in l3]),
            "l3ns_busy_us_per_pkt_total": common.summary([r["us_per_pkt_total"] for r in bz]),
            "ratio_kernel_over_l3ns_total": common.summary(ratios),
        }
    print()
    for n, t in table.items():
        def m(x):
            return f"{x['median']:.2f} ({x['min']:.2f}..{x['max']:.2f})" if x else "-"
        print(f"N={n}: kernel {m(t['kernel_us_per_pkt_total'])} us/pkt (kernel-only "
              f"{m(t['kernel_us_per_pkt_kernel_only'])}); l3ns {m(t['l3ns_us_per_pkt_total'])} "
              f"(l3nsd only {m(t['l3ns_us_per_pkt_l3nsd_only'])}); busy-poll "
              f"{m(t['l3ns_busy_us_per_pkt_total'])}; ratio {m(t['ratio_kernel_over_l3ns_total'])}")
    info["loadavg_end"] = common.loadavg()
    common.save("kernel.json", {
        "machine": info, "command": "bench/scripts/kernel.py " + " ".join(sys.argv[1:]),
        "what": "CPU seconds per delivered packet over the generator's run: kernel = softirq "
                "(/proc/stat, whole machine) + receivers' sys (+ user in 'total'); l3ns = l3nsd "
                "user+sys (+ softirq in 'total', the AF_PACKET receive path)",
        "table": table, "runs": runs,
    })


if __name__ == "__main__":
    main()
