"""Synthetic six-camera driving scenes with known contents (NumPy + OpenCV drawing).

Each camera shows sky, road, lane markings and a few objects (car, truck, bus, pedestrian, cone,
traffic light) of known class, colour and box. The scenes calibrate INT8 vision engines, feed the
demo, and give questions with exact answers to train and test the embedded default model. Real
camera data calibrates better; this is the no-download default.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..edge.multiview import CAMERAS

CLASSES = ("car", "truck", "bus", "pedestrian", "cone", "traffic light")
COLOURS = {"red": (220, 30, 30), "green": (40, 170, 60), "blue": (40, 70, 220),
           "yellow": (235, 205, 40), "white": (235, 235, 235), "black": (25, 25, 25)}
SIZES = {"car": (0.16, 0.10), "truck": (0.22, 0.18), "bus": (0.30, 0.20), "pedestrian": (0.04, 0.16),
         "cone": (0.035, 0.06), "traffic light": (0.03, 0.12)}


@dataclass
class SceneObject:
    cls: str
    colour: str
    camera: str
    box: tuple[int, int, int, int]   # x1, y1, x2, y2 in the camera's pixels


class Frames(Mapping):
    """Camera name -> (H, W, 3) uint8 RGB frame, each rendered on first access."""

    def __init__(self, render, names):
        self._render, self._names, self._done = render, tuple(names), {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._done:
            self._done[name] = self._render(name)
        return self._done[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass
class Scene:
    cameras: Mapping[str, np.ndarray]   # name -> (H, W, 3) uint8 RGB
    objects: list[SceneObject] = field(default_factory=list)

    def in_camera(self, name: str) -> list[SceneObject]:
        return [o for o in self.objects if o.camera == name]


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Sky, ground, a road with its dashed centre line and pixel noise; alike for every camera."""
    import cv2

    img = np.empty((h, w, 3), np.uint8)
    horizon = int(h * rng.uniform(0.38, 0.48))
    sky_top, sky_bot = np.array(rng.integers(90, 160, 3)), np.array([200, 215, 235])
    t = np.linspace(0, 1, horizon)[:, None]
    img[:horizon] = (sky_top * (1 - t) + sky_bot * t).astype(np.uint8)[:, None, :]
    ground = np.array(rng.integers(70, 110, 3))
    img[horizon:] = ground
    road = np.array([[w * 0.45, horizon], [w * 0.55, horizon], [w * 0.98, h], [w * 0.02, h]], np.int32)
    cv2.fillPoly(img, [road], tuple(int(v) for v in rng.integers(60, 90) * np.ones(3)))
    for k in range(6):  # dashed centre line
        y0 = horizon + (h - horizon) * k / 6
        y1 = y0 + (h - horizon) / 14
        cv2.line(img, (w // 2, int(y0)), (w // 2, int(y1)), (230, 230, 230), max(1, w // 400))
    noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
    noise += img                      # in place: the same sums, no int16 copy of the image
    return np.clip(noise, 0, 255, out=noise).astype(np.uint8)


def _draw(img: np.ndarray, obj: SceneObject) -> None:
    import cv2

    x1, y1, x2, y2 = obj.box
    c = COLOURS[obj.colour]
    if obj.cls in ("car", "truck", "bus"):
        # the three differ in shape as on the road, not only in size: a car one window band, a
        # truck a windowless cargo box behind its cab, a bus a row of windows along its side
        w, h = x2 - x1, y2 - y1
        cv2.rectangle(img, (x1, y1), (x2, y2), c, -1)
        win = (min(255, c[0] // 3 + 150), min(255, c[1] // 3 + 160), min(255, c[2] // 3 + 180))
        top, bottom = y1 + h // 8, y1 + h // 2
        if obj.cls == "car":
            cv2.rectangle(img, (x1 + w // 8, top), (x2 - w // 8, bottom), win, -1)
        elif obj.cls == "truck":
            cab = x2 - w // 3
            cv2.rectangle(img, (cab + w // 16, top), (x2 - w // 16, bottom), win, -1)
            cv2.line(img, (cab, y1), (cab, y2), (20, 20, 20), max(1, w // 40))
        else:
            pitch = (w - w // 8) / 5
            gap = max(1, int(pitch) // 6)
            for k in range(5):
                a = int(x1 + w // 16 + k * pitch)
                cv2.rectangle(img, (a + gap, top), (int(a + pitch) - gap, bottom), win, -1)
        r = max(2, h // 6)
        for cx in (x1 + (x2 - x1) // 5, x2 - (x2 - x1) // 5):
            cv2.circle(img, (cx, y2), r, (15, 15, 15), -1)
    elif obj.cls == "pedestrian":
        r = max(2, (x2 - x1) // 2)
        cv2.circle(img, ((x1 + x2) // 2, y1 + r), r, (230, 190, 160), -1)
        cv2.rectangle(img, (x1, y1 + 2 * r), (x2, y2), c, -1)
    elif obj.cls == "cone":
        pts = np.array([[(x1 + x2) // 2, y1], [x2, y2], [x1, y2]], np.int32)
        cv2.fillPoly(img, [pts], c)
    else:  # traffic light: a pole and a housing with one lit lamp of the object's colour
        cv2.rectangle(img, (x1, y1), (x2, y1 + (y2 - y1) // 2), (30, 30, 30), -1)
        cv2.line(img, ((x1 + x2) // 2, y1 + (y2 - y1) // 2), ((x1 + x2) // 2, y2), (60, 60, 60), 2)
        cv2.circle(img, ((x1 + x2) // 2, y1 + (y2 - y1) // 4), max(2, (x2 - x1) // 3), c, -1)


def _place(rng, cls, w, h) -> tuple[int, int, int, int]:
    sw, sh = SIZES[cls]
    scale = rng.uniform(0.8, 1.3)
    bw, bh = max(4, int(sw * w * scale)), max(4, int(sh * h * scale * 1.6))
    x1 = int(rng.uniform(0.02, 0.98) * w - bw / 2)
    y2 = int(h * rng.uniform(0.6, 0.95))
    x1 = int(np.clip(x1, 0, w - bw - 1))
    y1 = int(np.clip(y2 - bh, 0, h - 2))
    return x1, y1, x1 + bw, y2


def draw_scene(seed: int, width: int = 1600, height: int = 900, max_objects: int = 3) -> Scene:
    """Six camera frames and the objects drawn in them, reproducible for a seed.

    The objects are placed at once; each frame is rendered when first looked at."""
    rng = np.random.default_rng(seed)
    objects = []
    for name in CAMERAS:
        for _ in range(int(rng.integers(0, max_objects + 1))):
            cls = str(rng.choice(CLASSES))
            colour = str(rng.choice(list(COLOURS)))
            objects.append(SceneObject(cls, colour, name, _place(rng, cls, width, height)))

    def render(name: str) -> np.ndarray:
        img = _background(np.random.default_rng([seed, CAMERAS.index(name)]), width, height)
        for obj in objects:
            if obj.camera == name:
                _draw(img, obj)
        return img
    return Scene(Frames(render, CAMERAS), objects)


def scene_images(n: int, seed: int = 0, width: int = 1600, height: int = 900) -> list[np.ndarray]:
    """n single camera frames drawn from synthetic scenes (for calibration)."""
    out = []
    k = 0
    while len(out) < n:
        scene = draw_scene(seed + k, width, height)
        out.extend(scene.cameras.values())
        k += 1
    return out[:n]


def calibration_scenes(n: int, seed: int = 0, width: int = 1600, height: int = 900) -> list[np.ndarray]:
    """n images fed as the SDK feeds them, each from a scene of its own: six-camera canvases (the
    cameras stitched 2x3 with their names drawn, the multi-view input) alternating with single
    camera frames. The canvas's thumbnail (six small cameras and their labels) is a tile no single
    frame gives, so an INT8 range calibrated on frames alone misses it."""
    from ..edge.multiview import stitch_cameras

    out = []
    for k in range(n):
        scene = draw_scene(seed + k, width, height)
        out.append(stitch_cameras(scene.cameras) if k % 2 == 0 else scene.cameras[CAMERAS[k // 2 % 6]])
    return out
