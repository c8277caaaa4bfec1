"""Calibration inputs: a folder of images, a JSONL of {"image": path, "prompt": ...} records, or
the built-in synthetic scenes. Sampling is reproducible for a seed."""
from __future__ import annotations

import json
import random
from pathlib import Path

from ..edge.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def folder_images(path: Path) -> list[Path]:
    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}")
    return files


def jsonl_lines(path: Path):
    """(line number, object) of each non-empty line of a JSONL file; a bad line names itself."""
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not JSON ({e.msg})") from None


def jsonl_images(path: Path) -> list[Path]:
    out = []
    base = Path(path).parent
    for n, rec in jsonl_lines(path):
        imgs = rec.get("image") or rec.get("images")
        if imgs is None:
            raise InputError(f"{path}:{n}: record has no 'image' field")
        for img in [imgs] if isinstance(imgs, str) else imgs:
            p = Path(img) if Path(img).is_absolute() else base / img
            if not p.is_file():
                raise InputError(f"{path}:{n}: image {img!r} not found")
            out.append(p)
    if not out:
        raise InputError(f"{path} holds no image records")
    return out


def calibration_images(source: str | Path | None, n: int, seed: int = 0) -> list:
    """n images (paths or arrays) to calibrate with, sampled reproducibly."""
    if n < 1:
        raise InputError(f"calibration size must be >= 1, got {n}")
    if source is None or str(source) == "synthetic":
        from .synthetic import calibration_scenes

        return calibration_scenes(n, seed=seed)
    src = Path(source)
    if src.is_dir():
        files = folder_images(src)
    elif src.suffix == ".jsonl" and src.is_file():
        files = jsonl_images(src)
    else:
        raise InputError(f"--calib {source!r}: expected a folder of images, a .jsonl of image "
                         "records, or 'synthetic'")
    rng = random.Random(seed)
    return rng.sample(files, n) if len(files) > n else files
