"""Training data: the record schema and its files, the converters, mixing, and the synthetic
questions' answers."""
import json

import numpy as np
import pytest

from mivl.calib.questions import KINDS, MC_KINDS, ask_kind, box_1000, draw_question, is_correct
from mivl.calib.synthetic import draw_scene
from mivl.edge.errors import InputError
from mivl.edge.parse import parse_boxes
from mivl.export.train import converters, tasks
from mivl.export.train.mixing import Mixture
from mivl.export.train.records import check_record, read_records, write_records


# ---------------------------------------------------------------- records and task formats

def test_record_errors_name_the_problem():
    good = tasks.classification("a.jpg", ["x", "y"], "x")
    check_record(good)
    with pytest.raises(InputError, match="human/gpt pairs"):
        check_record({"image": "a.jpg", "conversations": [{"from": "human", "value": "hi"}]})
    with pytest.raises(InputError, match=r"conversations\[1\]"):
        check_record({"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "a"}]})
    with pytest.raises(InputError, match="not image and cameras"):
        check_record(dict(good, cameras={}))
    with pytest.raises(InputError, match="placeholder"):
        check_record({"image": ["a.jpg", "b.jpg"], "conversations": [
            {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]})
    with pytest.raises(InputError, match="exactly CAM_FRONT_LEFT"):
        check_record({"cameras": {"CAM_FRONT": "f.jpg"}, "conversations": good["conversations"]})
    with pytest.raises(InputError, match="not among the candidates"):
        tasks.classification("a.jpg", ["x"], "y")


def test_records_file_round_trip_resolves_relative_paths(tmp_path):
    recs = [tasks.grounding("img/a.jpg", "the car", (10, 20, 110, 70), (200, 100)),
            tasks.video(["f0.jpg", "f1.jpg"], "What happens?", "A car passes."),
            tasks.multiview({c: f"{c}.jpg" for c in
                             ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK",
                              "CAM_BACK_RIGHT")}, "Which camera shows the bus?", "CAM_BACK")]
    assert write_records(tmp_path / "r.jsonl", recs) == 3
    back = read_records(tmp_path / "r.jsonl")
    assert back[0]["image"] == str(tmp_path / "img/a.jpg")
    assert back[1]["video"] == [str(tmp_path / "f0.jpg"), str(tmp_path / "f1.jpg")]
    assert back[2]["cameras"]["CAM_BACK"] == str(tmp_path / "CAM_BACK.jpg")
    assert back[0]["conversations"][1]["value"] == "<ref>the car</ref><box>[[50, 200, 550, 700]]</box>"
    (tmp_path / "bad.jsonl").write_text(json.dumps(recs[0]) + "\n{not json\n")
    with pytest.raises(InputError, match="bad.jsonl:2: not JSON"):
        read_records(tmp_path / "bad.jsonl")


def test_image_folder_converter_round_trips(tmp_path):
    import cv2
    listing = []
    for label in ("cat", "dog", "truck"):
        (tmp_path / label).mkdir()
        for k in range(2):
            p = tmp_path / label / f"{k}.png"
            cv2.imwrite(str(p), np.random.default_rng(k).integers(0, 256, (64, 96, 3), dtype=np.uint8))
            listing.append((str(p), label))
    recs = converters.image_folder(tmp_path)
    assert converters.folder_labels(recs) == listing
    q = recs[0]["conversations"][0]["value"]
    assert q.startswith("<image>\n") and "Options: cat, dog, truck." in q
    with pytest.raises(InputError, match="one sub-folder per class"):
        converters.image_folder(tmp_path / "cat")


def test_coco_converter_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(5):
        w, h = int(rng.integers(300, 1900)), int(rng.integers(200, 1100))
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": w, "height": h})
        for k in range(3):
            x, y = float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": k % 2 + 1,
                         "bbox": [x, y, float(rng.uniform(5, w / 2)), float(rng.uniform(5, h / 2))], "iscrowd": 0})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    recs = converters.coco(tmp_path / "ann.json")
    grounding = [r for r in recs if r["id"].endswith("/g")]
    region = [r for r in recs if r["id"].endswith("/r")]
    assert len(region) == len(anns) and len(grounding) == len(images)   # one unambiguous "bus" per image
    sizes = {str(tmp_path / im["file_name"]): (im["width"], im["height"]) for im in images}
    back = converters.to_coco(region, sizes)
    assert len(back["annotations"]) == len(anns)
    for a, b in zip(anns, back["annotations"]):
        w, h = images[a["image_id"] - 1]["width"], images[a["image_id"] - 1]["height"]
        tol = np.array([w, h, w, h]) / 1000 * 0.5 + 1e-6          # 0..1000 quantisation
        assert np.all(np.abs(np.array(a["bbox"]) - np.array(b["bbox"])) <= 2 * tol)


