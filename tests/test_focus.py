"""Attention targets from the records' focus: the schema, the questions' focus, its tokens in every
tile of InternVL's tiling, the attention mass it scores, and training that moves it."""
import math

import numpy as np
import pytest
import torch

from mivl.calib.labels import canvas_boxes
from mivl.calib.questions import ask_kind, box_1000, subject_words
from mivl.calib.synthetic import SceneObject, draw_scene
from mivl.edge.errors import InputError
from mivl.edge.multiview import CANVAS_H, CANVAS_W, cell_of
from mivl.edge.preprocess import PreprocessConfig
from mivl.edge.prompt import IMG_CONTEXT, get_template
from mivl.edge.tokenizer import load_tokenizer
from mivl.export.checkpoint import load_checkpoint
from mivl.export.model import decoder
from mivl.export.train import tasks
from mivl.export.train.data import IGNORE, encode_record
from mivl.export.train.focus import FocusConfig, decode, log_mass
from mivl.export.train.records import check_record
from mivl.export.train.synthetic import SyntheticViews
from mivl.export.train.trainer import TrainConfig, TrainingModel, train

SIX = ("camera", "camera_colour", "camera_class")


def _focused(answer="red", focus=None, **extra):
    rec = {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nq"},
                                               {"from": "gpt", "value": answer}], **extra}
    if focus is not None:
        rec["conversations"][1]["focus"] = focus
    return rec


def test_focus_schema_is_checked():
    check_record(_focused(focus={"box": [10, 20, 300, 400], "words": ["red", "traffic light"]}))
    check_record(_focused(focus={"box": [0, 0, 1000, 1000]}))
    check_record(_focused(focus={"words": ["red", "bus"]}))         # words alone: nothing shows it
    bad = [({"box": [10, 20, 5, 400]}, "x1 < x2"), ({"box": [10, 20, 30, 1001]}, "0..1000"),
           ({"box": [10, 20, 30, float("nan")]}, "0..1000"), ({"box": [1, 2, 3]}, "x1, y1"),
           ({"box": [1, 2, 3, True]}, "x1, y1"), ({}, "must be"), ({"words": []}, "needs words"),
           ({"box": None}, "needs words"), ({"words": "red"}, "list of"),
           ({"box": [1, 2, 3, 4], "where": 1}, "must be"), ({"box": [1, 2, 3, 4], "words": "red"}, "list of"),
           ({"box": [1, 2, 3, 4], "words": [""]}, "non-empty"), ("box", "must be")]
    for focus, msg in bad:
        with pytest.raises(InputError, match=msg):
            check_record(_focused(focus=focus))
    with pytest.raises(InputError, match="one image or the six cameras"):
        check_record({"image": ["a.jpg", "b.jpg"], "conversations": [
            {"from": "human", "value": "<image>\n<image>\nq"}, {"from": "gpt", "value": "a", "focus": {"box": [1, 2, 3, 4]}}]})
    with pytest.raises(InputError, match="not a video"):
        check_record({"video": ["a.jpg", "b.jpg"], "conversations": [
            {"from": "human", "value": "q"}, {"from": "gpt", "value": "a", "focus": {"box": [1, 2, 3, 4]}}]})


