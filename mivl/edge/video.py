"""Video input: InternVL's frame sampling, and reading frames with OpenCV."""
from __future__ import annotations

import os

import numpy as np

from .errors import InputError


def frame_indices(n_frames: int, num_segments: int = 8, fps: float = 30.0,
                  bound: tuple[float, float] | None = None, first_idx: int = 0) -> list[int]:
    """Indices of the frames InternVL samples: the middle of each of num_segments equal segments.

    index_k = int(start + seg/2 + round(seg * k)), seg = (end - start) / num_segments.
    """
    if n_frames < 1:
        raise InputError("the video has no frames")
    if num_segments < 1:
        raise InputError(f"num_segments must be >= 1, got {num_segments}")
    start, end = bound if bound else (-100000.0, 100000.0)
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), n_frames - 1)
    seg = float(end_idx - start_idx) / num_segments
    return [int(start_idx + seg / 2 + np.round(seg * k)) for k in range(num_segments)]


def read_video(path: str, num_segments: int = 8, bound=None) -> list[np.ndarray]:
    """Sample num_segments RGB frames from a video file."""
    import cv2

    if not os.path.isfile(path):
        raise InputError(f"video file not found: {path!r}")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise InputError(f"cannot open video {path!r}: not a video OpenCV can decode")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
        frames = []
        for idx in frame_indices(n, num_segments, fps, bound):
            cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
            ok, bgr = cap.read()
            if not ok:
                raise InputError(f"video {path!r}: frame {idx} of {n} could not be decoded "
                                 "(truncated file?)")
            frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        return frames
    finally:
        cap.release()
