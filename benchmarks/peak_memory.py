"""Run a command and report the peak resident memory of its whole process tree (the command and
every process it starts, summed at each sample), and its wall time.

    .venv/bin/python benchmarks/peak_memory.py [--every 0.2] [--json FILE] -- COMMAND ...

ru_maxrss only gives one process's peak; an export starts helper processes (calibration,
validation), so the tree is polled instead (psutil), every 0.2 s by default: a peak shorter than
the interval can be missed, so the figure is a lower bound to within one interval's growth.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=0.2, help="seconds between samples")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no command given")
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    root = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(root))
        except psutil.Error:
            pass
        time.sleep(a.every)
    out = {"command": cmd, "rc": child.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "peak_tree_gib": round(peak / 2 ** 30, 2)}
    print("PEAK " + json.dumps(out), file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
