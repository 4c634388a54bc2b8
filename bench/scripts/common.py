"""Shared helpers for the comparison scripts (standard library only)."""

import atexit
import glob
import json
import os
import platform
import statistics
import shutil
import signal
import subprocess
import threading
import time


def remove_dpdk_runtime_dirs():
    """DPDK (testpmd; l3nsd when killed) leaves its runtime directory /var/run/dpdk/PREFIX
    behind, some MB of tmpfs each: every prefix a script gives holds the script's pid as a
    whole "-PID-" or "-PID" field. Registered to run when the script exits."""
    tag = f"-{os.getpid()}"
    for d in glob.glob("/var/run/dpdk/*"):
        name = os.path.basename(d)
        if f"{tag}-" in name or name.endswith(tag):
            shutil.rmtree(d, ignore_errors=True)


atexit.register(remove_dpdk_runtime_dirs)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Results: $L3NS_RESULTS_DIR (the tests point it at a scratch directory), else bench/results.
RESULTS = os.environ.get("L3NS_RESULTS_DIR", os.path.join(REPO, "bench", "results"))
# Binaries: $L3NS_BIN_DIR, else target/release of the repository.
BIN_DIR = os.environ.get("L3NS_BIN_DIR", os.path.join(REPO, "target", "release"))
# Binaries built with --features dpdk: $L3NS_DPDK_BIN_DIR (default /tmp/tgt-dpdk/release).
DPDK_BIN_DIR = os.environ.get("L3NS_DPDK_BIN_DIR", "/tmp/tgt-dpdk/release")
HUGEPAGES = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
HUGEPAGES_FREE = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"


def binary(name):
    return os.path.join(BIN_DIR, name)


def dpdk_binary(name):
    return os.path.join(DPDK_BIN_DIR, name)


class Hugepages:
    """Raises nr_hugepages so that `free_pages` 2 MiB pages are free; `restore()` puts the
    old value back (only if it was changed)."""

    def __init__(self, free_pages):
        with open(HUGEPAGES) as f:
            self.before = int(f.read().strip() or 0)
        with open(HUGEPAGES_FREE) as f:
            free = int(f.read().strip() or 0)
        self.changed = False
        if free < free_pages:
            with open(HUGEPAGES, "w") as f:
                f.write(str(self.before + free_pages - free))
            self.changed = True

    def restore(self):
        if self.changed:
            try:
                with open(HUGEPAGES, "w") as f:
                    f.write(str(self.before))
            except OSError:
                pass
            self.changed = False


def stop(proc, timeout):
    """Stops a child: SIGINT (l3nsd and testpmd end cleanly on it), then SIGKILL if it is
    still there after `timeout` seconds; reaps it either way."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": loadavg(),
        "commit": commit + ("+dirty" if dirty else ""),
        "bin_dir": BIN_DIR,
    }


def memif_over_best(runs, kind="l3nsd"):
    """memif.py's runs: per repetition, what `kind` received over what the fastest testpmd
    receiver of that repetition received (io, macswap or rxonly, whichever it ran), as a
    summary(). The VM runs some processes at half speed, so one testpmd mode alone can land
    in the slow state while l3nsd ran in the fast one: the fastest of them is the stricter
    comparison (rxonly does less than io-forward, never more)."""
    xs = []
    for rep in sorted({r["rep"] for r in runs}):
        a = [r["rx_pps"] for r in runs if r["rep"] == rep and r["server"] == kind]
        t = [r["rx_pps"] for r in runs
             if r["rep"] == rep and r["server"].startswith("testpmd-") and r["rx_pps"]]
        if a and a[0] and t:
            xs.append(a[0] / max(t))
    return summary(xs)


def summary(xs):
    """Median, min, max and relative spread ((max-min)/median) of a list of numbers."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    med = statistics.median(xs)
    return {
        "n": len(xs),
        "median": med,
        "min": min(xs),
        "max": max(xs),
        "spread_pct": (max(xs) - min(xs)) / med * 100 if med else None,
        "values": xs,
    }


def save(name, obj):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    print(f"saved {path}")
    return path


