"""Six-camera multi-view input, laid out as InternVL's driving domain adaptation trained on it.

Each camera frame is resized (PIL bicubic) to a 896x448 cell, its name drawn at the cell's top-left
in magenta (DejaVu Sans Bold 50, as the training images were made), and the cells pasted 3 x 2
into a 2688x896 canvas: row 0 front-left, front, front-right; row 1 back-left, back, back-right.
The canvas then goes through normal tiling (max 12 -> 6x2 + thumbnail = 13 tiles).
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

import numpy as np

from .errors import InputError
from .image_io import ImageInput, load_rgb
from .preprocess import PreprocessConfig, TileBatch, grid_for, normalise_into, preprocess_images
from .resize import resize_bicubic, resize_many

CAMERAS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT",
           "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")
CELL_W, CELL_H = 896, 448
CANVAS_W, CANVAS_H = 3 * CELL_W, 2 * CELL_H
LABEL_COLOUR = (255, 0, 255)
LABEL_ASSET = "camera_labels.npz"


def cell_of(camera: str) -> tuple[int, int]:
    """(row, column) of the cell a camera's frame fills in the 3 x 2 canvas."""
    return divmod(CAMERAS.index(camera), 3)


def check_cameras(cameras: dict) -> None:
    if not isinstance(cameras, Mapping):
        raise InputError(f"cameras must be a dict of name -> image, got {type(cameras).__name__}")
    unknown = sorted(set(cameras) - set(CAMERAS))
    missing = [c for c in CAMERAS if c not in cameras]
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown)}")
        raise InputError(f"six-camera input needs exactly {', '.join(CAMERAS)}; got "
                         f"{len(cameras)} camera(s): {'; '.join(parts)}")


@lru_cache(maxsize=1)
def label_masks() -> dict[str, np.ndarray]:
    """Coverage masks (uint8, 0..255) of each camera name, rendered from DejaVu Sans Bold 50."""
    with resources.files("mivl.assets").joinpath(LABEL_ASSET).open("rb") as f:
        data = np.load(f)
        return {name: data[name] for name in CAMERAS}


def draw_label(cell: np.ndarray, name: str) -> None:
    """Blend the camera name into the top-left of `cell` in place, as PIL's text drawing does."""
    mask = label_masks()[name]
    h, w = min(mask.shape[0], cell.shape[0]), min(mask.shape[1], cell.shape[1])
    m = mask[:h, :w, None].astype(np.int32)
    region = cell[:h, :w].astype(np.int32)
    colour = np.asarray(LABEL_COLOUR, dtype=np.int32)
    tmp = region * (255 - m) + colour * m + 128  # PIL's BLEND with rounding
    cell[:h, :w] = ((tmp + (tmp >> 8)) >> 8).astype(np.uint8)


def stitch_cameras(cameras: dict[str, ImageInput], *, channels: str = "RGB",
                   labels: bool = True) -> np.ndarray:
    """Six named camera frames -> the (896, 2688, 3) uint8 RGB canvas."""
    check_cameras(cameras)
    frames = [load_rgb(cameras[name], channels=channels) for name in CAMERAS]
    cells = resize_many(frames, CELL_W, CELL_H)
    canvas = np.empty((CANVAS_H, CANVAS_W, 3), dtype=np.uint8)
    for i, (name, cell) in enumerate(zip(CAMERAS, cells)):
        if labels:
            draw_label(cell, name)
        r, c = divmod(i, 3)
        canvas[r * CELL_H:(r + 1) * CELL_H, c * CELL_W:(c + 1) * CELL_W] = cell
    return canvas


def preprocess_cameras(cameras: dict[str, ImageInput], cfg: PreprocessConfig = PreprocessConfig(), *,
                       max_tiles: int | None = None, channels: str = "RGB") -> TileBatch:
    """Six named cameras -> the tile batch of their canvas, bit for bit what
    preprocess_images([stitch_cameras(cameras)]) gives.

    When the tile grid is the canvas itself (6 x 2 tiles of 448: each cell is two tiles, the
    default 12-tile budget), each camera's two tiles are normalised as soon as its cell is drawn,
    one canvas row per thread, each thread also doing the thumbnail's horizontal pass over its
    row; the canvas itself is never resized."""
    check_cameras(cameras)
    s = cfg.image_size
    grid = grid_for(np.empty((CANVAS_H, CANVAS_W, 0), np.uint8), cfg, max_tiles)
    if grid.canvas_size != (CANVAS_W, CANVAS_H) or CELL_W != 2 * s or CELL_H != s:
        return preprocess_images([stitch_cameras(cameras, channels=channels)], cfg, max_tiles=max_tiles)
    canvas = np.empty((CANVAS_H, CANVAS_W, 3), dtype=np.uint8)
    out = np.empty((grid.n_tiles, 3, s, s), dtype=np.float32)

    def cell(i: int) -> None:
        name = CAMERAS[i]
        c = resize_bicubic(load_rgb(cameras[name], channels=channels), CELL_W, CELL_H)
        draw_label(c, name)
        r, k = divmod(i, 3)
        canvas[r * CELL_H:(r + 1) * CELL_H, k * CELL_W:(k + 1) * CELL_W] = c
        first = r * grid.cols + 2 * k                   # row-major: tiles 2k, 2k+1 of grid row r
        normalise_into(c.reshape(s, 2, s, 3).transpose(1, 0, 2, 3), out[first:first + 2], cfg.mean, cfg.std)

    def canvas_row(r: int):
        """The three cells of canvas row r, then the thumbnail's horizontal pass over that band
        (PIL resamples rows independently in that pass, so bands give the very same rows)."""
        for k in range(3):
            cell(3 * r + k)
        return resize_bicubic(canvas[r * CELL_H:(r + 1) * CELL_H], s, CELL_H) if grid.thumbnail else None

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        bands = list(pool.map(canvas_row, range(2)))
    if grid.thumbnail:   # the vertical pass over both bands
        thumb = resize_bicubic(np.concatenate(bands), s, s)
        normalise_into(thumb[None], out[grid.n_grid:], cfg.mean, cfg.std)
    return TileBatch(out, [grid], [(CANVAS_W, CANVAS_H)])


def canvas_to_camera(x: float, y: float, camera_sizes: dict[str, tuple[int, int]] | None = None
                     ) -> tuple[str, float, float]:
    """A point in 0..1000 canvas coordinates -> (camera, x, y) in that camera's own pixels."""
    px, py = x / 1000.0 * CANVAS_W, y / 1000.0 * CANVAS_H
    col = min(int(px // CELL_W), 2)
    row = min(int(py // CELL_H), 1)
    name = CAMERAS[row * 3 + col]
    w, h = (camera_sizes or {}).get(name, (1600, 900))
    return name, (px - col * CELL_W) / CELL_W * w, (py - row * CELL_H) / CELL_H * h
