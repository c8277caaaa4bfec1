"""Images to the normalised tile batch the vision encoder takes (NumPy only, no torch).

`preprocess_image` is InternVL's `load_image`: dynamic tiling, PIL-exact bicubic resize, row-major
cut, thumbnail last, ImageNet normalisation, NCHW float32. Several images share a tile budget;
video frames are one tile each; six cameras are stitched first (multiview.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import native
from .errors import InputError
from .image_io import ImageInput, load_rgb
from .resize import resize_bicubic
from .tiling import TileGrid, choose_grid, tiles_per_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 448          # tile side in pixels (force_image_size)
    min_tiles: int = 1             # min_dynamic_patch
    max_tiles: int = 12            # max_dynamic_patch (released configs: 12; eval scripts: 6)
    use_thumbnail: bool = True     # append a whole-image tile when the grid has > 1 tile
    dynamic: bool = True           # dynamic_image_size; off = one 448x448 tile per image
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("mean", "std"):
            if k in known:
                known[k] = tuple(float(x) for x in known[k])
        return cls(**known)


@dataclass
class TileBatch:
    """Normalised tiles of one prompt's images, in prompt order."""
    pixels: np.ndarray                                   # (N, 3, S, S) float32
    grids: list[TileGrid] = field(default_factory=list)  # one per image
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each source

    @property
    def tiles_per_image(self) -> list[int]:
        return [g.n_tiles for g in self.grids]

    @property
    def n_tiles(self) -> int:
        return sum(g.n_tiles for g in self.grids) if self.grids else int(self.pixels.shape[0])


def cut_tiles(rgb: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(H, W, 3) uint8 -> (n_tiles, S, S, 3) uint8: canvas tiles row-major, then the thumbnail."""
    s = grid.tile_size
    canvas = resize_bicubic(rgb, *grid.canvas_size)
    # (rows*S, cols*S, 3) -> (rows, S, cols, S, 3) -> (rows, cols, S, S, 3): row-major tile order
    tiles = canvas.reshape(grid.rows, s, grid.cols, s, 3).transpose(0, 2, 1, 3, 4)
    tiles = tiles.reshape(grid.n_grid, s, s, 3)
    if grid.thumbnail:
        thumb = resize_bicubic(rgb, s, s)
        tiles = np.concatenate([tiles, thumb[None]], axis=0)
    return tiles


def _normalise_lut(mean, std) -> np.ndarray:
    # The reference computes (x / 255 - mean) / std in float32; a lookup table of those 256
    # values per channel gives the very same floats for a fraction of the work.
    x = np.arange(256, dtype=np.float32) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32)[:, None]
    s = np.asarray(std, dtype=np.float32)[:, None]
    return ((x[None, :] - m) / s).astype(np.float32)  # (3, 256)


_LUTS: dict = {}


def normalise(tiles: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32, ImageNet-normalised."""
    n, h, w, _ = tiles.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    normalise_into(tiles, out, mean, std)
    return out


def grid_for(rgb: np.ndarray, cfg: PreprocessConfig, max_tiles: int | None = None) -> TileGrid:
    h, w = rgb.shape[:2]
    return grid_for_size(w, h, cfg, max_tiles)


def grid_for_size(w: int, h: int, cfg: PreprocessConfig, max_tiles: int | None = None) -> TileGrid:
    """The tile grid of a w x h picture: the one tile-choice rule of every path (CPU and GPU)."""
    budget = cfg.max_tiles if max_tiles is None else max_tiles
    if not cfg.dynamic:
        return TileGrid(1, 1, thumbnail=False, tile_size=cfg.image_size)
    return choose_grid(w, h, min(cfg.min_tiles, budget), budget, cfg.use_thumbnail, cfg.image_size)


def tiles_of(rgb: np.ndarray, cfg: PreprocessConfig, max_tiles: int | None = None):
    grid = grid_for(rgb, cfg, max_tiles)
    return cut_tiles(rgb, grid), grid


def write_tiles(rgb: np.ndarray, grid: TileGrid, out: np.ndarray, cfg: PreprocessConfig) -> None:
    """Normalised tiles of one image straight into out (n_tiles, 3, S, S), no uint8 tile copies.

    The thumbnail is resized on a second thread while the grid tiles are normalised.
    """
    s = grid.tile_size
    thumb = None
    if grid.thumbnail:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1)
        thumb = pool.submit(resize_bicubic, rgb, s, s)
    canvas = resize_bicubic(rgb, *grid.canvas_size)
    view = canvas.reshape(grid.rows, s, grid.cols, s, 3).transpose(0, 2, 1, 3, 4).reshape(
        grid.n_grid, s, s, 3) if grid.n_grid > 1 else canvas[None]
    normalise_into(view, out[:grid.n_grid], cfg.mean, cfg.std)
    if thumb is not None:
        normalise_into(thumb.result()[None], out[grid.n_grid:grid.n_grid + 1], cfg.mean, cfg.std)
        pool.shutdown()


def normalise_into(tiles: np.ndarray, out: np.ndarray, mean, std) -> None:
    """(N, S, S, 3) uint8 tiles (any view) -> out (N, 3, S, S) float32, through the lookup table."""
    key = (tuple(mean), tuple(std))
    lut = _LUTS.get(key)
    if lut is None:
        lut = _LUTS[key] = _normalise_lut(mean, std)
    if native.available() and tiles.strides[2:] == (3, 1) and out.flags.c_contiguous:
        for tile, dst in zip(tiles, out):
            native.normalise_tile(tile, lut, dst)
        return
    for c in range(3):
        np.take(lut[c], tiles[..., c], out=out[:, c])


def _batch(rgbs: list[np.ndarray], grids: list[TileGrid], cfg: PreprocessConfig) -> TileBatch:
    s = cfg.image_size
    pixels = np.empty((sum(g.n_tiles for g in grids), 3, s, s), np.float32)
    k = 0
    for rgb, grid in zip(rgbs, grids):
        write_tiles(rgb, grid, pixels[k:k + grid.n_tiles], cfg)
        k += grid.n_tiles
    return TileBatch(pixels, list(grids), [(r.shape[1], r.shape[0]) for r in rgbs])


def preprocess_image(image: ImageInput, cfg: PreprocessConfig = PreprocessConfig(), *,
                     max_tiles: int | None = None, channels: str = "RGB") -> TileBatch:
    """One image -> its tile batch (InternVL's load_image)."""
    return preprocess_images([image], cfg, max_tiles=max_tiles, channels=channels)


def preprocess_images(images: list, cfg: PreprocessConfig = PreprocessConfig(), *,
                      max_tiles: int | None = None, channels: str = "RGB") -> TileBatch:
    """Several images of one prompt; each gets max(1, max_tiles // n) tiles."""
    if not images:
        raise InputError("no images given; pass at least one")
    budget = tiles_per_image(cfg.max_tiles if max_tiles is None else max_tiles, len(images))
    rgbs = [load_rgb(image, channels=channels) for image in images]
    return _batch(rgbs, [grid_for(rgb, cfg, budget) for rgb in rgbs], cfg)


def preprocess_frames(frames: list, cfg: PreprocessConfig = PreprocessConfig(), *,
                      channels: str = "RGB") -> TileBatch:
    """Video frames: one 448x448 tile each (max_num=1, no thumbnail)."""
    if not frames:
        raise InputError("no video frames given")
    rgbs = [load_rgb(frame, channels=channels) for frame in frames]
    return _batch(rgbs, [TileGrid(1, 1, thumbnail=False, tile_size=cfg.image_size)] * len(rgbs), cfg)
