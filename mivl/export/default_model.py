"""The recipe of the embedded default model: a tiny InternVL trained from scratch by the SDK's own
trainer on synthetic six-camera driving scenes, so that the demo gets real answers.

    mivl-export make-default      # trains into mivl/assets/default_model (resumable)

Architecture: InternViT at the real 448px / patch-14 geometry (1025 tokens per tile) but 64 wide
and 3 layers deep, pixel unshuffle v2 + MLP projector, a 4-layer 128-wide Qwen2 LLM with the
Hermes-2 template and a byte-level BPE tokenizer. Images are fed as InternVL feeds them: dynamic
tiling up to 12 tiles plus the thumbnail, so the six-camera canvas (2688x896) is 6x2 + 1 = 13 tiles
and a 800x450 camera frame 2x1 + 1 = 3 tiles. Scenes hold up to three objects per camera.

Stages (each starts from the previous one's checkpoint):
  1. dense  the vision encoder and projector learn, per vision token, what the scene generator
            knows is under it (`mivl.export.train.dense`, `mivl.calib.labels.tile_targets`): the
            colour and class of the object on every tile; on the thumbnail also the camera
            under the token and the digits of the object's box and centre in 0..1000 of the
            image. A grid tile cannot know where it lies (InternVL gives tiles no position), the
            thumbnail can: its tokens carry what "which camera" and "where" need;
  2. qa     the LLM and projector learn to answer the documented question kinds from those
            tokens (ViT frozen: each view's ViT tokens are computed once and cached), several
            questions per conversation about a fixed pool of views (`SyntheticViews`): first
            the one-word answers about one camera (short prompts, quick steps: mc1), then
            those of six cameras too (mc6), then all kinds, boxes and points included (qa). One
            kind group at a time: in a mixture, the long box answers outweigh the one-word ones
            and a fresh LLM learns the formats but answers "none" to everything.
Trained on views drawn from streams apart from the held-out one (`mivl.calib.evaluate.EVAL_SEED`).
What it reaches is in BENCHMARKS.md ("Embedded default model").
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..calib.evaluate import EVAL_SEED, asker, score
from .tiny import TINY_VISION, make_tiny
from .train.synthetic import SyntheticViews
from .train.trainer import TrainConfig, train

ASSET = Path(__file__).resolve().parents[1] / "assets" / "default_model"
VISION = dict(TINY_VISION, hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4)
LLM = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
           num_key_value_heads=2)
MAX_TILES = 12              # InternVL's budget: six cameras -> 6x2 + thumbnail, a 800x450 frame -> 2x1 + thumbnail
MAX_OBJECTS = 3             # objects per camera in its training and evaluation scenes
TRAIN_SEED = 0
QA_STREAM = 5000            # question stream of the QA stages (held-out: calib.evaluate.EVAL_SEED)


SINGLE_KINDS = ("colour", "class", "absent_one", "grounding")
SIX_KINDS = ("camera", "camera_colour", "camera_class", "absent", "where")
KINDS = SIX_KINDS + SINGLE_KINDS       # what the default model answers (mivl eval --kinds)
MC_KINDS = tuple(k for k in KINDS if k not in ("where", "grounding"))     # one-word answers


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float
    kinds: tuple[str, ...] = ()      # question kinds (QA stages); empty: dense pretraining
    freeze: tuple[str, ...] = ("vit",)
    batch_size: int = 4              # views (dense) or conversations (QA) per step
    turns: int = 6                   # questions per conversation (QA stages)
    views: int = 800                 # the QA stage's pool of views, each asked many times
    six_share: float = 0.6           # share of six-camera views (the rest: one camera)
    stream: int = 0                  # dense: sample stream (seed + stream); a later dense stage
                                     # continues with the previous one's heads on new samples
    camera_weight: float = 1.0       # dense: weights of the camera and digit terms of the loss
    digit_weight: float = 1.0


STAGES = (Stage("dense", 400, 2e-3),
          Stage("dense2", 600, 1e-3, six_share=0.7, stream=1, camera_weight=2.0, digit_weight=2.0),
          Stage("mc1", 300, 1e-3, ("colour", "class", "absent_one"), views=400, six_share=0.0),
          Stage("mc6", 250, 1e-3, MC_KINDS),
          Stage("qa", 150, 5e-4, KINDS))
HEADS = "dense_heads.pt"    # a dense stage's temporary heads, beside its checkpoint


@torch.no_grad()
def init_for_training(model, seed: int) -> None:
    """Small normal init (std 0.02), unit norms, layer scale 0.1: a trainable starting point."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if name.endswith((".ls1", ".ls2")):
            p.fill_(0.1)
        elif name.endswith(("norm1.weight", "norm2.weight", "layernorm.weight", "norm.weight",
                            "mlp1.0.weight")):
            p.fill_(1.0)
        elif p.ndim == 1:
            p.zero_()
        else:
            p.copy_(0.02 * torch.randn(p.shape, generator=g))


