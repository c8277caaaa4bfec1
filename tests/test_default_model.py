"""The committed default model (mivl/assets/default_model): what it is configured for, that its
recipe says so, and what it answers on held-out questions (question stream 20260, never trained
on), through the PyTorch reference and through the runtime (its INT8 bundle, as scripts/demo.sh
exports it).

The floors are the committed model's own figures (README, "Six-camera demo") less a margin of about
two questions a kind: they hold it from regressing. Most are below the targets the SDK aims at
(0.90 on every one-word kind): what the model does not reach is said in README.
"""
import json

import pytest

from mivl.export.default_model import ASSET, DEFAULT, ONE_WORD_KINDS

N = 200
# (max objects per camera) -> kind -> floor; the model's figures on the first 200 questions of the
# held-out stream (its INT8 bundle gives the reference's answer to 199 of the 200 busy-scene ones; over
# 2,400 busy-scene questions it is within 0.8 points of it on every kind: BENCHMARKS.md)
FLOORS = {
    # the model's figures: camera 0.84 (31 questions), camera_colour 0.71 (21), camera_class 0.85 (20),
    # absent 0.93 (42), colour 1.00 (23), class 0.92 (26), absent_one 0.95 (37); all 0.895
    1: {"camera": 0.77, "camera_colour": 0.61, "camera_class": 0.75, "absent": 0.88, "colour": 0.91,
        "class": 0.84, "absent_one": 0.89},
    # camera 0.71 (24), camera_colour 0.39 (23), camera_class 0.62 (24), absent 0.89 (37), colour 0.82
    # (22), class 0.92 (38), absent_one 0.94 (32); all 0.785
    3: {"camera": 0.62, "camera_colour": 0.30, "camera_class": 0.54, "absent": 0.83, "colour": 0.72,
        "class": 0.86, "absent_one": 0.87},
}
OVERALL = {1: 0.88, 3: 0.76}
# `where` on six cameras, busy scenes (up to three objects a camera), the first N_WHERE held-out questions
N_WHERE = 50
# (the model's: camera right 0.82, point inside the object 0.22; a margin of three questions)
WHERE = {"camera_right": 0.76, "point_hit": 0.16}


def test_default_model_is_what_its_recipe_makes():
    cfg = json.loads((ASSET / "config.json").read_text())
    # the paper's driving layout: six cameras stitched 2x3 = 6x2 tiles + thumbnail
    assert cfg["max_dynamic_patch"] == DEFAULT.max_tiles == 12 and cfg["use_thumbnail"] is DEFAULT.thumbnail is True
    assert cfg["dynamic_image_size"] is True
    size = sum(f.stat().st_size for f in ASSET.iterdir())
    assert size <= 20 * 2 ** 20, size
    log = json.loads((ASSET / "train_log.json").read_text())
    assert [s["name"] for s in log["stages"]] == [s.name for s in DEFAULT.stages]
    assert all(log["logs"][s.name]["steps"] == s.steps for s in DEFAULT.stages)
    # each stage's wall time on 2 CPU cores, over every run that made its steps: under three hours in all
    assert 0 < sum(log["logs"][s.name]["seconds"] for s in DEFAULT.stages) < 3 * 3600
    assert (log["name"], log["positions"]) == (DEFAULT.name, DEFAULT.positions) == ("six-camera-where", "sincos")
    assert "where" in DEFAULT.kinds


def test_recipe_names_its_stages():
    assert DEFAULT.stage("f6") is next(s for s in DEFAULT.stages if s.name == "f6")
    with pytest.raises(KeyError, match="no stage 'f9'.*dense, f1, f2"):
        DEFAULT.stage("f9")


@pytest.fixture(scope="module")
def reference_answers():
    from mivl.calib.evaluate import asker, score
    from mivl.export.reference import Reference

    ref = Reference(ASSET)
    return {m: score(asker(ref, max_new_tokens=16), N, kinds=ONE_WORD_KINDS, keep=True, max_objects=m)
            for m in FLOORS}


