"""Training records drawn on the fly from synthetic driving scenes (`mivl.calib`).

`SyntheticTasks(kinds, seed, turns)` is an endless indexable source: record i is conversation i
of the stream `seed` (`mivl.calib.questions.draw_conversation`: up to `turns` questions about one
view, so one image encoding teaches several answers), so it needs no disk, is the same on every
rank and on resume, and never repeats. Held-out evaluation draws from other seeds.
"""
from __future__ import annotations

import numpy as np

from ...calib.questions import KINDS, MAX_OBJECTS, SCENE_SIZE, SIX_CAMERA_KINDS, ask_view, draw_conversation, jpeg_roundtrip
from ...calib.synthetic import draw_scene
from ...edge.errors import InputError
from ...edge.multiview import CAMERAS
from . import tasks

GENERAL_KINDS = ("caption",)
DOMAIN_KINDS = tuple(k for k in KINDS if k not in GENERAL_KINDS)
ENDLESS = 10 ** 12


class SyntheticTasks:
    def __init__(self, kinds=DOMAIN_KINDS, seed: int = 0, size: tuple[int, int] = SCENE_SIZE,
                 length: int = ENDLESS, turns: int = 1, max_objects: int = MAX_OBJECTS):
        self.kinds, self.seed, self.size, self.length, self.turns = tuple(kinds), seed, size, length, turns
        self.max_objects = max_objects

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        qs, cams = draw_conversation(self.seed, i, self.kinds, self.size, self.turns, self.max_objects)
        return tasks.from_questions(qs, cams, rid=f"synthetic/{self.seed}/{i}/{qs[0].kind}")


class SyntheticViews:
    """Conversations about a fixed pool of `views` synthetic views, each asked again and again:
    record i asks up to `turns` new questions about view i % views (all six cameras with
    probability `six_share`, else one camera; the kinds of `kinds` that fit the view). The views'
    pixels repeat exactly, so with a frozen vision side the trainer's feature cache computes each
    view's image features once (`TrainConfig.feature_cache_gb`). `max_tiles`: the records' tile
    budget (1: each view as one 448 tile, the six-camera canvas included; None: the model's).
    `absent_share`, `reserve_absent`: how many questions are about something not there (`ask_view`).
    A pure function of its arguments."""

    def __init__(self, kinds=DOMAIN_KINDS, seed: int = 0, views: int = 500, turns: int = 4,
                 six_share: float = 0.5, size: tuple[int, int] = SCENE_SIZE, max_objects: int = MAX_OBJECTS,
                 length: int = ENDLESS, max_tiles: int | None = None, absent_share: float = 0.25,
                 reserve_absent: bool = False):
        if (views < 1 or turns < 1 or not 0 <= six_share <= 1 or (max_tiles is not None and max_tiles < 1)
                or not 0 <= absent_share < 1):
            raise InputError(f"views, turns and max_tiles must be >= 1, six_share in 0..1 and absent_share in "
                             f"0..1 (1 excluded); got views={views}, turns={turns}, six_share={six_share}, "
                             f"max_tiles={max_tiles}, absent_share={absent_share}")
        self.max_tiles, self.absent_share, self.reserve_absent = max_tiles, absent_share, reserve_absent
        self.kinds, self.seed, self.views, self.turns, self.six_share = tuple(kinds), seed, views, turns, six_share
        self.size, self.max_objects, self.length = size, max_objects, length
        six = [k for k in self.kinds if k in SIX_CAMERA_KINDS]
        if not six and six_share > 0 or len(six) == len(self.kinds) and six_share < 1:
            raise InputError(f"kinds {self.kinds} do not fit six_share={six_share}: six-camera views need "
                             f"some of {', '.join(SIX_CAMERA_KINDS)}, one-camera views some other kind")

    def __len__(self) -> int:
        return self.length

    def view(self, v: int):
        """(scene, camera or None for six, JPEG quality) of view v."""
        rng = np.random.default_rng([self.seed, v, 11])
        scene = draw_scene(int(rng.integers(2 ** 62)), *self.size, max_objects=self.max_objects)
        if rng.random() < self.six_share:
            camera = None
        else:   # one camera, one that shows something when any does
            shown = sorted({o.camera for o in scene.objects}, key=CAMERAS.index) or list(CAMERAS)
            camera = shown[int(rng.integers(len(shown)))]
        return scene, camera, int(rng.integers(75, 96))

    def __getitem__(self, i: int) -> dict:
        return self.draw(i)[3]

    def draw(self, i: int) -> tuple:
        """Record i with what it was made from: (view index, questions, camera or None for six,
        record)."""
        if not 0 <= i < self.length:
            raise IndexError(i)
        for k in range(min(self.views, 100)):   # nothing askable about a view: the next one
            v = (i + k) % self.views
            scene, camera, quality = self.view(v)
            rng = np.random.default_rng([self.seed, i, 12] + ([k] if k else []))
            qs = ask_view(scene, rng, self.kinds, self.size, camera, self.turns, self.absent_share,
                          self.reserve_absent)
            if qs:
                shown = CAMERAS if camera is None else (camera,)
                frames = {c: jpeg_roundtrip(scene.cameras[c], quality) for c in shown}
                rec = tasks.from_questions(qs, frames, rid=f"views/{self.seed}/{v}/{i}")
                return v, qs, camera, rec if self.max_tiles is None else {**rec, "max_tiles": self.max_tiles}
        raise InputError(f"record {i}: no question of kinds {self.kinds} about views {i % self.views}.. "
                         f"(the kinds need objects the views lack)")
