"""Dense vision pretraining: per-token labels of synthetic scenes, and the warm-up that uses them."""
import numpy as np

from mivl.calib.labels import CLASS_IDS, COLOUR_IDS, camera_labels, canvas_labels
from mivl.calib.synthetic import SceneObject


def test_token_labels_cover_the_box_and_small_objects_get_their_centre():
    bus = SceneObject("bus", "red", "CAM_FRONT", (0, 0, 400, 225))       # top-left quarter of 800x450
    colours, classes = camera_labels([bus], 800, 450)
    assert (colours[:8, :8] == COLOUR_IDS["red"]).all() and (colours[8:, :].sum() == 0) and colours[:, 8:].sum() == 0
    assert (classes[:8, :8] == CLASS_IDS["bus"]).all()
    cone = SceneObject("cone", "white", "CAM_FRONT", (760, 420, 770, 430))  # far smaller than a token
    colours, classes = camera_labels([cone], 800, 450)
    assert colours.sum() == COLOUR_IDS["white"] and colours[15, 15] == COLOUR_IDS["white"]


def test_canvas_labels_place_each_camera_in_its_cell():
    car = SceneObject("car", "blue", "CAM_BACK_RIGHT", (0, 0, 800, 450))   # fills its camera
    colours, _ = canvas_labels([car], 800, 450)
    # CAM_BACK_RIGHT is the bottom-right cell: canvas x 1792..2688 of 2688, y 448..896 of 896
    expect = np.zeros((16, 16), bool)
    expect[8:, 11:] = True                        # cells whose area is mostly inside the camera
    assert (colours[8:, 11:] == COLOUR_IDS["blue"]).all() and (colours[:8] == 0).all() and (colours[:, :10] == 0).all()


def test_dense_warmup_learns_and_is_reproducible(tiny_dir):
    import torch

    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.reference import preprocess_config
    from mivl.export.train.dense import dense_sample, pretrain_vision

    ck = load_checkpoint(tiny_dir("qwen2"))
    pre = preprocess_config(ck)
    a, b = dense_sample(3, 7, pre, 1, 0.5), dense_sample(3, 7, pre, 1, 0.5)
    assert a.pixels.shape == (1, 3, 448, 448) and np.array_equal(a.pixels, b.pixels)
    assert np.array_equal(a.colours, b.colours) and a.colours.shape == (256,)
    before = {k: v.clone() for k, v in ck.model.language_model.state_dict().items()}
    losses, _ = pretrain_vision(ck.model, pre, steps=12, batch_size=2, lr=3e-3, quiet=True)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    after = ck.model.language_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # only the vision side trains


def test_default_recipe_runs_its_stages_and_skips_finished_ones(tmp_path):
    import json

    from mivl.export.default_model import Stage, publish, train_default

    stages = (Stage("dense", 2, 2e-3, batch_size=2), Stage("colour", 2, 1e-3, ("colour",), batch_size=2))
    last = train_default(tmp_path / "out", work=tmp_path / "work", stages=stages, quiet=True)
    assert last == tmp_path / "work" / "colour" and (last / "config.json").is_file()
    dense_log = json.loads((tmp_path / "work" / "dense" / "train_log.json").read_text())
    assert dense_log["stage"] == "dense" and len(dense_log["losses"]) == 2
    stamp = (last / "model.safetensors").stat().st_mtime_ns
    train_default(tmp_path / "out", work=tmp_path / "work", stages=stages, quiet=True)
    assert (last / "model.safetensors").stat().st_mtime_ns == stamp      # finished: not run again
    out = publish(last, tmp_path / "published")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    assert any((out / f).is_file() for f in ("tokenizer.json", "vocab.json"))


def test_bf16_stage_starts_from_the_published_rounding(tmp_path):
    """A stage with from_bf16 trains from the previous stage's weights rounded to bf16, as the
    published model holds them (the later default-model stages started from the published one)."""
    import torch

    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.default_model import Stage, train_default

    stages = (Stage("dense", 1, 2e-3, batch_size=2),
              Stage("more", 1, 1e-3, ("colour",), freeze=(), batch_size=2, turns=2, from_bf16=True))
    train_default(tmp_path / "out", work=tmp_path / "work", stages=stages, quiet=True)
    start = load_checkpoint(tmp_path / "work" / "more-start").model.state_dict()
    dense = load_checkpoint(tmp_path / "work" / "dense").model.state_dict()
    assert all(torch.equal(start[k], dense[k].bfloat16().float()) for k in dense)
    assert (tmp_path / "work" / "more" / "config.json").is_file()


def test_embedded_default_model_answers_held_out_questions():
    """The committed default model, run by the PyTorch reference on 100 held-out colour and class
    questions (question stream 20260, never trained on): well above chance (~0.22)."""
    from mivl.export.default_model import ASSET, evaluate_reference

    r = evaluate_reference(ASSET, n=100, kinds=("colour", "class"))
    assert r["accuracy"] >= 0.85, r["per_kind"]
