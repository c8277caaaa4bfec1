"""Task formats of the transfer-learning framework (internvl-spec.md section 7) as records."""
from __future__ import annotations

from ...calib.questions import GROUNDING_PROMPT, Question, box_1000, box_text
from ...edge.errors import InputError
from ...edge.chunks import place_images

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


def from_questions(qs: list[Question], cameras: dict, rid: str = "") -> dict:
    """calib Questions about one view of a scene (cameras: name -> image) as a multi-turn record."""
    conv = conversation(qs[0].text, qs[0].answer)
    for q in qs[1:]:
        conv += [{"from": "human", "value": q.text}, {"from": "gpt", "value": q.answer}]
    if qs[0].camera is None:
        return {"id": rid, "cameras": cameras, "conversations": conv}
    return {"id": rid, "image": cameras[qs[0].camera], "conversations": conv}
