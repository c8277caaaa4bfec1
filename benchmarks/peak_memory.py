"""Run a command and report the peak resident memory of its whole process tree (the command and
every process it starts, summed at each sample), and its wall time.

    .venv/bin/python benchmarks/peak_memory.py [--every 0.2] [--json FILE] -- COMMAND ...

ru_maxrss only gives one process's peak; an export starts helper processes (calibration,
validation), so the tree is polled instead (psutil), every 0.2 s by default: a peak shorter than
the interval can be missed, so the figure is a lower bound to within one interval's growth. The
processes at the peak, with their share, are reported too.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def tree_rss(proc: psutil.Process) -> tuple[int, list[tuple[int, str]]]:
    """(summed RSS, [(RSS, command line) of each process]) of proc and its descendants."""
    parts = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            parts.append((p.memory_info().rss, " ".join(p.cmdline())[:160]))
        except psutil.Error:
            pass
    return sum(r for r, _ in parts), parts


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
    peak, at_peak, when = 0, [], 0.0
    while child.poll() is None:
        try:
            total, parts = tree_rss(root)
        except psutil.Error:
            total, parts = 0, []
        if total > peak:
            peak, at_peak, when = total, parts, time.perf_counter() - t0
        time.sleep(a.every)
    out = {"command": cmd, "rc": child.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "peak_tree_gib": round(peak / 2 ** 30, 2), "peak_at_s": round(when, 1),
           "at_peak": [{"gib": round(r / 2 ** 30, 2), "process": c} for r, c in at_peak]}
    print("PEAK " + json.dumps(out), file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
