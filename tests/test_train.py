"""Domain adaptation: label masking, the trainer's modes, resume, the feature cache, autocast, and
one process vs two under torchrun (the records, converters and mixing: test_train_data.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mivl.edge.errors import InputError
from mivl.edge.prompt import IMG_CONTEXT, get_template
from mivl.export.checkpoint import load_checkpoint
from mivl.export.reference import preprocess_config
from mivl.edge.tokenizer import load_tokenizer
from mivl.export.train import tasks
from mivl.export.train.data import IGNORE, encode_record
from mivl.export.train.trainer import TrainConfig, TrainingModel, train


def _img(seed, w=96, h=64):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _records(n=2):
    """Small one-tile records with fixed answers (a model can memorise them in a few steps)."""
    out = []
    for i in range(n):
        rec = tasks.classification(_img(i), ["red", "blue", "green"], ["red", "blue"][i % 2], rid=str(i))
        rec["max_tiles"] = 1
        out.append(rec)
    return out


# ---------------------------------------------------------------- label masking

@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_labels_cover_only_assistant_tokens(tiny_dir, family):
    ck = load_checkpoint(tiny_dir(family))
    tok, tpl = load_tokenizer(ck.path), get_template(ck.config.template)
    rec = {"image": _img(0), "max_tiles": 1, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is the car?"}, {"from": "gpt", "value": "red"},
        {"from": "human", "value": "And the bus?"}, {"from": "gpt", "value": "a blue bus <box>[[1, 2, 3, 4]]</box>"}]}
    s = encode_record(rec, tok, tpl, preprocess_config(ck), ck.config.tokens_per_tile)
    assert s.pixels.shape == (1, 3, 448, 448)
    ids, labels = np.array(s.input_ids), np.array(s.labels)
    assert (ids == tok.token_to_id(IMG_CONTEXT)).sum() == 256
    assert np.all(labels[labels != IGNORE] == ids[labels != IGNORE])
    # the labelled runs are exactly the two answers, each closed by the template's separator
    runs, cur = [], []
    for i, l in zip(ids, labels):
        if l != IGNORE:
            cur.append(int(i))
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    texts = [tok.decode(r) for r in runs]
    assert texts == ["red" + tpl.sep, "a blue bus <box>[[1, 2, 3, 4]]</box>" + tpl.sep]
    # the prompt part of the first turn is what inference feeds the model
    from mivl.export.reference import Reference
    ref = Reference(ck, tok)
    tiles = ref.tiles(images=[rec["image"]], max_tiles=1)
    prompt = ref.prompt_ids("What colour is the car?", tiles)
    assert s.input_ids[:len(prompt)] == prompt


def test_masked_loss_equals_cross_entropy_on_answer_tokens(tiny_dir):
    ck = load_checkpoint(tiny_dir("qwen2"))
    tok, tpl = load_tokenizer(ck.path), get_template(ck.config.template)
    s = encode_record(_records(1)[0], tok, tpl, preprocess_config(ck), 256)
    ctx = tok.token_to_id(IMG_CONTEXT)
    net = TrainingModel(ck.model, ctx, torch.float32)
    ids, labels = torch.tensor(s.input_ids), torch.tensor(s.labels)
    got = net(torch.from_numpy(s.pixels), ids, labels).detach()
    logits = ck.model.prompt_logits(ids, ck.model.extract_feature(torch.from_numpy(s.pixels)), ctx)
    ans = [t for t in range(1, len(ids)) if s.labels[t] != IGNORE]
    want = torch.nn.functional.cross_entropy(logits[[t - 1 for t in ans]], ids[ans], reduction="sum")
    assert abs(float(got) - float(want)) < 1e-3 * float(want)
    assert len(ans) == s.n_targets and 0 < len(ans) < len(ids) // 10


# ---------------------------------------------------------------- the trainer

@pytest.mark.parametrize("mode,extra", [("full", {}), ("partial", {"freeze": ("vit",)}),
                                        ("partial", {"freeze": ("llm", "vit")}), ("lora", {"lora_rank": 8})])
def test_each_mode_lowers_the_loss(tiny_dir, tmp_path, mode, extra):
    data = _records(2)
    cfg = TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "out"), mode=mode, steps=6, batch_size=2,
                      lr=5e-3, dtype="fp32", warmup_ratio=0.0, quiet=True, **extra)
    r = train(cfg, data)
    assert r.losses[-1] < 0.7 * r.losses[0], r.losses
    before, after = load_checkpoint(tiny_dir("qwen2")).model, load_checkpoint(tmp_path / "out").model
    for part in ("vision_model", "mlp1", "language_model"):
        a = torch.cat([p.flatten() for p in getattr(before, part).parameters()])
        b = torch.cat([p.flatten() for p in getattr(after, part).parameters()])
        frozen = (mode == "partial" and {"vision_model": "vit", "mlp1": "projector",
                                          "language_model": "llm"}[part] in extra["freeze"]) or \
                 (mode == "lora" and part == "vision_model")
        # bf16 save: frozen parts round-trip exactly, trained ones move
        assert torch.equal(a.bfloat16(), b.bfloat16()) == frozen, part
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["losses"] == pytest.approx(r.losses)


def test_lora_merge_keeps_the_function(tiny_dir):
    from mivl.export.train.lora import add_lora, merge_lora

    model = load_checkpoint(tiny_dir("qwen2")).model
    add_lora(model, rank=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ids = torch.arange(5, 40)
    x = model.language_model.embed(ids[None])
    before = model.language_model(x)
    merge_lora(model)
    assert not any("lora" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(model.language_model(x), before, rtol=1e-4, atol=1e-4)


class _Interrupt(Exception):
    pass


class _StopAfter:
    def __init__(self, data, stop_at):
        self.data, self.stop_at = data, stop_at

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if self.stop_at is not None and i >= self.stop_at:
            raise _Interrupt
        return self.data[i]


def test_training_resumes_from_its_saved_state(tiny_dir, tmp_path):
    from mivl.export.train.synthetic import SyntheticTasks

    data = [dict(r, max_tiles=1) for r in (SyntheticTasks(seed=3)[i] for i in range(8))]
    kw = dict(steps=4, batch_size=2, lr=3e-3, dtype="fp32", quiet=True, save_every=2)
    whole = train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "a"), **kw), data)
    with pytest.raises(_Interrupt):          # dies while encoding step 3 (records 6, 7)
        train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "b"), **kw), _StopAfter(data, 6))
    assert (tmp_path / "b" / "train_state" / "step-2.pt").is_file()
    earlier = torch.load(tmp_path / "b" / "train_state" / "step-2.pt", weights_only=True)["seconds"]
    assert earlier > 0                       # the wall time of the two steps the state holds
    resumed = train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "b"), **kw), data)
    assert resumed.steps == 2
    log = json.loads((tmp_path / "b" / "train_log.json").read_text())
    assert log["seconds"] == pytest.approx(earlier + log["seconds_this_run"]) and resumed.seconds == log["seconds_this_run"]
    np.testing.assert_allclose(log["losses"], whole.losses, rtol=1e-5)
    a, b = load_checkpoint(tmp_path / "a").model, load_checkpoint(tmp_path / "b").model
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    assert not (tmp_path / "b" / "train_state").exists()


def test_bad_training_config_is_refused(tiny_dir, tmp_path):
    ck = str(tiny_dir("qwen2"))
    for kw, msg in [({"mode": "partial"}, "needs freeze"), ({"mode": "adapter"}, "mode must be"),
                    ({"mode": "partial", "freeze": ("vit", "projector", "llm")}, "nothing to train"),
                    ({"freeze": ("decoder",)}, "unknown: decoder"), ({"steps": 0}, "positive")]:
        with pytest.raises(InputError, match=msg):
            train(TrainConfig(ck, str(tmp_path / "x"), **kw), _records(2))


@pytest.mark.parametrize("freeze", [("vit", "projector"), ("vit",)])
def test_feature_cache_trains_exactly_as_without_and_computes_each_view_once(tiny_dir, tmp_path, freeze):
    """A frozen ViT (and projector) with the feature cache: the same losses and weights as
    recomputing the features every step, and each distinct view encoded once (SyntheticViews
    repeats its views)."""
    from mivl.edge.feature_cache import FeatureCache
    from mivl.export.train.synthetic import SyntheticViews

    data = SyntheticViews(("colour", "class", "camera", "where"), seed=4, views=3, turns=2, six_share=0.5)
    data = [dict(data[i], max_tiles=2) for i in range(8)]
    kw = dict(mode="partial", freeze=freeze, steps=4, batch_size=2, lr=3e-3, dtype="fp32", quiet=True)
    plain = train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "a"), **kw), data)
    cache = FeatureCache(0)
    cached = train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "b"), feature_cache_gb=1, **kw), data,
                   feature_cache=cache)
    assert cached.losses == plain.losses
    a, b = load_checkpoint(tmp_path / "a").model, load_checkpoint(tmp_path / "b").model
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    assert cache.hits + cache.misses == 8 and cache.misses <= 3     # 8 records, at most 3 distinct views
    assert cache.max_bytes == 2 ** 30


def test_feature_cache_shared_by_runs_hits_only_for_the_same_frozen_weights(tiny_dir, tmp_path):
    """Runs that freeze the same encoder share a cache (keys name the weights, the dtype and the
    pixels): a second run on the same views computes nothing; other weights never hit."""
    from mivl.edge.feature_cache import FeatureCache
    from mivl.export.train.synthetic import SyntheticViews

    data = SyntheticViews(("colour", "class", "camera"), seed=5, views=2, turns=1, six_share=0.5)
    data = [dict(data[i], max_tiles=2) for i in range(4)]
    kw = dict(mode="partial", freeze=("vit",), steps=2, batch_size=2, lr=1e-3, dtype="fp32", quiet=True,
              feature_cache_gb=1)
    cache = FeatureCache(0)
    train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "a"), **kw), data, feature_cache=cache)
    first = (cache.hits, cache.misses)
    assert first[1] == 2 and len(cache) == 2
    # the projector trained in run a, the ViT did not: run b starts from a's output, same ViT
    train(TrainConfig(str(tmp_path / "a"), str(tmp_path / "b"), **kw), data, feature_cache=cache)
    assert cache.misses == first[1] and cache.hits == first[0] + 4
    train(TrainConfig(str(tiny_dir("qwen2", seed=7)), str(tmp_path / "c"), **kw), data, feature_cache=cache)
    assert cache.misses == first[1] + 2 and len(cache) == 4
    train(TrainConfig(str(tmp_path / "a"), str(tmp_path / "d"), **dict(kw, dtype="bf16")), data,
          feature_cache=cache)
    assert cache.misses == first[1] + 4                           # bf16 features are other features


def test_feature_cache_is_refused_while_vision_trains(tiny_dir, tmp_path):
    ck = str(tiny_dir("qwen2"))
    for kw in ({"feature_cache_gb": 1}, {"mode": "partial", "freeze": ("projector",), "feature_cache_gb": 1},
               {"feature_cache_gb": -1}):
        with pytest.raises(InputError, match="feature_cache_gb"):
            train(TrainConfig(ck, str(tmp_path / "x"), **kw), _records(2))


def test_synthetic_views_repeat_their_pixels_with_new_questions():
    from mivl.calib.questions import SIX_CAMERA_KINDS
    from mivl.export.train.synthetic import SyntheticViews

    d = SyntheticViews(seed=2, views=5, turns=4, six_share=0.5)
    def pixels(r):
        return [r["image"]] if "image" in r else [r["cameras"][k] for k in sorted(r["cameras"])]

    a, b, c = d[1], d[6], d[1]
    assert a["conversations"] == c["conversations"]      # a pure function of the index
    assert all(np.array_equal(x, y) for x, y in zip(pixels(a), pixels(c)))
    assert all(np.array_equal(x, y) for x, y in zip(pixels(a), pixels(b)))   # view 1 again ...
    assert a["conversations"] != b["conversations"]                           # ... asked anew
    six = [d[i] for i in range(40) if "cameras" in d[i]]
    assert 5 < len(six) < 35
    for r in (d[i] for i in range(10)):
        assert 1 <= len(r["conversations"]) // 2 <= 4
    with pytest.raises(InputError, match="do not fit"):
        SyntheticViews(SIX_CAMERA_KINDS, six_share=0.5)
    with pytest.raises(InputError, match="views, turns and max_tiles"):
        SyntheticViews(views=0)
    with pytest.raises(InputError, match="max_tiles"):
        SyntheticViews(max_tiles=0)
    one = SyntheticViews(seed=2, views=5, turns=4, six_share=0.5, max_tiles=1)
    assert one[1]["max_tiles"] == 1 and "max_tiles" not in a
    assert one[1]["conversations"] == a["conversations"]                     # the same view and questions
    with pytest.raises(InputError, match="no question of kinds"):     # nothing unique to ask about
        SyntheticViews(("grounding",), views=3, six_share=0.0, max_objects=0)[0]


def test_synthetic_views_absent_share_sets_how_often_the_answer_is_none():
    """Busy scenes, 8 questions a view: presence questions fill the turns, so without reserve_absent
    absence questions are far fewer than absent_share (as the default model's f1-f5 were trained);
    with it, the share holds."""
    from mivl.export.default_model import ONE_WORD_KINDS
    from mivl.export.train.synthetic import SyntheticViews

    def none_share(share, reserve):
        d = SyntheticViews(ONE_WORD_KINDS, seed=3, views=40, turns=8, six_share=0.5, max_objects=3,
                           absent_share=share, reserve_absent=reserve)
        kinds = [q.kind for i in range(40) for q in d.draw(i)[1]]
        return sum(k in ("absent", "absent_one") for k in kinds) / len(kinds)

    assert none_share(0.25, False) < 0.15 and none_share(0.1, False) < none_share(0.4, False) < 0.25
    for share in (0.1, 0.25, 0.4):
        assert abs(none_share(share, True) - share) < 0.05, share
    for bad in (1.0, -0.1):
        with pytest.raises(InputError, match="absent_share"):
            SyntheticViews(absent_share=bad)


def test_synthetic_views_draw_names_what_each_record_asks():
    from mivl.edge.multiview import CAMERAS
    from mivl.export.train.synthetic import SyntheticViews

    d = SyntheticViews(seed=2, views=5, turns=4, six_share=0.5)
    for i in range(8):
        v, qs, camera, rec = d.draw(i)
        assert rec["conversations"] == d[i]["conversations"]                  # what d[i] gives
        assert 0 <= v < 5 and len(qs) == len(rec["conversations"]) // 2
        assert [q.answer for q in qs] == [t["value"] for t in rec["conversations"][1::2]]
        assert (camera is None) == ("cameras" in rec) and (camera is None or camera in CAMERAS)
        assert all(q.camera == camera for q in qs)
    with pytest.raises(IndexError):
        d.draw(-1)


TORCHRUN_SCRIPT = """
import json, os, sys
from mivl.export.train.trainer import TrainConfig, train
from mivl.export.train.synthetic import SyntheticTasks
data = [dict(SyntheticTasks(seed=5)[i], max_tiles=1) for i in range(12)]
r = train(TrainConfig(sys.argv[1], sys.argv[2], steps=3, batch_size=4, lr=3e-3, dtype="fp32",
                      quiet=True, strategy=sys.argv[3], resume=False), data)
if int(os.environ.get("RANK", "0")) == 0:
    print("LOSSES", json.dumps(r.losses))
"""


def _losses(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("LOSSES")][0]
    return json.loads(line.split(" ", 1)[1])


def test_each_rank_closes_its_process_group_before_exit(tmp_path):
    """A rank that exits with its process group alive can abort in teardown (gloo); init_world
    closes it at exit, while Python still runs (an exit hook registered before it runs after it)."""
    script = tmp_path / "exit.py"        # each rank writes its own file (two ranks' prints interleave)
    script.write_text("import atexit, os, sys\nfrom pathlib import Path\nimport torch.distributed as dist\n"
                      "atexit.register(lambda: Path(sys.argv[1], 'rank' + os.environ['RANK']).write_text("
                      "f\"RANK {os.environ['RANK']} {dist.is_initialized()}\"))\n"
                      "from mivl.export.train.distributed import init_world\n"
                      "assert init_world('cpu').size == 2 and dist.is_initialized()\n")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path)], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["RANK 0 False", "RANK 1 False"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tiny_dir, tmp_path, strategy):
    script = tmp_path / "run.py"
    script.write_text(TORCHRUN_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ck = str(tiny_dir("qwen2"))
    one = _losses([sys.executable, str(script), ck, str(tmp_path / "one"), strategy], env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = _losses(torchrun + [str(script), ck, str(tmp_path / "two"), strategy], env)
    np.testing.assert_allclose(two, one, rtol=1e-5)
    assert two[-1] < two[0]
    a, b = load_checkpoint(tmp_path / "one").model, load_checkpoint(tmp_path / "two").model
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-2, atol=1e-3, msg=n)   # bf16 save


def test_cli_convert_and_train(tiny_dir, tmp_path):
    import cv2
    for label in ("red", "blue"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        img = np.zeros((40, 60, 3), np.uint8)
        img[:] = (0, 0, 255) if label == "red" else (255, 0, 0)
        cv2.imwrite(str(tmp_path / "imgs" / label / "0.png"), img)
    env = dict(os.environ)
    exe = [sys.executable, "-m", "mivl.export.cli"]
    out = subprocess.run(exe + ["convert", "folder", str(tmp_path / "imgs"), "-o", str(tmp_path / "r.jsonl")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "wrote 2 record(s)" in out.stdout
    out = subprocess.run(exe + ["train", str(tiny_dir("qwen2")), "-o", str(tmp_path / "ft"), "--data",
                                str(tmp_path / "r.jsonl"), "--steps", "2", "--batch-size", "2", "--lr", "1e-3",
                                "--dtype", "fp32"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "trained 2 step(s)" in out.stdout
    load_checkpoint(tmp_path / "ft")
    out = subprocess.run(exe + ["train", str(tiny_dir("qwen2")), "-o", str(tmp_path / "ft2"), "--data",
                                str(tmp_path / "missing.jsonl")], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "no such records file" in out.stderr


def test_gradient_checkpointing_gives_the_same_steps(tiny_dir, tmp_path):
    kw = dict(steps=3, batch_size=2, lr=3e-3, dtype="fp32", quiet=True, warmup_ratio=0.0)
    plain = train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "a"), **kw), _records(2))
    ckpt = train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "b"), grad_checkpointing=True, **kw),
                 _records(2))
    np.testing.assert_allclose(ckpt.losses, plain.losses, rtol=1e-5)


def test_bf16_autocast_trains(tiny_dir, tmp_path):
    r = train(TrainConfig(str(tiny_dir("qwen2")), str(tmp_path / "o"), steps=6, batch_size=2, lr=5e-3,
                          dtype="bf16", quiet=True, warmup_ratio=0.0), _records(2))
    assert r.losses[-1] < 0.7 * r.losses[0], r.losses


def test_autocast_is_bf16_only_where_the_hardware_computes_it(monkeypatch):
    """auto: bf16 on a GPU or a CPU with bf16 instructions (AVX-512 BF16, AMX, Arm BF16), else fp32
    (bf16 emulated on an AVX2 CPU runs a training step several times slower)."""
    from mivl.export.train import trainer

    assert trainer.cpu_has_bf16("processor : 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert trainer.cpu_has_bf16("Features\t: fp asimd bf16 i8mm\n")
    assert not trainer.cpu_has_bf16("flags\t\t: fpu fma avx f16c avx2\n")
    assert not trainer.cpu_has_bf16("flags\t\t: avx512bf16x\nFeatures: bf16\n")   # the first flags line only
    assert not trainer.cpu_has_bf16("")
    for native, want in ((True, torch.bfloat16), (False, torch.float32)):   # Ampere and later / older GPUs
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n)
        assert trainer.autocast_dtype("auto", "cuda:0") == want
    assert trainer.autocast_dtype("fp32", "cuda:0") == torch.float32
    assert trainer.autocast_dtype("bf16", "cpu") == torch.bfloat16
    for native, want in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(trainer, "cpu_has_bf16", lambda native=native: native)
        assert trainer.autocast_dtype("auto", "cpu") == want
    with pytest.raises(InputError, match="dtype takes fp32, bf16, auto"):
        trainer.autocast_dtype("fp16", "cpu")
    with pytest.raises(InputError, match="dtype takes"):
        TrainConfig("ck", "out", dtype="fp16").check()
    with pytest.raises(InputError, match="save_dtype takes fp32, bf16"):
        TrainConfig("ck", "out", save_dtype="auto").check()
