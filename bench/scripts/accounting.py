#!/usr/bin/python3
"""What CPU accounting this machine can be trusted for (kernel.py relies on it).

1. A thread on --cpu wakes every 4 ms at a fixed phase and spins 200 µs, for --seconds. Its
   own on-CPU time (schedstat, exact) is compared with the CPU's busy time as the tick fields
   of /proc/stat see it (user + nice + system + irq + softirq, sampled at the scheduler tick)
   and as wall time less the CPU's idle time (measured at each idle entry and exit on a NO_HZ
   kernel). Work paced by timers, like a packet generator's bursts, can sit between the ticks:
   the tick fields then miss it, the idle-based figure does not.
2. The CPU time one sleep-and-wake costs a thread there (common.sleep_cost_us).

Prints both and, with --json, one JSON object. Needs nothing but Linux /proc.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

PERIOD_S, SPIN_S = 0.004, 0.0002


def phase_locked(cpu, seconds, offset_s):
    """Busy seconds of `cpu` under a load woken every 4 ms at `offset_s` into the period:
    {"oncpu", "ticks", "exact"}."""
    was = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        a, k0, m0 = common.stat_line(f"cpu{cpu}"), common.core_idle(cpu), common.thread_oncpu_ns()
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if now > end:
                break
            nxt = (int(now / PERIOD_S) + 1) * PERIOD_S + offset_s
            time.sleep(max(0.0, nxt - time.monotonic()))
            s = time.perf_counter()
            while time.perf_counter() - s < SPIN_S:
                pass
        b, k1, m1 = common.stat_line(f"cpu{cpu}"), common.core_idle(cpu), common.thread_oncpu_ns()
    finally:
        os.sched_setaffinity(0, was)
    d = [y - x for x, y in zip(a, b)]
    ticks = (d[0] + d[1] + d[2] + d[5] + d[6]) / common.TICK
    return {"oncpu": (m1 - m0) / 1e9, "ticks": ticks, "exact": common.core_busy(k0, k1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {"cpu": args.cpu, "phase_locked": {}}
    for off_ms in (0.0, 1.0, 2.0):
        r = phase_locked(args.cpu, args.seconds, off_ms / 1e3)
        out["phase_locked"][str(off_ms)] = r
        if not args.json:
            print(f"woken every 4 ms at +{off_ms:.0f} ms, spinning 200 µs, {args.seconds:.1f} s "
                  f"on cpu{args.cpu}: its on-CPU {r['oncpu']:.3f} s; the CPU's busy time by "
                  f"ticks {r['ticks']:.3f} s, by idle time {r['exact']:.3f} s")
    out["sleep_wake_oncpu_us"] = common.sleep_cost_us(args.cpu)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"one 1-ms sleep and wake on cpu{args.cpu}: {out['sleep_wake_oncpu_us']:.1f} µs "
              "of CPU")


if __name__ == "__main__":
    main()
