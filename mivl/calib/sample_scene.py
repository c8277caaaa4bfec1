"""Ask a bundle the six-camera questions about a scene folder and print them with the truth: what
`scripts/demo.sh` shows on examples/sample_scene.

A scene folder holds the six camera frames (CAM_FRONT.jpg ...) and objects.json (class, colour,
camera and box in that camera's pixels of each object drawn). For one object (default: the first
bus, else the first object unique by colour and class) it asks "Which camera shows the <colour>
<class>?" with the six camera names as options and "Where is the <colour> <class>?" (DriveLM's
`<c1,CAM_X,x,y>`), and prints each question, the answer, the objects parsed from it in camera
pixels, the truth and the verdict of `mivl.calib.questions.judge` (the scoring of `mivl eval`).

    .venv/bin/python -m mivl.calib.sample_scene BUNDLE [SCENE] [--object "black bus"]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..edge.errors import InputError, MivlError
from ..edge.multiview import CAMERAS
from .questions import Question, camera_question, judge, unique_subjects, where_question
from .synthetic import SceneObject

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_scene"


def load_scene(folder: str | Path) -> tuple[dict, list[SceneObject]]:
    """(camera -> frame path, objects) of a scene folder; refused with a clear error when a frame
    or objects.json is missing or malformed."""
    folder = Path(folder)
    frames = {c: folder / f"{c}.jpg" for c in CAMERAS}
    missing = [str(p) for p in frames.values() if not p.is_file()]
    if missing:
        raise InputError(f"{folder}: missing camera frames {', '.join(missing)}")
    try:
        rows = json.loads((folder / "objects.json").read_text())
        objects = [SceneObject(str(r["cls"]), str(r["colour"]), str(r["camera"]), tuple(int(v) for v in r["box"]))
                   for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{folder / 'objects.json'}: not a list of objects with cls, colour, camera, box ({e})")
    bad = [o.camera for o in objects if o.camera not in CAMERAS or len(o.box) != 4]
    if bad:
        raise InputError(f"{folder / 'objects.json'}: objects with unknown cameras or boxes: {bad}")
    return frames, objects


def pick_subject(objects: list[SceneObject], name: str | None = None) -> SceneObject:
    """The object called `name` ("black bus"), else the first bus, else the first object no other
    shares colour and class with."""
    unique = unique_subjects(objects)
    if name is not None:
        hits = [o for o in unique if f"{o.colour} {o.cls}" == name.strip().lower()]
        if not hits:
            raise InputError(f"no single {name!r} in the scene; it shows "
                             f"{', '.join(f'{o.colour} {o.cls}' for o in objects) or 'nothing'}")
        return hits[0]
    if not unique:
        raise InputError("the scene has no object unique by colour and class to ask about")
    return next((o for o in unique if o.cls == "bus"), unique[0])


def subject_questions(o: SceneObject, size: tuple[int, int]) -> list[Question]:
    """Which camera shows it (the six names as options), and where it is (a DriveLM point)."""
    return [camera_question(o.colour, o.cls, o.camera, CAMERAS, o), where_question(o, size)]


def ask_scene(session, frames: dict, subject: SceneObject, size: tuple[int, int], max_new_tokens: int = 32):
    """[(question, answer, verdict)] for the subject's questions, asked on the six cameras."""
    out = []
    for q in subject_questions(subject, size):
        ans = session.ask(q.prompt, cameras=frames, max_new_tokens=max_new_tokens)
        out.append((q, ans, judge(q, ans.text, size)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mivl.calib.sample_scene", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("scene", nargs="?", default=str(SAMPLE), help="scene folder (default: examples/sample_scene)")
    p.add_argument("--object", help='the object to ask about, "colour class" (default: the bus)')
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    from ..edge.image_io import load_rgb
    from ..edge.session import Session

    try:
        paths, objects = load_scene(a.scene)
        subject = pick_subject(objects, a.object)
        frames = {c: load_rgb(str(path)) for c, path in paths.items()}
        size = frames[CAMERAS[0]].shape[1::-1]
        with Session(a.bundle, threads=a.threads) as s:
            rows = ask_scene(s, frames, subject, size)
    except MivlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"cameras:  {os.path.relpath(a.scene)}/CAM_*.jpg, six {size[0]}x{size[1]} frames (truth: objects.json)")
    for q, ans, verdict in rows:
        print(f"question: {q.text.replace(chr(10), ' / ')}")
        print(f"answer:   {ans.text.strip()!r}")
        for obj in ans.objects:
            print(f"parsed:   {json.dumps(obj.to_dict())}")
        box = ", ".join(str(v) for v in subject.box)
        if q.kind == "camera":
            print(f"truth:    {subject.camera}")
        else:
            print(f"truth:    {q.answer}: inside [{box}] in {subject.camera}'s pixels")
        print(f"verdict:  {'right' if verdict['correct'] else 'wrong'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
