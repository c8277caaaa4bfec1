"""The conversation-record schema every training task is converted to (one JSON object per line).

    {"id": "...",
     "image": "a.jpg" | ["a.jpg", "b.jpg"],           # one or several images, or
     "cameras": {"CAM_FRONT": "f.jpg", ...},          # the six cameras (stitched, spec section 2), or
     "video": ["f0.jpg", "f1.jpg", ...],              # video frames (one tile each)
     "max_tiles": 6,                                  # optional tile budget of this record
     "conversations": [{"from": "human", "value": "<image>\\nWhat is ..."},
                       {"from": "gpt", "value": "...",
                        "focus": {"box": [x1, y1, x2, y2], "words": ["red", "bus"]}}, ...]}

This is InternVL's own fine-tuning format (`image` + `conversations`), extended by `cameras` and
`video`. An answer may carry `focus`, where it should look (optional, records of one image or the
six cameras): the box, in 0..1000 of the image as the model is fed it (the stitched canvas for
cameras), of the object the answer is about, and the words of the question that name it; words
alone where nothing shows what is asked about ("Which camera shows the red bus?" with no red bus,
`{"words": ["red", "bus"]}`). The
trainer can turn it into attention targets (`TrainConfig.focus_weight`). Relative paths are
resolved against the JSONL file's folder. In memory, an image may also be a NumPy array (HWC
uint8 RGB), which is how generated data is fed without touching the disk.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...calib.readers import jsonl_lines
from ...edge.errors import InputError
from ...edge.multiview import CAMERAS

MEDIA_KEYS = ("image", "cameras", "video")
ROLES = ("human", "gpt")


def check_record(rec: dict, where: str = "record") -> dict:
    """Raise InputError naming what is wrong; return the record unchanged."""
    if not isinstance(rec, dict):
        raise InputError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    media = [k for k in MEDIA_KEYS if rec.get(k) is not None]
    if len(media) > 1:
        raise InputError(f"{where}: give one of {', '.join(MEDIA_KEYS)}, not {' and '.join(media)}")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv or len(conv) % 2:
        raise InputError(f"{where}: 'conversations' must be a non-empty list of human/gpt pairs")
    for i, turn in enumerate(conv):
        want = ROLES[i % 2]
        if not isinstance(turn, dict) or turn.get("from") != want or not isinstance(turn.get("value"), str):
            raise InputError(f"{where}: conversations[{i}] must be {{\"from\": \"{want}\", \"value\": str}}")
    if "cameras" in media:
        cams = rec["cameras"]
        if not isinstance(cams, dict) or set(cams) != set(CAMERAS):
            raise InputError(f"{where}: 'cameras' must name exactly {', '.join(CAMERAS)}")
    if "video" in media and (not isinstance(rec["video"], list) or not rec["video"]):
        raise InputError(f"{where}: 'video' must be a non-empty list of frames")
    n_img = len(images_of(rec))
    n_ph = sum(t["value"].count("<image>") for t in conv[::2])
    if n_ph not in (0, n_img) or (n_ph and any("<image>" in t["value"] for t in conv[1::2])):
        raise InputError(f"{where}: {n_ph} <image> placeholder(s) in the human turns for {n_img} image(s)")
    for i, turn in enumerate(conv[1::2]):
        if "focus" in turn:
            check_focus(turn["focus"], n_img, f"{where}: conversations[{2 * i + 1}].focus",
                        "video" in media)
    mt = rec.get("max_tiles")
    if mt is not None and (not isinstance(mt, int) or mt < 1):
        raise InputError(f"{where}: max_tiles must be a positive integer, got {mt!r}")
    return rec


def check_focus(focus, n_images: int, where: str, video: bool = False) -> None:
    if n_images != 1 or video:
        raise InputError(f"{where}: focus needs a record of one image or the six cameras, "
                         f"not {'a video' if video else f'{n_images} images'}")
    if not isinstance(focus, dict) or set(focus) - {"box", "words"} or not focus:
        raise InputError(f"{where}: must be {{\"box\": [x1, y1, x2, y2], \"words\": [str, ...]}} "
                         "(either may be left out, not both)")
    box, words = focus.get("box"), focus.get("words", [])
    if box is None and not words:
        raise InputError(f"{where}: a focus without a box needs words, got {focus!r}")
    if box is not None and (not isinstance(box, (list, tuple)) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1000 for v in box)
            or not (box[0] < box[2] and box[1] < box[3])):
        raise InputError(f"{where}: box must be [x1, y1, x2, y2] in 0..1000 with x1 < x2 and y1 < y2, got {box!r}")
    if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in words):
        raise InputError(f"{where}: words must be a list of non-empty strings, got {words!r}")


def images_of(rec: dict) -> list:
    """The images the prompt's <image> placeholders stand for (the stitched canvas counts as one)."""
    if rec.get("cameras") is not None:
        return [rec["cameras"]]
    if rec.get("video") is not None:
        return list(rec["video"])
    img = rec.get("image")
    if img is None:
        return []
    return list(img) if isinstance(img, (list, tuple)) else [img]


def _resolve(value, base: Path):
    if isinstance(value, str):
        p = Path(value)
        return str(p if p.is_absolute() else base / p)
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, base) for k, v in value.items()}
    return value


def read_records(path: str | Path) -> list[dict]:
    """Records of a JSONL file, checked, with media paths made absolute."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such records file: {path}")
    out = []
    for n, rec in jsonl_lines(path):
        check_record(rec, f"{path}:{n}")
        for k in MEDIA_KEYS:
            if rec.get(k) is not None:
                rec[k] = _resolve(rec[k], path.parent)
        out.append(rec)
    if not out:
        raise InputError(f"{path} holds no records")
    return out


def write_records(path: str | Path, records) -> int:
    """Write records (media as paths) to a JSONL file; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            check_record(rec, f"record {n}")
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n
