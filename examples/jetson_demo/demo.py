"""Six-camera demo: a bundle watching six cameras, answers and boxes drawn over each camera.

  python examples/jetson_demo/demo.py BUNDLE --synthetic --frames 20            (no cameras needed)
  python examples/jetson_demo/demo.py BUNDLE --cam CAM_FRONT=csi:0 --cam CAM_BACK=v4l2:/dev/video1 ...
  python examples/jetson_demo/demo.py BUNDLE --cam CAM_FRONT=front.mp4 ... --find "red car" --rate 2

Each tick reads one frame from every camera and runs the probes:
  --find PHRASE   where it is on the six cameras (a DriveLM point: camera and pixel, drawn as a
                  circle), then its box in that camera (grounding, drawn as a rectangle)
  --ask TEXT      a free question about the six cameras (DriveLM <c..> points are drawn)
  --describe CAM  a description of one camera's objects
With --synthetic and no probe given, it asks questions whose answers the clip knows (colour and
class of an object in two cameras, which camera shows each of two objects, the six cameras asked
together) and finds those two objects (right when the point falls inside the object in the right
camera); the HUD counts the right ones.
It overlays the answers and boxes per camera and a HUD with the latency breakdown (preprocess,
vision, prefill, decode) and memory. With a display it opens a window (q quits); headless (or
--headless) it writes OUT/demo.mp4, PNG snapshots every --snapshot-every ticks and OUT/log.jsonl.
Without a bundle argument it uses the default model, exporting it once to out/default-bundle.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sources import SyntheticRig, open_rig  # noqa: E402

from mivl.calib.questions import Question, camera_question, judge, options_text, where_question  # noqa: E402
from mivl.edge.chunks import grounding_question  # noqa: E402
from mivl.edge.multiview import CAMERAS  # noqa: E402

TILE_W, TILE_H = 480, 270
HUD_H = 170
CLIP_SEED, CLIP_OBJECTS = 3, 1       # the synthetic clip by default (--seed, --objects)
COLOURS = [(0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0)]


# ------------------------------------------------------------------ probes
def frame_size(frames: dict) -> tuple[int, int]:
    """(width, height) of the cameras' frames (one size in a rig)."""
    return next(iter(frames.values())).shape[1::-1]


def marked(answer: str, correct: bool, truth: str) -> str:
    """An answer as the HUD and log show it: "(right)", or the truth beside it."""
    return answer + (" (right)" if correct else f" (truth: {truth})")


def points_of(objects) -> list[dict]:
    """The DriveLM points among an answer's parsed objects: the camera and the pixel in it."""
    return [{"camera": o.camera, "pixels": list(o.pixels)} for o in objects if getattr(o, "kind", "") == "camera_point"]


def boxes_of(objects, camera: str, label: str | None = None) -> list[dict]:
    """The boxes among an answer's parsed objects, in pixels of `camera` (points, and boxes whose
    pixels are unknown, left out: an answer may hold either, whatever was asked)."""
    return [{"camera": camera, "label": label or o.label, "pixels": list(o.pixels)} for o in objects
            if getattr(o, "kind", "") == "box" and o.pixels]