def make_initial(out: Path, seed: int = 0) -> Path:
    path = make_tiny("qwen2", out, seed, overwrite=True, vision=VISION, llm_dims=LLM, max_tiles=MAX_TILES,
                     init=init_for_training)
    cfg = json.loads((path / "config.json").read_text())
    cfg["use_thumbnail"] = True
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path


def run_dense(src: Path, out: Path, stage: Stage, seed: int, quiet: bool) -> Path:
    from .checkpoint import load_checkpoint
    from .reference import preprocess_config
    from .train.dense import pretrain_vision
    from .train.trainer import write_checkpoint

    from .train.dense import DenseHeads

    ck = load_checkpoint(src)
    heads = None
    if (src / HEADS).is_file():
        heads = DenseHeads(ck.model.mlp1[-1].out_features)
        heads.load_state_dict(torch.load(src / HEADS, weights_only=True))
    t0 = time.perf_counter()
    losses, heads = pretrain_vision(ck.model, preprocess_config(ck), stage.steps, stage.batch_size, stage.lr,
                                    seed + stage.stream, max_objects=MAX_OBJECTS, six_share=stage.six_share,
                                    camera_weight=stage.camera_weight, digit_weight=stage.digit_weight,
                                    heads=heads, quiet=quiet)
    write_checkpoint(ck.model, src, out, torch.float32, {"stage": stage.name, "losses": losses,
                                                         "seconds_this_run": time.perf_counter() - t0})
    torch.save(heads.state_dict(), out / HEADS)
    return out


def run_qa(src: Path, out: Path, stage: Stage, seed: int, quiet: bool) -> Path:
    data = SyntheticViews(stage.kinds, QA_STREAM + seed, views=stage.views, turns=stage.turns,
                          six_share=stage.six_share, max_objects=MAX_OBJECTS)
    frozen_vision = "vit" in stage.freeze
    cfg = TrainConfig(str(src), str(out), mode="partial" if stage.freeze else "full", freeze=stage.freeze,
                      steps=stage.steps, batch_size=stage.batch_size, lr=stage.lr, warmup_ratio=0.05,
                      min_lr_ratio=0.1, weight_decay=0.0, dtype="bf16", save_every=25, seed=seed,
                      save_dtype="fp32", quiet=quiet, log_every=5, feature_cache_gb=4.0 if frozen_vision else 0.0)
    train(cfg, data)
    return out


def train_default(out: str | Path, seed: int = TRAIN_SEED, work: str | Path | None = None,
                  stages=STAGES, quiet: bool = False) -> Path:
    """Run the stages in `work` (a finished stage is not run again) and return the last checkpoint."""
    work = Path(work) if work else Path("out") / "default-model-work"
    path = make_initial(work / "init", seed) if not (work / "init" / "config.json").is_file() else work / "init"
    for stage in stages:
        dst = work / stage.name
        if not (dst / "config.json").is_file() or (dst / "train_state").exists():
            run = run_qa if stage.kinds else run_dense
            run(path, dst, stage, seed, quiet)
        path = dst
    return path


def stage_log(path: Path) -> dict:
    """A finished stage's losses (first and last 20 steps' means) and wall time of its last run."""
    f = path / "train_log.json"
    log = json.loads(f.read_text()) if f.is_file() else {}
    losses = log.get("losses") or [float("nan")]
    return {"steps": len(log.get("losses") or []), "loss_start": sum(losses[:20]) / len(losses[:20]),
            "loss_end": sum(losses[-20:]) / len(losses[-20:]), "seconds_last_run": log.get("seconds_this_run")}


def publish(trained: Path, out: Path, stages=STAGES) -> Path:
    """The trained checkpoint as the embedded default: bf16 weights, config, tokenizer, and the
    recipe with each stage's logged losses and wall time (the stages' folders beside `trained`)."""
    from .checkpoint import load_checkpoint
    from .train.trainer import write_checkpoint

    ck = load_checkpoint(trained)
    write_checkpoint(ck.model, trained, out, torch.bfloat16,
                     {"recipe": "mivl.export.default_model", "stages": [s.__dict__ for s in stages],
                      "logs": {s.name: stage_log(trained.parent / s.name) for s in stages}})
    return out


def evaluate_reference(checkpoint, n: int = 100, seed: int = EVAL_SEED, kinds=KINDS) -> dict:
    """Figures of the PyTorch reference on n held-out questions of `kinds` (`mivl.calib.evaluate`)."""
    from .reference import Reference

    return score(asker(Reference(checkpoint), max_new_tokens=40), n, seed, kinds, max_objects=MAX_OBJECTS)
