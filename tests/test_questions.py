"""The six-camera question kinds and their scoring (mivl.calib.questions / evaluate): answers agree
with the scene, grounding is scored by IoU, DriveLM points by landing inside the object, absence
by "none"."""
import numpy as np
import pytest

from mivl.calib.evaluate import score
from mivl.calib.questions import (KINDS, NONE, SIX_CAMERA_KINDS, Question, ask_kind, box_1000, box_text,
                                  draw_conversation, draw_question, draw_scene_conversation, iou, judge)
from mivl.calib.synthetic import CLASSES, COLOURS, SceneObject, draw_scene
from mivl.edge.parse import parse_camera_points

SIZE = (800, 450)


def _scenes(n=40):
    return [draw_scene(seed, *SIZE) for seed in range(n)]


def test_new_kinds_answer_what_the_scene_shows():
    rng = np.random.default_rng(1)
    seen = set()
    for scene in _scenes():
        for kind in ("camera_colour", "camera_class", "absent", "absent_one", "where"):
            q = ask_kind(kind, scene, rng, SIZE)
            if q is None:
                continue
            seen.add(kind)
            assert (q.camera is None) == (kind in SIX_CAMERA_KINDS)
            if kind == "camera_colour":
                cls, cam = q.text.split("the ")[1].split("?")[0].split(" in ")
                assert [o.colour for o in scene.in_camera(cam) if o.cls == cls] == [q.answer]
            elif kind == "camera_class":
                colour, cam = q.text.split("the ")[1].split("?")[0].split(" object in ")
                assert [o.cls for o in scene.in_camera(cam) if o.colour == colour] == [q.answer]
            elif kind == "absent":
                colour, cls = q.text.split("the ")[1].split("?")[0].split(" ", 1)
                assert q.answer == NONE and not [o for o in scene.objects if (o.colour, o.cls) == (colour, cls)]
                assert NONE not in q.options
            elif kind == "absent_one":
                objs = scene.in_camera(q.camera)
                subject = q.text.split("the ")[1].split("?")[0]
                if q.text.startswith("What colour"):
                    assert subject in CLASSES and subject not in {o.cls for o in objs}
                else:
                    colour = subject.split(" ")[0]
                    assert colour in COLOURS and colour not in {o.colour for o in objs}
                assert q.answer == NONE and NONE not in q.options
            elif kind == "where":
                p = parse_camera_points(q.answer, {c: SIZE for c in scene.cameras})[0]
                o = q.subject
                assert p.camera == o.camera
                assert o.box[0] <= p.pixels[0] <= o.box[2] and o.box[1] <= p.pixels[1] <= o.box[3]
                assert judge(q, q.answer, SIZE)["correct"]
    assert seen == {"camera_colour", "camera_class", "absent", "absent_one", "where"}


def test_grounding_is_scored_by_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    o = SceneObject("bus", "red", "CAM_FRONT", (100, 100, 300, 300))
    truth = box_1000(o.box, *SIZE)
    q = Question("grounding", "..", "<ref>the red bus</ref>" + box_text(truth), "CAM_FRONT", (), o)
    near = [truth[0] + 10, truth[1], truth[2] + 10, truth[3]]
    far = [truth[0] + 200, truth[1], truth[2] + 200, truth[3]]
    v = judge(q, "<ref>the red bus</ref>" + box_text(near), SIZE)
    assert v["correct"] and 0.5 < v["iou"] < 1
    v = judge(q, box_text(far), SIZE)
    assert not v["correct"] and v["iou"] < 0.5
    assert judge(q, "a red bus", SIZE) == {"correct": False, "iou": 0.0, "formed": False, "phrase": False}
    # what a wrong answer got right: a box parsed, the <ref> phrase copied
    v = judge(q, "<ref>the red bus</ref>" + box_text(far), SIZE)
    assert (v["formed"], v["phrase"], v["correct"]) == (True, True, False)
    v = judge(q, "<ref>the red bus</ref><box>[[8, 666, 8, 6, 6, 6]]</box>", SIZE)
    assert (v["formed"], v["phrase"]) == (False, True)
    assert judge(q, "<ref>the red car</ref>" + box_text(near), SIZE)["phrase"] is False


