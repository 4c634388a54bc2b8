"""Shared helpers for the comparison scripts (standard library only)."""

import json
import os
import platform
import statistics
import subprocess
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(REPO, "bench", "results")
# Binaries: $L3NS_BIN_DIR, else target/release of the repository.
BIN_DIR = os.environ.get("L3NS_BIN_DIR", os.path.join(REPO, "target", "release"))


def binary(name):
    return os.path.join(BIN_DIR, name)


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


def proc_stat_cpu():
    """Aggregate /proc/stat 'cpu' line as a dict of ticks."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
                return dict(zip(names, v))
    raise RuntimeError("no cpu line in /proc/stat")


TICK = os.sysconf("SC_CLK_TCK")
