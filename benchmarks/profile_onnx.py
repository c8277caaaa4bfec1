"""Per-operator time of an ONNX graph on ONNX Runtime's CPU provider (its own profiler).

Usage: .venv/bin/python benchmarks/profile_onnx.py MODEL.onnx [--tiles N] [--runs R] [--threads T]

Runs R times on N random 448x448 tiles (after one warm-up run) and prints each run's wall time, then
the time per run of each operator type, its share, and its node count, largest first.
"""
import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort

from mivl.runtimes.ort import session_options


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--tiles", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    so = session_options(a.threads)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "profile")
    s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal((a.tiles, 3, 448, 448)).astype(np.float32)
    s.run(None, {inp.name: x})
    for _ in range(a.runs):
        t = time.perf_counter()
        s.run(None, {inp.name: x})
        print(f"run {time.perf_counter() - t:.3f} s")
    events = json.load(open(s.end_profiling()))
    per_op, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name")
            per_op[op] += e["dur"]
            count[op] += 1
    runs = a.runs + 1            # the warm-up run is profiled too
    total = sum(per_op.values())
    print(f"| operator | s per run | share | nodes |\n|---|---|---|---|")
    for op, us in per_op.most_common(15):
        print(f"| {op} | {us / runs / 1e6:.3f} | {100 * us / total:.1f}% | {count[op] // runs} |")


if __name__ == "__main__":
    main()
