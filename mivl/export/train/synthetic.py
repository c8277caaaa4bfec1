"""Training records drawn on the fly from synthetic driving scenes (`mivl.calib`).

`SyntheticTasks(kinds, seed, turns)` is an endless indexable source: record i is conversation i
of the stream `seed` (`mivl.calib.questions.draw_conversation`: up to `turns` questions about one
view, so one image encoding teaches several answers), so it needs no disk, is the same on every
rank and on resume, and never repeats. Held-out evaluation draws from other seeds.
"""
from __future__ import annotations

from ...calib.questions import KINDS, MAX_OBJECTS, SCENE_SIZE, draw_conversation
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
