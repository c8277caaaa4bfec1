"""What one question carries: text, its visual input, and decoding options (validated up front)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError


@dataclass
class Request:
    question: str
    images: list = field(default_factory=list)      # paths, bytes, arrays, PIL images
    cameras: dict | None = None                     # six named cameras
    video: object = None                            # a file path or a list of frames
    history: list[tuple[str, str]] = field(default_factory=list)
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_tiles: int | None = None                    # tile budget (per prompt; split over images)
    num_frames: int = 8                             # frames sampled from a video file
    channels: str = "RGB"                           # channel order of NumPy array inputs

    def validate(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise InputError("the question is empty; pass some text to ask")
        given = [n for n, v in (("images", self.images), ("cameras", self.cameras), ("video", self.video))
                 if v not in (None, [], {})]
        if len(given) > 1:
            raise InputError(f"give one kind of visual input per question, got {' and '.join(given)}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not (0.0 <= float(self.temperature) <= 5.0):
            raise InputError(f"temperature must be within 0..5, got {self.temperature}")
        if not (0.0 < float(self.top_p) <= 1.0):
            raise InputError(f"top_p must be within (0, 1], got {self.top_p}")
        if self.max_tiles is not None and (not isinstance(self.max_tiles, int) or self.max_tiles < 1):
            raise InputError(f"max_tiles must be a positive integer, got {self.max_tiles!r}")
        if self.channels not in ("RGB", "BGR"):
            raise InputError(f"channels must be 'RGB' or 'BGR', got {self.channels!r}")
        for i, turn in enumerate(self.history):
            if not (isinstance(turn, (tuple, list)) and len(turn) == 2):
                raise InputError(f"history[{i}] must be a (question, answer) pair")
