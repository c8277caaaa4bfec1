"""Launch sequences of the fused kernels: frames in, the normalised tile batch out.

One image: horizontal pass to the grid canvas width (BGR -> RGB on the way), vertical pass fused
with tile cut + normalisation + NCHW, and the same two for the thumbnail: 4 launches.
Six cameras: one horizontal launch for all six cells, one vertical launch writing the labelled
cells into the canvas, the tile cut of the canvas (it is exactly the 6x2 grid), and the thumbnail's
two passes: 5 launches. Nothing returns to the host in between.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import InputError
from .multiview import CAMERAS, CELL_H, CELL_W, LABEL_COLOUR, label_masks
from .preprocess import PreprocessConfig, grid_for_size
from .resize import pil_windows


@lru_cache(maxsize=64)
def host_tables(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(bounds [2*out] = first tap, tap count; weights [out*ksize] int32; ksize)."""
    xmin, taps, fixed = pil_windows(in_size, out_size)
    bounds = np.stack([xmin, taps], axis=1).reshape(-1).astype(np.int32)
    return bounds, np.ascontiguousarray(fixed.reshape(-1)), fixed.shape[1]


def _grid(w: int, h: int) -> tuple[int, int, int]:
    return (w + 31) // 32, (h + 7) // 8


class Preprocessor:
    def __init__(self, backend, cfg: PreprocessConfig = PreprocessConfig(), half: bool = False):
        self.k, self.cfg, self.half = backend, cfg, half
        self.xp = backend.xp
        self._tables = {}
        self._labels = None

    def tables(self, in_size: int, out_size: int):
        key = (in_size, out_size)
        if key not in self._tables:
            b, w, k = host_tables(in_size, out_size)
            self._tables[key] = (self.k.asarray(b), self.k.asarray(w), k)
        return self._tables[key]

    def _out(self, n: int):
        s = self.cfg.image_size
        return self.xp.empty((n, 3, s, s), self.xp.float16 if self.half else self.xp.float32)

    def _resize_to_tiles(self, src, src_w: int, src_h: int, bgr: bool, out_w: int, out_h: int,
                         out, first_tile: int) -> None:
        """src (H, W, 3) -> resized to out_w x out_h and written as tiles from first_tile."""
        if (src_w, src_h) == (out_w, out_h) and not bgr:
            tmp = src
        else:
            b, w, k = self.tables(src_w, out_w)
            tmp = self.xp.empty((src_h, out_w, 3), self.xp.uint8)
            gx, gy = _grid(out_w, src_h)
            self.k.resample_h((gx, gy, 1), src, src_w, src_h, 0, int(bgr), tmp, out_w, 0, b, w, k)
        gx, gy = _grid(out_w, out_h)
        if out_h == src_h:
            bv = wv = None
            kv = 0
        else:
            bv, wv, kv = self.tables(src_h, out_h)
        self.k.tiles((gx, gy), self.half, tmp, out_w, out_h, bv, wv, kv, out, self.cfg.image_size, first_tile,
                     self.cfg.mean, self.cfg.std)

    def image(self, frame: np.ndarray, bgr: bool = False, max_tiles: int | None = None):
        """(H, W, 3) uint8 frame -> ((N, 3, S, S) tiles on the backend, grid)."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"kernels take (H, W, 3) uint8 frames, got {frame.shape} {frame.dtype}")
        h, w = frame.shape[:2]
        grid = grid_for_size(w, h, self.cfg, max_tiles)
        src = self.k.asarray(frame)
        out = self._out(grid.n_tiles)
        self._resize_to_tiles(src, w, h, bgr, *grid.canvas_size, out, 0)
        if grid.thumbnail:
            self._resize_to_tiles(src, w, h, bgr, self.cfg.image_size, self.cfg.image_size, out, grid.n_grid)
        return out, grid

    def _label_stack(self):
        if self._labels is None:
            masks = label_masks()
            lh = max(m.shape[0] for m in masks.values())
            lw = max(m.shape[1] for m in masks.values())
            stack = np.zeros((6, lh, lw), np.uint8)
            for i, name in enumerate(CAMERAS):
                m = masks[name]
                stack[i, :m.shape[0], :m.shape[1]] = m
            self._labels = (self.k.asarray(stack), lw, lh)
        return self._labels

    def cameras(self, frames: dict, bgr: bool = False, max_tiles: int | None = None):
        """Six named frames of one size -> ((N, 3, S, S) tiles, grid) of the stitched canvas."""
        missing = [c for c in CAMERAS if c not in frames]
        if missing or len(frames) != 6:
            raise InputError(f"six-camera input needs exactly {', '.join(CAMERAS)}")
        stack = np.stack([np.asarray(frames[c]) for c in CAMERAS])  # raises if sizes differ
        n, h, w, _ = stack.shape
        src = self.k.asarray(stack)
        xp = self.xp
        b, wt, k = self.tables(w, CELL_W)
        cells = xp.empty((6, h, CELL_W, 3), xp.uint8)
        gx, gy = _grid(CELL_W, h)
        self.k.resample_h((gx, gy, 6), src, w, h, h * w * 3, int(bgr), cells, CELL_W, h * CELL_W * 3, b, wt, k)
        canvas = xp.empty((2 * CELL_H, 3 * CELL_W, 3), xp.uint8)
        bv, wv, kv = self.tables(h, CELL_H)
        labels, lw, lh = self._label_stack()
        gx, gy = _grid(CELL_W, CELL_H)
        self.k.resample_v((gx, gy, 6), cells, CELL_W, h, h * CELL_W * 3, canvas, 3 * CELL_W, CELL_H, 3,
                          bv, wv, kv, labels, lw, lh, LABEL_COLOUR)
        cw, ch = 3 * CELL_W, 2 * CELL_H
        grid = grid_for_size(cw, ch, self.cfg, max_tiles)
        out = self._out(grid.n_tiles)
        self._resize_to_tiles(canvas, cw, ch, False, *grid.canvas_size, out, 0)
        if grid.thumbnail:
            self._resize_to_tiles(canvas, cw, ch, False, self.cfg.image_size, self.cfg.image_size, out, grid.n_grid)
        return out, grid

    def unshuffle_layernorm(self, hidden, gamma, beta, eps: float = 1e-5):
        """(N, 1 + g*g, C) float32 -> (N, (g/2)^2, 4C) float32: CLS dropped, v2 unshuffle, LayerNorm."""
        hidden = self.k.asarray(hidden, dtype=np.float32)
        n, t, c = hidden.shape
        g = int(round((t - 1) ** 0.5))
        if g * g != t - 1 or g % 2:
            raise InputError(f"hidden states must be (N, 1 + g*g, C) with even g, got {tuple(hidden.shape)}")
        out = self.xp.empty((n, (g // 2) ** 2, 4 * c), self.xp.float32)
        self.k.unshuffle_layernorm((g // 2) ** 2, n, hidden, g, c, self.k.asarray(gamma, dtype=np.float32),
                                   self.k.asarray(beta, dtype=np.float32), eps, out)
        return out
