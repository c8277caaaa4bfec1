"""Questions with known answers about synthetic driving scenes.

Kinds (internvl-spec.md sections 2 and 7 formats):
  colour    multiple choice, one camera: "What colour is the car?" + candidate colours -> "blue"
  class     multiple choice, one camera: "What is the red object?" + candidate classes -> "bus"
  camera    multiple choice, six cameras: "Which camera shows the red bus?" + candidate cameras
  grounding one camera: <ref>the red bus</ref> -> <ref>..</ref><box>[[x1, y1, x2, y2]]</box> (0..1000)
  region    one camera: <box>[[..]]</box> -> "red bus<box>[[..]]</box>"
  caption   one camera, general description: "Describe the objects ..." -> "a red bus, a white cone."
  camera_colour, camera_class
            the colour / class questions about a named camera, asked on all six:
            "What colour is the car in CAM_BACK?" + candidates -> "blue"
  absent    six cameras, about something no camera shows: "Which camera shows the red bus?" +
            candidate cameras -> "none"
  absent_one  one camera, about something it does not show: "What colour is the truck?" (no truck)
            or "What is the red object?" (nothing red) + candidates -> "none"
  where     six cameras: "Where is the red bus?" -> DriveLM's "<c1,CAM_BACK,x,y>", the box centre in
            0..1000 of the stitched canvas
Grounding is scored by IoU (>= 0.5 counts as right) and `where` by whether the point falls inside
the object's box in that camera (`judge`).

Multiple-choice questions list their candidates in the prompt and are answered by the candidate
itself, as the paper's classification format does. A question is only asked when its answer is
unique in what the model sees (one car in the camera for "the car", ...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..edge.chunks import Ref, Region
from ..edge.errors import InputError
from ..edge.multiview import CAMERAS, CANVAS_H, CANVAS_W, CELL_H, CELL_W, cell_of
from .synthetic import CLASSES, COLOURS, Scene, SceneObject

MC_KINDS = ("colour", "class", "camera")
KINDS = MC_KINDS + ("grounding", "region", "caption", "camera_colour", "camera_class", "absent", "absent_one",
                    "where")
SIX_CAMERA_KINDS = ("camera", "camera_colour", "camera_class", "absent", "where")   # asked on all six
NONE = "none"                     # the answer when the question's subject is not there
IOU_RIGHT = 0.5                   # grounding: a box this close to the truth counts as right
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


def subject_words(q: Question) -> list[str]:
    """The words of q's question line that name what it asks about: its subject's colour, its
    class (a word or two), the camera it is asked in; for an absence question (no subject: nothing
    shows it), the colour and class it names."""
    if q.subject is not None:
        names = (q.subject.colour, q.subject.cls, *CAMERAS)
    elif q.kind in ABSENT_KINDS:
        names = (*COLOURS, *CLASSES, *CAMERAS)
    else:
        return []
    line = q.text.split("\n")[0]
    return [w for w in names if re.search(rf"\b{re.escape(w)}\b", line)]


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


def unique_subjects(objs: list[SceneObject]) -> list[SceneObject]:
    """The objects no other shares colour and class with: those "the <colour> <class>" names."""
    return _unique(objs, lambda o: (o.colour, o.cls))


def camera_question(colour: str, cls: str, answer: str, options, subject: SceneObject | None = None,
                    kind: str = "camera") -> Question:
    """"Which camera shows the <colour> <class>?" with the camera names `options` (kind absent: the
    answer is NONE)."""
    options = tuple(options)
    return Question(kind, f"Which camera shows the {colour} {cls}?\n" + options_text(options), answer, None,
                    options, subject)


def where_question(o: SceneObject, size: tuple[int, int]) -> Question:
    """"Where is the <colour> <class>?" -> DriveLM's point (`drivelm_point`; size: the frames')."""
    return Question("where", f"Where is the {o.colour} {o.cls}?", drivelm_point(o, *size), None, (), o)


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
    if kind in ("camera", "where"):
        objs = [o for o in unique_subjects(scene.objects) if o not in avoid]
        if not objs:
            return None
        o = objs[rng.integers(len(objs))]
        if kind == "where":
            return where_question(o, size)
        return camera_question(o.colour, o.cls, o.camera, _options(rng, o.camera, CAMERAS), o)
    if kind == "absent":
        there = {(o.colour, o.cls) for o in scene.objects}
        missing = [(c, k) for c in COLOURS for k in CLASSES if (c, k) not in there]
        colour, cls = missing[rng.integers(len(missing))]
        opts = _options(rng, CAMERAS[rng.integers(len(CAMERAS))], CAMERAS)
        return camera_question(colour, cls, NONE, opts, kind="absent")
    if kind in ("camera_colour", "camera_class"):
        cam = camera or CAMERAS[rng.integers(len(CAMERAS))]
        q = ask_kind(kind.split("_")[1], scene, rng, size, cam, avoid)
        if q is None:
            return None
        head, _, rest = q.text.partition("?")
        return Question(kind, f"{head} in {cam}?{rest}", q.answer, None, q.options, q.subject)
    cam = camera or CAMERAS[rng.integers(len(CAMERAS))]
    if kind == "absent_one":
        objs = scene.in_camera(cam)
        classes = [k for k in CLASSES if k not in {o.cls for o in objs}]
        colours = [c for c in COLOURS if c not in {o.colour for o in objs}]
        if rng.random() < 0.5:
            cls = classes[rng.integers(len(classes))]
            opts = _options(rng, list(COLOURS)[rng.integers(len(COLOURS))], list(COLOURS))
            return Question(kind, f"What colour is the {cls}?\n" + options_text(opts), NONE, cam, opts)
        colour = colours[rng.integers(len(colours))]
        opts = _options(rng, CLASSES[rng.integers(len(CLASSES))], CLASSES)
        return Question(kind, f"What is the {colour} object?\n" + options_text(opts), NONE, cam, opts)
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


def drivelm_point(o: SceneObject, width: int, height: int) -> str:
    """`<c1,CAM_X,x,y>`: the centre of the object's box in 0..1000 of the stitched canvas."""
    row, col = cell_of(o.camera)
    cx, cy = (o.box[0] + o.box[2]) / 2 / width, (o.box[1] + o.box[3]) / 2 / height
    x = round((col * CELL_W + cx * CELL_W) / CANVAS_W * 1000)
    y = round((row * CELL_H + cy * CELL_H) / CANVAS_H * 1000)
    return f"<c1,{o.camera},{x},{y}>"


