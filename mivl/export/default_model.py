"""The recipe of the embedded default model: a tiny InternVL trained from scratch by the SDK's own
trainer on synthetic six-camera driving scenes, so that the demo gets real answers.

    mivl-export make-default      # trains into mivl/assets/default_model (2 CPU cores: ~75 min)

Architecture: InternViT at the real 448px / patch-14 geometry (1025 tokens per tile) but 64 wide
and 3 layers deep, pixel unshuffle v2 + MLP projector, a 4-layer 128-wide Qwen2 LLM with the
Hermes-2 template and a byte-level BPE tokenizer; one tile per image (a camera frame or the
stitched six-camera canvas), scenes with at most one object per camera.

Stages (each starts from the previous one's checkpoint):
  1. dense   the vision encoder and projector learn, per vision token, the colour and class of
             the object under it (`mivl.export.train.dense`; labels from the scene generator):
             a dense signal that one answer token per question cannot give from scratch;
  2. colour  the LLM (vision frozen) learns to read those tokens on colour questions;
  3. mc      all multiple-choice kinds: colour, class (one camera) and camera (six cameras);
  4. single  colour and class questions about one camera, the vision encoder training again
             (two runs: single, then single2 at a lower learning rate);
  5. class   class questions twice as often as colour ones, two questions per image, everything
             training (class1..class3 at falling learning rates; class1 starts from single2's
             weights rounded to bf16, which is how the model was published before these stages).
Trained on questions in one-turn conversations, drawn from a stream apart from the held-out one.
What it reaches is in BENCHMARKS.md ("Embedded default model").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..calib.evaluate import EVAL_SEED, asker, score
from ..calib.questions import MC_KINDS
from .tiny import TINY_VISION, make_tiny
from .train.synthetic import SyntheticTasks
from .train.trainer import TrainConfig, train

ASSET = Path(__file__).resolve().parents[1] / "assets" / "default_model"
VISION = dict(TINY_VISION, hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4)
LLM = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
           num_key_value_heads=2)
MAX_TILES = 1
MAX_OBJECTS = 1             # objects per camera in its training and evaluation scenes
TRAIN_SEED = 0
QA_STREAM = 5000            # question stream of the QA stages (held-out: calib.evaluate.EVAL_SEED)


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float
    kinds: tuple[str, ...] = ()      # question kinds (QA stages); empty: dense pretraining
    freeze: tuple[str, ...] = ("vit",)
    batch_size: int = 8
    turns: int = 1                   # questions per image (QA stages)
    from_bf16: bool = False          # start from the previous stage's weights rounded to bf16 (as published)


CLASS_HEAVY = ("class", "class", "colour")
STAGES = (Stage("dense", 400, 2e-3),
          Stage("colour", 200, 1e-3, ("colour",)),
          Stage("mc", 400, 1e-3, MC_KINDS),
          Stage("single", 300, 5e-4, ("colour", "class"), freeze=()),
          Stage("single2", 400, 3e-4, ("colour", "class"), freeze=()),
          # From the model published after single2 (bf16): class questions twice as often as colour
          # ones, two questions per image (one image encoding teaches both).
          Stage("class1", 400, 4e-4, CLASS_HEAVY, freeze=(), turns=2, from_bf16=True),
          Stage("class2", 400, 2.5e-4, CLASS_HEAVY, freeze=(), turns=2),
          Stage("class3", 600, 2e-4, CLASS_HEAVY, freeze=(), turns=2))


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
    cfg["use_thumbnail"] = False
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path


def run_dense(src: Path, out: Path, stage: Stage, seed: int, quiet: bool) -> Path:
    from .checkpoint import load_checkpoint
    from .reference import preprocess_config
    from .train.dense import pretrain_vision
    from .train.trainer import write_checkpoint

    ck = load_checkpoint(src)
    losses, _ = pretrain_vision(ck.model, preprocess_config(ck), stage.steps, stage.batch_size, stage.lr, seed,
                                max_objects=MAX_OBJECTS, quiet=quiet)
    write_checkpoint(ck.model, src, out, torch.float32, {"stage": stage.name, "losses": losses})
    return out


def run_qa(src: Path, out: Path, stage: Stage, seed: int, quiet: bool) -> Path:
    data = SyntheticTasks(stage.kinds, QA_STREAM + seed, turns=stage.turns, max_objects=MAX_OBJECTS)
    cfg = TrainConfig(str(src), str(out), mode="partial" if stage.freeze else "full", freeze=stage.freeze,
                      steps=stage.steps, batch_size=stage.batch_size, lr=stage.lr, warmup_ratio=0.05,
                      min_lr_ratio=0.1, weight_decay=0.0, dtype="fp32", save_every=50, seed=seed,
                      save_dtype="fp32", quiet=quiet, log_every=20)
    train(cfg, data)
    return out


def train_default(out: str | Path, seed: int = TRAIN_SEED, work: str | Path | None = None,
                  stages=STAGES, quiet: bool = False) -> Path:
    """Run the stages in `work` (a finished stage is not run again) and return the last checkpoint."""
    work = Path(work) if work else Path("out") / "default-model-work"
    path = make_initial(work / "init", seed) if not (work / "init" / "config.json").is_file() else work / "init"
    for stage in stages:
        dst = work / stage.name
        if stage.from_bf16:
            start = work / f"{stage.name}-start"
            if not (start / "config.json").is_file():
                publish(path, start)
            path = start
        if not (dst / "config.json").is_file() or (dst / "train_state").exists():
            run = run_qa if stage.kinds else run_dense
            run(path, dst, stage, seed, quiet)
        path = dst
    return path


def publish(trained: Path, out: Path) -> Path:
    """The trained checkpoint as the embedded default: bf16 weights, config, tokenizer."""
    from .checkpoint import load_checkpoint
    from .train.trainer import write_checkpoint

    ck = load_checkpoint(trained)
    log = json.loads((trained / "train_log.json").read_text()) if (trained / "train_log.json").is_file() else {}
    write_checkpoint(ck.model, trained, out, torch.bfloat16,
                     {"recipe": "mivl.export.default_model", "stages": [s.__dict__ for s in STAGES],
                      "last_stage_seconds": log.get("seconds_this_run")})
    return out


def evaluate_reference(checkpoint, n: int = 100, seed: int = EVAL_SEED, kinds=MC_KINDS) -> dict:
    """Accuracy of the PyTorch reference on n held-out multiple-choice questions."""
    from .reference import Reference

    return score(asker(Reference(checkpoint)), n, seed, kinds, max_objects=MAX_OBJECTS)
