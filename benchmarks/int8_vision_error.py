"""How far INT8 vision encoders land from their fp32 file on what the demo feeds them: the 13 tiles
of six-camera canvases of held-out synthetic scenes (12 grid tiles and the thumbnail), and the
thumbnails alone. Per file: per-token cosine (min / mean), largest absolute error, and the error's
RMS relative to the fp32 features' RMS.

Usage: .venv/bin/python benchmarks/int8_vision_error.py FP32_BUNDLE INT8_BUNDLE [INT8_BUNDLE ...]
       [--scenes 6] [--seed 555000] [--threads 1]. Prints Markdown rows.
"""
import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench_common import positive, vision_file
from mivl.calib.synthetic import draw_scene
from mivl.edge.multiview import preprocess_cameras
from mivl.export.vision_check import cosine_per_token
from mivl.runtimes.ort import session_options


def features(path: Path, tiles: np.ndarray, per_run: int, threads: int) -> np.ndarray:
    s = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: tiles[i:i + per_run]})[0] for i in range(0, len(tiles), per_run)])


def figures(ref: np.ndarray, got: np.ndarray) -> str:
    cos = cosine_per_token(ref, got)
    rel = np.sqrt(np.mean((ref - got) ** 2) / np.mean(ref ** 2))
    return f"{cos.min():.5f} / {cos.mean():.6f} | {np.abs(ref - got).max():.3f} | {100 * rel:.2f}%"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32", type=Path)
    ap.add_argument("int8", type=Path, nargs="+")
    ap.add_argument("--scenes", type=positive(), default=6)
    ap.add_argument("--seed", type=int, default=555000, help="first scene (calibration draws 0.., validation 100000..)")
    ap.add_argument("--threads", type=positive(), default=1)
    a = ap.parse_args()
    batches = [preprocess_cameras(draw_scene(a.seed + k, 800, 450).cameras).pixels for k in range(a.scenes)]
    per = len(batches[0])
    tiles = np.concatenate(batches)
    ref = features(vision_file(a.fp32), tiles, per, a.threads)
    thumbs = slice(per - 1, None, per)
    print(f"{a.scenes} six-camera canvases ({len(tiles)} tiles), scenes {a.seed}..; fp32: {a.fp32}")
    print("| INT8 bundle | all tiles: cosine min / mean | max abs error | relative RMS error "
          "| thumbnails: cosine min / mean | max abs error | relative RMS error |")
    print("|---|---|---|---|---|---|---|")
    for b in a.int8:
        got = features(vision_file(b), tiles, per, a.threads)
        print(f"| {b} | {figures(ref, got)} | {figures(ref[thumbs], got[thumbs])} |")


if __name__ == "__main__":
    main()