def test_where_is_scored_by_the_point_inside_the_object():
    o = SceneObject("car", "blue", "CAM_BACK", (400, 200, 600, 300))
    q = Question("where", "Where is the blue car?", "<c1,CAM_BACK,500,750>", None, (), o)
    # CAM_BACK is column 1, row 1 of the 2x3 canvas: x = (896 + cx / 800 * 896) / 2688 * 1000
    inside_x = round((896 + 500 / 800 * 896) / 2688 * 1000)
    inside_y = round((448 + 250 / 450 * 448) / 896 * 1000)
    assert judge(q, f"<c1,CAM_BACK,{inside_x},{inside_y}>", SIZE) == {"correct": True, "hit": True, "formed": True,
                                                                        "camera": True}
    assert not judge(q, f"<c1,CAM_FRONT,{inside_x},{inside_y - 500}>", SIZE)["correct"]   # wrong camera
    assert not judge(q, f"<c1,CAM_BACK,{inside_x + 100},{inside_y}>", SIZE)["correct"]     # outside the box
    assert not judge(q, "CAM_BACK", SIZE)["correct"]
    # what a wrong answer got right: a point parsed, the camera named
    v = judge(q, f"<c1,CAM_BACK,{inside_x + 100},{inside_y}>", SIZE)
    assert (v["formed"], v["camera"], v["hit"]) == (True, True, False)
    v = judge(q, "<c1,CAM_BACK,8,8,8,8>", SIZE)        # the camera named, the numbers malformed
    assert (v["formed"], v["camera"], v["hit"]) == (False, True, False)
    v = judge(q, "<c1,CAM_BACK_LEFT,8>", SIZE)         # another camera whose name starts alike
    assert (v["formed"], v["camera"]) == (False, False)
    assert judge(q, "<c1,CAM_BACK", SIZE)["camera"] is True          # cut off after the name
    assert judge(q, "CAM_BACK", SIZE)["camera"] is False             # not a DriveLM reference


def test_score_reports_each_kind_with_its_metric():
    kinds = ("camera", "camera_colour", "absent", "grounding", "where")
    truth = score(lambda q, frames: q.answer, 60, seed=3, kinds=kinds)
    assert set(truth["per_kind"]) == set(kinds) and truth["accuracy"] == 1.0
    assert truth["per_kind"]["grounding"]["mean_iou"] == pytest.approx(1.0)
    assert truth["per_kind"]["where"]["point_hit"] == 1.0
    assert truth["per_kind"]["where"]["well_formed"] == truth["per_kind"]["where"]["camera_right"] == 1.0
    assert truth["per_kind"]["grounding"]["well_formed"] == truth["per_kind"]["grounding"]["phrase_right"] == 1.0
    assert "well_formed" not in truth["per_kind"]["camera"]
    nothing = score(lambda q, frames: "none", 60, seed=3, kinds=kinds)
    assert nothing["per_kind"]["absent"]["accuracy"] == 1.0
    assert all(v["accuracy"] == 0 for k, v in nothing["per_kind"].items() if k != "absent")


def test_conversations_keep_to_one_view():
    for i in range(30):
        qs, frames = draw_conversation(9, i, KINDS, turns=3)
        six = qs[0].camera is None
        assert all((q.camera is None) == six for q in qs)
        assert len(frames) == (6 if six else 1)


def test_the_scene_of_a_drawn_conversation_is_the_one_asked_about():
    """draw_scene_conversation gives draw_conversation's questions and frames, and the whole scene
    they come from: the subject is among its objects, the frames are its cameras (JPEG'd)."""
    for i in range(12):
        qs, frames = draw_conversation(9, i, KINDS, turns=2, max_objects=3)
        qs2, scene, frames2 = draw_scene_conversation(9, i, KINDS, turns=2, max_objects=3)
        assert qs == qs2 and frames.keys() == frames2.keys()
        assert all(np.array_equal(frames[k], frames2[k]) for k in frames)
        assert all(q.subject is None or q.subject in scene.objects for q in qs)
        for k in frames:     # the frame is the scene's camera after a JPEG round trip
            assert np.abs(frames[k].astype(int) - scene.cameras[k].astype(int)).mean() < 4


