"""Dynamic tiling: the grid rule of InternVL's `dynamic_preprocess`, as plain arithmetic.

An image of W x H is cut into cols x rows tiles of 448 x 448, the grid chosen among every
(cols, rows) with min_tiles <= cols*rows <= max_tiles whose aspect cols/rows is closest to W/H.
On an exact tie the later (larger) grid wins only if the image has more than half the pixels
that grid would hold. Tiles are ordered row-major; a thumbnail of the whole image is appended
last when enabled and the grid has more than one tile.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

TILE_SIZE = 448


@dataclass(frozen=True)
class TileGrid:
    cols: int
    rows: int
    thumbnail: bool  # a 448x448 thumbnail of the whole image follows the grid tiles
    tile_size: int = TILE_SIZE

    @property
    def n_grid(self) -> int:
        return self.cols * self.rows

    @property
    def n_tiles(self) -> int:
        return self.n_grid + (1 if self.thumbnail else 0)

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(width, height) the whole image is resized to before cutting."""
        return self.cols * self.tile_size, self.rows * self.tile_size

    def tile_box(self, k: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of grid tile k on the canvas: column k % cols, row k // cols."""
        s = self.tile_size
        x, y = (k % self.cols) * s, (k // self.cols) * s
        return x, y, x + s, y + s


def candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """Every (cols, rows) with min_tiles <= cols*rows <= max_tiles, sorted by tile count."""
    check_tile_range(min_tiles, max_tiles)
    grids = {(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1)
             if min_tiles <= c * r <= max_tiles}
    return sorted(grids, key=lambda g: (g[0] * g[1], g))


def check_tile_range(min_tiles: int, max_tiles: int) -> None:
    if not (isinstance(min_tiles, int) and isinstance(max_tiles, int)):
        raise InputError(f"min/max tiles must be integers, got {min_tiles!r}, {max_tiles!r}")
    if not 1 <= min_tiles <= max_tiles:
        raise InputError(f"need 1 <= min_tiles <= max_tiles, got min_tiles={min_tiles}, "
                         f"max_tiles={max_tiles}")
    if max_tiles > 64:
        raise InputError(f"max_tiles={max_tiles} is more than any InternVL model was trained for "
                         "(12 is the released default); use at most 64")


def choose_grid(width: int, height: int, min_tiles: int = 1, max_tiles: int = 12,
                use_thumbnail: bool = True, tile_size: int = TILE_SIZE) -> TileGrid:
    """The grid InternVL picks for an image of width x height pixels."""
    if width <= 0 or height <= 0:
        raise InputError(f"image has zero size ({width}x{height}); expected a picture of at least 1x1")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    cols, rows = best
    return TileGrid(cols, rows, thumbnail=use_thumbnail and cols * rows > 1, tile_size=tile_size)


def tiles_per_image(max_tiles: int, n_images: int) -> int:
    """Tile budget of each image when a prompt carries several (InternVL's training rule)."""
    if n_images < 1:
        raise InputError(f"need at least one image, got {n_images}")
    return max(1, max_tiles // n_images)