def run_probe(session, probe: tuple[str, str], frames: dict) -> dict:
    kind, arg = probe
    timings = []
    if kind == "find":              # arg: the phrase, or (phrase, the `where` question) on the synthetic clip
        phrase, q = arg if isinstance(arg, tuple) else (arg, None)
        a = session.ask(f"Where is the {phrase}?", cameras=frames, channels="BGR", max_new_tokens=32)
        timings.append(a.timings)
        points = points_of(a.objects)
        cam = points[0]["camera"] if points else None
        out = {"probe": f"find {phrase}", "camera": cam, "answer": a.text.strip(), "points": points[:1], "boxes": []}
        if cam in frames:
            g = session.ask(grounding_question(f"the {phrase}"), images=[frames[cam]], channels="BGR",
                            max_new_tokens=40)
            timings.append(g.timings)
            out["boxes"] = boxes_of(g.objects, cam, phrase)[:1]
        if q is not None:           # right: the point inside the object in its camera (calib's judge)
            o = q.subject
            out["truth"] = {"camera": o.camera, "box": list(o.box)}
            out["correct"] = judge(q, a.text, frame_size(frames))["correct"]
            out["answer"] = marked(out["answer"], out["correct"], f"{o.camera} {list(o.box)}")
    elif kind == "mc":             # a multiple-choice question about one camera, truth known
        q = arg
        a = session.ask(q.text, images=[frames[q.camera]], channels="BGR", max_new_tokens=8)
        timings.append(a.timings)
        got = a.text.strip().rstrip(".")
        ok = judge(q, a.text)["correct"]
        out = {"probe": q.text.splitlines()[0], "camera": q.camera, "boxes": [], "truth": q.answer, "correct": ok,
               "answer": marked(got, ok, q.answer)}
    elif kind == "camera":         # which camera shows an object, asked on all six, truth known
        q = arg
        a = session.ask(q.prompt, cameras=frames, channels="BGR", max_new_tokens=12)
        timings.append(a.timings)
        got = a.text.strip()
        ok = judge(q, got, frame_size(frames))["correct"]
        out = {"probe": q.text.splitlines()[0], "camera": got if got in frames else None, "six": True, "boxes": [],
               "truth": q.answer, "correct": ok, "answer": marked(got, ok, q.answer)}
    elif kind == "describe":
        a = session.ask("Describe the objects in this image.", images=[frames[arg]], channels="BGR",
                        max_new_tokens=48)
        timings.append(a.timings)
        out = {"probe": f"describe {arg}", "camera": arg, "answer": a.text,
               "boxes": boxes_of(a.objects, arg)}
    else:
        a = session.ask(arg, cameras=frames, channels="BGR", max_new_tokens=96)
        timings.append(a.timings)
        out = {"probe": "ask", "camera": None, "answer": a.text, "boxes": [],
               "points": points_of(a.objects)}
    out["timings"] = {k: sum(getattr(t, k) for t in timings) for k in
                      ("preprocess_s", "vision_s", "prefill_s", "decode_s", "new_tokens", "prompt_tokens",
                       "reused_tokens", "tiles_encoded", "tiles_cached")}
    return out


# ------------------------------------------------------------------ drawing
def rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def camera_tile(name: str, frame: np.ndarray, results: list[dict]) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    sx, sy = TILE_W / w, TILE_H / h
    tile = cv2.resize(frame, (TILE_W, TILE_H), interpolation=cv2.INTER_AREA)
    cv2.putText(tile, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 0, 255), 2)
    line = 44
    for k, r in enumerate(results):
        colour = COLOURS[k % len(COLOURS)]
        for b in r.get("boxes", []):
            if b["camera"] != name:
                continue
            x1, y1, x2, y2 = b["pixels"]
            cv2.rectangle(tile, (int(x1 * sx), int(y1 * sy)), (int(x2 * sx), int(y2 * sy)), colour, 2)
            cv2.putText(tile, b["label"] or "", (int(x1 * sx), max(12, int(y1 * sy) - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
        for p in r.get("points", []):
            if p["camera"] == name:
                cv2.circle(tile, (int(p["pixels"][0] * sx), int(p["pixels"][1] * sy)), 6, colour, 2)
        if r.get("camera") == name:
            cv2.putText(tile, f"{r['probe']}: {r['answer'][:48]}", (8, line), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, colour, 1)
            line += 18
    return tile


def hud(results: list[dict], tick: int, wall_s: float) -> np.ndarray:
    import cv2

    panel = np.zeros((HUD_H, 3 * TILE_W, 3), np.uint8)
    t = {k: sum(r["timings"][k] for r in results) for k in results[0]["timings"]} if results else {}
    tps = t.get("new_tokens", 0) / t["decode_s"] if t.get("decode_s") else 0.0
    rows = [f"tick {tick}   wall {wall_s * 1000:.0f} ms   RSS {rss_mib():.0f} MiB",
            f"preprocess {t.get('preprocess_s', 0) * 1000:.0f} ms   vision {t.get('vision_s', 0) * 1000:.0f} ms   "
            f"prefill {t.get('prefill_s', 0) * 1000:.0f} ms   decode {t.get('decode_s', 0) * 1000:.0f} ms "
            f"({tps:.0f} tok/s)",
            f"tiles encoded {t.get('tiles_encoded', 0)}, from cache {t.get('tiles_cached', 0)}   prompt tokens "
            f"reused {t.get('reused_tokens', 0)} of {t.get('prompt_tokens', 0)}"]
    known = [r["correct"] for r in results if "correct" in r]
    if known:
        rows.append(f"questions with known answers: {sum(known)}/{len(known)} right")
    rows += [f"{r['probe']}: {r['answer'][:110]}" for r in results
             if r.get("camera") is None or r.get("six") or r["probe"] == "ask"]
    rows += [f"{r['probe']}: {r['answer'][:100]}" for r in results if r["probe"].startswith("find")]
    for k, text in enumerate(rows[:8]):
        cv2.putText(panel, text, (10, 22 + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1)
    return panel


def compose(frames: dict, results: list[dict], tick: int, wall_s: float) -> np.ndarray:
    tiles = [camera_tile(name, frames[name], results) for name in CAMERAS]
    grid = np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])])
    return np.vstack([grid, hud(results, tick, wall_s)])


