"""Tile-camera targets: the camera of each tile of the six-camera tiling, the loss the LLM's heads
score on its grid tokens, training that teaches it, and a checkpoint that stays InternVL's."""
import numpy as np
import pytest
import torch

from mivl.calib.questions import ask_kind
from mivl.calib.synthetic import draw_scene
from mivl.edge.errors import InputError
from mivl.edge.preprocess import PreprocessConfig
from mivl.edge.prompt import IMG_CONTEXT, get_template
from mivl.edge.tiling import TileGrid
from mivl.edge.tokenizer import load_tokenizer
from mivl.export.checkpoint import load_checkpoint
from mivl.export.train import tasks
from mivl.export.train.data import encode_record
from mivl.export.train.tile_camera import NO_CAMERA, TileCameraConfig, tile_cameras
from mivl.export.train.trainer import TrainConfig, TrainingModel

N = NO_CAMERA


def test_each_grid_tile_of_the_canvas_knows_its_camera():
    # 6 x 2 + thumbnail (the canvas itself): each camera is two tiles side by side, row-major
    assert tile_cameras(TileGrid(6, 2, True)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, N]
    # 3 x 2: one tile a camera; 3 x 1 and 2 x 1: tiles across two cameras; one tile: across all
    assert tile_cameras(TileGrid(3, 2, False)).tolist() == [0, 1, 2, 3, 4, 5]
    assert tile_cameras(TileGrid(3, 1, True)).tolist() == [N, N, N, N]
    assert tile_cameras(TileGrid(2, 1, False)).tolist() == [N, N]
    assert tile_cameras(TileGrid(1, 1, False)).tolist() == [N]


def _six_camera_sample(path, kind="camera", seed=5):
    ck = load_checkpoint(path, torch.float32)
    tok, tpl = load_tokenizer(ck.path), get_template(ck.config.template)
    scene = draw_scene(seed, 800, 450, max_objects=2)
    q = ask_kind(kind, scene, np.random.default_rng(1), (800, 450))
    rec = tasks.from_questions([q], dict(scene.cameras))
    return ck, tok, encode_record(rec, tok, tpl, PreprocessConfig(max_tiles=12, use_thumbnail=True), 256), scene


def test_six_camera_samples_carry_their_tiles_cameras_and_one_camera_samples_none(tiny_dir):
    ck, tok, s, scene = _six_camera_sample(tiny_dir("qwen2"))
    assert s.pixels.shape[0] == 13 and s.tile_cameras.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, N]
    q = ask_kind("colour", scene, np.random.default_rng(2), (800, 450), camera="CAM_BACK")
    one = encode_record(tasks.from_questions([q], {"CAM_BACK": scene.cameras["CAM_BACK"]}), tok,
                        get_template(ck.config.template), PreprocessConfig(max_tiles=12, use_thumbnail=True), 256)
    assert one.tile_cameras is None


def test_the_target_adds_to_the_objective_and_leaves_the_answer_loss_and_checkpoint_alone(tiny_dir):
    ck, tok, s, _ = _six_camera_sample(tiny_dir("qwen2"))
    keys = set(ck.model.state_dict())
    ids, labels, pixels = torch.tensor(s.input_ids), torch.tensor(s.labels), torch.from_numpy(s.pixels)
    plain = TrainingModel(ck.model, tok.token_to_id(IMG_CONTEXT), torch.float32)(pixels, ids, labels)
    net = TrainingModel(ck.model, tok.token_to_id(IMG_CONTEXT), torch.float32,
                        tile_camera=TileCameraConfig(1.0, (1,)))
    objective, ce = net(pixels, ids, labels, (), s.tile_cameras)
    assert torch.allclose(ce, plain, rtol=1e-5)
    # six cameras at chance: the cross-entropy of a fresh head is near log 6
    assert 0.5 * np.log(6) < float((objective - ce).detach()) < 2 * np.log(6)
    assert 0 <= net.focus_mass["tile camera"][0] <= 1
    assert set(ck.model.state_dict()) == keys                      # the heads are the wrapper's
    assert any(n.startswith("tile_camera.") for n, _ in net.named_parameters())
    # without the sample's tile cameras (one camera, text): the answer loss alone
    assert torch.allclose(net(pixels, ids, labels), plain, rtol=1e-5)


