"""Preprocessing speed: six 1600x900 camera frames -> 13 normalised tiles.

Ours (NumPy, PIL-exact) against the official PIL pipeline (PIL resize + ImageDraw labels +
dynamic_preprocess + ToTensor/Normalize in torch), in the same run, on decoded RGB frames.
Usage: .venv/bin/python benchmarks/bench_preprocess.py [--repeat N]
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def best_of(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    import official
    import torch
    from PIL import Image

    from mivl.calib.synthetic import draw_scene
    from mivl.edge.multiview import preprocess_cameras

    cams = draw_scene(3).cameras  # 1600x900 RGB frames

    def ours():
        return preprocess_cameras(cams, max_tiles=12).pixels

    def theirs():
        canvas = official.stitch({k: Image.fromarray(v) for k, v in cams.items()})
        return official.load_image(canvas, max_num=12)[1]

    a_ours, b_theirs = ours(), theirs()
    err = np.abs(a_ours - b_theirs.numpy()).max()
    torch.set_num_threads(os.cpu_count())
    t_ours, m_ours = best_of(ours, a.repeat)
    t_ref, m_ref = best_of(theirs, a.repeat)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"six 1600x900 cameras -> {a_ours.shape[0]} tiles, max |ours - official| = {err:.2e}")
    print(f"{'pipeline':<34} {'best ms':>8} {'median ms':>10}")
    print(f"{'official PIL + torch':<34} {t_ref * 1e3:8.1f} {m_ref * 1e3:10.1f}")
    print(f"{'mivl NumPy (PIL-exact)':<34} {t_ours * 1e3:8.1f} {m_ours * 1e3:10.1f}")
    print(f"speed-up (best): {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
