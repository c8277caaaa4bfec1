"""`mivl info --budget`, `mivl eval`, and the six-camera demo app run headless."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mivl.edge.budget import DEVICES, budget, gguf_metadata, kv_cache_bytes, llm_shape
from mivl.edge.bundle import open_bundle

ROOT = Path(__file__).resolve().parents[1]


def test_gguf_header_reader_agrees_with_the_gguf_package(bundle_dir):
    gguf = pytest.importorskip("gguf")
    b = open_bundle(bundle_dir("qwen2"))
    path = b.file(b.manifest["llm"]["file"])
    ours = gguf_metadata(path)
    theirs = gguf.GGUFReader(str(path))
    for key, field in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        v = field.contents()
        if isinstance(v, list) and v and not isinstance(v[0], str):
            assert ours[key] == len(v), key        # numeric arrays: their length
        else:
            assert ours[key] == v, key


def test_budget_is_computed_from_the_bundle(bundle_dir):
    b = open_bundle(bundle_dir("qwen2"))
    s = llm_shape(b.file(b.manifest["llm"]["file"]))
    assert s.n_embd == b.manifest["llm"]["n_embd"] and s.n_layer == 2 and s.n_head_kv == 2
    r = budget(b, n_ctx=2048)
    kv = [v for k, v in r["parts"].items() if k.startswith("KV cache")][0]
    # an fp32 bundle's f32 LLM runs with an f32 KV cache; a quantised one with f16
    assert kv == kv_cache_bytes(s, 2048, 4) == 2 * 2 * 2048 * 2 * (64 // 4) * 4
    assert "KV cache (n_ctx 2048, f32)" in r["parts"]
    q8 = budget(open_bundle(bundle_dir("qwen2", "int8")), n_ctx=2048)
    assert q8["parts"]["KV cache (n_ctx 2048, f16)"] == kv_cache_bytes(s, 2048, 2)
    assert r["parts"]["LLM weights"] == b.file(b.manifest["llm"]["file"]).stat().st_size
    assert r["total"] == sum(r["parts"].values())
    assert [d["device"] for d in r["devices"]] == [d[0] for d in DEVICES] and all(d["fits"] for d in r["devices"])
    big = budget(b, n_ctx=2048, tiles=2000)                       # activations scale with the tile batch
    assert not big["devices"][0]["fits"] and big["total"] > r["total"]


def test_cli_info_budget_and_eval(bundle_dir):
    bundle = str(bundle_dir("qwen2"))
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "mivl.edge.cli", "info", bundle, "--budget", "--n-ctx", "4096"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "Orin Nano 8GB" in out.stdout and "KV cache (n_ctx 4096, f32)" in out.stdout and "fits" in out.stdout
    out = subprocess.run([sys.executable, "-m", "mivl.edge.cli", "eval", bundle, "--questions", "3", "--json"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["n"] == 3 and len(res["answers"]) == 3 and 0.0 <= res["accuracy"] <= 1.0
    out = subprocess.run([sys.executable, "-m", "mivl.edge.cli", "eval", bundle, "--questions", "4", "--kinds",
                          "where,grounding", "--max-objects", "1", "--seed", "1"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert set(lines) == {"where", "grounding"}, out.stdout          # each kind with what it got right
    assert all(f in lines["where"] for f in ("point hit", "well formed", "camera right")), out.stdout
    assert all(f in lines["grounding"] for f in ("mean iou", "well formed", "phrase right")), out.stdout
    out = subprocess.run([sys.executable, "-m", "mivl.edge.cli", "eval", bundle, "--kinds", "nonsense"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "--kinds takes" in out.stderr


def test_demo_runs_headless_on_the_synthetic_clip(bundle_dir, tmp_path, demo_app):
    cmd = [sys.executable, str(ROOT / "examples/jetson_demo/demo.py"), str(bundle_dir("qwen2")), "--synthetic",
           "--frames", "2", "--headless", "--out", str(tmp_path / "demo"), "--snapshot-every", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, DISPLAY=""), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    d = tmp_path / "demo"
    assert (d / "demo.mp4").stat().st_size > 1000
    snaps = sorted(d.glob("snapshot-*.png"))
    assert len(snaps) == 2
    import cv2
    img = cv2.imread(str(snaps[0]))
    assert img.shape == (2 * 270 + 170, 3 * 480, 3)
    log = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
    assert [r["tick"] for r in log] == [0, 1]
    probes = [p["probe"] for p in log[0]["results"]]
    assert any(p.startswith("find ") for p in probes)
    known = [r for r in log[0]["results"] if "truth" in r]      # every default probe's answer is known
    assert len(known) == len(probes) and all(isinstance(r["correct"], bool) for r in known)
    assert all(r["camera"] for r in known if not r["probe"].startswith(("find ", "Which camera")))
    from mivl.edge.multiview import CAMERAS
    cams = [r for r in log[0]["results"] if r["probe"].startswith("Which camera shows the ")]
    assert len(cams) == 2 and all(r["truth"] in CAMERAS for r in cams)
    for r in cams:        # right exactly when the answer names the camera that shows it
        assert r["correct"] == (r["answer"].split(" (")[0] == r["truth"])
        assert r["camera"] in (None, r["answer"].split(" (")[0])
    from mivl.calib.clip import SixCameraClip
    clip = SixCameraClip(demo_app.CLIP_SEED, max_objects=demo_app.CLIP_OBJECTS)      # the demo's default clip
    for tick in log:
        for r in (r for r in tick["results"] if r["probe"].startswith("find ")):   # truth: the object then
            assert (r["truth"]["camera"], tuple(r["truth"]["box"])) in {
                (o.camera, tuple(o.box)) for o in clip.objects(tick["tick"]) if r["probe"] == f"find {o.colour} {o.cls}"}
            p = r["points"][0] if r["points"] else None
            x1, y1, x2, y2 = r["truth"]["box"]
            assert r["correct"] == (p is not None and p["camera"] == r["truth"]["camera"]
                                    and x1 <= p["pixels"][0] <= x2 and y1 <= p["pixels"][1] <= y2)
    for r in log[0]["results"]:   # every probe sees its tiles: encoded, or from the feature cache
        t = r["timings"]
        assert t["prompt_tokens"] > 0 and t["tiles_encoded"] + t["tiles_cached"] > 0
    assert any(r["timings"]["vision_s"] > 0 for r in log[0]["results"])
    assert any(r["timings"]["tiles_cached"] > 0 for r in log[0]["results"])   # a camera asked twice
    cap = cv2.VideoCapture(str(d / "demo.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2


@pytest.mark.parametrize("argv,words", [(["--n-ctx", "-5"], "n_ctx must be within 1.."),
                                        (["--tiles", "0"], "tiles must be within 1..")])
def test_cli_budget_refuses_nonsense(bundle_dir, argv, words):
    out = subprocess.run([sys.executable, "-m", "mivl.edge.cli", "info", str(bundle_dir("qwen2")), "--budget", *argv],
                         capture_output=True, text=True)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("argv,words", [(["--frames", "-1"], "--frames must be within >= 0"),
                                        (["--rate", "nan"], "--rate must be a finite number"),
                                        (["--snapshot-every", "0"], "--snapshot-every must be within >= 1"),
                                        (["--objects", "9"], "--objects must be within 1..6"),
                                        (["--seed", str(2 ** 64)], "--seed must be within 0..18446744073709551615"),
                                        (["--feature-cache-mb", "-1"], "--feature-cache-mb must be within >= 0")])
def test_demo_refuses_bad_numbers_before_writing(tmp_path, argv, words):
    """Checked before a source opens or the output folder is touched (a run of -1 frames used to
    overwrite the last run's video and log with nothing)."""
    cmd = [sys.executable, str(ROOT / "examples/jetson_demo/demo.py"), "unused", "--synthetic", "--headless",
           "--out", str(tmp_path / "demo"), *argv]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_incomplete_camera_sets(tmp_path):
    cmd = [sys.executable, str(ROOT / "examples/jetson_demo/demo.py"), "unused", "--cam", "CAM_FRONT=x.mp4",
           "--headless"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode != 0 and "must name each of CAM_FRONT_LEFT" in out.stderr


def test_synthetic_clip_moves_and_writes_six_videos(tmp_path):
    import cv2
    import numpy as np
    from mivl.calib.clip import SixCameraClip
    clip = SixCameraClip(4, 320, 180)
    a, b = clip.frames(0), clip.frames(5)
    assert set(a) == set(b) and any(not np.array_equal(a[k], b[k]) for k in a)
    for o in clip.objects(7):
        assert 0 <= o.box[0] < o.box[2] <= 320
    paths = clip.write(tmp_path, 3, fps=5)
    for p in paths.values():
        cap = cv2.VideoCapture(str(p))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_demo_draws_boxes_from_boxes_and_points_from_points(demo_app):
    """Whatever an answer holds (a grounding question answered with a DriveLM point, a `where`
    question with a box), the demo's boxes have four coordinates and its points two."""
    boxes_of, points_of = demo_app.boxes_of, demo_app.points_of

    from mivl.edge.parse import parse_objects

    objs = parse_objects("<ref>the bus</ref><box>[[100, 200, 300, 400]]</box> <c1,CAM_BACK,500,700>",
                         image_size=(800, 450), camera_sizes={"CAM_BACK": (800, 450)})
    boxes, points = boxes_of(objs, "CAM_FRONT", "bus"), points_of(objs)
    assert [b["camera"] for b in boxes] == ["CAM_FRONT"] and len(boxes[0]["pixels"]) == 4
    assert boxes[0]["label"] == "bus" and boxes_of(objs, "CAM_FRONT")[0]["label"] == "the bus"
    assert [p["camera"] for p in points] == ["CAM_BACK"] and len(points[0]["pixels"]) == 2
    only_point = parse_objects("<c1,CAM_FRONT,400,200>", camera_sizes={"CAM_FRONT": (800, 450)})
    assert boxes_of(only_point, "CAM_FRONT") == [] and len(points_of(only_point)) == 1


def test_demo_judges_known_answers_by_the_sdk_rule(demo_app):
    """The demo's known-answer probes are judged by `mivl.calib.questions.judge` (multiple choice:
    trimmed, a final full stop and case ignored; find: the point inside the object in its camera)."""
    import numpy as np

    run_probe = demo_app.run_probe

    from mivl.calib.questions import Question, drivelm_point, where_question
    from mivl.calib.synthetic import COLOURS, SceneObject
    from mivl.edge.multiview import CAMERAS
    from mivl.edge.parse import parse_objects

    class Timings:
        def __getattr__(self, name):
            return 0

    class Said:                    # a session that answers what it is told to
        def __init__(self, replies):
            self.replies = list(replies)

        def ask(self, prompt, **kw):
            text = self.replies.pop(0)
            objs = parse_objects(text, image_size=(800, 450), camera_sizes={c: (800, 450) for c in CAMERAS})
            return type("A", (), {"text": text, "objects": objs, "timings": Timings()})()

    frames = {c: np.zeros((450, 800, 3), np.uint8) for c in CAMERAS}
    bus = SceneObject("bus", "green", "CAM_BACK", (300, 100, 500, 300))
    colour = Question("colour", "What colour is the bus?", "green", "CAM_BACK", tuple(COLOURS), bus)
    for said, right in [(" Green.", True), ("green", True), ("red", False), ("greenish", False)]:
        assert run_probe(Said([said]), ("mc", colour), frames)["correct"] is right, said
    q = where_question(bus, (800, 450))
    inside = drivelm_point(bus, 800, 450)
    outside = drivelm_point(SceneObject("bus", "green", "CAM_BACK", (600, 300, 700, 400)), 800, 450)
    elsewhere = inside.replace("CAM_BACK", "CAM_FRONT")
    for said, right in [(inside, True), (outside, False), (elsewhere, False), ("CAM_BACK", False)]:
        r = run_probe(Said([said, ""]), ("find", ("green bus", q)), frames)
        assert r["correct"] is right and r["truth"] == {"camera": "CAM_BACK", "box": [300, 100, 500, 300]}, said
