"""What one question carries: text, its visual input, and decoding options.

`Request.checked(limits)` is the boundary: it returns a copy in plain Python types (NumPy
integers and floats accepted) or raises InputError naming the field, the value and the accepted
range. Nothing native has seen the request before it passes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np

from . import args
from .chunks import Ref, Region
from .errors import ContextError, InputError

MAX_IMAGES = 64                                     # images in one question
MAX_FRAMES = 256                                    # video frames (one tile each)
MAX_SEED = 2 ** 64 - 1


@dataclass(frozen=True)
class Limits:
    """What the session allows: its context and how many tokens one tile takes."""
    n_ctx: int
    tokens_per_tile: int

    @property
    def max_tiles(self) -> int:
        return max(1, self.n_ctx // self.tokens_per_tile)


def check_seed(name: str, value) -> int:
    """A seed (a request's, or a command's question or clip stream): an integer in 0..MAX_SEED."""
    return args.integer(name, value, 0, MAX_SEED, "a seed is a non-negative 64-bit integer")


def check_option(name: str, value, limits: Limits | None = None):
    """One decoding option checked (the rule for Session.ask and mivl_request_set_option alike).
    Without limits the bounds that depend on the session's context are left to Request.checked."""
    n_ctx = limits.n_ctx if limits else None
    if name == "max_new_tokens":
        return args.integer(name, value, 1, n_ctx, f"the context holds {n_ctx} tokens" if limits else "")
    if name == "temperature":
        return args.real(name, value, 0.0, 5.0, why="0 is greedy decoding")
    if name == "top_p":
        return args.real(name, value, 0.0, 1.0, lo_open=True)
    if name == "seed":
        return check_seed(name, value)
    if name == "max_tiles":
        hi = limits.max_tiles if limits else None
        why = (f"{hi} tiles of {limits.tokens_per_tile} tokens fill the context of {n_ctx}" if limits else "")
        return args.optional_integer(name, value, 1, hi, why)
    if name == "num_frames":
        return args.integer(name, value, 1, MAX_FRAMES)
    if name == "channels":
        return args.choice(name, value, ("RGB", "BGR"))
    raise InputError(f"unknown option {name!r}; known: {', '.join(OPTIONS)}")


OPTIONS = ("max_new_tokens", "temperature", "top_p", "seed", "max_tiles", "num_frames", "channels")


@dataclass
class Request:
    question: object                                # str, or a list of str / Ref / Region parts
    images: list = field(default_factory=list)      # paths, bytes, arrays, PIL images
    cameras: dict | None = None                     # six named cameras
    video: object = None                            # a file path or a list of frames
    history: list = field(default_factory=list)     # (question, answer) pairs
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_tiles: int | None = None                    # tile budget (per prompt; split over images)
    num_frames: int = 8                             # frames sampled from a video file
    channels: str = "RGB"                           # channel order of NumPy array inputs
    system: str | None = None                       # system message (None: the bundle's)

    def checked(self, limits: Limits) -> "Request":
        """This request validated against the session's limits, in plain types."""
        question = check_question("question", self.question)
        given = [n for n, v in (("images", self.images), ("cameras", self.cameras), ("video", self.video))
                 if v is not None and not (isinstance(v, (list, tuple, dict)) and len(v) == 0)]
        if len(given) > 1:
            raise InputError(f"give one kind of visual input per question, got {' and '.join(given)}")
        max_frames = min(MAX_FRAMES, limits.max_tiles)
        num_frames = check_option("num_frames", self.num_frames)
        video = check_video(self.video, max_frames)
        if isinstance(video, str) and num_frames > max_frames:
            raise ContextError(f"num_frames={num_frames} frames of one tile ({limits.tokens_per_tile} tokens) each do "
                               f"not fit the context of {limits.n_ctx}; at most {max_frames} do")
        options = {k: check_option(k, getattr(self, k), limits) for k in OPTIONS if k != "num_frames"}
        return replace(
            self, question=question, images=check_images(self.images), cameras=check_cameras(self.cameras),
            video=video, history=check_history(self.history), num_frames=num_frames, **options,
            system=None if self.system is None else args.text("system", self.system, allow_empty=True))


def check_question(name: str, q):
    if isinstance(q, str):
        return args.text(name, q)
    if not isinstance(q, (list, tuple)) or not q:
        raise InputError(f"{name} must be a string or a non-empty list of str / Ref / Region parts, "
                         f"got {type(q).__name__}")
    parts = []
    for i, p in enumerate(q):
        where = f"{name}[{i}]"
        if isinstance(p, str):
            parts.append(args.text(where, p, allow_empty=True))
        elif isinstance(p, Ref):
            parts.append(Ref(args.text(f"{where}.phrase", p.phrase)))
        elif isinstance(p, Region):
            box = p.box
            if not isinstance(box, (list, tuple)) or len(box) != 4:
                raise InputError(f"{where}.box must be four numbers x1, y1, x2, y2 in 0..1000")
            parts.append(Region(tuple(args.integer(f"{where}.box[{k}]", v, 0, 1000) for k, v in enumerate(box))))
        else:
            raise InputError(f"{where} must be str, Ref or Region, got {type(p).__name__}")
    if not "".join(p if isinstance(p, str) else "x" for p in parts).strip():
        raise InputError(f"{name} is empty; pass some text")
    return parts


def check_images(images) -> list:
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) > MAX_IMAGES:
        raise InputError(f"images: {len(images)} given; at most {MAX_IMAGES} per question")
    for i, im in enumerate(images):
        _check_image(f"images[{i}]", im)
    return list(images)


def _check_image(name: str, im) -> None:
    from PIL import Image

    if isinstance(im, (str, os.PathLike)):
        args.path_like(name, im)
    elif not isinstance(im, (bytes, bytearray, memoryview, np.ndarray, Image.Image)):
        raise InputError(f"{name} must be a path, encoded bytes, a NumPy uint8 array (H, W, 3) or a PIL image, "
                         f"got {type(im).__name__}")


def check_cameras(cameras) -> dict | None:
    if cameras is None:
        return None
    if not isinstance(cameras, dict):
        raise InputError(f"cameras must be a dict of camera name -> image, got {type(cameras).__name__}")
    for k, v in cameras.items():
        if not isinstance(k, str):
            raise InputError(f"camera names must be strings, got {k!r}")
        _check_image(f"cameras[{k!r}]", v)
    return dict(cameras)


def check_video(video, max_frames: int):
    if video is None:
        return None
    if isinstance(video, (str, bytes, os.PathLike)):
        return args.path_like("video", video)
    if isinstance(video, (list, tuple)):
        if not video:
            return None
        if len(video) > max_frames:
            raise ContextError(f"video: {len(video)} frames given; at most {max_frames} fit the context "
                               "(one tile each)")
        for i, f in enumerate(video):
            _check_image(f"video[{i}]", f)
        return list(video)
    raise InputError(f"video must be a file path or a list of frames, got {type(video).__name__}")


def check_history(history) -> list:
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise InputError(f"history must be a list of (question, answer) pairs, got {type(history).__name__}")
    out = []
    for i, turn in enumerate(history):
        if not (isinstance(turn, (tuple, list)) and len(turn) == 2):
            raise InputError(f"history[{i}] must be a (question, answer) pair")
        out.append((check_question(f"history[{i}][0]", turn[0]), args.text(f"history[{i}][1]", turn[1],
                                                                             allow_empty=True)))
    return out
