"""Dense vision pretraining: per-token labels of synthetic scenes, and the warm-up that uses them."""
import numpy as np
import pytest

from mivl.calib.labels import CLASS_IDS, COLOUR_IDS, IGNORE, canvas_boxes, digits_of, tile_targets, token_labels
from mivl.calib.synthetic import SceneObject


def test_token_labels_cover_the_box_and_small_objects_get_their_centre():
    bus = SceneObject("bus", "red", "CAM_FRONT", (0, 0, 400, 225))       # top-left quarter of 800x450
    colours, classes = token_labels([bus], 800, 450)
    assert (colours[:8, :8] == COLOUR_IDS["red"]).all() and (colours[8:, :].sum() == 0) and colours[:, 8:].sum() == 0
    assert (classes[:8, :8] == CLASS_IDS["bus"]).all()
    cone = SceneObject("cone", "white", "CAM_FRONT", (760, 420, 770, 430))  # far smaller than a token
    colours, classes = token_labels([cone], 800, 450)
    assert colours.sum() == COLOUR_IDS["white"] and colours[15, 15] == COLOUR_IDS["white"]


def six_camera_targets(objs, max_tiles=12, **kw):
    from mivl.edge.preprocess import PreprocessConfig, grid_for_size

    grid = grid_for_size(2688, 896, PreprocessConfig(max_tiles=max_tiles, use_thumbnail=True))
    if max_tiles == 12:
        assert (grid.cols, grid.rows, grid.thumbnail) == (6, 2, True)
    return tile_targets(objs, canvas_boxes(objs, 800, 450), 2688, 896, grid, six=True, **kw)


def test_six_camera_targets_place_each_camera_in_its_tiles_and_the_thumbnail():
    car = SceneObject("car", "blue", "CAM_BACK_RIGHT", (0, 0, 800, 450))   # fills its camera
    t = six_camera_targets([car])
    assert t.colours.shape == (13, 256) and t.digits.shape == (13, 256, 18)
    # CAM_BACK_RIGHT is the bottom-right cell: grid tiles 10 and 11 (row 1, columns 4 and 5)
    assert all((t.colours[k] == COLOUR_IDS["blue"]).all() for k in (10, 11))
    assert all((t.colours[k] == 0).all() for k in range(10))
    thumb = t.colours[12].reshape(16, 16)            # the thumbnail: the canvas squeezed to 448x448
    assert (thumb[8:, 11:] == COLOUR_IDS["blue"]).all() and (thumb[:8] == 0).all() and (thumb[:, :10] == 0).all()
    cams = t.cameras[12].reshape(16, 16)             # camera under each thumbnail token, 1-based
    assert cams[0, 0] == 1 and cams[0, 15] == 3 and cams[15, 0] == 4 and cams[15, 15] == 6 and cams[0, 7] == 2
    assert (t.cameras[:12] == 0).all()               # grid tiles: only with grid_cameras (below)
    on = t.digits[12][t.colours[12] > 0]
    # the object's box and centre in 0..1000 of the canvas: x 667..1000 (999 at most), y 500..1000
    assert (on[:, :3] == [6, 6, 7]).all() and (on[:, 3:6] == [5, 0, 0]).all() and (on[:, 6:9] == [9, 9, 9]).all()
    assert (on[:, 12:15] == [8, 3, 3]).all() and (on[:, 15:18] == [7, 5, 0]).all()
    assert (t.digits[:12] == IGNORE).all() and (t.digits[12][t.colours[12] == 0] == IGNORE).all()


