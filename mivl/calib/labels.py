"""Per-token labels of synthetic scenes: what each vision token sees, as the model is fed the image.

A tile of 448x448 pixels becomes 16x16 tokens after pixel unshuffle (28x28 pixels each, row-major).
An image is tiled as InternVL tiles it (`mivl.edge.preprocess`: a cols x rows grid of the image
resized to cols*448 x rows*448, then the thumbnail, the whole image resized to 448x448), so grid
tile (r, c)'s token (i, j) covers the image rectangle ((c*16 + j) * W/(16 cols), (r*16 + i) *
H/(16 rows)) of that size; a thumbnail token covers W/16 x H/16. A token is labelled with the object
whose box covers at least `min_cover` of it, or that holds the object's centre (small objects still
get one token); 0 means background. Colours and classes are numbered 1.. in the order of
`mivl.calib.synthetic`. `tile_targets` adds, on the thumbnail (the one tile that knows where it
lies), the camera under each token of the six-camera canvas and the digits of the object's box and
centre. These targets give the vision side a dense training signal (`mivl.export.train.dense`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..edge.multiview import CELL_H, CELL_W, cell_of
from .questions import box_1000
from .synthetic import CLASSES, COLOURS, SceneObject

GRID = 16
COLOUR_IDS = {c: i + 1 for i, c in enumerate(COLOURS)}
CLASS_IDS = {c: i + 1 for i, c in enumerate(CLASSES)}


def token_owner(boxes, canvas: tuple[float, float], grid: int = GRID, min_cover: float = 0.25) -> np.ndarray:
    """(grid, grid) int64: the index of the box each token of a canvas-sized tile sees, -1 for
    background. A token takes the box that covers at least `min_cover` of it, or whose centre it
    holds (small objects still get one token); where boxes overlap, the one covering more."""
    cw, ch = canvas
    owner = np.full((grid, grid), -1, np.int64)
    cover = np.zeros((grid, grid))
    xs, ys = np.arange(grid + 1) * cw / grid, np.arange(grid + 1) * ch / grid
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        ox = np.clip(np.minimum(xs[1:], x2) - np.maximum(xs[:-1], x1), 0, None) / (cw / grid)
        oy = np.clip(np.minimum(ys[1:], y2) - np.maximum(ys[:-1], y1), 0, None) / (ch / grid)
        frac = oy[:, None] * ox[None, :]
        hit = frac >= min_cover
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if 0 <= cx < cw and 0 <= cy < ch:
            hit[min(grid - 1, int(cy / ch * grid)), min(grid - 1, int(cx / cw * grid))] = True
        hit &= frac > cover
        owner[hit], cover[hit] = k, frac[hit]
    return owner


def _label_ids(objects: list[SceneObject]) -> tuple[np.ndarray, np.ndarray]:
    """(colour ids, class ids) indexed by token_owner + 1: background 0, then each object's."""
    return (np.array([0] + [COLOUR_IDS[o.colour] for o in objects], np.int64),
            np.array([0] + [CLASS_IDS[o.cls] for o in objects], np.int64))


def _mapped(box, offset, scale):
    x1, y1, x2, y2 = box
    return (x1 * scale[0] + offset[0], y1 * scale[1] + offset[1], x2 * scale[0] + offset[0], y2 * scale[1] + offset[1])


