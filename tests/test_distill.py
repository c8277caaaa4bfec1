"""Vision-encoder distillation (mivl.export.train.distill): the student's initialisation from the
teacher, the loss against a hand computation, resume, one process vs two under torchrun, and the
student through export and the runtime."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mivl.edge.errors import InputError
from mivl.export.checkpoint import load_checkpoint
from mivl.export.train import distill as dist
from mivl.export.train.distill import (DistillConfig, DistillLoss, default_layer_map, distill, distill_pairs,
                                       make_student)
from test_train import _losses  # the LOSSES line of a one- or two-process run

VISION4 = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
               image_size=448, patch_size=14, layer_norm_eps=1e-6, qkv_bias=True, qk_normalization=False,
               norm_type="layer_norm", architectures=["InternVisionModel"])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny qwen2 InternVL whose ViT has 4 layers (random weights)."""
    from mivl.export.tiny import make_tiny

    return make_tiny("qwen2", tmp_path_factory.mktemp("teacher") / "t", seed=3, vision=VISION4, max_tiles=2)


def _tiles(n=2, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, 448, 448)).astype(np.float32))


def test_default_layer_map_takes_every_kth_layer_ending_at_the_last():
    assert default_layer_map(24, 12) == tuple(range(1, 24, 2))
    assert default_layer_map(4, 2) == (1, 3)
    assert default_layer_map(3, 2) == (1, 2)
    assert default_layer_map(24, 24) == tuple(range(24))
    assert default_layer_map(24, 1) == (23,)


def test_layer_map_initialisation_copies_the_mapped_layers(teacher):
    ck = load_checkpoint(teacher)
    student, cfg = make_student(ck, 2, 64, (0, 3))
    assert cfg["vision_config"]["num_hidden_layers"] == 2
    t_sd, s_sd = ck.model.state_dict(), student.state_dict()
    for s_i, t_i in ((0, 0), (1, 3)):
        for k, v in s_sd.items():
            prefix = f"vision_model.encoder.layers.{s_i}."
            if k.startswith(prefix):
                torch.testing.assert_close(v, t_sd[k.replace(prefix, f"vision_model.encoder.layers.{t_i}.")],
                                           rtol=0, atol=0, msg=k)
    for k, v in s_sd.items():   # embeddings, projector and LLM are the teacher's
        if not k.startswith("vision_model.encoder."):
            torch.testing.assert_close(v, t_sd[k], rtol=0, atol=0, msg=k)


def test_a_full_depth_student_is_the_teacher(teacher):
    ck = load_checkpoint(teacher)
    student, _ = make_student(ck, 4, 64, default_layer_map(4, 4))
    px = _tiles(1)
    torch.testing.assert_close(student.extract_feature(px), ck.model.extract_feature(px), rtol=0, atol=0)


def test_narrow_student_keeps_the_first_channels_heads_and_units(teacher):
    ck = load_checkpoint(teacher)
    student, cfg = make_student(ck, 2, 32, (1, 3))
    v = cfg["vision_config"]
    assert (v["hidden_size"], v["num_attention_heads"], v["intermediate_size"]) == (32, 2, 64)   # head size 16 kept
    t, s = ck.model.vision_model.encoder.layers[3], student.vision_model.encoder.layers[1]
    for block in range(3):      # q, k, v: rows of the first two heads of each, first 32 input columns
        torch.testing.assert_close(s.attn.qkv.weight[block * 32:(block + 1) * 32],
                                   t.attn.qkv.weight[block * 64:block * 64 + 32, :32], rtol=0, atol=0)
        torch.testing.assert_close(s.attn.qkv.bias[block * 32:(block + 1) * 32],
                                   t.attn.qkv.bias[block * 64:block * 64 + 32], rtol=0, atol=0)
    torch.testing.assert_close(s.mlp.fc1.weight, t.mlp.fc1.weight[:64, :32], rtol=0, atol=0)
    torch.testing.assert_close(s.mlp.fc2.weight, t.mlp.fc2.weight[:32, :64], rtol=0, atol=0)
    torch.testing.assert_close(s.ls2, t.ls2[:32], rtol=0, atol=0)
    # projector: the first 32 channels of each of the four unshuffled patches
    cols = torch.cat([k * 64 + torch.arange(32) for k in range(4)])
    torch.testing.assert_close(student.mlp1[1].weight, ck.model.mlp1[1].weight[:, cols], rtol=0, atol=0)
    assert student.extract_feature(_tiles(1)).shape == (1, 256, ck.config.llm.hidden_size)


