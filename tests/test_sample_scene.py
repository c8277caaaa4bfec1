"""The six-camera questions of scripts/demo.sh (mivl.calib.sample_scene): built from objects.json,
scored as `mivl eval` scores, bad scene folders refused."""
import json
import shutil

import pytest

from mivl.calib.questions import judge
from mivl.calib.sample_scene import SAMPLE, load_scene, main, pick_subject, subject_questions
from mivl.edge.errors import InputError


def test_sample_scene_questions_name_the_bus_and_its_point_lies_in_its_box():
    frames, objects = load_scene(SAMPLE)
    truth = json.loads((SAMPLE / "objects.json").read_text())
    bus = next(r for r in truth if r["cls"] == "bus")
    o = pick_subject(objects)
    assert (o.cls, o.colour, o.camera, list(o.box)) == ("bus", bus["colour"], bus["camera"], bus["box"])
    camera, where = subject_questions(o, (800, 450))
    assert camera.answer == bus["camera"] and set(camera.options) == set(frames)
    assert camera.text.startswith(f"Which camera shows the {bus['colour']} bus?")
    # the truth answers are judged right, a neighbour camera and a point outside the box wrong
    assert judge(camera, camera.answer)["correct"] and not judge(camera, "CAM_BACK")["correct"]
    assert judge(where, where.answer, (800, 450))["correct"]
    assert not judge(where, where.answer.replace(bus["camera"], "CAM_BACK"), (800, 450))["correct"]
    assert pick_subject(objects, "White Cone").cls == "cone"
    with pytest.raises(InputError, match="no single 'pink bus'"):
        pick_subject(objects, "pink bus")


def test_bad_scene_folders_are_refused(tmp_path):
    with pytest.raises(InputError, match="missing camera frames"):
        load_scene(tmp_path)
    for f in SAMPLE.glob("*.jpg"):
        shutil.copy(f, tmp_path / f.name)
    for text in ("not json", '[{"cls": "bus"}]', '[{"cls": "bus", "colour": "red", "camera": "CAM_TOP", '
                                                  '"box": [1, 2, 3, 4]}]'):
        (tmp_path / "objects.json").write_text(text)
        with pytest.raises(InputError, match="objects.json"):
            load_scene(tmp_path)


def test_demo_questions_run_on_a_bundle_and_print_the_truth(bundle_dir, capsys):
    assert main([str(bundle_dir("qwen2")), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    bus = next(r for r in json.loads((SAMPLE / "objects.json").read_text()) if r["cls"] == "bus")
    assert "question: Which camera shows the" in out and "question: Where is the" in out
    assert f"truth:    {bus['camera']}" in out and f"inside [{', '.join(map(str, bus['box']))}]" in out
    assert out.count("verdict:  ") == 2 and out.count("answer:   ") == 2
    assert main([str(bundle_dir("qwen2")), "--object", "pink bus"]) == 2
