"""Per-token labels of synthetic scenes: which object (colour, class) each vision token sees.

A tile of 448x448 pixels becomes 16x16 tokens after pixel unshuffle (28x28 pixels each, row-major).
With one tile per image (the image resized to the tile, no thumbnail), token (r, c) covers the
image rectangle [c, c+1) x [r, r+1) * (W/16, H/16). A token is labelled with the object whose box
covers at least `min_cover` of it, or that holds the object's centre (small objects still get
one token); 0 means background. Colours and classes are numbered 1.. in the order of
`mivl.calib.synthetic`. These labels give the vision side a dense training signal.
"""
from __future__ import annotations

import numpy as np

from ..edge.multiview import CAMERAS, CELL_H, CELL_W
from .synthetic import CLASSES, COLOURS, SceneObject

GRID = 16
COLOUR_IDS = {c: i + 1 for i, c in enumerate(COLOURS)}
CLASS_IDS = {c: i + 1 for i, c in enumerate(CLASSES)}


def token_labels(objects: list[SceneObject], width: float, height: float, offset=(0.0, 0.0),
                 scale=(1.0, 1.0), grid: int = GRID, min_cover: float = 0.25,
                 canvas: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(colour ids, class ids), each (grid, grid) int64, of the objects drawn on an image of
    width x height shown as one tile. Object boxes are mapped by `scale` then `offset` (a camera
    frame pasted into a canvas); `canvas` is the size of that image when it differs."""
    cw, ch = canvas or (width, height)
    colours = np.zeros((grid, grid), np.int64)
    classes = np.zeros((grid, grid), np.int64)
    cover = np.zeros((grid, grid))
    xs, ys = np.arange(grid + 1) * cw / grid, np.arange(grid + 1) * ch / grid
    for o in objects:
        x1, y1, x2, y2 = o.box
        x1, x2 = x1 * scale[0] + offset[0], x2 * scale[0] + offset[0]
        y1, y2 = y1 * scale[1] + offset[1], y2 * scale[1] + offset[1]
        ox = np.clip(np.minimum(xs[1:], x2) - np.maximum(xs[:-1], x1), 0, None) / (cw / grid)
        oy = np.clip(np.minimum(ys[1:], y2) - np.maximum(ys[:-1], y1), 0, None) / (ch / grid)
        frac = oy[:, None] * ox[None, :]
        r = min(grid - 1, int((y1 + y2) / 2 / ch * grid))
        c = min(grid - 1, int((x1 + x2) / 2 / cw * grid))
        hit = frac >= min_cover
        hit[r, c] = True
        hit &= frac > cover
        colours[hit], classes[hit], cover[hit] = COLOUR_IDS[o.colour], CLASS_IDS[o.cls], frac[hit]
    return colours, classes


def camera_labels(objects: list[SceneObject], width: int, height: int, grid: int = GRID):
    """Token labels of one camera frame (width x height) shown alone as one tile."""
    return token_labels(objects, width, height, grid=grid)


def canvas_labels(objects: list[SceneObject], width: int, height: int, grid: int = GRID):
    """Token labels of the six-camera canvas (each frame of width x height in its 896x448 cell)
    shown as one tile."""
    colours = np.zeros((grid, grid), np.int64)
    classes = np.zeros((grid, grid), np.int64)
    for i, cam in enumerate(CAMERAS):
        r, c = divmod(i, 3)
        mine = [o for o in objects if o.camera == cam]
        if not mine:
            continue
        a, b = token_labels(mine, width, height, offset=(c * CELL_W, r * CELL_H),
                            scale=(CELL_W / width, CELL_H / height), grid=grid,
                            canvas=(3 * CELL_W, 2 * CELL_H))
        colours = np.where(a > 0, a, colours)
        classes = np.where(b > 0, b, classes)
    return colours, classes
