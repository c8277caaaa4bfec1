"""Six cameras at speed, on the real-size 1B bundle (INT8 vision + q8_0, random weights).

  reuse         four questions about the same six cameras, then one camera changed per tick (each of
                the six), then all six changed: tiles encoded, tokens reused, time to first token
  ttft          cold six-camera time to first token per bundle (--bundles A B ...), same run
  vision-batch  13 tiles through the INT8 encoder on the CPU in batches of 1, 2, 4 and 13
  prefill       the runtime's image-prompt prefill against llama.cpp's llama-bench of the same length on
                the same GGUF (--llama-bench PATH: build it from llama-cpp-python's sdist,
                vendor/llama.cpp, cmake --build build --target llama-bench)

Usage: .venv/bin/python benchmarks/bench_speed.py SECTION ... [--work DIR] [--bundle B] [--bundles ...]
       [--llama-bench PATH]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench_common import child, int8_bundle


def bench_reuse(work: Path, bundle: str | None = None) -> list[str]:
    """Six cameras asked four questions, then a drive in which one camera changes per tick (each of
    the six in turn, last to first), then all six changed: time to first token of each, same run."""
    bundle = bundle or int8_bundle(work)
    res = child(f"""
import numpy as np
from mivl.edge.session import Session
from mivl.calib.synthetic import draw_scene
from mivl.edge.multiview import CAMERAS
s = Session({str(bundle)!r}, device='cpu', threads={os.cpu_count()})
cams = dict(draw_scene(1).cameras)
qs = ['What is ahead?', 'Which camera shows the bus?', 'What colour is the car?', 'Is there a pedestrian?']
ask = lambda q, c: s.ask(q, cameras=c, max_new_tokens=2).timings.to_dict()
questions = [ask(q, cams) for q in qs]
other = draw_scene(2).cameras
drive = []
for name in reversed(CAMERAS):
    cams[name] = other[name]
    drive.append(dict(ask(qs[0], cams), camera=name))
all_six = ask(qs[0], dict(draw_scene(3).cameras))
RESULT = dict(questions=questions, drive=drive, all_six=all_six)
""")
    q, d, a6 = res["questions"], res["drive"], res["all_six"]
    ttft = lambda t: t["time_to_first_token_s"]  # noqa: E731
    rows = ["| six cameras, same frames | tiles encoded | tokens reused / prompt | vision s | prefill s | TTFT s | vs first |",
            "|---|---|---|---|---|---|---|"]
    for k, t in enumerate(q):
        rows.append(f"| question {k + 1} | {t['tiles_encoded']} | {t['reused_tokens']} / {t['prompt_tokens']} | "
                    f"{t['vision_s']:.2f} | {t['prefill_s']:.2f} | {ttft(t):.2f} | {ttft(t) / ttft(q[0]):.3f} |")
    rows += ["", "| one camera changed per tick | tiles encoded | tokens reused / prompt | vision s | prefill s | TTFT s "
             "| vs all six changed |", "|---|---|---|---|---|---|---|"]
    for t in d:
        rows.append(f"| {t['camera']} | {t['tiles_encoded']} | {t['reused_tokens']} / {t['prompt_tokens']} | "
                    f"{t['vision_s']:.1f} | {t['prefill_s']:.1f} | {ttft(t):.1f} | {ttft(t) / ttft(a6):.2f} |")
    mean = sum(ttft(t) for t in d) / len(d)
    rows.append(f"| mean of the six ticks | | | | | {mean:.1f} | {mean / ttft(a6):.2f} |")
    rows.append(f"| all six changed (baseline) | {a6['tiles_encoded']} | {a6['reused_tokens']} / {a6['prompt_tokens']} | "
                f"{a6['vision_s']:.1f} | {a6['prefill_s']:.1f} | {ttft(a6):.1f} | 1.00 |")
    return rows


def bench_ttft(work: Path, bundles: list[str]) -> list[str]:
    """Six 1600x900 cameras, cold (a fresh session each), time to first token per bundle, same run."""
    rows = ["| bundle | tiles | prompt tokens | vision s | prefill s | TTFT s | vs first |", "|---|---|---|---|---|---|---|"]
    first = None
    for b in bundles:
        t = child(f"""
from mivl.edge.session import Session
from mivl.calib.synthetic import draw_scene
with Session({b!r}, device='cpu', threads={os.cpu_count()}) as s:
    RESULT = s.ask('What is ahead?', cameras=dict(draw_scene(1).cameras), max_new_tokens=2).timings.to_dict()