def test_score_says_what_it_asked():
    res = score(lambda q, frames: "none", 4, seed=3, kinds=("absent", "colour"), max_objects=2)
    assert (res["seed"], res["kinds"], res["max_objects"]) == (3, ["absent", "colour"], 2)


def test_existing_streams_are_unchanged_by_the_new_kinds():
    """The held-out colour/class/camera stream the README's figures come from draws the same
    questions as before the new kinds existed (pinned from the code before them)."""
    got = [draw_question(20260, i, ("colour", "class", "camera"), max_objects=1)[0] for i in range(3)]
    assert [(q.kind, q.answer, q.camera) for q in got] == [
        ("camera", "CAM_BACK", None), ("colour", "yellow", "CAM_BACK"), ("camera", "CAM_BACK_LEFT", None)]
    assert got[0].text == ("Which camera shows the white truck?\nOptions: CAM_BACK_RIGHT, CAM_BACK_LEFT, "
                           "CAM_FRONT_RIGHT, CAM_BACK, CAM_FRONT_LEFT.\nAnswer with one of the options.")


def test_wrong_answers_are_told_apart_from_guesses():
    """benchmarks/answer_errors.py: a wrong colour is a near miss when another object of the camera
    (or of the class, elsewhere) has it, a guess otherwise; "none" to a shown object is "none"."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from answer_errors import category

    from mivl.calib.synthetic import Scene

    bus = SceneObject("bus", "red", "CAM_BACK", (10, 10, 200, 100))
    cone = SceneObject("cone", "blue", "CAM_BACK", (300, 200, 320, 240))
    car = SceneObject("bus", "green", "CAM_FRONT", (10, 10, 200, 100))
    scene = Scene({}, [bus, cone, car])
    q = Question("camera_colour", "What colour is the bus in CAM_BACK?", "red", None, ("red", "blue"), bus)
    assert [category(q, scene, a) for a in ("blue", "green.", "white", "none")] == [
        "same camera", "elsewhere", "guess", "none"]
    absent = Question("absent", "Which camera shows the blue bus?\nOptions: CAM_FRONT, CAM_BACK_LEFT.",
                      "none", None, ("CAM_FRONT", "CAM_BACK_LEFT"))
    assert [category(absent, scene, a) for a in ("CAM_FRONT", "CAM_BACK_LEFT")] == ["elsewhere", "guess"]
    where = Question("where", "Where is the red bus?", "<c1,CAM_BACK,450,800>", None, (), bus)
    assert [category(where, scene, a) for a in ("<c1,CAM_FRONT,450,800>", "<c1,CAM_BACK,8,8,8>",
                                                "<c1,CAM_BACK,999,999>")] == [
        "wrong camera", "malformed", "off the object"]
    ground = Question("grounding", "...", "<ref>the red bus</ref><box>[[1, 2, 250, 222]]</box>", "CAM_BACK", (), bus)
    assert [category(ground, scene, a) for a in ("<ref>the red car</ref><box>[[1, 2, 250, 222]]</box>",
                                                 "<ref>the red bus</ref><box>[[8, 8, 8]]</box>",
                                                 "<ref>the red bus</ref><box>[[500, 500, 600, 600]]</box>")] == [
        "wrong phrase", "malformed", "off the object"]


def test_answers_split_by_the_width_of_what_they_ask_about():
    """benchmarks/answer_errors.py --by-width: an object's width in thumbnail tokens is its share
    of the image asked about times 16 (the six-camera canvas is three 800-pixel cameras across)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from answer_errors import bucket, width_in_tokens

    bus = SceneObject("bus", "red", "CAM_BACK", (100, 10, 250, 100))
    six = Question("camera", "Which camera shows the red bus?", "CAM_BACK", None, (), bus)
    one = Question("class", "What is the red object?", "bus", "CAM_BACK", (), bus)
    assert width_in_tokens(six, 800) == 150 / 2400 * 16 == 1.0
    assert width_in_tokens(one, 800) == 3.0
    assert [bucket(w) for w in (0.0, 0.2, 0.25, 0.7, 1.0, 3.0)] == [
        "0-0.25", "0-0.25", "0.25-0.5", "0.5-1", ">=1", ">=1"]


