"""Questions with known answers about synthetic driving scenes.

Kinds (internvl-spec.md section 7 formats):
  colour    multiple choice, one camera: "What colour is the car?" + candidate colours -> "blue"
  class     multiple choice, one camera: "What is the red object?" + candidate classes -> "bus"
  camera    multiple choice, six cameras: "Which camera shows the red bus?" + candidate cameras
  grounding one camera: <ref>the red bus</ref> -> <ref>..</ref><box>[[x1, y1, x2, y2]]</box> (0..1000)
  region    one camera: <box>[[..]]</box> -> "red bus<box>[[..]]</box>"
  caption   one camera, general description: "Describe the objects ..." -> "a red bus, a white cone."

Multiple-choice questions list their candidates in the prompt and are answered by the candidate
itself, as the paper's classification format does. A question is only asked when its answer is
unique in what the model sees (one car in the camera for "the car", ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..edge.chunks import Ref, Region
from ..edge.multiview import CAMERAS
from .synthetic import CLASSES, COLOURS, Scene, SceneObject

MC_KINDS = ("colour", "class", "camera")
KINDS = MC_KINDS + ("grounding", "region", "caption")
MIN_OPTIONS, MAX_OPTIONS = 3, 6     # candidates per multiple-choice question (all six at most)
MC_SUFFIX = "Answer with one of the options."
GROUNDING_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: "


@dataclass(frozen=True)
class Question:
    kind: str
    text: str                        # the question (no <image> placeholder)
    answer: str                      # the exact expected answer
    camera: str | None               # the one camera shown; None: all six (multi-view)
    options: tuple[str, ...] = ()    # candidates of a multiple-choice question
    subject: SceneObject | None = field(default=None, compare=False, repr=False)
    parts: tuple = ()                # the question as typed parts (str, Ref, Region) when it carries
                                     # markup: what a runtime caller passes (text is never markup)

    @property
    def prompt(self):
        """What to ask a Session or the reference: the typed parts, or the plain text."""
        return list(self.parts) if self.parts else self.text


def box_1000(box, width: int, height: int) -> list[int]:
    """Pixel box -> InternVL's 0..1000 coordinates (x by width, y by height)."""
    x1, y1, x2, y2 = box
    return [round(x1 / width * 1000), round(y1 / height * 1000),
            round(x2 / width * 1000), round(y2 / height * 1000)]


def box_text(box) -> str:
    return f"<box>[[{box[0]}, {box[1]}, {box[2]}, {box[3]}]]</box>"


def options_text(options) -> str:
    return "Options: " + ", ".join(options) + ".\n" + MC_SUFFIX


def _options(rng: np.random.Generator, truth: str, pool) -> tuple[str, ...]:
    """The truth and 2..5 other candidates of the pool, in random order."""
    n = int(rng.integers(MIN_OPTIONS, min(MAX_OPTIONS, len(pool)) + 1))
    others = [p for p in pool if p != truth]
    picked = [others[i] for i in rng.choice(len(others), n - 1, replace=False)] + [truth]
    return tuple(picked[i] for i in rng.permutation(n))


def _unique(objs: list[SceneObject], key) -> list[SceneObject]:
    counts: dict = {}
    for o in objs:
        counts[key(o)] = counts.get(key(o), 0) + 1
    return [o for o in objs if counts[key(o)] == 1]


def describe(objs: list[SceneObject]) -> str:
    if not objs:
        return "There are no objects."
    parts = [f"a {o.colour} {o.cls}" for o in sorted(objs, key=lambda o: (o.box[0], o.box[1]))]
    return ", ".join(parts) + "."