@pytest.mark.parametrize("max_objects", sorted(FLOORS))
def test_default_model_answers_held_out_questions(reference_answers, max_objects):
    """Each one-word kind on 200 held-out questions, one and up to three objects per camera."""
    r = reference_answers[max_objects]
    got = {k: round(v["accuracy"], 3) for k, v in r["per_kind"].items()}
    assert set(got) == set(ONE_WORD_KINDS)
    assert all(got[k] >= FLOORS[max_objects][k] for k in got), (got, FLOORS[max_objects])
    assert r["accuracy"] >= OVERALL[max_objects], r["accuracy"]
    # asked about something shown, it does not answer "none"
    shown = [a for a in r["answers"] if a["kind"] in ("camera", "camera_colour", "camera_class")]
    assert sum(a["got"].strip().lower() == "none" for a in shown) <= 0.05 * len(shown)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    from mivl.export.api import export

    out = tmp_path_factory.mktemp("default") / "bundle"
    export(ASSET, out, precision="int8", quiet=True,
           keep_float=("projector", "attention", "patch_embed", "last_block"))
    return out


def test_default_model_int8_bundle_answers_as_the_reference(int8_bundle, reference_answers):
    """The INT8 bundle through the runtime, on the busy-scene questions: the reference's answer
    word for word on >= 97% of them, and the same floors."""
    from mivl.calib.evaluate import asker, score
    from mivl.edge.session import Session

    with Session(int8_bundle, threads=2) as s:
        r = score(asker(s, max_new_tokens=16), N, kinds=ONE_WORD_KINDS, keep=True, max_objects=3)
    ref = reference_answers[3]["answers"]
    same = sum(a["got"].strip() == b["got"].strip() for a, b in zip(r["answers"], ref))
    assert same >= 0.97 * N, same
    got = {k: v["accuracy"] for k, v in r["per_kind"].items()}
    assert all(got[k] >= FLOORS[3][k] for k in got), (got, FLOORS[3])


@pytest.fixture(scope="module")
def reference_points():
    from mivl.calib.evaluate import asker, score
    from mivl.export.reference import Reference

    return score(asker(Reference(ASSET), max_new_tokens=40), N_WHERE, kinds=("where",), keep=True, max_objects=3)


def test_default_model_points_at_what_it_is_asked_where(reference_points):
    """`where` on six cameras (busy scenes): a DriveLM point, well formed, in the right camera and
    inside the object at the committed model's rate less a margin."""
    f = reference_points["per_kind"]["where"]
    assert f["well_formed"] >= 0.95 and f["camera_right"] >= WHERE["camera_right"], f
    assert f["point_hit"] >= WHERE["point_hit"], f


def test_default_model_int8_bundle_points_as_the_reference(int8_bundle, reference_points):
    """The INT8 bundle's points: at least 95% of its answers and the reference's parse as a point
    (one INT8 `where` answer in 400 was measured malformed, BENCHMARKS.md; INT8 arithmetic differs
    between AVX2 and VNNI CPUs), the same camera as the reference's nearly always, the point within a
    few units of 0..1000 on most questions, and the same floors."""
    from mivl.calib.evaluate import asker, score
    from mivl.edge.parse import parse_camera_points
    from mivl.edge.session import Session

    with Session(int8_bundle, threads=2) as s:
        r = score(asker(s, max_new_tokens=40), N_WHERE, kinds=("where",), keep=True, max_objects=3)
    pairs = [(parse_camera_points(a["got"])[:1], parse_camera_points(b["got"])[:1])
             for a, b in zip(r["answers"], reference_points["answers"])]
    pairs = [(a[0], b[0]) for a, b in pairs if a and b]
    assert len(pairs) >= 0.95 * N_WHERE
    assert sum(a.camera == b.camera for a, b in pairs) >= 0.9 * N_WHERE
    near = sum(a.camera == b.camera and abs(a.point[0] - b.point[0]) <= 10 and abs(a.point[1] - b.point[1]) <= 10
               for a, b in pairs)
    assert near >= 0.8 * N_WHERE, near
    f = r["per_kind"]["where"]
    assert f["camera_right"] >= WHERE["camera_right"] and f["point_hit"] >= WHERE["point_hit"], f


def test_every_anchor_names_a_dense_stage_before_it():
    from mivl.export.default_model import RECIPES

    for recipe in RECIPES.values():
        names = [s.name for s in recipe.stages]
        for i, s in enumerate(recipe.stages):
            if s.anchor:
                dense = recipe.stage(s.anchor_stage)
                assert not dense.kinds and names.index(dense.name) < i, (recipe.name, s.name)