def test_loss_is_the_negative_cosine_of_the_mapped_layers(teacher):
    ck = load_checkpoint(teacher)
    student, _ = make_student(ck, 2, 64, (1, 3))
    with torch.no_grad():    # make the student differ from its initialisation
        for p in student.vision_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    pairs = distill_pairs((1, 3), last_k=2)
    assert pairs == [(0, 1), (1, 3)]
    loss = DistillLoss(student.vision_model, ck.model.vision_model, pairs)
    px = _tiles(2)
    got = loss(px)
    with torch.no_grad():
        s_states, t_states = student.vision_model.states(px), ck.model.vision_model.states(px)
    by_hand = 0.0
    for n in range(2):
        per_pair = []
        for i, j in pairs:
            a, b = s_states[i + 1][n].double(), t_states[j + 1][n].double()
            cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
            per_pair.append(float(cos.mean()))
        by_hand += -sum(per_pair) / len(per_pair)
    assert abs(float(got.detach()) - by_hand) < 1e-5
    assert distill_pairs((1, 3), last_k=1) == [(1, 3)]
    # a student that equals the teacher's mapped layers scores -1
    same, _ = make_student(ck, 4, 64, (0, 1, 2, 3))
    assert abs(float(DistillLoss(same.vision_model, ck.model.vision_model, distill_pairs((0, 1, 2, 3), 4))(px).detach()) + 2) < 1e-5


def test_narrow_student_distils_through_learned_maps(teacher):
    ck = load_checkpoint(teacher)
    student, _ = make_student(ck, 2, 32, (1, 3))
    loss = DistillLoss(student.vision_model, ck.model.vision_model, distill_pairs((1, 3), 2))
    assert loss.maps is not None and loss.maps[0].weight.shape == (64, 32)
    assert torch.isfinite(loss(_tiles(1)))


def _cfg(teacher, out, **kw):
    base = dict(layers=2, steps=4, batch_size=4, micro_batch=2, lr=2e-3, held_out=2, quiet=True, save_every=2)
    base.update(kw)
    return DistillConfig(str(teacher), str(out), **base)


def test_distillation_lowers_the_loss_and_writes_a_checkpoint(teacher, tmp_path):
    r = distill(_cfg(teacher, tmp_path / "s", steps=8, lr=3e-3))
    assert r.losses[-1] < r.losses[0]
    st = r.stages[0]
    assert st.stage == "distill" and st.cosine_after > st.cosine_before
    ck = load_checkpoint(tmp_path / "s")
    assert ck.config.vision.num_hidden_layers == 2
    log = json.loads((tmp_path / "s" / "distill_log.json").read_text())
    assert log["layer_map"] == [1, 3] and log["stages"]["distill"]["steps"] == 8


