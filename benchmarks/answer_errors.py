"""What the wrong answers of a `mivl eval --json` run are: near misses or guesses.

Each question of the run is drawn again with its whole scene (`draw_scene_conversation`: the
stream, kinds and objects per camera are in the JSON), and each wrong answer to a one-word kind is
put in the first of these that fits:
  none             "none" to a question about something shown
  same camera      the colour / class of another object in the camera asked about
  elsewhere        the colour of an object of the same class (the class of one of the same colour)
                   in another camera; for camera questions, a camera showing an object of the
                   subject's colour or class; for absence questions, one showing the colour or the
                   class asked about
  guess            none of these
and a wrong `where` or grounding answer in one of: wrong camera / wrong phrase (the camera of the
point, the `<ref>` phrase copied wrong), malformed (no point or box to parse), off the object.

    .venv/bin/mivl eval BUNDLE --kinds ... --max-objects 3 --json > eval.json
    .venv/bin/python benchmarks/answer_errors.py eval.json
    .venv/bin/python benchmarks/answer_errors.py eval.json --by-width

--by-width splits the accuracy of each kind about a shown object by the object's width in tokens of
the thumbnail of the image asked about (16 tokens across the six-camera canvas, 5.3 across one of
its cameras; 16 across a one-camera image): how much of the thumbnail, the only tile that knows
where it lies, the object covers.
"""
import argparse
import json
import re
from collections import Counter

from mivl.calib.questions import NONE, draw_scene_conversation, judge

THUMBNAIL_SIDE = 16                       # tokens across the thumbnail (448 px, pixel unshuffle 0.5)
WIDTHS = (0.25, 0.5, 1.0)                 # bucket edges, in thumbnail tokens


def category(q, scene, got: str) -> str:
    got = got.strip()
    if q.kind in ("where", "grounding"):
        v = judge(q, got)
        if q.kind == "where" and not v["camera"]:
            return "wrong camera"
        if q.kind == "grounding" and not v["phrase"]:
            return "wrong phrase"
        return "off the object" if v["formed"] else "malformed"
    got = got.rstrip(".").strip()
    if got.lower() == NONE:
        return "none"
    o = q.subject
    if q.kind in ("colour", "camera_colour", "class", "camera_class"):
        attr, other = ("colour", "cls") if "colour" in q.kind else ("cls", "colour")
        if got in {getattr(x, attr) for x in scene.in_camera(o.camera) if x is not o}:
            return "same camera"
        if got in {getattr(x, attr) for x in scene.objects if x is not o and getattr(x, other) == getattr(o, other)}:
            return "elsewhere"
        return "guess"
    if q.kind == "camera":
        near = {x.camera for x in scene.objects if x is not o and (x.colour == o.colour or x.cls == o.cls)}
        return "elsewhere" if got in near else "guess"
    if q.kind == "absent":
        colour, cls = re.match(r"Which camera shows the (\w+) (.+)\?", q.text.split("\n")[0]).groups()
        near = {x.camera for x in scene.objects if x.colour == colour or x.cls == cls}
        return "elsewhere" if got in near else "guess"
    return "guess"


def redraw(run: dict, row: dict):
    """(question, scene, frames) of a run's answer row, drawn again; refused if it draws differently."""
    (q, *_), scene, frames = draw_scene_conversation(run["seed"], row["i"], tuple(run["kinds"]),
                                                     max_objects=run["max_objects"])
    if q.text != row["question"]:
        raise SystemExit(f"question {row['i']} draws differently now: {q.text!r} != {row['question']!r}")
    return q, scene, frames


def width_in_tokens(q, frame_width: int) -> float:
    """The subject's width in thumbnail tokens of the image q is asked on (the six-camera canvas is
    three cameras across)."""
    x1, _, x2, _ = q.subject.box
    across = frame_width * (3 if q.camera is None else 1)
    return (x2 - x1) / across * THUMBNAIL_SIDE


def bucket(w: float) -> str:
    lo = 0.0
    for hi in WIDTHS:
        if w < hi:
            return f"{lo:g}-{hi:g}"
        lo = hi
    return f">={lo:g}"


def by_width(run: dict) -> None:
    table: dict[str, dict[str, list[int]]] = {}
    for row in run["answers"]:
        q, _, frames = redraw(run, row)
        if q.subject is None or q.kind in ("absent", "absent_one"):
            continue
        w = width_in_tokens(q, next(iter(frames.values())).shape[1])
        table.setdefault(row["kind"], {}).setdefault(bucket(w), []).append(int(row["correct"]))
    names = [bucket(w - 1e-9) for w in WIDTHS] + [bucket(WIDTHS[-1])]
    print("kind           " + "  ".join(f"{n + ' tok':>16}" for n in names))
    for kind, cells in sorted(table.items()):
        print(f"{kind:<14} " + "  ".join(
            f"{sum(cells[n]) / len(cells[n]):>7.2f} ({len(cells[n]):>4})" if n in cells else f"{'-':>16}" for n in names))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("eval_json", help="the output of `mivl eval ... --json`")
    p.add_argument("--by-width", action="store_true", help="accuracy by the object's width in thumbnail tokens")
    a = p.parse_args()
    run = json.loads(open(a.eval_json).read())
    if a.by_width:
        return by_width(run)
    counts: dict[str, Counter] = {}
    for row in run["answers"]:
        if row["correct"]:
            continue
        q, scene, _ = redraw(run, row)
        counts.setdefault(row["kind"], Counter())[category(q, scene, row["got"])] += 1
    for kind, c in sorted(counts.items()):
        print(f"{kind:<14} wrong {sum(c.values()):>3}: " + ", ".join(f"{k} {v}" for k, v in c.most_common()))


if __name__ == "__main__":
    main()