def test_sincos_positions_start_each_patch_apart_and_near_its_neighbours(tmp_path):
    import torch
    from safetensors.torch import load_file

    from mivl.export.default_model import SIX_CAMERA, SIX_CAMERA_LONG, init_for_training, make_initial, sincos_positions

    table = sincos_positions(32, 64)
    assert table.shape == (1024, 64)
    sim = torch.nn.functional.normalize(table, dim=1) @ torch.nn.functional.normalize(table, dim=1).T
    assert sim.fill_diagonal_(-1).max() < 0.999            # no two patches start alike
    # patch (10, 10) is nearer (10, 11) than (10, 20), and (11, 10) than (20, 10)
    p = lambda r, c: 32 * r + c
    assert sim[p(10, 10), p(10, 11)] > sim[p(10, 10), p(10, 20)] and sim[p(10, 10), p(11, 10)] > sim[p(10, 10), p(20, 10)]

    key = "vision_model.embeddings.position_embedding"
    long = load_file(make_initial(tmp_path / "long", 0, SIX_CAMERA_LONG) / "model.safetensors")
    plain = load_file(make_initial(tmp_path / "plain", 0, SIX_CAMERA) / "model.safetensors")
    saved = table.to(long[key].dtype)                             # the initial checkpoint is bf16
    assert torch.equal(long[key][0, 1:], saved) and not torch.equal(plain[key][0, 1:], saved)
    # everything else as the plain init draws it
    assert all(torch.equal(long[k], plain[k]) for k in plain if k != key)
    assert torch.equal(long[key][0, :1], plain[key][0, :1])     # the class token's position as drawn
    with pytest.raises(ValueError, match="positions must be 'noise' or 'sincos'"):
        init_for_training(None, 0, "learned")


def test_default_model_demo_finds_what_it_is_asked_and_draws_it_there(int8_bundle, tmp_path, demo_app):
    """The demo app on the synthetic clip with the default model's INT8 bundle: its find probes
    ("Where is the green car?" on six cameras) right on at least 9 of 12 (the model's: 12; the 0.8
    aimed at less one), and each right find's circle drawn in its camera's tile of the snapshot,
    centred inside the object's box there."""
    import os
    import subprocess
    import sys

    import cv2
    from demo import CLIP_OBJECTS, CLIP_SEED, COLOURS, TILE_H, TILE_W      # demo_app put it on sys.path

    from mivl.calib.clip import SixCameraClip
    from mivl.edge.multiview import CAMERAS

    d = tmp_path / "demo"
    cmd = [sys.executable, demo_app.__file__, str(int8_bundle), "--synthetic", "--frames", "6",
           "--headless", "--out", str(d), "--snapshot-every", "1", "--threads", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, DISPLAY=""), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
    finds = [(tick["tick"], k, r) for tick in log for k, r in enumerate(tick["results"]) if r["probe"].startswith("find ")]
    assert len(finds) == 12
    clip = SixCameraClip(CLIP_SEED, max_objects=CLIP_OBJECTS)      # the demo's default clip
    right = [(t, k, r) for t, k, r in finds if r["correct"]]
    assert len(right) >= 9, [r["answer"] for _, _, r in finds]
    for t, k, r in right:
        img = cv2.imread(str(d / f"snapshot-{t:05d}.png"))
        cam = r["truth"]["camera"]
        row, col = divmod(CAMERAS.index(cam), 3)
        p = r["points"][0]
        assert p["camera"] == cam
        sx, sy = TILE_W / clip.width, TILE_H / clip.height    # the tile is the camera frame scaled
        cx, cy = int(p["pixels"][0] * sx), int(p["pixels"][1] * sy)
        x1, y1, x2, y2 = r["truth"]["box"]
        assert x1 * sx <= cx <= x2 * sx and y1 * sy <= cy <= y2 * sy
        ring = img[row * TILE_H + cy, col * TILE_W + cx + 6]     # the circle's rim (radius 6), right of its centre
        assert tuple(int(v) for v in ring) == COLOURS[k % len(COLOURS)], (t, r["probe"], ring)
