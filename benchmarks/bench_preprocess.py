"""Preprocessing speed: six 1600x900 camera frames -> 13 normalised tiles.

Ours against the official PIL pipeline (PIL resize + ImageDraw labels + dynamic_preprocess +
ToTensor/Normalize in torch), in the same run, on decoded RGB frames: with the compiled resampler
(mivl.edge.native, what runs where the package was built) and with its fallback, PIL's own
resampler on threads (where no C compiler was at install time), and the compiled resampler's
portable C path (what runs on CPUs with neither AVX2 nor NEON). All are bit-exact.
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


def compare(title, ours, theirs, repeat):
    """Time ours (compiled resampler), ours on the PIL fallback, and the official pipeline."""
    import torch

    from mivl.edge import native

    def fallback():
        built = native.available
        native.available = lambda: False
        try:
            return ours()
        finally:
            native.available = built

    def portable():
        native.use_portable(True)
        try:
            return ours()
        finally:
            native.use_portable(False)

    a_ours, b_theirs = ours(), theirs().numpy()
    err, err_fb = np.abs(a_ours - b_theirs).max(), np.abs(fallback() - b_theirs).max()
    torch.set_num_threads(os.cpu_count())
    t_ours, m_ours = best_of(ours, repeat)
    t_fb, m_fb = best_of(fallback, repeat)
    t_pt = m_pt = None
    if native.available():
        assert np.array_equal(portable(), a_ours)
        t_pt, m_pt = best_of(portable, repeat)
    t_ref, m_ref = best_of(theirs, repeat)
    isa = native.use_portable(False) if native.available() else "not built"
    print(f"{title} -> {a_ours.shape[0]} tiles; max |ours - official| = {err:.2e} (compiled), "
          f"{err_fb:.2e} (fallback)")
    print(f"{'pipeline':<40} {'best ms':>8} {'median ms':>10} {'speed-up':>9}")
    print(f"{'official PIL + torch':<40} {t_ref * 1e3:8.1f} {m_ref * 1e3:10.1f} {1.0:8.2f}x")
    print(f"{'mivl, compiled resampler (' + isa + ')':<40} {t_ours * 1e3:8.1f} {m_ours * 1e3:10.1f} "
          f"{t_ref / t_ours:8.2f}x")
    if t_pt is not None:
        print(f"{'mivl, compiled resampler (portable C)':<40} {t_pt * 1e3:8.1f} {m_pt * 1e3:10.1f} "
              f"{t_ref / t_pt:8.2f}x")
    print(f"{'mivl, PIL resampler fallback':<40} {t_fb * 1e3:8.1f} {m_fb * 1e3:10.1f} {t_ref / t_fb:8.2f}x")
    return t_ref / t_ours


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    import official
    from PIL import Image

    from mivl.calib.synthetic import draw_scene
    from mivl.edge.multiview import preprocess_cameras
    from mivl.edge.preprocess import preprocess_image

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
    cams = draw_scene(3).cameras  # 1600x900 RGB frames
    frame = np.concatenate([draw_scene(4).cameras["CAM_FRONT"]] * 2, axis=1)[:1080, :1920]
    frame = np.ascontiguousarray(np.pad(frame, ((0, 1080 - frame.shape[0]), (0, 0), (0, 0)), mode="edge"))

    def canvas():
        return official.stitch({k: Image.fromarray(v) for k, v in cams.items()})

    six = compare("six 1600x900 cameras", lambda: preprocess_cameras(cams, max_tiles=12).pixels,
                  lambda: official.load_image(canvas(), max_num=12)[1], a.repeat)
    print()
    compare("one 1920x1080 image (max 12 tiles)", lambda: preprocess_image(frame, max_tiles=12).pixels,
            lambda: official.load_image(Image.fromarray(frame), max_num=12)[1], a.repeat)
    print(f"\nspeed-up (best, six cameras): {six:.2f}x")


if __name__ == "__main__":
    main()
