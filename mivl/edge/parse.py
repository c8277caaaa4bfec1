"""Structured objects out of answer text: grounded boxes and DriveLM object references.

`<ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>` boxes are in 0..1000 of the image (x by width,
y by height) and come back also in pixels of that image. DriveLM's `<c{id},CAM_X,x,y>` gives a
point in 0..1000 of the stitched six-camera canvas, mapped back to the named camera's pixels.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .multiview import CAMERAS, CANVAS_H, CANVAS_W, CELL_H, CELL_W

BOX = re.compile(r"(?:<ref>(?P<label>.*?)</ref>\s*)?<box>\s*\[(?P<boxes>.*?)\]\s*</box>", re.S)
ONE_BOX = re.compile(r"\[\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\]")
DRIVELM = re.compile(r"<c(?P<id>\d+),(?P<cam>CAM_[A-Z_]+),(?P<x>-?[\d.]+),(?P<y>-?[\d.]+)>")


@dataclass
class Box:
    label: str | None
    box: tuple[float, float, float, float]          # 0..1000 normalised
    pixels: tuple[float, float, float, float] | None  # in the image's own pixels, when known
    kind: str = "box"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CameraPoint:
    id: int
    camera: str
    point: tuple[float, float]                       # 0..1000 of the stitched canvas
    pixels: tuple[float, float]                      # in that camera's pixels
    kind: str = "camera_point"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_boxes(text: str, image_size: tuple[int, int] | None = None) -> list[Box]:
    out = []
    for m in BOX.finditer(text):
        label = m.group("label").strip() if m.group("label") is not None else None
        for b in ONE_BOX.finditer("[" + m.group("boxes") + "]"):
            box = tuple(min(1000.0, max(0.0, float(v))) for v in b.groups())
            px = None
            if image_size:
                w, h = image_size
                px = (box[0] / 1000 * w, box[1] / 1000 * h, box[2] / 1000 * w, box[3] / 1000 * h)
            out.append(Box(label, box, px))
    return out


def parse_camera_points(text: str, camera_sizes: dict[str, tuple[int, int]] | None = None
                        ) -> list[CameraPoint]:
    out = []
    for m in DRIVELM.finditer(text):
        cam = m.group("cam")
        if cam not in CAMERAS:
            continue
        x, y = float(m.group("x")), float(m.group("y"))
        col, row = CAMERAS.index(cam) % 3, CAMERAS.index(cam) // 3
        cx = x / 1000 * CANVAS_W - col * CELL_W
        cy = y / 1000 * CANVAS_H - row * CELL_H
        w, h = (camera_sizes or {}).get(cam, (1600, 900))
        px = (min(max(cx, 0.0), CELL_W) / CELL_W * w, min(max(cy, 0.0), CELL_H) / CELL_H * h)
        out.append(CameraPoint(int(m.group("id")), cam, (x, y), px))
    return out


def parse_objects(text: str, image_size=None, camera_sizes=None) -> list:
    return [*parse_boxes(text, image_size), *parse_camera_points(text, camera_sizes)]