def test_grounding_boxes_read_off_token_edges():
    """benchmarks/probe_point_format.py ceiling: a box's edges moved to the nearest token edge of
    an nx x ny grid over 0..1000, or outwards to cover the tokens it touches."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from probe_point_format import snap_box

    assert snap_box((130, 20, 380, 990), 4, 10) == [250, 0, 500, 1000]          # 250 x 100 tokens
    assert snap_box((130, 20, 380, 990), 4, 10, cover=True) == [0, 0, 500, 1000]
    assert snap_box((250, 100, 500, 300), 4, 10, cover=True) == [250, 100, 500, 300]   # on the edges already
    assert snap_box((10, 10, 20, 20), 16, 16) == [0, 0, 0, 0]                   # a small box vanishes


def test_phase_probe_reads_digits_back_from_their_angles():
    """benchmarks/probe_phase.py: an object's centre taken from its digit targets, written as
    (cos, sin) of 2 pi c / 100 and / 1000, and each angle's sector read back as the tens and the
    hundreds digit; tokens under no object are masked out."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from probe_phase import centres, phase_targets, sectors

    from mivl.calib.labels import DIGITS, IGNORE, NUMBERS, digits_of

    values = [(347, 905), (0, 999), (61, 10)]
    rows = [sum((digits_of(v) for v in (1, 2, 3, 4, x, y)), []) for x, y in values]
    rows.append([IGNORE] * len(NUMBERS) * DIGITS)
    c, valid = centres(torch.tensor(rows))
    assert valid.tolist() == [True, True, True, False]
    assert c[:3].tolist() == [[347.0, 905.0], [0.0, 999.0], [61.0, 10.0]]
    got = sectors(phase_targets(c[:3]))                  # x tens, y tens, x hundreds, y hundreds
    assert got.tolist() == [[4, 0, 3, 9], [0, 9, 0, 9], [6, 1, 0, 0]]


