"""Vision-encoder distillation (`mivl-export distill`): what a smaller student keeps, and what it saves.

    .venv/bin/python benchmarks/bench_distill.py default [--work out/distill]
    .venv/bin/python benchmarks/bench_distill.py real [--work out/distill]

default  the embedded default model as teacher; a 2-layer student (of 3) distilled and aligned on
         synthetic scenes; both exported (fp32 and INT8), `mivl eval` per kind on the held-out
         stream for each, and the vision encoder's ONNX Runtime time per tile, teacher and student
         alternating in one process.
real     the real-size 1B (random weights) as teacher; a 12-layer student of InternViT-300M, a few
         distillation steps (the loss must fall: a smoke test, not accuracy); both vision encoders
         exported INT8 (vision only) and timed per tile in one process.
Every step resumes: finished students, bundles and encoders are reused. Print: Markdown rows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import child, ensure_checkpoint, vision_file  # noqa: E402

BIN = Path(sys.executable).parent
EVAL = dict(questions=300, kinds="colour,class", max_objects=1)


def run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return r.stdout


def export(ckpt: Path, out: Path, precision: str) -> Path:
    if not (out / "manifest.json").is_file():
        run([str(BIN / "mivl-export"), str(ckpt), "-o", str(out), f"--{precision}"])
    return out


def evaluate(bundle: Path) -> dict:
    cache = bundle.with_name(bundle.name + ".eval.json")
    if cache.is_file():
        return json.loads(cache.read_text())
    out = run([str(BIN / "mivl"), "eval", str(bundle), "--questions", str(EVAL["questions"]), "--kinds",
               EVAL["kinds"], "--max-objects", str(EVAL["max_objects"]), "--json"])
    res = json.loads(out)
    res.pop("answers", None)
    cache.write_text(json.dumps(res, indent=1))
    return res


def time_tiles(models: dict[str, Path], rounds: int = 5) -> dict[str, float]:
    """Best ONNX Runtime CPU time per tile of each vision model, alternating (one process)."""
    res = child(f"""
import time, numpy as np, onnxruntime as ort
from mivl.runtimes.ort import session_options
so = session_options({os.cpu_count()})
models = {{k: ort.InferenceSession(v, so, providers=['CPUExecutionProvider']) for k, v in {
        {k: str(v) for k, v in models.items()}!r}.items()}}
x = np.random.default_rng(0).standard_normal((1, 3, 448, 448)).astype(np.float32)
best = {{k: 1e9 for k in models}}
for s in models.values():
    s.run(None, {{'pixel_values': x}})
for _ in range({rounds}):
    for k, s in models.items():
        t = time.perf_counter(); s.run(None, {{'pixel_values': x}}); best[k] = min(best[k], time.perf_counter() - t)
RESULT = best
""")
    res.pop("peak_gib")
    return res


def bench_default(work: Path, steps: int, align_steps: int) -> list[str]:
    from mivl.export.default_model import ASSET

    student = work / "default-student"
    if not (student / "distill_log.json").is_file():
        run([str(BIN / "mivl-export"), "distill", str(ASSET), "-o", str(student), "--layers", "2",
             "--steps", str(steps), "--batch-size", "8", "--lr", "1e-3", "--align-steps", str(align_steps),
             "--align-kinds", "colour,class", "--align-max-objects", "1", "--align-lr", "1e-3",
             "--save-every", "25"])
    log = json.loads((student / "distill_log.json").read_text())
    rows = ["| default model | precision | colour | class | all | vision ms per tile (ORT) | vs teacher |",
            "|---|---|---|---|---|---|---|"]
    for prec in ("fp32", "int8"):
        bundles = {"teacher (3 ViT layers)": export(ASSET, work / f"default-teacher-{prec}", prec),
                   "student (2 ViT layers)": export(student, work / f"default-student-{prec}", prec)}
        times = time_tiles({k: vision_file(b) for k, b in bundles.items()})
        base = times["teacher (3 ViT layers)"]
        for name, b in bundles.items():
            r = evaluate(b)
            pk = r["per_kind"]
            rows.append(f"| {name} | {prec} | {pk['colour']['accuracy']:.3f} | {pk['class']['accuracy']:.3f} | "
                        f"{r['accuracy']:.3f} | {times[name] * 1000:.1f} | {base / times[name]:.2f}x |")
    from mivl.export.train.distill import StageSummary, summary_table

    return rows + ["", summary_table([StageSummary(**log["stages"][k]) for k in ("distill", "align")
                                      if k in log["stages"]])]


def bench_real(work: Path, steps: int) -> list[str]:
    teacher = ensure_checkpoint(work, "1B")
    student = work / "real-1B-student12"
    if not (student / "distill_log.json").is_file():
        run([str(BIN / "mivl-export"), "distill", str(teacher), "-o", str(student), "--layers", "12",
             "--steps", str(steps), "--batch-size", "2", "--micro-batch", "1", "--lr", "1e-4",
             "--held-out", "2", "--save-every", "1", "--save-dtype", "fp32"])
    log = json.loads((student / "distill_log.json").read_text())
    enc = {}
    for name, ck in (("teacher (24 layers)", teacher), ("student (12 layers)", student)):
        out = work / f"vision-int8-{ck.name}"
        if not (out / "vision.int8.onnx").is_file():
            t = time.time()
            child(f"""
import numpy as np
from pathlib import Path
from mivl.export.reference import Reference
from mivl.export.vision_onnx import export_vision
from mivl.export.quantize import quantize_vision_isolated
from mivl.calib.synthetic import scene_images
out = Path({str(out)!r}); out.mkdir(parents=True, exist_ok=True)
ref = Reference({str(ck)!r})
path = export_vision(ref.model, out / 'vision.onnx')
calib = np.concatenate([ref.tiles(images=[im], max_tiles=1).pixels for im in scene_images(4, seed=0)])
del ref
quantize_vision_isolated(path, out / 'vision.int8.onnx', calib, 'minmax')
RESULT = {{}}
""")
            print(f"exported {name} INT8 encoder in {time.time() - t:.0f} s", file=sys.stderr)
        enc[name] = out / "vision.int8.onnx"
    times = time_tiles(enc, rounds=3)
    base = times["teacher (24 layers)"]
    d = log["stages"]["distill"]
    rows = [f"| real-size 1B vision, INT8 (ORT CPU) | s per tile | vs teacher |", "|---|---|---|"]
    rows += [f"| {k} | {v:.2f} | {base / v:.2f}x |" for k, v in times.items()]
    losses = json.loads((student / "train_log.json").read_text()).get("losses", [])
    rows += ["", f"distillation smoke test, {d['steps']} steps of 2 tiles: loss {d['loss_start']:.4f} -> "
                 f"{d['loss_end']:.4f} (every step: {', '.join(f'{x:.4f}' for x in losses)}); held-out "
                 f"cosine of the last layer {d['cosine_before']:.4f} -> {d['cosine_after']:.4f}, "
                 f"{d['seconds']:.0f} s"]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["default", "real"])
    ap.add_argument("--work", default="out/distill")
    ap.add_argument("--steps", type=int, help="distillation steps (default: default 300, real 6)")
    ap.add_argument("--align-steps", type=int, default=300)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = bench_default(work, a.steps or 300, a.align_steps) if a.what == "default" else bench_real(work, a.steps or 6)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
