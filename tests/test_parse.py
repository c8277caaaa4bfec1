from mivl.edge.parse import named_camera, parse_boxes, parse_camera_points, parse_objects, ref_phrase


def test_grounding_boxes_to_pixels():
    text = "It is <ref>the red car</ref><box>[[100, 200, 500, 800]]</box> and <box>[[0,0,1000,1000],[10, 20, 30, 40]]</box>"
    boxes = parse_boxes(text, image_size=(1600, 900))
    assert [b.label for b in boxes] == ["the red car", None, None]
    assert boxes[0].pixels == (160.0, 180.0, 800.0, 720.0)
    assert boxes[1].pixels == (0.0, 0.0, 1600.0, 900.0)
    assert parse_boxes("no boxes here") == []


def test_drivelm_points_to_camera_pixels():
    # CAM_BACK is row 1, col 1: canvas x 1/3..2/3 (333.3..666.7), y 500..1000
    pts = parse_camera_points("see <c1,CAM_BACK,500.0,750.0> and <c7,CAM_FRONT_LEFT,0,0>")
    assert pts[0].camera == "CAM_BACK" and pts[0].id == 1
    assert abs(pts[0].pixels[0] - 800) < 1e-6 and abs(pts[0].pixels[1] - 450) < 1e-6
    assert pts[1].pixels == (0.0, 0.0)
    assert len(parse_objects("<c2,CAM_FRONT,500,250> <box>[[1,2,3,4]]</box>")) == 2
    # whole-number digits map to the nearest float of the exact pixel (printed as 132.8, not 132.79999)
    p = parse_camera_points("<c1,CAM_FRONT_RIGHT,722,272>", {"CAM_FRONT_RIGHT": (800, 450)})[0]
    assert p.pixels == (132.8, 244.8)
    # beyond the named camera's cell: clamped to its edge
    assert parse_camera_points("<c1,CAM_FRONT_RIGHT,100,900>", {"CAM_FRONT_RIGHT": (800, 450)})[0].pixels == (0.0, 450.0)


def test_named_camera_and_ref_phrase_read_what_a_malformed_answer_still_says():
    assert named_camera("<c1,CAM_BACK_LEFT,8,8,8,8>") == "CAM_BACK_LEFT"      # no point parses
    assert parse_camera_points("<c1,CAM_BACK_LEFT,8,8,8,8>") == []
    assert named_camera("<c1,CAM_FRONT") == "CAM_FRONT"                        # cut off
    assert named_camera("<c1,CAM_MIDDLE,1,2>") is None and named_camera("CAM_BACK") is None
    assert ref_phrase("<ref>the red bus</ref><box>[[8, 6, 6]]</box>") == "the red bus"
    assert ref_phrase("<ref>the <b>red</ref>") is None and ref_phrase("no ref") is None


# ---- a model's answer is untrusted: linear time, never raises, finite clamped coordinates ----------
import json
import math
import random
import time

import pytest

ADVERSARIAL = {
    "unmatched ref openers": "<ref>" * 200_000,
    "unmatched box openers": "<box>" * 200_000,
    "refs then one box": "<ref>a</ref>" * 90_000 + "<box>[[1,2,3,4]]</box>",
    "brackets": "<box>" + "[" * 1_000_000 + "</box>",
    "bracket spaces": "<box>" + "[ " * 500_000 + "</box>",
    "point openers": "<c1,CAM_FRONT," * 80_000,
    "digits": "<c" + "9" * 1_000_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_answer_parses_in_linear_time(name):
    text = ADVERSARIAL[name]
    assert len(text) >= 1_000_000
    t0 = time.perf_counter()
    parse_objects(text, (640, 480), None)
    named_camera(text), ref_phrase(text)
    assert time.perf_counter() - t0 < 1.0, name


def test_malformed_numbers_and_huge_values_never_raise_and_are_clamped():
    assert parse_boxes("<box>[[., 1, 2, 3]]</box>") == []
    assert parse_camera_points("<c" + "1" * 4300 + ",CAM_FRONT,1,2>") == []
    huge = "9" * 12
    (b,) = parse_boxes(f"<box>[[-5, {huge}, 500, 1000.0001]]</box>", (100, 50))
    assert b.box == (0.0, 1000.0, 500.0, 1000.0) and b.pixels == (0.0, 50.0, 50.0, 50.0)
    (p,) = parse_camera_points(f"<c1,CAM_FRONT,500,{huge}>", {"CAM_FRONT": (1600, 900)})
    assert p.point == (500.0, 1000.0) and 0 <= p.pixels[1] <= 900
    # digits past the bound: no point at all rather than an infinite one
    assert parse_camera_points("<c1,CAM_FRONT,500," + "9" * 400 + ">") == []


def _fuzz_text(rng: random.Random) -> str:
    atoms = ["<ref>", "</ref>", "<box>", "</box>", "[[", "]]", "[", "]", ",", " ", "\n", "-", ".", "e9",
             "1", "12", "999999999999", "1000", "0.5", "nan", "inf", "<c", "<c1,", "CAM_FRONT", "CAM_BACK_LEFT",
             "CAM_X", ">", "<", "the bus", "é", "\ud800", "\x00"]
    num = lambda: rng.choice(["-3", "0", "512", "1000", "999999999999", "12.5", "1e3", ".", "7."])  # noqa: E731
    wellformed = [
        lambda: f"<ref>{rng.choice(['the bus', '', 'a <ref> b'])}</ref><box>[[{num()}, {num()}, {num()}, {num()}]]</box>",
        lambda: f"<box>[[{num()},{num()},{num()},{num()}],[{num()}, {num()}, {num()}, {num()}]]</box>",
        lambda: f"<c{rng.randint(0, 9)},{rng.choice(['CAM_FRONT', 'CAM_BACK_RIGHT', 'CAM_X'])},{num()},{num()}>",
    ]
    out = []
    for _ in range(rng.randint(0, 12)):
        out.append(rng.choice(wellformed)() if rng.random() < 0.4 else rng.choice(atoms))
    text = "".join(out)
    for _ in range(rng.randint(0, 3)):          # mutate: cut, duplicate or insert at random places
        k = rng.randrange(len(text) + 1)
        text = rng.choice([text[:k] + text[k + rng.randint(1, 5):], text[:k] + text[k:k + 8] + text[k:],
                           text[:k] + rng.choice(atoms) + text[k:]])
    return text


def test_fuzz_parser_ten_thousand_strings():
    rng = random.Random(1234)
    sizes = {c: (rng.randint(1, 4000), rng.randint(1, 4000)) for c in
             ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")}
    n_objects = 0
    for i in range(10_000):
        text = _fuzz_text(rng)
        image = (rng.randint(1, 5000), rng.randint(1, 5000)) if i % 2 else None
        objs = parse_objects(text, image, sizes if i % 3 else None)
        n_objects += len(objs)
        for o in objs:
            d = o.to_dict()
            json.dumps(d, allow_nan=False)          # finite everywhere
            if o.kind == "box":
                assert all(0.0 <= v <= 1000.0 for v in o.box)
                if image:
                    w, h = image
                    x1, y1, x2, y2 = o.pixels
                    assert 0 <= x1 <= w and 0 <= x2 <= w and 0 <= y1 <= h and 0 <= y2 <= h
            else:
                assert all(0.0 <= v <= 1000.0 for v in o.point)
                w, h = (sizes if i % 3 else {}).get(o.camera, (1600, 900))
                assert 0 <= o.pixels[0] <= w and 0 <= o.pixels[1] <= h
                assert all(math.isfinite(v) for v in o.pixels)
    assert n_objects > 500          # the generator does produce parseable objects
