#!/usr/bin/python3
"""l3nsd itself with many namespaces: how it starts and what its threads cost.

Generates a configuration of N namespaces, each owning one address on a `memory` port and
one `sink` socket on 0.0.0.0:9 (and optionally the port's generator sending to the first 64
of them at --rate pps), starts l3nsd on it, waits until `l3nsctl status` answers, then
reports the process's threads, file descriptors, the tenant-socket errors it printed, and
each thread's CPU over --seconds (on-CPU time, /proc/<pid>/task/*/schedstat). Needs no root; l3nsd is
stopped (SIGINT, then SIGKILL) whatever happens. Each tenant socket is a file descriptor:
with N above `ulimit -n` some namespaces get none (l3nsd says so).

    bench/scripts/many_ns.py --namespaces 1000,10000 [--rate 10000] [--seconds 10]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def config(n, rate, control):
    out = ["[dataplane]", "workers = 1", "idle_sleep_us = 1000", "",
           "[[port]]", 'name = "mem0"', 'backend = "memory"', 'mac = "02:00:00:00:00:01"']
    if rate:
        out += ["", "[port.generator]", f"rate = {rate}", 'peer_mac = "02:00:00:00:00:99"']
        for i in range(min(n, 64)):
            out += ["", "[[port.generator.flow]]", 'src = "10.255.255.254:4000"',
                    f'dst = "{ip(i)}:9"']
    out += ["", "[[address]]", 'address = "10.255.255.254/8"', 'dev = "mem0"']
    for i in range(n):
        out += ["", "[[namespace]]", f'name = "t{i}"', "",
                "[[address]]", f'address = "{ip(i)}/8"', 'dev = "mem0"', f'assign_to = "t{i}"', "",
                "[[socket]]", f'namespace = "t{i}"', 'bind = "0.0.0.0:9"', 'service = "sink"']
    out += ["", "[control]", f'socket = "{control}"', "", "[metrics]", 'listen = "off"']
    return "\n".join(out) + "\n"


def ip(i):
    a = 10 << 24 | (1 + i)
    return f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}"


def run(n, rate, seconds, timeout):
    d = tempfile.mkdtemp(prefix="l3ns-many-")
    control = os.path.join(d, "ctl.sock")
    cfg = os.path.join(d, "l3nsd.toml")
    with open(cfg, "w") as f:
        f.write(config(n, rate, control))
    log = open(os.path.join(d, "l3nsd.log"), "w+")
    p = subprocess.Popen([common.binary("l3nsd"), "--config", cfg, "--quiet",
                          "--duration", str(int(timeout))],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while subprocess.run([common.binary("l3nsctl"), "--control", control, "status"],
                             capture_output=True).returncode != 0:
            if p.poll() is not None or time.monotonic() - t0 > timeout / 2:
                log.seek(0)
                raise RuntimeError(f"l3nsd did not start: {log.read()[-2000:]}")
            time.sleep(0.1)
        up = time.monotonic() - t0
        threads = len(os.listdir(f"/proc/{p.pid}/task"))
        fds = len(os.listdir(f"/proc/{p.pid}/fd"))
        a = common.task_cpu(p.pid)
        time.sleep(seconds)
        b = common.task_cpu(p.pid)
        with open(f"/proc/{p.pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        log.seek(0)
        errors = [line.strip() for line in log if "tenant socket" in line]
        cpu = {}
        for key, sec in common.cpu_delta(a, b)["threads_oncpu_s"].items():
            name = key.rsplit("/", 1)[0]
            cpu[name] = cpu.get(name, 0.0) + sec
        cpu = {k: v for k, v in cpu.items() if v > 0.005}
        return {"namespaces": n, "rate": rate, "up_s": up, "threads": threads, "fds": fds,
                "rss_kib": rss, "cpu_s": cpu, "seconds": seconds, "errors": errors[:2]}
    finally:
        common.stop(p, 20)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespaces", default="1000,10000")
    ap.add_argument("--rate", type=int, default=0, help="generator pps to the first 64 sinks")
    ap.add_argument("--seconds", type=float, default=10.0, help="CPU measured over this long")
    ap.add_argument("--timeout", type=float, default=120.0, help="l3nsd's --duration")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON list")
    a = ap.parse_args()
    results = []
    for n in [int(x) for x in a.namespaces.split(",")]:
        r = run(n, a.rate, a.seconds, max(a.timeout, a.seconds + 30))
        results.append(r)
        if a.json:
            continue
        cpu = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(r["cpu_s"].items()))
        print(f"{n} namespaces, {a.rate} pps: up in {r['up_s']:.1f} s, {r['threads']} threads, "
              f"{r['fds']} fds, RSS {r['rss_kib'] / 1024:.0f} MiB; CPU in {a.seconds:g} s: {cpu}")
        for e in r["errors"]:
            print("   ", e)
    if a.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
