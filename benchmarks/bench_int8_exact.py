"""What exact INT8 MatMuls cost on this CPU: the 1B INT8 vision file in ONNX Runtime's default session
(u8s8; on x86 without VNNI its 16-bit pair sums saturate) and in the SDK's (`session_options`: exact
u8u8 there, the same kernel elsewhere), against the fp32 file; one process, alternating rounds.

Usage: .venv/bin/python benchmarks/bench_int8_exact.py [--work out/bench] [--rounds 3]
(needs the files of `benchmarks/bench_models.py vision --size 1B`). Prints Markdown rows.
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mivl.export.vision_check import cosine_per_token
from mivl.runtimes.ort import session_options


def cosine(a, b) -> str:
    c = cosine_per_token(a, b)
    return f"{c.min():.5f} / {c.mean():.5f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="out/bench")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    d = Path(a.work)
    fp32, int8 = d / "vision-1B-fp32/vision.fused.onnx", d / "vision-1B-int8/vision.int8.fused.onnx"
    for f in (fp32, int8):
        if not f.is_file():
            raise SystemExit(f"{f} is missing: run benchmarks/bench_models.py vision --size 1B first")
    threads = os.cpu_count()
    default = ort.SessionOptions()
    default.intra_op_num_threads = threads
    default.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    runs = {"ONNX fp32": ort.InferenceSession(str(fp32), session_options(threads), providers=cpu),
            "INT8, ONNX Runtime's default session": ort.InferenceSession(str(int8), default, providers=cpu),
            "INT8, the SDK's session (exact)": ort.InferenceSession(str(int8), session_options(threads), providers=cpu)}
    x = np.random.default_rng(0).standard_normal((1, 3, 448, 448)).astype(np.float32)
    outs = {k: s.run(None, {"pixel_values": x})[0] for k, s in runs.items()}
    times = {k: [] for k in runs}
    for _ in range(a.rounds):
        for k, s in runs.items():
            time.sleep(0.5)    # the previous run's idle threads stop spinning first
            t = time.perf_counter()
            s.run(None, {"pixel_values": x})
            times[k].append(time.perf_counter() - t)
    base = times["ONNX fp32"]
    print(f"| 1B vision, {threads} threads | cosine vs fp32 (min / mean) | s per tile | vs ONNX fp32 |")
    print("|---|---|---|---|")
    for k in runs:
        ratio = np.median([b / t for b, t in zip(base, times[k])])
        print(f"| {k} | {cosine(outs[k], outs['ONNX fp32'])} | {np.median(times[k]):.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