def test_training_on_the_target_teaches_the_llm_the_tiles_cameras(tiny_dir):
    """Steps on the target alone, over three scenes: the heads, reading the decoder's states at grid
    tokens, then get the camera right far above chance (1/6) on a fourth scene. The ViT's tokens
    cannot tell (no tile has a position) and each scene shows other things, so what carries over
    is each token's place in the sequence. (On one scene alone they learn that scene's content, and
    stay at chance on another.)"""
    made = [_six_camera_sample(tiny_dir("qwen2"), seed=seed) for seed in (5, 6, 7, 8)]
    ck, tok = made[0][:2]
    samples = [m[2] for m in made]
    net = TrainingModel(ck.model, tok.token_to_id(IMG_CONTEXT), torch.float32,
                        tile_camera=TileCameraConfig(1.0, (1,)))
    params = list(ck.model.language_model.parameters()) + list(net.tile_camera.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for step in range(24):
        s = samples[step % 3]
        objective, ce = net(torch.from_numpy(s.pixels), torch.tensor(s.input_ids), torch.tensor(s.labels), (),
                            s.tile_cameras)
        losses.append(float((objective - ce).detach()))
        opt.zero_grad()
        (objective - ce).backward()
        opt.step()
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3]), losses
    s = samples[3]
    with torch.no_grad():
        net(torch.from_numpy(s.pixels), torch.tensor(s.input_ids), torch.tensor(s.labels), (), s.tile_cameras)
    right = net.focus_mass["tile camera"]
    assert right[-1] > 0.5 and right[-1] > 2 * right[0], right


def test_tile_camera_settings_are_checked():
    with pytest.raises(InputError, match="positive"):
        TileCameraConfig(0.0).check(4)
    with pytest.raises(InputError, match=r"1\.\.3"):
        TileCameraConfig(1.0, (0,)).check(4)
    with pytest.raises(InputError, match=r"1\.\.3"):
        TileCameraConfig(1.0, (4,)).check(4)
    TileCameraConfig(1.0, (1, 3)).check(4)
    with pytest.raises(InputError, match="tile_camera_weight must be >= 0"):
        TrainConfig("a", "b", tile_camera_weight=-1.0).check()
    with pytest.raises(InputError, match="cannot be frozen"):
        TrainConfig("a", "b", mode="partial", freeze=("vit", "llm"), tile_camera_weight=1.0).check()
    assert TrainConfig("a", "b").tile_camera() is None
    assert TrainConfig("a", "b", tile_camera_weight=0.5, tile_camera_layers=(2,)).tile_camera() == TileCameraConfig(
        0.5, (2,))


def test_the_heads_learn_at_their_own_scale_of_the_learning_rate(tiny_dir):
    """make_optimizer puts the tile-camera heads in a group of their own, LR_SCALE times the rate
    (the schedule scales every group alike); without them the groups are as before."""
    from mivl.export.train.tile_camera import LR_SCALE
    from mivl.export.train.trainer import make_optimizer

    ck = load_checkpoint(tiny_dir("qwen2"), torch.float32)
    cfg = TrainConfig("a", "b", lr=1e-3, steps=10)
    net = TrainingModel(ck.model, 0, torch.float32, tile_camera=TileCameraConfig(1.0, (1,)))
    opt, sched = make_optimizer(net, cfg)
    heads = {id(p) for p in net.tile_camera.parameters()}
    assert opt.param_groups[2]["initial_lr"] == pytest.approx(1e-3 * LR_SCALE)
    for _ in range(3):
        opt.step()
        sched.step()
        assert opt.param_groups[2]["lr"] == pytest.approx(LR_SCALE * opt.param_groups[0]["lr"])
    assert {id(p) for p in opt.param_groups[2]["params"]} == heads
    assert not heads & {id(p) for g in opt.param_groups[:2] for p in g["params"]}
    plain, _ = make_optimizer(TrainingModel(ck.model, 0, torch.float32), cfg)
    assert len(plain.param_groups) == 2
