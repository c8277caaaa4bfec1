"""Fused CUDA preprocessing kernels on a GPU: time, achieved bandwidth against the card's measured
device-to-device copy bandwidth, and the same work done with torch ops on the GPU (antialiased
bicubic interpolate + normalise), in the same run. Without a GPU it says so and exits.

Usage: .venv/bin/python benchmarks/bench_kernels.py [--repeat N]
"""
import argparse
import sys

import numpy as np


def timed(cupy, fn, repeat):
    fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / repeat / 1e3  # seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=50)
    a = ap.parse_args()
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        print(f"no GPU here ({type(e).__name__}); the kernels were not timed. The CPU harness in "
              "tests/test_kernels.py checks their correctness; benchmarks/bench_preprocess.py times the CPU path.")
        return 0
    from mivl.calib.synthetic import draw_scene
    from mivl.runtimes.kernels import gpu_backend
    from mivl.edge.gpu_preprocess import Preprocessor

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    buf = cupy.empty(1 << 30, cupy.uint8)
    dst = cupy.empty_like(buf)
    copy_s = timed(cupy, lambda: cupy.copyto(dst, buf), 10)
    copy_bw = 2 * buf.nbytes / copy_s  # read + write
    pre = Preprocessor(gpu_backend())
    cams = draw_scene(1).cameras
    one = cams["CAM_FRONT"]
    rows = []
    for label, fn, in_bytes in [
        ("one 1600x900 image -> tiles", lambda: pre.image(one), one.nbytes),
        ("six 1600x900 cameras -> 13 tiles", lambda: pre.cameras(cams), 6 * one.nbytes),
    ]:
        out, _ = fn()
        s = timed(cupy, fn, a.repeat)
        moved = in_bytes + out.nbytes  # the unavoidable traffic: frames in, tiles out
        rows.append((label, s, moved / s))
    print(f"GPU: {name}; device copy bandwidth {copy_bw / 1e9:.0f} GB/s")
    print(f"{'work':<36} {'ms':>8} {'GB/s':>8} {'of copy bw':>10}")
    for label, s, bw in rows:
        print(f"{label:<36} {s * 1e3:8.3f} {bw / 1e9:8.1f} {bw / copy_bw:9.1%}")
    try:
        import torch
        if torch.cuda.is_available():
            x = torch.from_numpy(one).cuda().permute(2, 0, 1)[None].float()
            mean = torch.tensor([0.485, 0.456, 0.406], device="cuda").view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225], device="cuda").view(1, 3, 1, 1)

            def torch_ops():
                y = torch.nn.functional.interpolate(x, size=(896, 1792), mode="bicubic", antialias=True)
                y = (y.round().clamp(0, 255) / 255 - mean) / std
                return y.reshape(1, 3, 2, 448, 4, 448).permute(0, 2, 4, 1, 3, 5).reshape(8, 3, 448, 448)
            ts = timed(cupy, torch_ops, a.repeat)
            print(f"torch ops, one image (no thumbnail): {ts * 1e3:.3f} ms; kernels {rows[0][1] * 1e3:.3f} ms "
                  f"({ts / rows[0][1]:.2f}x)")
    except ImportError:
        print("torch not installed: no torch-ops baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
