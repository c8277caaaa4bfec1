"""Structured objects out of answer text: grounded boxes and DriveLM object references.

`<ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>` boxes are in 0..1000 of the image (x by width,
y by height) and come back also in pixels of that image. DriveLM's `<c{id},CAM_X,x,y>` gives a
point in 0..1000 of the stitched six-camera canvas, mapped back to the named camera's pixels.

The text is a model's output, so nothing about it is trusted: the scan is linear in its length
(every search starts where the previous one ended, every number has a bounded length), nothing in
it raises, and every coordinate is finite and clamped (0..1000, and inside the image or camera).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from .multiview import CAMERAS, CANVAS_H, CANVAS_W, CELL_H, CELL_W, cell_of

NUMBER = r"-?\d{1,12}(?:\.\d{0,12})?"            # bounded: no 4,300-digit int() conversions
ONE_BOX = re.compile(r"\[\s*(" + NUMBER + r")\s*,\s*(" + NUMBER + r")\s*,\s*(" + NUMBER + r")\s*,\s*("
                     + NUMBER + r")\s*\]")
DRIVELM_HEAD = r"<c(?P<id>\d{1,9}),(?P<cam>CAM_[A-Z_]{1,16})"
DRIVELM = re.compile(DRIVELM_HEAD + r",(?P<x>" + NUMBER + r"),(?P<y>" + NUMBER + r")>")
DRIVELM_CAMERA = re.compile(DRIVELM_HEAD)        # a reference's camera, its numbers parsed or not
MAX_LABEL = 512                                   # characters kept of a <ref> phrase
REF = re.compile(r"<ref>([^<]{0,%d})</ref>" % MAX_LABEL)


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


def _coord(s: str) -> float:
    """A matched NUMBER as a coordinate in 0..1000 (the pattern admits only finite values)."""
    v = float(s)
    return min(1000.0, max(0.0, v)) if math.isfinite(v) else 0.0


def _label_before(text: str, box_start: int, floor: int) -> str | None:
    """The phrase of a `<ref>...</ref>` that ends just before a box (whitespace between), looked
    for only after `floor` (the end of the previous box), so no character is searched twice."""
    end = box_start
    while end > floor and text[end - 1].isspace():
        end -= 1
    if not text.startswith("</ref>", end - 6) or end - 6 < floor:
        return None
    open_at = text.rfind("<ref>", floor, end - 6)
    if open_at < 0:
        return None
    return text[open_at + 5:end - 6].strip()[:MAX_LABEL]


def parse_boxes(text: str, image_size: tuple[int, int] | None = None) -> list[Box]:
    out, pos, floor = [], 0, 0
    while True:
        start = text.find("<box>", pos)
        if start < 0:
            break
        end = text.find("</box>", start + 5)
        if end < 0:                        # no closer after this opener: none after later ones either
            break
        label = _label_before(text, start, floor)
        for b in ONE_BOX.finditer(text, start + 5, end):
            box = tuple(_coord(v) for v in b.groups())
            px = None
            if image_size:
                w, h = image_size
                px = (box[0] / 1000 * w, box[1] / 1000 * h, box[2] / 1000 * w, box[3] / 1000 * h)
            out.append(Box(label, box, px))
        pos = floor = end + 6
    return out


def _cell_pixel(v: float, canvas: int, index: int, cell: int, size: int) -> float:
    """A canvas coordinate `v` in 0..1000 as a pixel of the camera in cell `index` (`cell` canvas
    pixels a cell, `size` the camera's pixels), clamped to that camera; one division of exact
    products, so that whole-number digits give the float nearest the exact pixel."""
    at = min(max(v * canvas - 1000 * index * cell, 0.0), 1000.0 * cell)   # in 1/1000 canvas pixels
    return at * size / (1000 * cell)


def parse_camera_points(text: str, camera_sizes: dict[str, tuple[int, int]] | None = None
                        ) -> list[CameraPoint]:
    out = []
    for m in DRIVELM.finditer(text):
        cam = m.group("cam")
        if cam not in CAMERAS:
            continue
        x, y = _coord(m.group("x")), _coord(m.group("y"))
        row, col = cell_of(cam)
        w, h = (camera_sizes or {}).get(cam, (1600, 900))
        px = (_cell_pixel(x, CANVAS_W, col, CELL_W, w), _cell_pixel(y, CANVAS_H, row, CELL_H, h))
        out.append(CameraPoint(int(m.group("id")), cam, (x, y), px))
    return out


def named_camera(text: str) -> str | None:
    """The camera the text's first DriveLM reference names (`<c1,CAM_BACK,..`), even when its
    numbers are missing or malformed; None when there is none or the name is not a camera's."""
    m = DRIVELM_CAMERA.search(text)
    return m.group("cam") if m and m.group("cam") in CAMERAS else None


def ref_phrase(text: str) -> str | None:
    """The phrase of the text's first `<ref>..</ref>` (up to 512 characters, no markup), or None."""
    m = REF.search(text)
    return m.group(1) if m else None


def parse_objects(text: str, image_size=None, camera_sizes=None) -> list:
    return [*parse_boxes(text, image_size), *parse_camera_points(text, camera_sizes)]