def test_grid_camera_targets_name_the_cell_under_each_token():
    car = SceneObject("car", "blue", "CAM_BACK_RIGHT", (0, 0, 800, 450))
    plain, t = six_camera_targets([car]), six_camera_targets([car], grid_cameras=True)
    # 6 x 2 tiles: each camera's cell is two tiles, row-major (tiles 0, 1: CAM_FRONT_LEFT = 1 ...)
    assert [set(t.cameras[k]) for k in range(12)] == [{1 + k // 6 * 3 + k % 6 // 2} for k in range(12)]
    assert (t.cameras[12] == plain.cameras[12]).all()          # the thumbnail's as before
    assert (t.colours == plain.colours).all() and (t.digits == plain.digits).all()
    # a grid that cuts cells (2 x 1 tiles of 1344 canvas pixels): the camera changes inside a tile
    two = six_camera_targets([car], max_tiles=2, grid_cameras=True)
    first = two.cameras[0].reshape(16, 16)
    assert first[0, 0] == 1 and first[0, 15] == 2 and first[15, 0] == 4 and first[15, 15] == 5


def test_where_answers_and_centre_targets_agree():
    """The digits a thumbnail token learns are the numbers of the `where` answer about its object."""
    from mivl.calib.questions import drivelm_point

    cone = SceneObject("cone", "white", "CAM_FRONT", (401, 300, 431, 345))
    t = six_camera_targets([cone])
    on = t.digits[12][t.colours[12] > 0]
    x, y = (int("".join(map(str, on[0, k:k + 3]))) for k in (12, 15))
    assert drivelm_point(cone, 800, 450) == f"<c1,CAM_FRONT,{x},{y}>"
    assert digits_of(1000) == [9, 9, 9] and digits_of(7) == [0, 0, 7]


def test_dense_warmup_learns_and_is_reproducible(tiny_dir):
    import torch

    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.reference import preprocess_config
    from mivl.export.train.dense import dense_sample, pretrain_vision

    ck = load_checkpoint(tiny_dir("qwen2"))
    pre = preprocess_config(ck)
    a, b = dense_sample(3, 7, pre, 1, 0.5), dense_sample(3, 7, pre, 1, 0.5)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.digits, b.digits)
    k = a.pixels.shape[0]     # one grid tile and the thumbnail
    assert a.pixels.shape == (k, 3, 448, 448) and a.colours.shape == (k, 256) and a.digits.shape == (k, 256, 18)
    before = {k: v.clone() for k, v in ck.model.language_model.state_dict().items()}
    losses, heads = pretrain_vision(ck.model, pre, steps=12, batch_size=2, lr=3e-3, quiet=True)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    from mivl.calib.synthetic import CLASSES
    from mivl.export.train.dense import dense_accuracy

    val = [dense_sample(99, i, pre, 3, 0.5) for i in range(4)]
    acc = dense_accuracy(ck.model, heads, val)
    counts = {c: sum(int((s.classes == k + 1).sum()) for s in val) for k, c in enumerate(CLASSES)}
    per = {c: acc[f"class {c}"] for c in CLASSES if counts[c]}      # recall per class, weighted: the total
    assert per and abs(sum(per[c] * counts[c] for c in per) / sum(counts.values()) - acc["class"]) < 1e-9
    assert "camera grid" not in acc                                  # no grid-tile camera targets asked for
    with torch.no_grad():          # the class on the thumbnail (each sample's last tile) and on the grid tiles
        said = [heads.cls(ck.model.image_features(torch.from_numpy(s.pixels))).argmax(-1).numpy() for s in val]
    for name, tiles in (("class on thumbnail", slice(-1, None)), ("class on grid", slice(None, -1))):
        on = [s.classes[tiles] > 0 for s in val]
        hits = sum(int((p[tiles][o] == s.classes[tiles][o]).sum()) for p, s, o in zip(said, val, on))
        assert sum(int(o.sum()) for o in on) and acc[name] == hits / sum(int(o.sum()) for o in on)
    six = [dense_sample(99, i, pre, 3, 1.0, grid_tiles=2, grid_cameras=True) for i in range(2)]
    with torch.no_grad():
        said = [heads.camera(ck.model.image_features(torch.from_numpy(s.pixels))).argmax(-1).numpy() for s in six]
    hits = sum(int((p[:-1] == s.cameras[:-1]).sum()) for p, s in zip(said, six))   # grid tiles: all but the last
    assert all((s.cameras[:-1] > 0).all() for s in six)
    assert dense_accuracy(ck.model, heads, six)["camera grid"] == hits / sum(s.cameras[:-1].size for s in six)
    after = ck.model.language_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # only the vision side trains


def test_dense_loss_weighs_the_class_term():
    import torch

    from mivl.export.train.dense import DenseHeads, dense_loss

    torch.manual_seed(0)
    heads, feats = DenseHeads(16), torch.randn(2, 256, 16)
    colours, classes = torch.randint(0, 7, (2, 256)), torch.randint(0, 7, (2, 256))
    w = torch.where(colours.reshape(-1) > 0, 10.0, 1.0)
    lk = torch.nn.functional.cross_entropy(heads.cls(feats.reshape(-1, 16)), classes.reshape(-1), reduction="none")
    one, three = (dense_loss(heads, feats, colours, classes, 10.0, class_weight=c) for c in (1.0, 3.0))
    assert torch.allclose(three - one, 2 * (lk * w).sum() / w.sum())


def test_camera_term_on_objects_weighs_object_tokens_as_the_others():
    import torch

    from mivl.export.train.dense import DenseHeads, dense_loss

    torch.manual_seed(0)
    heads, feats = DenseHeads(16), torch.randn(2, 256, 16)
    colours, classes = torch.randint(0, 7, (2, 256)), torch.randint(0, 7, (2, 256))
    cameras = torch.randint(0, 7, (2, 256))
    w = torch.where(colours.reshape(-1) > 0, 10.0, 1.0)
    lm = torch.nn.functional.cross_entropy(heads.camera(feats.reshape(-1, 16)), cameras.reshape(-1), reduction="none")
    base = dense_loss(heads, feats, colours, classes, 10.0)
    plain = dense_loss(heads, feats, colours, classes, 10.0, cameras, camera_weight=2.0)
    objects = dense_loss(heads, feats, colours, classes, 10.0, cameras, camera_weight=2.0, camera_objects=True)
    assert torch.allclose(plain - base, 2 * lm.mean())
    assert torch.allclose(objects - base, 2 * (lm * w).sum() / w.sum())


def test_balanced_class_weights_give_each_class_present_the_same_total():
    import torch

    from mivl.export.train.dense import balanced

    classes = torch.tensor([0] * 50 + [1] * 100 + [3] * 10)          # background, 100 car, 10 bus tokens
    w = torch.where(classes > 0, 10.0, 1.0)
    b = balanced(classes, w, 7)
    assert torch.equal(b[:50], w[:50])                                # background keeps its weight
    assert torch.isclose(b[50:150].sum(), b[150:].sum()) and torch.isclose(b[50:].sum(), w[50:].sum())
    assert torch.equal(balanced(torch.zeros(5, dtype=torch.long), torch.ones(5), 7), torch.ones(5))


def test_default_recipe_runs_its_stages_and_skips_finished_ones(tmp_path):
    import json

    from mivl.export.default_model import SIX_CAMERA, Stage, publish, train_default

    stages = (Stage("dense", 2, 2e-3, batch_size=2, six_share=0.5, camera_weight=1, digit_weight=1),
              Stage("qa", 2, 1e-3, ("colour", "camera"), batch_size=2, turns=2, views=2, six_share=0.5),
              Stage("focus", 2, 1e-3, ("camera",), batch_size=2, turns=2, views=2, six_share=1.0, max_tiles=1,
                    freeze=("vit", "projector"), focus=1.0, stream=1))
    last = train_default(tmp_path / "out", work=tmp_path / "work", stages=stages, quiet=True, recipe=SIX_CAMERA)
    assert last == tmp_path / "work" / "focus" and (last / "config.json").is_file()
    init = json.loads((tmp_path / "work" / "init" / "config.json").read_text())
    assert init["max_dynamic_patch"] == 12 and init["use_thumbnail"] is True     # six cameras: 13 tiles
    dense_log = json.loads((tmp_path / "work" / "dense" / "train_log.json").read_text())
    assert dense_log["stage"] == "dense" and len(dense_log["losses"]) == 2
    stamp = (last / "model.safetensors").stat().st_mtime_ns
    train_default(tmp_path / "out", work=tmp_path / "work", stages=stages, quiet=True, recipe=SIX_CAMERA)
    assert (last / "model.safetensors").stat().st_mtime_ns == stamp      # finished: not run again
    out = publish(last, tmp_path / "published", SIX_CAMERA, stages)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    log = json.loads((out / "train_log.json").read_text())
    assert (log["name"], log["positions"]) == ("six-camera", "noise")
    assert [s["name"] for s in log["stages"]] == ["dense", "qa", "focus"]
    logs = log["logs"]
    assert logs["dense"]["steps"] == 2 and logs["qa"]["steps"] == 2
    assert logs["dense"]["seconds"] > 0 and logs["qa"]["seconds"] > 0      # over every run of the stage
    focus_log = json.loads((last / "train_log.json").read_text())
    assert focus_log["config"]["focus_weight"] == 1.0 and len(focus_log["losses"]) == 2
    assert any((out / f).is_file() for f in ("tokenizer.json", "vocab.json"))


def test_a_finished_stage_is_reused_only_for_its_own_stage_and_start(tmp_path):
    """A stage folder records its stage and the digest of the weights it started from; after a
    recipe change (a stage inserted before it, or its own definition changed) it is refused, not
    silently taken, finished or interrupted, and the work folder is left as it was."""
    import json
    from dataclasses import replace

    from mivl.edge.errors import InputError
    from mivl.export.default_model import MADE_FROM, ONE_TILE, Stage, train_default

    dense = Stage("dense", 1, 2e-3, batch_size=2)
    qa = Stage("qa", 1, 1e-3, ("colour",), batch_size=2, turns=1)
    work = tmp_path / "work"
    train_default(tmp_path / "out", work=work, stages=(dense, qa), quiet=True, recipe=ONE_TILE)
    made = json.loads((work / "qa" / MADE_FROM).read_text())
    assert made["stage"]["name"] == "qa" and len(made["start_sha256"]) == 64
    train_default(tmp_path / "out", work=work, stages=(dense, qa), quiet=True, recipe=ONE_TILE)   # the same: reused
    stamp = (work / "qa" / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(InputError, match=r"qa was made by other weights than .*more"):
        train_default(tmp_path / "out", work=work, stages=(dense, replace(qa, name="more"), qa), quiet=True,
                      recipe=ONE_TILE)
    with pytest.raises(InputError, match="dense was made by another definition of the stage"):
        train_default(tmp_path / "out", work=work, stages=(replace(dense, lr=1e-3), qa), quiet=True, recipe=ONE_TILE)
    assert (work / "qa" / "model.safetensors").stat().st_mtime_ns == stamp
    (work / "qa" / "config.json").unlink()           # as if interrupted: not taken up from other weights either
    with pytest.raises(InputError, match="qa was made by other weights"):
        train_default(tmp_path / "out", work=work, stages=(dense, replace(qa, name="more"), qa), quiet=True,
                      recipe=ONE_TILE)


def test_a_stage_record_older_than_a_stage_field_reads_it_as_its_default(tmp_path):
    """A work folder written before a field was added to Stage is still its stage's (the record
    lacks the field; the definition holds the field's default); a changed value is still refused."""
    import json
    from dataclasses import replace

    from mivl.edge.errors import InputError
    from mivl.export.default_model import MADE_FROM, SIX_CAMERA_WHERE, check_made_from, made_from

    m3 = SIX_CAMERA_WHERE.stage("m3")
    now = made_from(m3, tmp_path)
    old = json.loads(json.dumps(now))
    del old["stage"]["format_records"], old["stage"]["format_share"]
    (tmp_path / MADE_FROM).write_text(json.dumps(old))
    check_made_from(tmp_path, now)                       # taken up
    for changed in (replace(m3, format_records="grounding", format_share=0.2), replace(m3, lr=1e-4)):
        with pytest.raises(InputError, match="another definition of the stage"):
            check_made_from(tmp_path, made_from(changed, tmp_path))


def test_bf16_stage_starts_from_the_published_rounding(tmp_path):
    """A stage with from_bf16 trains from the previous stage's weights rounded to bf16, as the
    published model holds them (the shipped model's class stages started from the published one)."""
    import torch

    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.default_model import ONE_TILE, Stage, train_default

    stages = (Stage("dense", 1, 2e-3, batch_size=2),
              Stage("more", 1, 1e-3, ("colour",), freeze=(), batch_size=2, turns=2, from_bf16=True))
    train_default(tmp_path / "out", work=tmp_path / "work", stages=stages, quiet=True, recipe=ONE_TILE)
    start = load_checkpoint(tmp_path / "work" / "more-start").model.state_dict()
    dense = load_checkpoint(tmp_path / "work" / "dense").model.state_dict()
    assert all(torch.equal(start[k], dense[k].bfloat16().float()) for k in dense)
    assert (tmp_path / "work" / "more" / "config.json").is_file()


def test_shipped_recipe_reproduces_its_logged_first_step(tmp_path):
    """The shipped model's recipe (six-camera-where, whose first stages are six-camera-long's), run by
    today's code, starts from the same first step: the dense stage's first loss, 10.0770 in the run
    that made the committed model (six-camera, shipped before, 10.1004: only the position init
    differs)."""
    import json
    from dataclasses import replace

    from mivl.export.default_model import DEFAULT, SIX_CAMERA, SIX_CAMERA_LONG, SIX_CAMERA_WHERE, make_initial, run_dense

    assert DEFAULT is SIX_CAMERA_WHERE and DEFAULT.stages[:len(SIX_CAMERA_LONG.stages)] == SIX_CAMERA_LONG.stages
    for recipe, first in ((SIX_CAMERA_LONG, 10.0770), (SIX_CAMERA, 10.1004)):
        init = make_initial(tmp_path / recipe.name / "init", 0, recipe)
        run_dense(init, tmp_path / recipe.name / "dense", replace(recipe.stages[0], steps=1), 0, True, recipe)
        losses = json.loads((tmp_path / recipe.name / "dense" / "train_log.json").read_text())["losses"]
        assert abs(losses[0] - first) < 2e-4, (recipe.name, losses)


def test_anchor_keeps_the_dense_targets_while_the_encoder_learns_answers(tmp_path):
    """A QA stage with the ViT training and an anchor: the dense loss under the dense stage's
    heads is computed each step (logged apart) and enters the objective (the same stage without it
    ends with another ViT), the ViT moves and the frozen projector does not; a stage naming no dense
    stage that has run is refused before training."""
    import json
    from dataclasses import replace

    import torch

    from mivl.edge.errors import InputError
    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.default_model import SIX_CAMERA, Stage, train_default

    dense = Stage("dense", 2, 2e-3, batch_size=2, six_share=0.5, camera_weight=1, digit_weight=1)
    qa = Stage("qa", 2, 1e-3, ("colour", "camera"), batch_size=2, turns=2, views=2, six_share=0.5, max_tiles=1,
               freeze=("projector",), anchor=0.5, anchor_stage="dense")
    with pytest.raises(InputError, match="anchor_stage"):
        train_default(tmp_path / "out", work=tmp_path / "w0", stages=(Stage("qa0", 1, 1e-3, ("colour",), batch_size=1,
                      turns=1, views=1, six_share=0.0, max_tiles=1, freeze=("projector",), anchor=0.5,
                      anchor_stage="dense"),), quiet=True, recipe=SIX_CAMERA)
    work = tmp_path / "work"
    train_default(tmp_path / "out", work=work, stages=(dense,), quiet=True, recipe=SIX_CAMERA)
    last = train_default(tmp_path / "out", work=work, stages=(dense, qa), quiet=True, recipe=SIX_CAMERA)
    plain = train_default(tmp_path / "out", work=work, stages=(dense, replace(qa, name="plain", anchor=0.0)),
                          quiet=True, recipe=SIX_CAMERA)
    log = json.loads((last / "train_log.json").read_text())
    assert len(log["anchor_losses_this_run"]) == 2 and all(0 < v < 100 for v in log["anchor_losses_this_run"])
    before = load_checkpoint(work / "dense").model.state_dict()
    after = load_checkpoint(last).model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vision_model."))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("mlp1."))
    without = load_checkpoint(plain).model.state_dict()      # the same stage without the anchor
    assert "anchor_losses_this_run" not in json.loads((plain / "train_log.json").read_text())
    assert any(not torch.equal(without[k], after[k]) for k in before if k.startswith("vision_model."))


def test_batches_drawn_ahead_are_the_batches_of_their_steps(tiny_dir):
    """benchmarks/bench_dense_step.py prefetch: each step is handed the batch `dense_batch` draws
    for it, whether the step before drew it ahead or not (a step skipped, a stream or size changed)."""
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from bench_dense_step import Ahead

    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.reference import preprocess_config
    from mivl.export.train.dense import dense_batch

    pre = preprocess_config(load_checkpoint(tiny_dir("qwen2")))
    with ThreadPoolExecutor(1) as pool:
        ahead = Ahead(pool)
        for seed, step, size in ((5, 0, 1), (5, 1, 1), (5, 3, 1), (6, 4, 1), (6, 5, 2)):
            got, want = ahead(seed, step, size, pre, 1, 0.5), dense_batch(seed, step, size, pre, 1, 0.5)
            assert all(torch.equal(got[k], want[k]) for k in want)
        assert ahead.next[0][:2] == (6, 6)


def test_window_features_are_the_tiles_own_with_the_windows_positions(tiny_dir):
    """benchmarks/probe_vit_crops.py: a window of a tile runs the ViT with its patches' own position
    embeddings: the whole tile as a window is `image_features` exactly; a 224 window's pixels and
    labels are the tile's there, and its positions are its place's, not the top-left's."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from probe_vit_crops import quadrants, window_features

    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.reference import preprocess_config
    from mivl.export.train.dense import dense_batch

    ck = load_checkpoint(tiny_dir("qwen2"), torch.float32)
    model = ck.model.eval()
    batch = dense_batch(3, 0, 2, preprocess_config(ck), 3, 1.0)
    with torch.no_grad():
        assert torch.equal(window_features(model, batch["pixels"], 0, 0), model.image_features(batch["pixels"]))
        windows = quadrants(batch, False)
        assert [(r, c) for r, c, *_ in windows] == [(0, 0), (0, 16), (16, 0), (16, 16)]
        r, c, pixels, colours, classes = windows[3]                    # the bottom-right window
        assert torch.equal(pixels, batch["pixels"][:, :, 224:, 224:])
        assert torch.equal(colours, batch["colours"].reshape(-1, 16, 16)[:, 8:, 8:].reshape(-1, 64))
        assert window_features(model, pixels, r, c).shape == (len(pixels), 64, model.mlp1[-1].out_features)
        # the window's own positions: the same pixels placed at the top-left are other features
        assert not torch.allclose(window_features(model, pixels, r, c), window_features(model, pixels, 0, 0))
        with pytest.raises(ValueError):
            window_features(model, pixels, 24, 0)                       # past the patch grid
    some = quadrants(batch, True)
    assert some and all((col > 0).any(1).all() for _, _, _, col, _ in some)