def test_subject_words_name_colour_class_and_camera():
    o = SceneObject("traffic light", "red", "CAM_BACK", (10, 10, 20, 40))
    q = tasks.Question("camera_colour", "What colour is the traffic light in CAM_BACK?\nOptions: red, blue.",
                       "red", None, ("red", "blue"), o)
    assert subject_words(q) == ["traffic light", "CAM_BACK"]     # not red (an option, on the next line)
    q2 = tasks.Question("camera", "Which camera shows the red traffic light?\nOptions: CAM_BACK, CAM_FRONT.",
                        "CAM_BACK", None, ("CAM_BACK", "CAM_FRONT"), o)
    assert subject_words(q2) == ["red", "traffic light"]
    q3 = tasks.Question("camera", "Which camera shows the red cone in CAM_BACK_LEFT?", "x", None, (), o)
    assert subject_words(q3) == ["red", "CAM_BACK_LEFT"]        # CAM_BACK is not a word of CAM_BACK_LEFT
    # absence (no subject): the colour and class the question names
    absent = tasks.Question("absent", "Which camera shows the red bus?\nOptions: CAM_BACK, CAM_FRONT.", "none",
                            None, ("CAM_BACK", "CAM_FRONT"))
    assert subject_words(absent) == ["red", "bus"]
    one = tasks.Question("absent_one", "What colour is the traffic light?\nOptions: red, blue.", "none", "CAM_BACK",
                         ("red", "blue"))
    assert subject_words(one) == ["traffic light"]
    assert subject_words(tasks.Question("absent_one", "What is the yellow object?\nOptions: car, bus.", "none",
                                        "CAM_BACK", ("car", "bus"))) == ["yellow"]
    assert subject_words(tasks.Question("caption", "Describe the red car.", "x", "CAM_BACK")) == []


def test_questions_carry_their_subjects_box_as_fed():
    scene = draw_scene(3, 800, 450, max_objects=3)
    rng = np.random.default_rng(0)
    frames = {c: scene.cameras[c] for c in scene.cameras}
    seen = set()
    for _ in range(40):
        for kind, camera in (("camera", None), ("colour", None), ("absent", None), ("absent_one", None)):
            q = ask_kind(kind, scene, rng, (800, 450), camera)
            if q is None:
                continue
            rec = tasks.from_questions([q], frames if q.camera is None else {q.camera: frames[q.camera]})
            check_record(rec)
            f = rec["conversations"][1].get("focus")
            seen.add((kind, f is not None))
            if q.subject is None:    # absence: the words naming what is asked, no box
                assert f == {"words": subject_words(q)} and f["words"]
            elif q.camera is None:   # six cameras: the box on the stitched canvas
                assert f["box"] == box_1000(canvas_boxes([q.subject], 800, 450)[0], CANVAS_W, CANVAS_H)
            else:
                assert f["box"] == box_1000(q.subject.box, 800, 450)
    assert seen == {("camera", True), ("colour", True), ("absent", True), ("absent_one", True)}


def _tok_tpl(path):
    ck = load_checkpoint(path, torch.float32)
    return ck, load_tokenizer(ck.path), get_template(ck.config.template)


