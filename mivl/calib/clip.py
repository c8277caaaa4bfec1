"""A synthetic six-camera driving clip: the objects of one scene moving across their cameras.

`SixCameraClip(seed, width, height)` gives frame t of every camera (`frames(t)`) and the objects
with their boxes at t (`objects(t)`), a pure function of (seed, t). Backgrounds are rendered once;
each object slides horizontally at its own speed and wraps around the frame. `write(dir, n, fps)`
saves six MP4 files, so that the demo's video-file sources can be tried without cameras.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..edge.multiview import CAMERAS
from .synthetic import SceneObject, _background, _draw, draw_scene


class SixCameraClip:
    def __init__(self, seed: int = 0, width: int = 800, height: int = 450, max_objects: int = 2):
        self.scene = draw_scene(seed, width, height, max_objects)
        self.width, self.height, self.seed = width, height, seed
        rng = np.random.default_rng([seed, 99])
        self.speed = [float(rng.uniform(-0.012, 0.012)) * width for _ in self.scene.objects]
        self._bg = {name: _background(np.random.default_rng([seed, i]), width, height)
                    for i, name in enumerate(CAMERAS)}

    def objects(self, t: int) -> list[SceneObject]:
        out = []
        for o, v in zip(self.scene.objects, self.speed):
            x1, y1, x2, y2 = o.box
            w = x2 - x1
            span = self.width - w - 1
            x = (x1 + v * t) % (2 * span) if span > 0 else 0      # bounce between the frame edges
            x = int(2 * span - x if x > span else x)
            out.append(replace(o, box=(x, y1, x + w, y2)))
        return out

    def frames(self, t: int) -> dict[str, np.ndarray]:
        imgs = {name: bg.copy() for name, bg in self._bg.items()}
        for o in self.objects(t):
            _draw(imgs[o.camera], o)
        return imgs

    def write(self, out_dir: str | Path, n_frames: int, fps: float = 10.0) -> dict[str, Path]:
        import cv2

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / f"{name}.mp4" for name in CAMERAS}
        writers = {name: cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (self.width, self.height)) for name, p in paths.items()}
        try:
            for t in range(n_frames):
                for name, img in self.frames(t).items():
                    writers[name].write(np.ascontiguousarray(img[:, :, ::-1]))
        finally:
            for w in writers.values():
                w.release()
        return paths
