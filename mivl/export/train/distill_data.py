"""Tiles to distil a vision encoder on: 448x448, no dynamic tiling (one tile per image), as the
Mini-InternVL paper distilled InternViT-300M.

`tile_source(spec, pre, seed)` returns (train, held_out), two indexable sources of (1, 3, 448, 448)
float32 tiles:
  synthetic        driving scenes drawn on the fly (`mivl.calib.synthetic`): a camera frame, or
                   the stitched six-camera canvas (30%), JPEG round-tripped; the held-out stream
                   is another seed, so it is never trained on;
  FOLDER           every image under it (jpg, png, ...);
  records.jsonl    every image of training records (`mivl.export.train.records`; a record's six
                   cameras count as one stitched canvas).
From a folder or records, every tenth image (at least one) is held out and never trained on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...calib.questions import SCENE_SIZE, jpeg_roundtrip
from ...calib.readers import folder_images
from ...edge.errors import InputError
from ...edge.multiview import CAMERAS, stitch_cameras
from ...edge.preprocess import preprocess_images
from .records import images_of, read_records

CANVAS_SHARE = 0.3
HELD_OUT_EVERY = 10
HELD_OUT_SEED = 977


class SyntheticTiles:
    def __init__(self, pre, seed: int, length: int = 10 ** 12):
        self.pre, self.seed, self.length = pre, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> np.ndarray:
        from ...calib.synthetic import draw_scene

        rng = np.random.default_rng([self.seed, i, 11])
        scene = draw_scene(int(rng.integers(2 ** 62)), *SCENE_SIZE, max_objects=3)
        quality = int(rng.integers(75, 96))
        if rng.random() < CANVAS_SHARE:
            image = stitch_cameras({k: jpeg_roundtrip(scene.cameras[k], quality) for k in CAMERAS})
        else:
            image = jpeg_roundtrip(scene.cameras[CAMERAS[int(rng.integers(len(CAMERAS)))]], quality)
        return preprocess_images([image], self.pre, max_tiles=1).pixels


class ImageTiles:
    """Tile i is image i (cycled): a path, an array, or a dict of six cameras."""

    def __init__(self, images: list, pre, length: int | None = None):
        self.images, self.pre = images, pre
        self.length = length if length is not None else len(images)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> np.ndarray:
        image = self.images[i % len(self.images)]
        if isinstance(image, dict):
            image = stitch_cameras(image)
        return preprocess_images([image], self.pre, max_tiles=1).pixels


def _images(spec: str) -> list:
    src = Path(spec)
    if src.is_dir():
        return [str(p) for p in folder_images(src)]
    if src.suffix == ".jsonl" and src.is_file():
        out = [img for rec in read_records(src) for img in images_of(rec)]
        if not out:
            raise InputError(f"{spec}: no record holds an image")
        return out
    raise InputError(f"distillation data {spec!r}: expected 'synthetic', a folder of images or a "
                     ".jsonl of training records")


def tile_source(spec: str, pre, seed: int = 0, held_out: int = 8):
    """(train, held_out) tile sources for `spec`; held_out tiles for the feature-cosine metric."""
    if held_out < 1:
        raise InputError(f"held_out must be >= 1, got {held_out}")
    if str(spec) == "synthetic":
        return SyntheticTiles(pre, seed), SyntheticTiles(pre, HELD_OUT_SEED + seed, held_out)
    images = _images(str(spec))
    if len(images) < 2:
        raise InputError(f"{spec}: distillation needs at least 2 images (one is held out), found {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    shuffled = [images[k] for k in order]
    kept = [im for k, im in enumerate(shuffled) if k % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    out = [im for k, im in enumerate(shuffled) if k % HELD_OUT_EVERY == HELD_OUT_EVERY - 1] or [kept.pop()]
    return ImageTiles(kept, pre), ImageTiles(out[:held_out], pre)