def scene_questions(scene: Scene, rng: np.random.Generator, kinds=KINDS) -> list[Question]:
    """At most one question of each kind about the scene."""
    size = next(iter(scene.cameras.values())).shape[1::-1]
    out = [ask_kind(k, scene, rng, size) for k in kinds]
    return [q for q in out if q is not None]


ABSENT_KINDS = ("absent", "absent_one")


def ask_view(scene: Scene, rng: np.random.Generator, kinds, size: tuple[int, int], camera: str | None,
             turns: int, absent_share: float = 0.25, reserve_absent: bool = False) -> list[Question]:
    """Up to `turns` questions about one view of the scene (`camera`, or all six when None), of the
    kinds of `kinds` that fit that view, never the same kind about the same object twice, in random
    order. Absence questions (answer "none") are added at about `absent_share` of the presence
    questions asked (one when nothing else can be asked): a view rarely has more than a few unique
    subjects, and filling the rest with "none" would teach that answer as the likely one.

    Presence questions are drawn first. Without `reserve_absent` they may take every turn, and an
    absence question only gets a turn they leave: on busy scenes with many turns far fewer than
    `absent_share` of the questions are about something absent (about 8% at 0.25 with 8 turns and up
    to 3 objects a camera; the default model's stages f1-f5 were trained so). With it, presence
    questions stop `absent_share` of the turns short, and the share holds."""
    fit = [k for k in kinds if (k in SIX_CAMERA_KINDS) == (camera is None)]
    present = [k for k in fit if k not in ABSENT_KINDS]
    absent = [k for k in fit if k in ABSENT_KINDS]
    room = turns - round(turns * absent_share) if reserve_absent and absent else turns
    out: list[Question] = []
    for _ in range(turns * 3):
        if len(out) >= room or not present:
            break
        k = present[rng.integers(len(present))]
        q = ask_kind(k, scene, rng, size, camera, avoid=[x.subject for x in out if x.kind == k])
        if q is not None and q not in out:
            out.append(q)
    n_absent = 0
    if absent:
        n_absent = round(len(out) * absent_share / (1 - absent_share)) if out else 1
        n_absent = max(n_absent, int(rng.random() < absent_share))
    for _ in range(n_absent):
        out.append(ask_kind(absent[rng.integers(len(absent))], scene, rng, size, camera))
    out = out[:turns]       # presence questions first: at `turns` already, no absence question
    return [out[i] for i in rng.permutation(len(out))]


