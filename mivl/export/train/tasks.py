"""Task formats of the transfer-learning framework (internvl-spec.md section 7) as records."""
from __future__ import annotations

import numpy as np

from ...calib.labels import canvas_boxes
from ...calib.questions import GROUNDING_PROMPT, Question, box_1000, box_text, subject_words
from ...edge.errors import InputError
from ...edge.chunks import place_images
from ...edge.multiview import CANVAS_H, CANVAS_W

CLS_PREFIX = "What is in this image?"
CLS_SUFFIX = "Answer with one of the options."


def conversation(question: str, answer: str, n_images: int = 1) -> list[dict]:
    question = "".join(place_images(question, n_images))
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def classification(image, labels, truth: str, prefix: str = CLS_PREFIX, suffix: str = CLS_SUFFIX,
                   rid: str = "") -> dict:
    """Image classification as multiple choice: [image][prefix][candidate labels][suffix] -> truth."""
    labels = list(labels)
    if truth not in labels:
        raise InputError(f"the true label {truth!r} is not among the candidates {labels}")
    q = f"{prefix}\nOptions: {', '.join(labels)}.\n{suffix}"
    return {"id": rid, "image": image, "conversations": conversation(q, truth)}


def grounding(image, phrase: str, box, size: tuple[int, int], rid: str = "") -> dict:
    """<ref>phrase</ref> -> <ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>, box in 0..1000."""
    ref = f"<ref>{phrase}</ref>"
    b = box_text(box_1000(box, *size))
    return {"id": rid, "image": image, "conversations": conversation(GROUNDING_PROMPT + ref, ref + b)}


def region(image, name: str, box, size: tuple[int, int], rid: str = "") -> dict:
    """Region perception: the question and the answer both carry the box."""
    b = box_text(box_1000(box, *size))
    return {"id": rid, "image": image,
            "conversations": conversation(f"What object is in this location {b}?", name + b)}


def multiview(cameras: dict, question: str, answer: str, rid: str = "") -> dict:
    return {"id": rid, "cameras": cameras, "conversations": conversation(question, answer)}


def video(frames: list, question: str, answer: str, rid: str = "") -> dict:
    return {"id": rid, "video": list(frames),
            "conversations": conversation("".join(place_images(question, len(frames), video=True)), answer, 0)}


def focus(q: Question, frame_size: tuple[int, int]) -> dict | None:
    """Where q's answer should look (the record's `focus`): its subject's box in 0..1000 of the
    image as fed (the six-camera canvas when q is about all six; frames of frame_size) and the
    words naming it. An absence question (nothing shows what it names) looks at its words alone;
    None when q names nothing."""
    if q.subject is None:
        words = subject_words(q)
        return {"words": words} if words else None
    w, h = frame_size
    if q.camera is None:
        box, size = canvas_boxes([q.subject], w, h)[0], (CANVAS_W, CANVAS_H)
    else:
        box, size = q.subject.box, (w, h)
    x1, y1, x2, y2 = (min(1000, max(0, v)) for v in box_1000(box, *size))
    x1, y1 = min(x1, 999), min(y1, 999)
    return {"box": [x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)], "words": subject_words(q)}


def from_questions(qs: list[Question], cameras: dict, rid: str = "") -> dict:
    """calib Questions about one view of a scene (cameras: name -> image, HWC arrays or files) as a
    multi-turn record; with arrays, each answer about an object carries its `focus`."""
    frame = next(iter(cameras.values()))
    size = (frame.shape[1], frame.shape[0]) if isinstance(frame, np.ndarray) else None
    conv = []
    for k, q in enumerate(qs):
        conv += conversation(q.text, q.answer) if k == 0 else [{"from": "human", "value": q.text},
                                                               {"from": "gpt", "value": q.answer}]
        f = focus(q, size) if size else None
        if f is not None:
            conv[-1]["focus"] = f
    if qs[0].camera is None:
        return {"id": rid, "cameras": cameras, "conversations": conv}
    return {"id": rid, "image": cameras[qs[0].camera], "conversations": conv}