# ---------------------------------------------------------------- mixing

def test_mixing_ratio_holds_over_10000_draws():
    general, domain = list(range(37)), list(range(1000, 1500))
    for ratio in (0.25, 0.1, 0.33):
        mix = Mixture(general, domain, ratio, seed=3)
        draws = [mix[i] for i in range(10_000)]
        share = sum(d < 1000 for d in draws) / len(draws)
        assert abs(share - ratio) <= 0.01, (ratio, share)
        # every domain record is used once per pass before any repeats
        first_pass = [d for d in draws if d >= 1000][:500]
        assert sorted(first_pass) == domain


def test_mixing_cap_and_reproducibility():
    general, domain = list(range(10)), list(range(100, 1100))
    a = Mixture(general, domain, 0.25, max_domain=200, seed=7)
    b = Mixture(general, domain, 0.25, max_domain=200, seed=7)
    c = Mixture(general, domain, 0.25, max_domain=200, seed=8)
    da, db, dc = ([m[i] for i in range(3000)] for m in (a, b, c))
    assert da == db and da != dc
    assert len({d for d in da if d >= 100}) == 200
    assert len(a) == round(200 / 0.75)
    with pytest.raises(InputError, match="no general records"):
        Mixture([], domain, 0.25)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        Mixture(general, domain, 1.5)


# ---------------------------------------------------------------- synthetic questions

def test_synthetic_questions_have_the_scene_answer():
    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(40):
        scene = draw_scene(seed, 800, 450)
        for kind in KINDS:
            q = ask_kind(kind, scene, rng, (800, 450))
            if q is None:
                continue
            seen.add(kind)
            objs = scene.objects if q.camera is None else scene.in_camera(q.camera)
            if kind == "colour":
                cls = q.text.split("the ")[1].split("?")[0]
                assert [o.colour for o in objs if o.cls == cls] == [q.answer]
            elif kind == "camera":
                assert q.answer in q.options and 3 <= len(q.options) <= 6
                colour, cls = q.text.split("the ")[1].split("?")[0].split(" ", 1)
                assert [o.camera for o in objs if (o.colour, o.cls) == (colour, cls)] == [q.answer]
            elif kind == "grounding":
                box = parse_boxes(q.answer, (800, 450))[0]
                match = [o for o in objs if f"the {o.colour} {o.cls}" == box.label]
                assert len(match) == 1 and box_1000(match[0].box, 800, 450) == list(box.box)
            if q.options and q.answer != "none":       # absence questions: "none" is no option
                assert q.answer in q.options and is_correct(q, f" {q.answer.upper()}.")
    assert seen == set(KINDS)


def test_draw_question_is_a_pure_function_of_seed_and_index():
    q1, c1 = draw_question(5, 17, MC_KINDS)
    q2, c2 = draw_question(5, 17, MC_KINDS)
    assert q1 == q2 and all(np.array_equal(c1[k], c2[k]) for k in c1)
    assert draw_question(6, 17, MC_KINDS)[0] != q1 or not np.array_equal(
        next(iter(draw_question(6, 17, MC_KINDS)[1].values())), next(iter(c1.values())))