def test_distillation_resumes_where_it_stopped(teacher, tmp_path, monkeypatch):
    full = distill(_cfg(teacher, tmp_path / "full")).losses
    real_save = dist.save_state

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(dist, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill(_cfg(teacher, tmp_path / "cut"))
    monkeypatch.setattr(dist, "save_state", real_save)
    state = tmp_path / "cut.work" / "distilled" / "train_state" / "step-2.pt"
    saved = torch.load(state, weights_only=True)
    assert 0 < saved["seconds"] < 1000
    torch.save(dict(saved, seconds=1000.0), state)     # as if the cut run's two steps took 1000 s
    resumed = distill(_cfg(teacher, tmp_path / "cut"))
    assert len(resumed.losses) == 4
    np.testing.assert_allclose(resumed.losses, full, rtol=1e-5)
    seconds = json.loads((tmp_path / "cut" / dist.LOG_FILE).read_text())["stages"]["distill"]["seconds"]
    assert 1000 < seconds < 1000 + 600      # the stage's wall time counts the steps of both runs


@pytest.mark.parametrize("kw,msg", [({"width": 40}, "multiple of the head size"),
                                    ({"width": 128}, "between"),
                                    ({"layers": 5}, "depth"),
                                    ({"layer_map": (3, 1)}, "strictly increasing"),
                                    ({"layer_map": (0, 1, 2)}, "names 3"),
                                    ({"layer_map": (0, 4)}, "teacher layers 0..3"),
                                    ({"steps": 0}, "steps"),
                                    ({"align_mode": "vit"}, "align_mode"),
                                    ({"data": "nowhere"}, "expected 'synthetic'")])
def test_bad_distillation_options_are_refused(teacher, tmp_path, kw, msg):
    with pytest.raises(InputError, match=msg):
        distill(_cfg(teacher, tmp_path / "x", **kw))


def test_options_as_keyword_arguments(teacher, tmp_path):
    r = distill(teacher=str(teacher), output=str(tmp_path / "s"), layers=1, steps=2, batch_size=2, held_out=1,
                quiet=True)
    assert len(r.losses) == 2 and load_checkpoint(tmp_path / "s").config.vision.num_hidden_layers == 1
    with pytest.raises(InputError, match="unexpected keyword"):
        distill(teacher=str(teacher), output=str(tmp_path / "t"), layer=3)
    with pytest.raises(InputError, match="not both"):
        distill(_cfg(teacher, tmp_path / "u"), steps=3)


def test_distils_on_an_image_folder(teacher, tmp_path):
    import cv2
    for i in range(3):
        img = np.random.default_rng(i).integers(0, 256, (120, 200, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    r = distill(_cfg(teacher, tmp_path / "s", data=str(tmp_path), steps=2))
    assert len(r.losses) == 2


TORCHRUN_SCRIPT = """
import json, os, sys
from mivl.export.train.distill import DistillConfig, distill
r = distill(DistillConfig(sys.argv[1], sys.argv[2], layers=2, steps=3, batch_size=4, micro_batch=1, lr=3e-3,
                          held_out=1, quiet=True, resume=False, save_every=0))
if int(os.environ.get("RANK", "0")) == 0:
    print("LOSSES", json.dumps(r.losses))
"""


def test_two_processes_match_one(teacher, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(TORCHRUN_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = _losses([sys.executable, str(script), str(teacher), str(tmp_path / "one")], env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = _losses(torchrun + [str(script), str(teacher), str(tmp_path / "two")], env)
    np.testing.assert_allclose(two, one, rtol=1e-5)
    assert two[-1] < two[0]
    a, b = load_checkpoint(tmp_path / "one").model, load_checkpoint(tmp_path / "two").model
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-2, atol=1e-3, msg=n)   # bf16 save


def test_student_exports_and_runs_like_its_reference(teacher, tmp_path):
    """Distil + align (projector) through the CLI, export the student, and compare the runtime's
    greedy tokens with the student's PyTorch reference."""
    from mivl.calib.synthetic import draw_scene
    from mivl.export.api import export
    from mivl.export.reference import Reference
    from PIL import Image

    from test_runtime_parity import run_runtime

    student = tmp_path / "student"
    r = subprocess.run([sys.executable, "-m", "mivl.export.cli", "distill", str(teacher), "-o", str(student),
                        "--layers", "2", "--steps", "2", "--batch-size", "2", "--held-out", "1",
                        "--align-steps", "2", "--align-batch-size", "2", "--align-kinds", "colour"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| distill | 2 |" in r.stdout and "| align | 2 |" in r.stdout, r.stdout
    assert "next: mivl-export" in r.stdout
    bundle = export(student, tmp_path / "bundle", precision="fp32", quiet=True, calib_size=2).path
    img = tmp_path / "cam.png"
    Image.fromarray(draw_scene(5, 800, 450).cameras["CAM_FRONT"]).save(img)
    cases = [{"question": "What is in the picture?", "images": [str(img)], "max_new_tokens": 6}]
    got = run_runtime(bundle, cases, tmp_path)
    want = Reference(student).ask(cases[0]["question"], images=[str(img)], max_new_tokens=6)
    assert got[0]["tokens"] == want.token_ids


def test_layer_map_option_is_read_as_the_other_index_lists():
    from mivl.export.train.cli import distill_parser

    assert distill_parser().parse_args(["t", "-o", "s", "--layer-map", "1, 3"]).layer_map == (1, 3)
    assert distill_parser().parse_args(["t", "-o", "s"]).layer_map is None
    with pytest.raises(SystemExit):
        distill_parser().parse_args(["t", "-o", "s", "--layer-map", "1,x"])