def test_phase_probe_places_grid_tokens_in_their_camera():
    """benchmarks/probe_phase.py --tokens grid: a grid tile's token centre in its camera's 0..1000,
    on the six-camera canvas (6 x 2 tiles; a camera is two tiles across, one down) and on one
    800x450 camera (2 x 1 tiles)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from probe_phase import grid_centres

    from mivl.edge.preprocess import PreprocessConfig, grid_for_size

    pre = PreprocessConfig(max_tiles=12, use_thumbnail=True)
    six = grid_for_size(2688, 896, pre)
    c = grid_centres(2688, 896, six, True)
    assert c.shape == (12 * 256, 2)
    # token 0 of tiles 0 (CAM_FRONT_LEFT's left half), 1 (its right half), 2 (CAM_FRONT), 6 (CAM_BACK_LEFT)
    assert c[[0, 256, 512, 6 * 256]].tolist() == [[15.625, 31.25], [515.625, 31.25], [15.625, 31.25], [15.625, 31.25]]
    assert c[255].tolist() == [484.375, 968.75]          # the last token of tile 0: bottom right of its half
    one = grid_for_size(800, 450, pre)
    assert (one.cols, one.rows) == (2, 1)
    c = grid_centres(800, 450, one, False)
    assert c[[0, 256 + 15]].tolist() == [[15.625, 31.25], [984.375, 31.25]]


def test_token_phases_state_what_a_tile_can_know(tiny_dir):
    """benchmarks/probe_token_phases.py: each image token's phases of its centre in 0..1000 of the
    image; with "own" a grid tile states only the periods it spans a whole number of times (the
    same at the same place of every tile), the thumbnail every one; `with_phases` adds them to
    `image_features` through one fixed map, and takes them away after."""
    import math
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from probe_spelling import PERIODS
    from probe_token_phases import phase_map, token_phases, with_phases

    from mivl.export.checkpoint import load_checkpoint

    k = len(PERIODS)
    one = token_phases(3, "own")                  # an 800x450 camera: 2 x 1 tiles + thumbnail
    assert one.shape == (3 * 256, 4 * k)
    assert torch.equal(one[:256], one[256:512])   # 500 units a tile across: 5, 2, 1 periods
    assert PERIODS[0] == 1000 and (one[:512, [0, k]] == 0).all() and (one[512:, [0, k]] != 0).any()
    x, y = (1 * 16 + 5 + 0.5) / 32 * 1000, (3 + 0.5) / 16 * 1000      # tile 1, token row 3, column 5
    j = PERIODS.index(100)
    got = one[256 + 3 * 16 + 5]
    assert math.isclose(got[j], math.cos(2 * math.pi * x / 100), abs_tol=1e-6)
    assert math.isclose(got[3 * k + j], math.sin(2 * math.pi * y / 100), abs_tol=1e-6)
    every = token_phases(3, "all")
    assert not torch.equal(every[:256], every[256:512]) and (every != 0).sum() > (one != 0).sum()
    six = token_phases(13, "own")                 # the canvas: 166.7 units a grid tile across
    assert (six[:12 * 256, :2 * k] == 0).all() and (six[:12 * 256, 2 * k:] != 0).any()
    with pytest.raises(ValueError):
        token_phases(5, "own")

    model = load_checkpoint(tiny_dir("qwen2"), torch.float32).model.eval()
    pixels = torch.randn(3, 3, 448, 448)
    with torch.no_grad():
        plain = model.image_features(pixels)
        with with_phases("own", 2.0):
            added = model.image_features(pixels)
        assert torch.allclose(added - plain, (one @ phase_map(plain.shape[-1], 2.0)).reshape(plain.shape), atol=1e-5)
        assert torch.equal(model.image_features(pixels), plain)


def test_point_digits_name_each_place_of_a_drivelm_point():
    """benchmarks/probe_point_format.py: the hundreds, tens and units of a point's x and y among its
    answer's pieces (`<c1`'s digit is not one of them; a number under 100 has no hundreds)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from probe_point_format import point_digits

    pieces = ["<c", "1", ",CAM", "_BACK", ",", "4", "8", "4", ",", "7", "2", ">", ""]
    assert point_digits(pieces) == {("x", "units"): 7, ("x", "tens"): 6, ("x", "hundreds"): 5,
                                    ("y", "units"): 10, ("y", "tens"): 9}


def test_scene_drawing_is_the_same_pixels_after_the_faster_copies():
    """The training and evaluation scenes are what the recipe's streams always drew: the JPEG round
    trip (channels swapped by cvtColor, not a reversed view) gives the bytes of the plain
    formulation below, and the drawn frames (the background's pixel noise now added in place) the
    SHA-256 digests they had before that change."""
    import hashlib

    import cv2
    import numpy as np

    from mivl.calib.questions import jpeg_roundtrip
    from mivl.calib.synthetic import _background, draw_scene

    def plain_roundtrip(rgb, quality):
        ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()

    def digest(a):
        return hashlib.sha256(a.tobytes()).hexdigest()[:16]

    backgrounds = {1: "6da3afb0205a2ff9", 2: "fcfb9f87d4b283a1", 3: "9bc57275d40094f2"}
    frames = {1: "ebc04078269943f0", 2: "8f8661009645dadd", 3: "5acf9783128c1ce6"}
    for seed, quality in ((1, 75), (2, 88), (3, 95)):
        assert digest(_background(np.random.default_rng([seed, 0]), 320, 180)) == backgrounds[seed]
        frame = draw_scene(seed, 320, 180, max_objects=3).cameras["CAM_FRONT"]
        assert digest(frame) == frames[seed]
        got = jpeg_roundtrip(frame, quality)
        assert got.flags.c_contiguous and got.dtype == np.uint8 and got.shape == frame.shape
        assert np.array_equal(got, plain_roundtrip(frame, quality))
