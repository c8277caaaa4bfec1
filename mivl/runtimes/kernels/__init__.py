"""The fused CUDA kernels (preprocess.cu, unshuffle.cu) and the two ways to run the same source:

- on a GPU, compiled at run time by NVRTC through CuPy (`gpu_backend()`), buffers staying on the
  device (the tile batch is a CuPy array the vision backend can take without a host copy);
- on a CPU, compiled by the host compiler behind cuda_emu.h (`cpu_backend()`), which runs every
  block and thread, so tests execute the very kernel code against the NumPy reference.

`Preprocessor(backend)` orchestrates the launches: one image -> tiles, six cameras -> tiles.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ...errors import MivlError

HERE = Path(__file__).parent
SOURCES = ("cuda_emu.h", "preprocess.cu", "unshuffle.cu", "harness.cpp")
BLOCK = (32, 8)
LN_THREADS = 256


class KernelUnavailable(MivlError):
    """The kernels cannot run here (no compiler, no GPU, no CuPy)."""


def source(name: str) -> str:
    return (HERE / name).read_text()


def _cache_dir() -> Path:
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mivl" / "kernels"
    d.mkdir(parents=True, exist_ok=True)
    return d


class CpuBackend:
    """The kernels compiled with the host C++ compiler (cuda_emu.h) and called through ctypes."""

    name = "cpu-harness"
    xp = np

    def __init__(self, cxx: str | None = None):
        cxx = cxx or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
        if not cxx:
            raise KernelUnavailable("no C++ compiler (g++) to build the kernels' CPU harness")
        digest = hashlib.sha256(b"".join((HERE / s).read_bytes() for s in SOURCES) + cxx.encode()).hexdigest()[:16]
        lib = _cache_dir() / f"libmivl_kernels_emu-{digest}.so"
        if not lib.is_file():
            tmp = lib.with_suffix(f".{os.getpid()}.tmp")
            cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-pthread", "-Wall", "-o", str(tmp),
                   str(HERE / "harness.cpp")]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise KernelUnavailable(f"building the kernels' CPU harness failed: {r.stderr[-2000:]}")
            tmp.rename(lib)
        self.lib = ctypes.CDLL(str(lib))

    @staticmethod
    def _p(a) -> ctypes.c_void_p:
        return ctypes.c_void_p(0 if a is None else a.ctypes.data)

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        return a

    def resample_h(self, grid, src, src_w, src_h, src_stride, bgr, dst, dst_w, dst_stride, bounds, weights, ksize):
        i, L = ctypes.c_int, ctypes.c_long
        self.lib.launch_resample_h(i(grid[0]), i(grid[1]), i(grid[2]), i(BLOCK[0]), i(BLOCK[1]), self._p(src),
                                   i(src_w), i(src_h), L(src_stride), i(bgr), self._p(dst), i(dst_w),
                                   L(dst_stride), self._p(bounds), self._p(weights), i(ksize))

    def resample_v(self, grid, src, width, src_h, src_stride, canvas, canvas_w, dst_h, cells_per_row, bounds,
                   weights, ksize, label, label_w, label_h, rgb):
        i, L = ctypes.c_int, ctypes.c_long
        self.lib.launch_resample_v(i(grid[0]), i(grid[1]), i(grid[2]), i(BLOCK[0]), i(BLOCK[1]), self._p(src),
                                   i(width), i(src_h), L(src_stride), self._p(canvas), i(canvas_w), i(dst_h),
                                   i(cells_per_row), self._p(bounds), self._p(weights), i(ksize), self._p(label),
                                   i(label_w), i(label_h), i(rgb[0]), i(rgb[1]), i(rgb[2]))

    def tiles(self, grid, half, src, width, dst_h, bounds, weights, ksize, out, tile, first_tile, mean, std):
        i, f = ctypes.c_int, ctypes.c_float
        self.lib.launch_tiles(i(int(half)), i(grid[0]), i(grid[1]), i(BLOCK[0]), i(BLOCK[1]), self._p(src),
                              i(width), i(dst_h), self._p(bounds), self._p(weights), i(ksize), self._p(out),
                              i(tile), i(first_tile), *(f(x) for x in mean), *(f(x) for x in std))

    def unshuffle_layernorm(self, tokens, n, hidden, g, C, gamma, beta, eps, out):
        i = ctypes.c_int
        self.lib.launch_unshuffle_layernorm(i(tokens), i(n), self._p(hidden), i(g), i(C), self._p(gamma),
                                            self._p(beta), ctypes.c_float(eps), self._p(out))


class GpuBackend:
    """The kernels compiled by NVRTC through CuPy; arrays live on the current CUDA device."""

    name = "cuda"

    def __init__(self):
        try:
            import cupy
        except ImportError:
            raise KernelUnavailable("CuPy is not installed (pip install 'mivl[gpu]')") from None
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as e:
            raise KernelUnavailable(f"no usable CUDA device: {e}") from None
        self.xp = cupy
        code = source("preprocess.cu") + "\n" + source("unshuffle.cu")
        self.module = cupy.RawModule(code=code, options=("-std=c++14",))
        self.f = {n: self.module.get_function(n) for n in
                  ("mivl_resample_h", "mivl_resample_v", "mivl_tiles_f32", "mivl_tiles_f16",
                   "mivl_unshuffle_layernorm")}

    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a) -> np.ndarray:
        return self.xp.asnumpy(a)

    def resample_h(self, grid, src, src_w, src_h, src_stride, bgr, dst, dst_w, dst_stride, bounds, weights, ksize):
        i, L = np.int32, np.int64
        self.f["mivl_resample_h"](grid, BLOCK, (src, i(src_w), i(src_h), L(src_stride), i(bgr), dst, i(dst_w),
                                                L(dst_stride), bounds, weights, i(ksize)))

    def resample_v(self, grid, src, width, src_h, src_stride, canvas, canvas_w, dst_h, cells_per_row, bounds,
                   weights, ksize, label, label_w, label_h, rgb):
        i, L = np.int32, np.int64
        label = label if label is not None else np.uint64(0)
        self.f["mivl_resample_v"](grid, BLOCK, (src, i(width), i(src_h), L(src_stride), canvas, i(canvas_w),
                                                i(dst_h), i(cells_per_row), bounds, weights, i(ksize), label,
                                                i(label_w), i(label_h), i(rgb[0]), i(rgb[1]), i(rgb[2])))

    def tiles(self, grid, half, src, width, dst_h, bounds, weights, ksize, out, tile, first_tile, mean, std):
        i, f = np.int32, np.float32
        bounds = bounds if bounds is not None else np.uint64(0)
        weights = weights if weights is not None else np.uint64(0)
        self.f["mivl_tiles_f16" if half else "mivl_tiles_f32"](
            (grid[0], grid[1], 1), BLOCK, (src, i(width), i(dst_h), bounds, weights, i(ksize), out, i(tile),
                                           i(first_tile), *(f(x) for x in mean), *(f(x) for x in std)))

    def unshuffle_layernorm(self, tokens, n, hidden, g, C, gamma, beta, eps, out):
        i = np.int32
        self.f["mivl_unshuffle_layernorm"]((tokens, n, 1), (LN_THREADS, 1, 1),
                                           (hidden, i(g), i(C), gamma, beta, np.float32(eps), out))


_cpu = None


def cpu_backend() -> CpuBackend:
    global _cpu
    if _cpu is None:
        _cpu = CpuBackend()
    return _cpu


def gpu_backend() -> GpuBackend:
    return GpuBackend()