def test_focus_tokens_on_every_tile_of_the_six_camera_tiling(tiny_dir):
    """On the 13-tile canvas the subject's grid tokens lie in its camera's two tiles (a cell is two
    448 tiles), and on the thumbnail; the positions predict the answer; the words are the question's."""
    ck, tok, tpl = _tok_tpl(tiny_dir("qwen2"))
    pre = PreprocessConfig(max_tiles=12, use_thumbnail=True)
    views = SyntheticViews(SIX, 7, views=6, turns=4, six_share=1.0, max_objects=3)
    checked = 0
    for i in range(6):
        _, qs, camera, rec = views.draw(i)
        s = encode_record(rec, tok, tpl, pre, 256)
        assert s.pixels.shape[0] == 13
        answers = [q for q in qs if q.subject is not None]
        assert len(s.focus) == len(answers)
        for f, q in zip(s.focus, answers):
            r, c = cell_of(q.subject.camera)
            tiles = set((f.image_tokens // 256).tolist())
            assert 12 in tiles and tiles - {12} and tiles - {12} <= {6 * r + 2 * c, 6 * r + 2 * c + 1}
            predicted = tok.decode([s.input_ids[p + 1] for p in f.positions])
            assert predicted == q.answer and all(s.labels[p + 1] != IGNORE for p in f.positions)
            said = tok.decode([s.input_ids[p] for p in f.words])
            assert said.split() == " ".join(subject_words(q)).lower().split() or said.split() == " ".join(
                subject_words(q)).split()
            assert f.words and max(f.words) < f.positions[0]
            # the whole-image tile's share: the thumbnail's tokens of the subject
            assert len(f.whole_tokens) and set(f.whole_tokens.tolist()) == {t for t in f.image_tokens.tolist()
                                                                          if t // 256 == 12}
            checked += 1
    assert checked >= 10


def test_whole_tokens_are_the_only_tile_or_none_without_a_thumbnail(tiny_dir):
    ck, tok, tpl = _tok_tpl(tiny_dir("qwen2"))
    views = SyntheticViews(SIX, 7, views=2, turns=4, six_share=1.0, max_objects=2)
    _, _, _, rec = views.draw(0)
    one = encode_record(dict(rec, max_tiles=1), tok, tpl, PreprocessConfig(max_tiles=1, use_thumbnail=True), 256)
    assert one.pixels.shape[0] == 1 and one.focus
    assert all(np.array_equal(f.whole_tokens, f.image_tokens) for f in one.focus)
    bare = encode_record(rec, tok, tpl, PreprocessConfig(max_tiles=12, use_thumbnail=False), 256)
    assert bare.pixels.shape[0] == 12 and bare.focus and all(f.whole_tokens is None for f in bare.focus)


def _attention_probs(layer, x, cos, sin):
    """softmax(q k^T / sqrt(d)) of `layer` on its input x with the causal mask, q and k as the
    layer's own forward computes them (captured at the attention call, kv heads repeated): (H, T, T)."""
    got = {}
    real = decoder.F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        got["q"], got["k"] = q, k
        return real(q, k, v, **kw)

    decoder.F.scaled_dot_product_attention = spy
    try:
        layer(x, cos, sin, None, decoder.CAUSAL)
    finally:
        decoder.F.scaled_dot_product_attention = real
    q, k = got["q"][0], got["k"][0]
    T = q.shape[1]
    sc = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return sc.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def test_log_mass_is_the_heads_attention_on_the_targets(tiny_dir):
    ck, _, _ = _tok_tpl(tiny_dir("qwen2"))
    lm = ck.model.language_model
    torch.manual_seed(0)
    T = 40
    x = torch.randn(1, T, lm.config.hidden_size)
    cos, sin = decoder.rope_cos_sin(lm.config, torch.arange(T), T)
    layer = lm.model.layers[1]
    probs = _attention_probs(layer, x, cos, sin)
    positions = torch.tensor([5, 17, 39])
    targets = torch.zeros(3, T, dtype=torch.bool)
    targets[0, [0, 3, 5]] = True
    targets[1, [2, 16]] = True
    targets[2, 20:30] = True
    heads = tuple(range(lm.config.num_attention_heads))
    got = log_mass(layer, x, cos, sin, positions, targets, heads).exp()
    for j, p in enumerate(positions.tolist()):
        want = probs[:, p][:, targets[j]].sum(-1)
        assert torch.allclose(got[:, j], want, atol=1e-5), (got[:, j], want)
    everything = torch.arange(T)[None, :] <= positions[:, None]
    assert torch.allclose(log_mass(layer, x, cos, sin, positions, everything, heads).exp(), torch.ones(len(heads), 3),
                          atol=1e-5)


def _sample(tiny_dir):
    ck, tok, tpl = _tok_tpl(tiny_dir("qwen2"))
    views = SyntheticViews(SIX, 11, views=2, turns=4, six_share=1.0, max_objects=2, max_tiles=1)
    _, _, _, rec = views.draw(0)
    return ck, tok, encode_record(rec, tok, tpl, PreprocessConfig(max_tiles=1), 256)


def test_decoding_with_focus_computes_what_the_model_computes(tiny_dir):
    ck, tok, s = _sample(tiny_dir)
    net = TrainingModel(ck.model, tok.token_to_id(IMG_CONTEXT), torch.float32, focus=FocusConfig(1.0))
    ids, labels = torch.tensor(s.input_ids), torch.tensor(s.labels)
    pixels = torch.from_numpy(s.pixels)
    plain = net(pixels, ids, labels)
    objective, ce = net(pixels, ids, labels, s.focus)
    assert torch.allclose(ce, plain, rtol=1e-5) and objective > ce
    assert set(net.focus_mass) == {"image", "words"}
    assert 0 < net.focus_mass["image"][0] < 1


def test_absence_focus_is_words_alone(tiny_dir):
    """An absence question's focus (words, no box) becomes a Focus with no image tokens: on the
    13-tile six-camera input only the words target is scored, and it adds to the objective."""
    ck, tok, tpl = _tok_tpl(tiny_dir("qwen2"))
    scene = draw_scene(5, 800, 450, max_objects=2)
    q = ask_kind("absent", scene, np.random.default_rng(1), (800, 450))
    rec = tasks.from_questions([q], dict(scene.cameras))
    s = encode_record(rec, tok, tpl, PreprocessConfig(max_tiles=12, use_thumbnail=True), 256)
    assert s.pixels.shape[0] == 13 and len(s.focus) == 1
    f = s.focus[0]
    assert len(f.image_tokens) == 0 and f.whole_tokens is None
    said = tok.decode([s.input_ids[p] for p in f.words]).split()
    assert [w.lower() for w in said] == " ".join(subject_words(q)).lower().split()
    assert tok.decode([s.input_ids[p + 1] for p in f.positions]) == q.answer == "none"
    net = TrainingModel(ck.model, tok.token_to_id(IMG_CONTEXT), torch.float32,
                        focus=FocusConfig(1.0, heads=(0,), whole_heads=(1,)))
    ids, labels, pixels = torch.tensor(s.input_ids), torch.tensor(s.labels), torch.from_numpy(s.pixels)
    objective, ce = net(pixels, ids, labels, s.focus)
    assert set(net.focus_mass) == {"words"} and objective > ce


def test_whole_heads_score_the_thumbnail_tokens_alone(tiny_dir):
    """With whole_heads the decode scores a third target: those heads' mass on the subject's
    whole-image tokens, which on a one-tile view are all its tokens (the same mass as "image"
    for the same head)."""
    ck, tok, s = _sample(tiny_dir)
    ids, labels, pixels = torch.tensor(s.input_ids), torch.tensor(s.labels), torch.from_numpy(s.pixels)
    a = TrainingModel(ck.model, tok.token_to_id(IMG_CONTEXT), torch.float32, focus=FocusConfig(1.0, heads=(0,)))
    b = TrainingModel(ck.model, tok.token_to_id(IMG_CONTEXT), torch.float32,
                      focus=FocusConfig(1.0, heads=(1,), whole_heads=(0,)))
    oa, ce = a(pixels, ids, labels, s.focus)
    ob, _ = b(pixels, ids, labels, s.focus)
    assert set(b.focus_mass) == {"image", "whole", "words"}
    assert math.isclose(b.focus_mass["whole"][0], a.focus_mass["image"][0], rel_tol=1e-5)
    assert not math.isclose(b.focus_mass["image"][0], a.focus_mass["image"][0], rel_tol=1e-3)   # head 1
    assert ob > ce
    with pytest.raises(InputError, match="must differ"):
        FocusConfig(1.0, (1,), heads=(0,), whole_heads=(0, 1)).check(2, 4)
    with pytest.raises(InputError, match="whole_heads must be indices"):
        FocusConfig(1.0, (1,), whole_heads=(7,)).check(2, 4)
    with pytest.raises(InputError, match="need image_layers"):
        FocusConfig(1.0, image_layers=(), whole_heads=(1,)).check(2, 4)
    FocusConfig(1.0, (1,), heads=(0,), whole_heads=(1,)).check(2, 4)
    assert FocusConfig(1.0, heads=(0,), whole_heads=(1,)).unit == 4


def test_focus_training_moves_attention_onto_the_subject(tiny_dir):
    """A few steps on the attention targets alone raise the chosen heads' mass on the targets."""
    ck, tok, s = _sample(tiny_dir)
    net = TrainingModel(ck.model, tok.token_to_id(IMG_CONTEXT), torch.float32, focus=FocusConfig(1.0))
    ids, labels = torch.tensor(s.input_ids), torch.tensor(s.labels)
    pixels = torch.from_numpy(s.pixels)
    opt = torch.optim.Adam([p for p in ck.model.language_model.parameters()], lr=3e-3)
    for _ in range(15):
        objective, ce = net(pixels, ids, labels, s.focus)
        opt.zero_grad()
        (objective - ce).backward()
        opt.step()
    first, last = net.focus_mass["image"][0], net.focus_mass["image"][-1]
    assert last > 2 * first and last > 0.2, net.focus_mass["image"]
    assert net.focus_mass["words"][-1] > 2 * net.focus_mass["words"][0]


def test_trainer_checks_focus_settings(tiny_dir, tmp_path):
    data = [SyntheticViews(SIX, 11, views=2, turns=2, six_share=1.0, max_objects=2, max_tiles=1)[0]]
    with pytest.raises(InputError, match="focus_weight"):
        train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "a"), focus_weight=-1.0, quiet=True), data)
    with pytest.raises(InputError, match="heads must be indices"):
        train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "b"), focus_weight=1.0, focus_heads=(99,), focus_image_layers=(1,),
                          steps=1, batch_size=1, quiet=True), data)
    with pytest.raises(InputError, match="image_layers must be indices"):
        train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "c"), focus_weight=1.0, focus_image_layers=(-1,),
                          steps=1, batch_size=1, quiet=True), data)
    with pytest.raises(InputError, match=r"image_layers must be indices in 0\.\.1"):   # the tiny LLM has 2 layers
        train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "e"), focus_weight=1.0, steps=1, batch_size=1,
                          quiet=True), data)
    r = train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "d"), focus_weight=1.0, focus_image_layers=(1,),
                          steps=2, batch_size=1, dtype="fp32", quiet=True), data)
    assert len(r.losses) == 2 and all(math.isfinite(v) for v in r.losses)


