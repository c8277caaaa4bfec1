"""The compiled CPU resampler (csrc/resample.c): PIL's BICUBIC resize, bit for bit, vectorised.

Built with the package (`pip install` compiles it; an optional extension, so an install without
a C compiler still works and falls back to PIL's own resampler). Called through ctypes, which
releases the GIL, so a picture's rows or several camera frames run on parallel threads.
`MIVL_NATIVE=0` in the environment turns it off (the PIL path then runs everywhere).
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

@lru_cache(maxsize=1)
def library():
    """The loaded library, or None where it was not built (or MIVL_NATIVE=0)."""
    if os.environ.get("MIVL_NATIVE", "1") == "0":
        return None
    try:
        from . import _resample
    except ImportError:
        return None
    lib = ctypes.CDLL(_resample.__file__)
    i, i64, p = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    lib.mivl_resize_rows.argtypes = [p, i64, i, i, i, p, i64, i, i, i, p, p, p, i, p, p, p, i]
    lib.mivl_resize_rows.restype = i
    lib.mivl_normalise.argtypes = [p, i64, i, i, p, p]
    lib.mivl_normalise.restype = None
    lib.mivl_resample_isa.argtypes = [i]
    lib.mivl_resample_isa.restype = i
    return lib


def describe() -> str:
    """What resizes on the CPU here, for Session.backends."""
    if not available():
        return "numpy + PIL's resampler (PIL-exact; the compiled resampler is not built)"
    return f"compiled resampler ({use_portable(False)}, PIL-exact)"


def use_portable(portable: bool) -> str:
    """Run the portable passes (True) or the fastest this CPU has (False); returns which runs."""
    return ("portable", "avx2", "neon")[library().mivl_resample_isa(int(portable))]


def available() -> bool:
    return library() is not None


@lru_cache(maxsize=64)
def _windows(in_size: int, out_size: int):
    from .resize import pil_windows

    xmin, count, weights = pil_windows(in_size, out_size)
    return (np.ascontiguousarray(xmin, np.int32), np.ascontiguousarray(count, np.int32),
            np.ascontiguousarray(weights, np.int32))


def _ptr(a) -> int | None:
    return None if a is None else a.ctypes.data


def _rows_contiguous(a: np.ndarray) -> bool:
    """(H, W, C) with each row's pixels packed (any row stride)."""
    return a.strides[1] == a.shape[2] and (a.shape[2] == 1 or a.strides[2] == 1)


def resize_rows(img: np.ndarray, width: int, height: int, out: np.ndarray, y0: int, y1: int) -> None:
    """Rows [y0, y1) of PIL's BICUBIC resize of img (H, W, C) uint8 to width x height, written to
    out (y1 - y0, width, C) uint8 (any row stride, contiguous rows)."""
    h, w, c = img.shape
    if not 1 <= c <= 4:
        raise ValueError(f"resize takes 1 to 4 channels, got {c}")
    if not (_rows_contiguous(img) and _rows_contiguous(out)):
        raise ValueError("resize_rows needs rows of contiguous pixels")
    hx = _windows(w, width) if width != w else (None, None, None)
    hy = _windows(h, height) if height != h else (None, None, None)
    kx = hx[2].shape[1] if hx[2] is not None else 0
    ky = hy[2].shape[1] if hy[2] is not None else 0
    rc = library().mivl_resize_rows(
        img.ctypes.data, img.strides[0], h, w, c, out.ctypes.data, out.strides[0], width, y0, y1,
        _ptr(hx[0]), _ptr(hx[1]), _ptr(hx[2]), kx, _ptr(hy[0]), _ptr(hy[1]), _ptr(hy[2]), ky)
    if rc == -1:
        raise MemoryError(f"resizing {w}x{h} to {width}x{height}: out of memory")
    if rc != 0:
        raise ValueError(f"the resampler refused a {w}x{h}x{c} image (status {rc})")


def vertical_first(w: int, h: int, width: int, height: int) -> bool:
    """Pillow 12 resizes a picture over 100 times taller than wide that loses height vertically
    first (Image.resize); every other resize is horizontal first."""
    return h > 100 * w and height < h and width != w


def resize(img: np.ndarray, width: int, height: int, threads: int = 1) -> np.ndarray:
    """PIL's BICUBIC resize of an (H, W, C) or (H, W) uint8 image, its rows split over `threads`."""
    flat = img.ndim == 2
    src = img[:, :, None] if flat else img
    if not _rows_contiguous(src):
        src = np.ascontiguousarray(src)
    h, w = src.shape[:2]
    if vertical_first(w, h, width, height):
        return resize(resize(img, w, height, threads), width, height, threads)
    out = np.empty((height, width, src.shape[2]), np.uint8)
    parts = max(1, min(threads, height // 16))
    if parts == 1:
        resize_rows(src, width, height, out, 0, height)
    else:
        cuts = np.linspace(0, height, parts + 1).astype(int)
        with ThreadPoolExecutor(max_workers=parts) as pool:
            list(pool.map(lambda k: resize_rows(src, width, height, out[cuts[k]:cuts[k + 1]], cuts[k], cuts[k + 1]),
                          range(parts)))
    return out[:, :, 0] if flat else out


def normalise_tile(tile: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """(S, S, 3) uint8 view (rows of contiguous pixels) -> out (3, S, S) float32, through lut (3, 256)."""
    if tile.strides[1:] != (3, 1) or not out.flags.c_contiguous or out.dtype != np.float32:
        raise ValueError("normalise_tile needs a (S, S, 3) uint8 view with contiguous rows and a C-contiguous float32 out")
    lut = np.ascontiguousarray(lut, np.float32)
    library().mivl_normalise(tile.ctypes.data, tile.strides[0], tile.shape[0], tile.shape[1], out.ctypes.data,
                             lut.ctypes.data)