def token_labels(objects: list[SceneObject], width: float, height: float, offset=(0.0, 0.0),
                 scale=(1.0, 1.0), grid: int = GRID, min_cover: float = 0.25,
                 canvas: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(colour ids, class ids), each (grid, grid) int64, of the objects drawn on an image of
    width x height shown as one tile. Object boxes are mapped by `scale` then `offset` (a camera
    frame pasted into a canvas); `canvas` is the size of that image when it differs."""
    owner = token_owner([_mapped(o.box, offset, scale) for o in objects], canvas or (width, height), grid, min_cover)
    colour_of, class_of = _label_ids(objects)
    return colour_of[owner + 1], class_of[owner + 1]


# Targets of every tile of an image as the model is fed it (dynamic tiling + thumbnail) -----------
NUMBERS = ("x1", "y1", "x2", "y2", "cx", "cy")   # an object's box and centre, 0..1000 of the image
DIGITS = 3                                       # hundreds, tens, units of each number
IGNORE = -100


@dataclass
class TileTargets:
    """Per-token targets of an image's tiles, each (n_tiles, GRID * GRID[, ...]) int64."""
    colours: np.ndarray          # 0 background, else COLOUR_IDS
    classes: np.ndarray          # 0 background, else CLASS_IDS
    cameras: np.ndarray          # on the six-camera canvas's thumbnail (and, with grid_cameras, its
                                 # grid tiles): 1 + the camera under the token; 0 elsewhere
    digits: np.ndarray           # (n_tiles, 256, 6 * 3): digits of NUMBERS of the object under a
                                 # thumbnail token; IGNORE elsewhere (grid tiles, background)


def numbers_1000(box, width: float, height: float) -> list[int]:
    """NUMBERS of a pixel box in 0..1000 of a width x height image: `box_1000` and the centre as
    DriveLM's points give it."""
    x1, y1, x2, y2 = box
    return box_1000(box, width, height) + [round((x1 + x2) / 2 / width * 1000), round((y1 + y2) / 2 / height * 1000)]


def digits_of(value: int) -> list[int]:
    v = int(min(999, max(0, value)))
    return [v // 100, v // 10 % 10, v % 10]


def canvas_boxes(objects: list[SceneObject], width: int, height: int) -> list[tuple]:
    """Each object's box on the six-camera canvas (frames of width x height in their cells)."""
    out = []
    for o in objects:
        r, c = cell_of(o.camera)
        out.append(_mapped(o.box, (c * CELL_W, r * CELL_H), (CELL_W / width, CELL_H / height)))
    return out


def tile_owners(boxes, width: float, height: float, grid, tile: int = 448) -> np.ndarray:
    """(n_tiles, GRID * GRID) int64: `token_owner` of every tile of a width x height image holding
    pixel `boxes`, tiled by `grid` (a TileGrid: cols x rows, thumbnail last), in the order the
    model reads the image tokens."""
    owners = np.empty((grid.n_grid + int(grid.thumbnail), GRID * GRID), np.int64)
    sx, sy = grid.cols * tile / width, grid.rows * tile / height
    for t in range(grid.n_grid):
        r, c = divmod(t, grid.cols)
        owners[t] = token_owner([_mapped(b, (-c * tile, -r * tile), (sx, sy)) for b in boxes], (tile, tile)).reshape(-1)
    if grid.thumbnail:
        owners[-1] = token_owner([_mapped(b, (0, 0), (tile / width, tile / height)) for b in boxes],
                                 (tile, tile)).reshape(-1)
    return owners


def cameras_under(x, y) -> np.ndarray:
    """1 + the camera whose cell of the six-camera canvas holds the points at fractions (x, y) of
    the canvas's width and height (broadcast)."""
    col = np.minimum(2, (np.asarray(x) * 3).astype(int))
    row = np.minimum(1, (np.asarray(y) * 2).astype(int))
    return 1 + row * 3 + col


def tile_targets(objects: list[SceneObject], boxes, width: float, height: float, grid, six: bool,
                 tile: int = 448, grid_cameras: bool = False) -> TileTargets:
    """Targets of the tiles of a width x height image holding `objects` at pixel `boxes` (the
    canvas boxes for six cameras), tiled by `grid` (a TileGrid: cols x rows, thumbnail last).
    `grid_cameras`: the six-camera grid tiles get the camera under each token too (what they can
    tell only from the camera names drawn in the canvas: InternVL gives tiles no position)."""
    colour_of, class_of = _label_ids(objects)
    digits_of_obj = np.array([[IGNORE] * len(NUMBERS) * DIGITS]
                             + [sum((digits_of(v) for v in numbers_1000(b, width, height)), []) for b in boxes],
                             np.int64)
    owners = tile_owners(boxes, width, height, grid, tile)
    colours, classes = colour_of[owners + 1], class_of[owners + 1]
    cameras = np.zeros_like(colours)
    digits = np.full(colours.shape + (len(NUMBERS) * DIGITS,), IGNORE, np.int64)
    centre = (np.arange(GRID) + 0.5) / GRID
    if six and grid_cameras:
        for t in range(grid.n_grid):
            r, c = divmod(t, grid.cols)
            cameras[t] = cameras_under(((c + centre) / grid.cols)[None, :], ((r + centre) / grid.rows)[:, None]).reshape(-1)
    if grid.thumbnail:
        digits[-1] = digits_of_obj[owners[-1] + 1]
        if six:
            cameras[-1] = cameras_under(centre[None, :], centre[:, None]).reshape(-1)
    return TileTargets(colours, classes, cameras, digits)