def ask_kind(kind: str, scene: Scene, rng: np.random.Generator, size: tuple[int, int],
             camera: str | None = None, avoid=()) -> Question | None:
    """One question of `kind` about the scene (about `camera`, else a random one), or None when
    it has no unique subject. Objects in `avoid` are not asked about again."""
    w, h = size
    if kind == "camera":
        objs = [o for o in _unique(scene.objects, lambda o: (o.colour, o.cls)) if o not in avoid]
        if not objs:
            return None
        o = objs[rng.integers(len(objs))]
        opts = _options(rng, o.camera, CAMERAS)
        return Question(kind, f"Which camera shows the {o.colour} {o.cls}?\n" + options_text(opts),
                        o.camera, None, opts, o)
    cam = camera or CAMERAS[rng.integers(len(CAMERAS))]
    objs = scene.in_camera(cam)
    if kind == "caption":
        return Question(kind, "Describe the objects in this image.", describe(objs), cam)
    key = {"colour": lambda o: o.cls, "class": lambda o: o.colour}.get(kind, lambda o: (o.colour, o.cls))
    objs = [o for o in _unique(objs, key) if o not in avoid]
    if not objs:
        return None
    o = objs[rng.integers(len(objs))]
    if kind == "colour":
        opts = _options(rng, o.colour, list(COLOURS))
        return Question(kind, f"What colour is the {o.cls}?\n" + options_text(opts), o.colour, cam, opts, o)
    if kind == "class":
        opts = _options(rng, o.cls, CLASSES)
        return Question(kind, f"What is the {o.colour} object?\n" + options_text(opts), o.cls, cam, opts, o)
    box = box_text(box_1000(o.box, w, h))
    if kind == "grounding":
        phrase = f"the {o.colour} {o.cls}"
        ref = f"<ref>{phrase}</ref>"
        return Question(kind, GROUNDING_PROMPT + ref, ref + box, cam, (), o, (GROUNDING_PROMPT, Ref(phrase)))
    if kind == "region":
        b = tuple(box_1000(o.box, w, h))
        return Question(kind, f"What object is in this location {box}?", f"{o.colour} {o.cls}{box}", cam, (), o,
                        ("What object is in this location ", Region(b), "?"))
    raise ValueError(f"unknown question kind {kind!r}; known: {', '.join(KINDS)}")


def scene_questions(scene: Scene, rng: np.random.Generator, kinds=KINDS) -> list[Question]:
    """At most one question of each kind about the scene."""
    size = next(iter(scene.cameras.values())).shape[1::-1]
    out = [ask_kind(k, scene, rng, size) for k in kinds]
    return [q for q in out if q is not None]


def is_correct(question: Question, answer: str) -> bool:
    """Exact match after trimming whitespace and a final full stop (case-insensitive for MC)."""
    got = answer.strip()
    if question.options:
        return got.rstrip(".").strip().lower() == question.answer.lower()
    return got == question.answer


SCENE_SIZE = (800, 450)
MAX_OBJECTS = 3


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def draw_question(seed: int, i: int, kinds=KINDS, size: tuple[int, int] = SCENE_SIZE,
                  max_objects: int = MAX_OBJECTS) -> tuple[Question, dict[str, np.ndarray]]:
    """Question i of the stream `seed`, and the camera frames it shows (JPEG round-tripped at
    quality 75..95, as camera data usually is). A pure function of its arguments."""
    qs, frames = draw_conversation(seed, i, kinds, size, turns=1, max_objects=max_objects)
    return qs[0], frames


def draw_conversation(seed: int, i: int, kinds=KINDS, size: tuple[int, int] = SCENE_SIZE, turns: int = 1,
                      max_objects: int = MAX_OBJECTS) -> tuple[list[Question], dict[str, np.ndarray]]:
    """Up to `turns` questions about one view (one camera, or all six for `camera` questions):
    the first of a kind drawn from `kinds`, the others of any kind of `kinds` that fits the same
    view, never the same kind about the same object twice. Scenes hold 0..max_objects objects
    per camera. A pure function of its arguments."""
    from .synthetic import draw_scene

    rng = np.random.default_rng([seed, i, 1])
    for attempt in range(100):   # a scene may have no unique subject for the drawn kind
        scene_seed = int(np.random.default_rng([seed, i, 2, attempt]).integers(2 ** 62))
        scene = draw_scene(scene_seed, *size, max_objects=max_objects)
        q = ask_kind(kinds[rng.integers(len(kinds))], scene, rng, size)
        if q is None:
            continue
        qs = [q]
        same_view = [k for k in kinds if (k == "camera") == (q.camera is None) and k != "caption"]
        for _ in range(turns - 1):
            if not same_view:
                break
            k = same_view[rng.integers(len(same_view))]
            more = ask_kind(k, scene, rng, size, q.camera, avoid=[x.subject for x in qs if x.kind == k])
            if more is not None:
                qs.append(more)
        quality = int(rng.integers(75, 96))
        shown = scene.cameras if q.camera is None else {q.camera: scene.cameras[q.camera]}
        return qs, {k: jpeg_roundtrip(v, quality) for k, v in shown.items()}
    raise RuntimeError(f"no question of kinds {kinds} in 100 scenes")
