"""Antialiased bicubic resize that reproduces PIL's `Image.resize(..., BICUBIC)` bit for bit.

Three implementations of the same arithmetic: `resize_bicubic` runs the package's compiled
resampler (`mivl.edge.native`, csrc/resample.c: PIL's fixed-point sums in vectorised loops, the
fastest on a CPU) or, where it was not built, PIL's own C resampler; `resize_bicubic_numpy` spells
the arithmetic out in NumPy (banded matrix products), the readable specification that the CUDA
kernel, its CPU harness and the compiled resampler are all held to.

PIL resamples separably: a horizontal pass, then a vertical pass, each a convolution whose
support grows with the downscale factor (that is the antialiasing), with weights of the cubic
kernel a = -0.5 normalised to sum 1 and turned into 22-bit fixed point. The horizontal result is
rounded and clipped to uint8 before the vertical pass. Doing the same integer arithmetic gives
identical pixels; any float shortcut gives +-1 differences.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from . import native

PRECISION_BITS = 32 - 8 - 2  # PIL's fixed-point precision for 8-bit images
_HALF = 1 << (PRECISION_BITS - 1)


def cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """The bicubic convolution kernel (Keys, a = -0.5), support 2."""
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@lru_cache(maxsize=64)
def pil_windows(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PIL's per-output window: (xmin [out], taps [out], fixed-point weights [out, ksize] int32)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    w = cubic((xmin[:, None] + taps[None, :] - center[:, None] + 0.5) / filterscale)
    w = np.where(taps[None, :] < xmax[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=w, where=total != 0.0)
    fixed = np.where(w < 0, np.trunc(-0.5 + w * (1 << PRECISION_BITS)),
                     np.trunc(0.5 + w * (1 << PRECISION_BITS))).astype(np.int32)
    return xmin.astype(np.int32), xmax.astype(np.int32), fixed


@lru_cache(maxsize=64)
def resample_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(index [out, ksize], weight [out, ksize] int32) of each output pixel, PIL's way.

    Indices beyond a pixel's window point at a valid pixel and carry weight 0, so a gather
    over the full kernel width is safe.
    """
    xmin, _, fixed = pil_windows(in_size, out_size)
    index = np.minimum(xmin[:, None].astype(np.int64) + np.arange(fixed.shape[1])[None, :], in_size - 1)
    # Trim taps that are zero for every output pixel (the kernel is sized for the worst case).
    used = np.flatnonzero(np.any(fixed != 0, axis=0))
    keep = used[-1] + 1 if used.size else 1
    return index[:, :keep].copy(), fixed[:, :keep].copy()


BLOCK = 16          # output rows per banded block of the matrix form


@lru_cache(maxsize=64)
def banded_blocks(in_size: int, out_size: int) -> list[tuple[int, int, int, int, np.ndarray]]:
    """The resampling matrix cut into row blocks: (r0, r1, c0, c1, float64 fixed-point weights).

    Pixel (< 2^8) times weight (< 2^23) summed over the window stays far below 2^53, so a
    double-precision matrix product gives the exact integer sums of PIL's fixed-point arithmetic.
    """
    index, weight = resample_coeffs(in_size, out_size)
    blocks = []
    for r0 in range(0, out_size, BLOCK):
        r1 = min(out_size, r0 + BLOCK)
        idx, w = index[r0:r1], weight[r0:r1]
        c0, c1 = int(idx[w != 0].min()), int(idx[w != 0].max()) + 1
        dense = np.zeros((r1 - r0, c1 - c0), np.float64)
        rows = np.repeat(np.arange(r1 - r0), idx.shape[1])
        np.add.at(dense, (rows, (idx - c0).ravel().clip(0, c1 - c0 - 1)), w.ravel())
        blocks.append((r0, r1, c0, c1, dense))
    return blocks


def _pass_rows(x: np.ndarray, out_size: int) -> np.ndarray:
    """Resample axis 0 of a 2-D uint8 array (in, N) -> (out, N) uint8, exactly as PIL."""
    xf = x.astype(np.float64)
    out = np.empty((out_size, x.shape[1]), np.uint8)
    scale = 1.0 / (1 << PRECISION_BITS)
    for r0, r1, c0, c1, w in banded_blocks(x.shape[0], out_size):
        acc = w @ xf[c0:c1]                  # exact integer sums
        acc += _HALF
        acc *= scale                         # a power of two: exact
        np.clip(acc, 0.0, 255.0, out=acc)    # PIL's clip8; then truncation == floor (acc >= 0)
        out[r0:r1] = acc
    return out


def resize_stack(images: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, H, W, C) uint8 -> (n, height, width, C), PIL's BICUBIC, as banded matrix products."""
    n, h, w, c = images.shape
    if native.vertical_first(w, h, width, height):
        return resize_stack(resize_stack(images, w, height), width, height)
    x = images
    if width != w:   # horizontal pass: columns become rows of the matrix form
        t = np.ascontiguousarray(x.transpose(2, 0, 1, 3)).reshape(w, n * h * c)
        x = _pass_rows(t, width).reshape(width, n, h, c).transpose(1, 2, 0, 3)
    if height != h:  # vertical pass
        t = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(h, n * width * c)
        x = _pass_rows(t, height).reshape(height, n, width, c).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(x)


def _check(img: np.ndarray, width: int, height: int) -> None:
    if img.dtype != np.uint8:
        raise TypeError(f"resize_bicubic takes uint8 images, got {img.dtype}")
    if width < 1 or height < 1:
        raise ValueError(f"target size must be at least 1x1, got {width}x{height}")


def resize_bicubic(img: np.ndarray, width: int, height: int, threads: int = 1) -> np.ndarray:
    """Resize an HWC (or HW) uint8 image to width x height with PIL's BICUBIC (exact); the
    compiled resampler splits the rows over `threads`."""
    _check(img, width, height)
    if img.shape[1] == width and img.shape[0] == height:
        return img.copy()
    if native.available():
        return native.resize(img, width, height, threads)
    return resize_bicubic_pil(img, width, height)


def resize_bicubic_pil(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """The same resize by PIL itself (the reference; the fallback where native is not built)."""
    from PIL import Image

    _check(img, width, height)
    return np.array(Image.fromarray(img).resize((width, height), Image.BICUBIC))  # writable


def resize_bicubic_numpy(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an HWC (or HW) uint8 image to width x height exactly as PIL's BICUBIC does."""
    _check(img, width, height)
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img.copy()
    if img.ndim == 2:
        return resize_stack(img[None, :, :, None], width, height)[0, :, :, 0]
    return resize_stack(img[None], width, height)[0]


def resize_many(images: list[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    """Resize several HWC uint8 images, on parallel threads."""
    if len(images) <= 1:
        return [resize_bicubic(im, width, height) for im in images]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda im: resize_bicubic(im, width, height), images))