def cpu_ticks(pid):
    """utime + stime of a process (clock ticks), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s.rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def task_cpu(pid):
    """CPU of every thread of a process: utime and stime ticks of the whole process (its live
    and exited threads, /proc/PID/stat, sampled at the scheduler tick) and the sum of the live
    threads' on-CPU nanoseconds (/proc/PID/task/*/schedstat, exact), with a per-thread
    breakdown {comm: ns}. None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ns_total, per, switches = 0, {}, {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except (OSError, ValueError, IndexError):
            continue
        ns_total += ns
        key = f"{comm}/{tid}"
        per[key] = ns
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                switches[key] = sum(int(line.split()[1]) for line in f
                                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))
        except (OSError, ValueError, IndexError):
            pass
    return {"utime": int(fields[11]), "stime": int(fields[12]), "ns": ns_total, "threads": per,
            "switches": switches}


def cpu_delta(a, b):
    """Seconds of CPU between two task_cpu() readings: user and sys (ticks), and on-CPU (ns)."""
    if a is None or b is None:
        return None
    threads = {k: (b["threads"][k] - a["threads"].get(k, 0)) / 1e9 for k in b["threads"]}
    switches = {k: b["switches"][k] - a["switches"].get(k, 0) for k in b.get("switches", {})}
    return {"user_s": (b["utime"] - a["utime"]) / TICK, "sys_s": (b["stime"] - a["stime"]) / TICK,
            "oncpu_s": (b["ns"] - a["ns"]) / 1e9, "threads_oncpu_s": threads,
            "threads_context_switches": switches}


def stat_line(name):
    """The ticks of one line of /proc/stat: "cpu" (the whole machine) or "cpuN"."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(name + " "):
                return [int(x) for x in line.split()[1:]]
    raise RuntimeError(f"no {name} line in /proc/stat")


def proc_stat_cpu():
    """Aggregate /proc/stat 'cpu' line as a dict of ticks."""
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return dict(zip(names, stat_line("cpu")))


def cpu_shares(a, b):
    """Machine-wide shares of two proc_stat_cpu() readings: busy (user+nice+system+irq+
    softirq), idle and steal (time the hypervisor ran something else on our vCPUs)."""
    d = {k: b[k] - a[k] for k in a}
    total = sum(d.values()) or 1
    busy = d["user"] + d["nice"] + d["system"] + d["irq"] + d["softirq"]
    return {"busy": busy / total, "idle": (d["idle"] + d["iowait"]) / total,
            "steal": d["steal"] / total}


TICK = os.sysconf("SC_CLK_TCK")


def core_idle(cpu):
    """(monotonic s, idle + iowait s) of one CPU from /proc/stat. On a tickless (NO_HZ) kernel
    the idle field is measured at each idle entry and exit, not sampled at the tick, so the
    wall time minus its increase is the CPU's exact busy time (to 1/USER_HZ), interrupts and
    softirq included, however their timing falls against the tick (the user, system and
    softirq fields are tick samples and miss work that runs between ticks)."""
    t = time.monotonic()
    v = stat_line(f"cpu{cpu}")
    return t, (v[3] + v[4]) / TICK


def thread_oncpu_ns():
    """The calling thread's exact on-CPU nanoseconds (its schedstat)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
        return int(f.read().split()[0])


def sleep_cost_us(cpu, sleeps=500, us=1000):
    """CPU microseconds one sleep-and-wake costs a thread on `cpu` (this thread, moved there
    for the measurement and back): on-CPU time of `sleeps` sleeps of `us` µs, per sleep.
    A few µs on bare metal; in a nested VM every timer and halt is a trap to the host, and a
    dataplane that sleeps when idle, or a receiver that blocks, pays it at every wake."""
    was = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        a = thread_oncpu_ns()
        for _ in range(sleeps):
            time.sleep(us / 1e6)
        b = thread_oncpu_ns()
    finally:
        os.sched_setaffinity(0, was)
    return (b - a) / 1e3 / sleeps


def core_busy(a, b):
    """Seconds one CPU was busy between two core_idle() readings."""
    return (b[0] - a[0]) - (b[1] - a[1])


def thread_affinity(pid):
    """{thread name/tid: allowed CPUs} of a process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("Cpus_allowed_list"):
                    out[f"{comm}/{tid}"] = line.split(":", 1)[1].strip()
        except OSError:
            pass
    return out
