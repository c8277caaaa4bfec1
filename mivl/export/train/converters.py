"""Converters from common dataset layouts to conversation records, and back.

  image_folder(root)      root/<label>/*.jpg  -> classification (multiple choice over all labels)
  coco(annotations.json)  COCO detection      -> grounding (unambiguous categories) + region records
  folder_labels / to_coco the inverse direction, so that a conversion can be checked by round trip
"""
from __future__ import annotations

import json
from pathlib import Path

from ...calib.readers import IMAGE_SUFFIXES
from ...edge.errors import InputError
from ...edge.parse import parse_boxes
from . import tasks
from .records import images_of


def image_folder(root: str | Path, prefix: str = tasks.CLS_PREFIX, suffix: str = tasks.CLS_SUFFIX
                 ) -> list[dict]:
    root = Path(root)
    labels = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not labels:
        raise InputError(f"{root}: expected one sub-folder per class label (root/<label>/*.jpg)")
    out = []
    for label in labels:
        for img in sorted(p for p in (root / label).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            out.append(tasks.classification(str(img), labels, label, prefix, suffix,
                                            rid=f"{label}/{img.relative_to(root / label)}"))
    return out


def folder_labels(records: list[dict]) -> list[tuple[str, str]]:
    """(image path, label) of classification records."""
    return [(images_of(r)[0], r["conversations"][1]["value"]) for r in records]


def coco(path: str | Path, images_root: str | Path | None = None, kinds=("grounding", "region")
         ) -> list[dict]:
    """COCO detection annotations -> grounding and region records (boxes in 0..1000)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = {im["id"]: im for im in data["images"]}
        names = {c["id"]: c["name"] for c in data["categories"]}
        anns = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a COCO detection file ({e})") from None
    root = Path(images_root) if images_root else path.parent
    by_image: dict[int, list] = {}
    for a in anns:
        if a.get("iscrowd"):
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for image_id in sorted(by_image):
        im = images.get(image_id)
        if im is None:
            raise InputError(f"{path}: annotation for unknown image id {image_id}")
        size, file = (int(im["width"]), int(im["height"])), str(root / im["file_name"])
        group = by_image[image_id]
        counts: dict = {}
        for a in group:
            counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
        for a in group:
            x, y, w, h = a["bbox"]
            box, name = (x, y, x + w, y + h), names[a["category_id"]]
            if "grounding" in kinds and counts[a["category_id"]] == 1:
                out.append(tasks.grounding(file, name, box, size, rid=f"{image_id}/{a['id']}/g"))
            if "region" in kinds:
                out.append(tasks.region(file, name, box, size, rid=f"{image_id}/{a['id']}/r"))
    return out


def to_coco(records: list[dict], sizes: dict[str, tuple[int, int]]) -> dict:
    """Grounding / region records -> COCO detection (one annotation per distinct image+label+box)."""
    images, cats, anns, seen = {}, {}, [], set()
    for r in records:
        file = images_of(r)[0]
        w, h = sizes[file]
        images.setdefault(file, {"id": len(images) + 1, "file_name": file, "width": w, "height": h})
        for b in parse_boxes(r["conversations"][1]["value"], (w, h)):
            label = b.label or r["conversations"][1]["value"].split("<box>")[0].strip()
            key = (file, label, b.box)
            if key in seen:
                continue
            seen.add(key)
            cats.setdefault(label, len(cats) + 1)
            x1, y1, x2, y2 = b.pixels
            anns.append({"id": len(anns) + 1, "image_id": images[file]["id"], "category_id": cats[label],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    return {"images": list(images.values()), "annotations": anns,
            "categories": [{"id": i, "name": n} for n, i in cats.items()]}