""")
        first = first or t["time_to_first_token_s"]
        rows.append(f"| {Path(b).name} | 13 | {t['prompt_tokens']} | {t['vision_s']:.1f} | {t['prefill_s']:.1f} | "
                    f"{t['time_to_first_token_s']:.1f} | {first / t['time_to_first_token_s']:.2f}x |")
        print(rows[-1], file=sys.stderr)
    return rows


def bench_vision_batch(work: Path) -> list[str]:
    """13 tiles through the 1B INT8 encoder on ONNX Runtime's CPU provider, in batches of 1, 2, 4, 13."""
    path = work / "vision-1B-int8" / "vision.int8.onnx"
    if not path.is_file():
        from bench_models import bench_vision

        bench_vision(work, "1B")
    res = child(f"""
import time, numpy as np, onnxruntime as ort
from mivl.runtimes.ort import session_options
so = session_options({os.cpu_count()})
s = ort.InferenceSession({str(path)!r}, so, providers=['CPUExecutionProvider'])
x = np.random.default_rng(0).standard_normal((13, 3, 448, 448)).astype(np.float32)
s.run(None, {{'pixel_values': x[:1]}})
RESULT = {{}}
for bs in (1, 2, 4, 13):
    t = time.perf_counter()
    for i in range(0, 13, bs):
        s.run(None, {{'pixel_values': x[i:i + bs]}})
    RESULT[str(bs)] = time.perf_counter() - t
""")
    return ["| tiles per run | 13 tiles s |", "|---|---|"] + [f"| {k} | {res[k]:.1f} |" for k in ("1", "2", "4", "13")]


def bench_prefill(work: Path, llama_bench: str, ubatch: int = 256) -> list[str]:
    """Image-prompt prefill through the runtime (six cameras, 3,362 tokens, features precomputed and
    injected) against llama.cpp's own llama-bench pp of the same length, same GGUF, same threads;
    alternated twice."""
    bundle = int8_bundle(work)
    gguf = str(bundle / "llm.q8_0.gguf")
    rows = ["| prefill, 1B q8_0, 3,362 tokens, 2 threads | tokens/s | vs llama-bench |", "|---|---|---|"]
    for rep in range(2):
        r = subprocess.run([llama_bench, "-m", gguf, "-p", "3362", "-n", "0", "-t", str(os.cpu_count()), "-b", "512",
                            "-ub", str(ubatch), "-r", "1", "-fa", "0", "-o", "json"], capture_output=True, text=True,
                           check=True)
        ref = json.loads(r.stdout)[0]["avg_ts"]
        ours = child(f"""
from mivl.edge.session import Session
from mivl.calib.synthetic import draw_scene
with Session({str(bundle)!r}, device='cpu', threads={os.cpu_count()}) as s:
    cams = dict(draw_scene(1).cameras)
    t = s.ask('What is ahead?', cameras=cams, max_new_tokens=1).timings
    RESULT = dict(tps=t.prompt_tokens / t.prefill_s, n=t.prompt_tokens)
""")
        rows.append(f"| llama-bench -p 3362 -ub {ubatch} (baseline), run {rep + 1} | {ref:.1f} | 1.00 |")
        rows.append(f"| mivl runtime, six-camera image prompt ({ours['n']} tokens), run {rep + 1} | {ours['tps']:.1f} | "
                    f"{ours['tps'] / ref:.2f} |")
        print("\n".join(rows[-2:]), file=sys.stderr)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sections", nargs="+", choices=["reuse", "ttft", "vision-batch", "prefill"])
    ap.add_argument("--work", default="out/bench")
    ap.add_argument("--bundles", nargs="*", default=[], help="bundles for the ttft section")
    ap.add_argument("--bundle", help="the reuse section's bundle (default: WORK/bundle-1B-int8, exported once)")
    ap.add_argument("--llama-bench", help="llama.cpp's llama-bench binary for the prefill section")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    for name in a.sections:
        print(f"\n### {name}\n")
        if name == "ttft":
            rows = bench_ttft(work, a.bundles)
        elif name == "prefill":
            rows = bench_prefill(work, a.llama_bench)
        elif name == "reuse":
            rows = bench_reuse(work, a.bundle)
        else:
            rows = bench_vision_batch(work)
        print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