def test_cli_trains_with_focus(tiny_dir, tmp_path):
    import json
    import subprocess
    import sys

    import cv2

    img = np.zeros((120, 160, 3), np.uint8)
    img[30:90, 40:100] = (0, 0, 255)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    rec = {"id": "0", "image": "a.png", "max_tiles": 1, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is the square?"},
        {"from": "gpt", "value": "red", "focus": {"box": [250, 250, 625, 750], "words": ["square"]}}]}
    (tmp_path / "r.jsonl").write_text(json.dumps(rec) + "\n")
    base = [sys.executable, "-m", "mivl.export.cli", "train", str(tiny_dir("qwen2")), "--steps", "2",
            "--batch-size", "1", "--dtype", "fp32"]
    exe = base + ["--data", str(tmp_path / "r.jsonl")]
    out = subprocess.run(exe + ["-o", str(tmp_path / "ft"), "--focus-weight", "1", "--focus-image-layers", "1",
                                "--focus-whole-heads", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "focus image" in out.stdout and "focus words" in out.stdout and "focus whole" in out.stdout
    log = json.loads((tmp_path / "ft" / "train_log.json").read_text())
    assert log["config"]["focus_weight"] == 1.0 and list(log["config"]["focus_image_layers"]) == [1]
    assert list(log["config"]["focus_whole_heads"]) == [1]
    out = subprocess.run(exe + ["-o", str(tmp_path / "ft2"), "--focus-weight", "1", "--focus-heads", "x"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "comma list of integers" in out.stderr
    rec["conversations"][1]["focus"]["box"] = [700, 250, 625, 750]
    (tmp_path / "bad.jsonl").write_text(json.dumps(rec) + "\n")
    out = subprocess.run(base + ["--data", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "ft3"), "--focus-weight", "1"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "x1 < x2" in out.stderr