def is_correct(question: Question, answer: str, size: tuple[int, int] | None = None) -> bool:
    """judge(...)["correct"]."""
    return judge(question, answer, size)["correct"]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def judge(question: Question, answer: str, size: tuple[int, int] | None = None) -> dict:
    """{"correct": bool, "iou": float (grounding), "hit": bool (where)} for a model's answer.

    Multiple choice and text kinds: exact match after trimming whitespace and a final full stop
    (case-insensitive for multiple choice). Grounding: the first parsed box's IoU with the truth's
    (0..1000 of the image), right at >= 0.5. Where: the first DriveLM point, mapped back to its
    camera's pixels (`size`: the camera frames' size), right when it names the object's camera and
    falls inside its box. For both, what a wrong answer still got right: "formed" (a box / point
    parses), "phrase" (the `<ref>` phrase copied) and "camera" (the camera named is the object's,
    numbers parsed or not)."""
    from ..edge.parse import named_camera, parse_boxes, parse_camera_points, ref_phrase

    got = answer.strip()
    if question.kind == "grounding":
        boxes = parse_boxes(got)
        truth = parse_boxes(question.answer)[0].box
        v = iou(boxes[0].box, truth) if boxes else 0.0
        return {"correct": v >= IOU_RIGHT, "iou": v, "formed": bool(boxes),
                "phrase": ref_phrase(got) == ref_phrase(question.answer)}
    if question.kind == "where":
        o = question.subject
        pts = parse_camera_points(got, {c: size or (1600, 900) for c in CAMERAS})
        hit = bool(pts) and pts[0].camera == o.camera and (
            o.box[0] <= pts[0].pixels[0] <= o.box[2] and o.box[1] <= pts[0].pixels[1] <= o.box[3])
        return {"correct": hit, "hit": hit, "formed": bool(pts), "camera": named_camera(got) == o.camera}
    if question.options:
        return {"correct": got.rstrip(".").strip().lower() == question.answer.lower()}
    return {"correct": got == question.answer}


SCENE_SIZE = (800, 450)
MAX_OBJECTS = 3
MAX_SCENE_OBJECTS = 6    # the most a caller may ask for (more make unique subjects rare and a question slow to draw)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    # cvtColor swaps the channels into a contiguous array: the same bytes as a reversed view, which
    # imencode would copy slowly, and the same pixels back (3x faster round trip)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


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
    qs, scene, frames = draw_scene_conversation(seed, i, kinds, size, turns, max_objects)
    return qs, frames


def draw_scene_conversation(seed: int, i: int, kinds=KINDS, size: tuple[int, int] = SCENE_SIZE, turns: int = 1,
                            max_objects: int = MAX_OBJECTS) -> tuple[list[Question], Scene, dict[str, np.ndarray]]:
    """`draw_conversation` with the whole scene its questions are about (every camera, every
    object): what an analysis of the answers needs to tell a near miss from a guess."""
    from .synthetic import draw_scene

    rng = np.random.default_rng([seed, i, 1])
    for attempt in range(100):   # a scene may have no unique subject for the drawn kind
        scene_seed = int(np.random.default_rng([seed, i, 2, attempt]).integers(2 ** 62))
        scene = draw_scene(scene_seed, *size, max_objects=max_objects)
        q = ask_kind(kinds[rng.integers(len(kinds))], scene, rng, size)
        if q is None:
            continue
        qs = [q]
        same_view = [k for k in kinds if (k in SIX_CAMERA_KINDS) == (q.camera is None) and k != "caption"]
        for _ in range(turns - 1):
            if not same_view:
                break
            k = same_view[rng.integers(len(same_view))]
            more = ask_kind(k, scene, rng, size, q.camera, avoid=[x.subject for x in qs if x.kind == k])
            if more is not None:
                qs.append(more)
        quality = int(rng.integers(75, 96))
        shown = scene.cameras if q.camera is None else {q.camera: scene.cameras[q.camera]}
        return qs, scene, {k: jpeg_roundtrip(v, quality) for k, v in shown.items()}
    raise InputError(f"no question of kinds {', '.join(kinds)} in 100 scenes of up to {max_objects} object(s) "
                     "per camera" + (": with none, only absence questions (absent, absent_one) can be asked"
                                     if max_objects == 0 else ""))