# ------------------------------------------------------------------ main loop
def default_bundle() -> Path:
    """The default model exported (INT8) to out/default-bundle: the embedded trained model when the
    package has one (mivl/assets/default_model), else the tiny random checkpoint that scripts/demo.sh
    uses. Exported again when the bundle there was made from other weights (an older default model)."""
    from mivl.export.checkpoint import sha256_files, weight_files
    from mivl.export.default_model import ASSET

    root = Path(__file__).resolve().parents[2] / "out"
    out = root / "default-bundle"
    src = ASSET
    if not (ASSET / "config.json").is_file():
        from mivl.export.tiny import make_tiny
        src = root / "default-checkpoint"
        if not (src / "config.json").is_file():
            make_tiny("qwen2", src, 0, overwrite=True)
    try:
        made_from = json.loads((out / "manifest.json").read_text())["source"]["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        made_from = None
    if made_from != sha256_files(weight_files(src)):
        from mivl.export.api import export

        print(f"exporting {src} to {out} ...", flush=True)
        export(src, out, precision="int8", quiet=True, force=True,
               keep_float=("projector", "attention", "patch_embed", "last_block"))
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", nargs="?", help="bundle folder (default: the embedded default model)")
    p.add_argument("--cam", action="append", default=[], metavar="NAME=SOURCE",
                   help="a camera source (see sources.py); all six cameras")
    p.add_argument("--synthetic", action="store_true", help="use mivl.calib's synthetic six-camera clip")
    p.add_argument("--seed", type=int, default=CLIP_SEED, help="synthetic clip seed")
    p.add_argument("--objects", type=int, default=CLIP_OBJECTS, help="synthetic clip: objects per camera (at most)")
    p.add_argument("--find", action="append", default=[], metavar="PHRASE")
    p.add_argument("--ask", action="append", default=[], metavar="QUESTION")
    p.add_argument("--describe", action="append", default=[], metavar="CAM", choices=CAMERAS)
    p.add_argument("--frames", type=int, default=0, help="stop after N ticks (0: until a source ends)")
    p.add_argument("--rate", type=float, default=0.0, help="ticks per second (0: as fast as it runs)")
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.add_argument("--out", default="out/demo", help="folder for demo.mp4, snapshots and log.jsonl")
    p.add_argument("--snapshot-every", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--feature-cache-mb", type=int, default=256,
                   help="image features kept per tile, so that each probe after the first and every unchanged "
                        "camera skip the vision encoder (0: off)")
    a = p.parse_args(argv)
    from mivl.calib.questions import MAX_SCENE_OBJECTS
    from mivl.edge import args
    from mivl.edge.errors import InputError
    from mivl.edge.request import check_seed

    try:     # the numbers checked before a camera opens or the output folder is touched
        args.integer("--frames", a.frames, 0, why="0: until a source ends")
        args.real("--rate", a.rate, 0.0, 1000.0, why="ticks per second, 0: as fast as it runs")
        args.integer("--snapshot-every", a.snapshot_every, 1)
        check_seed("--seed", a.seed)
        args.integer("--objects", a.objects, 1, MAX_SCENE_OBJECTS, "objects per camera of the synthetic clip")
        args.integer("--feature-cache-mb", a.feature_cache_mb, 0)
    except InputError as e:
        p.error(str(e))
    return a


def synthetic_probes(rig: SyntheticRig, tick: int) -> list[tuple[str, object]]:
    """Questions with known answers about the clip at `tick`: colour and class of an object in each
    of two cameras, which camera shows each of two objects, then where those two are (each with its
    box at that tick)."""
    from mivl.calib.synthetic import CLASSES, COLOURS

    objs = rig.clip.scene.objects
    probes: list[tuple[str, object]] = []
    for o in [o for o in objs if sum(p.camera == o.camera for p in objs) == 1][:2]:
        probes.append(("mc", Question("colour", f"What colour is the {o.cls}?\n" + options_text(list(COLOURS)),
                                      o.colour, o.camera, tuple(COLOURS), o)))
        probes.append(("mc", Question("class", f"What is the {o.colour} object?\n" + options_text(CLASSES), o.cls,
                                      o.camera, tuple(CLASSES), o)))
    keys = [(o.colour, o.cls) for o in objs]
    now = rig.clip.objects(tick)
    unique = [(f"{o.colour} {o.cls}", now[k]) for k, o in enumerate(objs) if keys.count((o.colour, o.cls)) == 1]
    picked = unique[:2]
    return (probes + [("camera", camera_question(o.colour, o.cls, o.camera, CAMERAS, o)) for _, o in picked]
            + [("find", (phrase, where_question(o, (rig.clip.width, rig.clip.height)))) for phrase, o in picked])


def main(argv=None) -> int:
    import cv2

    from mivl.edge.session import Session

    a = parse_args(argv)
    if a.synthetic == bool(a.cam):
        raise SystemExit("give --synthetic or six --cam NAME=SOURCE")
    if a.synthetic:
        rig = SyntheticRig(a.seed, max_objects=a.objects)
    else:
        specs = dict(c.split("=", 1) for c in a.cam)
        if set(specs) != set(CAMERAS):
            raise SystemExit(f"--cam must name each of {', '.join(CAMERAS)} once")
        rig = open_rig(specs)
    probes = [("find", f) for f in a.find] + [("ask", q) for q in a.ask] + [("describe", c) for c in a.describe]
    known = not probes and a.synthetic          # the clip's own questions, answers known each tick
    if not probes and not a.synthetic:
        probes = [("ask", "Describe the driving scene.")]
    display = not a.headless and bool(os.environ.get("DISPLAY"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    writer, log = None, open(out / "log.jsonl", "w")
    bundle = Path(a.bundle) if a.bundle else default_bundle()
    tick = 0
    with Session(bundle, threads=a.threads, feature_cache_mb=a.feature_cache_mb) as session:
        print(f"bundle {bundle}; probes: {'the clip questions' if known else probes}; "
              f"backends {session.backends}", flush=True)
        try:
            while not a.frames or tick < a.frames:
                t0 = time.perf_counter()
                frames = rig.read()
                if frames is None:
                    break
                ask = synthetic_probes(rig, rig.t - 1) if known else probes
                results = [run_probe(session, p, frames) for p in ask]
                wall = time.perf_counter() - t0
                view = compose(frames, results, tick, wall)
                log.write(json.dumps({"tick": tick, "wall_s": wall, "rss_mib": rss_mib(), "results": results}) + "\n")
                log.flush()
                if display:
                    cv2.imshow("mivl six-camera demo", view)
                    if cv2.waitKey(1) & 0xFF == ord("q"):
                        break
                else:
                    if writer is None:
                        fps = a.rate if a.rate > 0 else 2.0
                        writer = cv2.VideoWriter(str(out / "demo.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (view.shape[1], view.shape[0]))
                    writer.write(view)
                    if tick % a.snapshot_every == 0:
                        cv2.imwrite(str(out / f"snapshot-{tick:05d}.png"), view)
                enc = sum(r["timings"]["tiles_encoded"] for r in results)
                print(f"tick {tick}: {wall * 1000:.0f} ms, {enc} tiles encoded; " + "; ".join(
                    f"{r['probe']} -> {r['answer'][:60]!r}" for r in results), flush=True)
                tick += 1
                if a.rate > 0:
                    time.sleep(max(0.0, 1 / a.rate - (time.perf_counter() - t0)))
        finally:
            rig.close()
            log.close()
            if writer is not None:
                writer.release()
            if display:
                cv2.destroyAllWindows()
    print(f"{tick} tick(s); wrote {out}/" + ("" if display else "demo.mp4, snapshots, ") + "log.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
