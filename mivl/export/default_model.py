"""The recipe of the embedded default model: a tiny InternVL trained from scratch by the SDK's own
trainer on synthetic six-camera driving scenes, so that the demo gets real answers.

    mivl-export make-default      # trains into mivl/assets/default_model (2 CPU cores: ~40 min)

Status: with this recipe (1,800 steps of 4 conversations) the held-out multiple-choice accuracy
stayed near chance on 2 CPU cores (BENCHMARKS.md, "Embedded default model"), so no trained model
ships yet and the demo falls back to a tiny random checkpoint.

Architecture: InternViT at the real 448px / patch-14 geometry (1025 tokens per tile) but 64 wide
and 3 layers deep, pixel unshuffle v2 + MLP projector, a 4-layer 128-wide Qwen2 LLM with the
Hermes-2 template and a byte-level BPE tokenizer; one tile per image (a camera frame or the
stitched six-camera canvas). Data: multi-turn conversations of the question kinds of
`mivl.calib.questions` about scenes with at most one object per camera; 25% general (captions).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..calib.evaluate import EVAL_SEED, asker, score
from ..calib.questions import MC_KINDS
from .tiny import TINY_VISION, make_tiny
from .train.mixing import Mixture
from .train.synthetic import GENERAL_KINDS, SyntheticTasks
from .train.trainer import TrainConfig, train

ASSET = Path(__file__).resolve().parents[1] / "assets" / "default_model"
VISION = dict(TINY_VISION, hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4)
LLM = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
           num_key_value_heads=2)
MAX_TILES = 1
MAX_OBJECTS = 1             # objects per camera in its training and evaluation scenes
TURNS = 8
# first-question kinds, repeated to weight them: the multiple-choice kinds get twice the boxes' share
DEFAULT_KINDS = ("colour", "class", "camera", "colour", "class", "camera", "grounding", "region")
TRAIN_SEED, GENERAL_SEED = 0, 1


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


def training_data(seed: int = TRAIN_SEED, general_ratio: float = 0.25) -> Mixture:
    return Mixture(SyntheticTasks(GENERAL_KINDS, GENERAL_SEED + seed * 1000, max_objects=MAX_OBJECTS),
                   SyntheticTasks(DEFAULT_KINDS, seed * 1000, turns=TURNS, max_objects=MAX_OBJECTS),
                   general_ratio, seed=seed)


def train_default(out: str | Path, steps: int = 1800, batch_size: int = 4, lr: float = 2e-3,
                  seed: int = TRAIN_SEED, work: str | Path | None = None, quiet: bool = False) -> Path:
    out = Path(out)
    work = Path(work) if work else Path("out") / "default-model-work"
    init = make_initial(work / "init", seed)
    cfg = TrainConfig(str(init), str(work / "trained"), mode="full", steps=steps, batch_size=batch_size,
                      lr=lr, warmup_ratio=0.03, min_lr_ratio=0.05, weight_decay=0.01, dtype="fp32",
                      save_every=100, seed=seed, save_dtype="bf16", quiet=quiet, log_every=10)
    train(cfg, training_data(seed))
    return work / "trained"


def evaluate_reference(checkpoint, n: int = 100, seed: int = EVAL_SEED, kinds=MC_KINDS) -> dict:
    """Accuracy of the PyTorch reference on n held-out multiple-choice questions."""
    from .reference import Reference

    return score(asker(Reference(checkpoint)), n, seed, kinds, max_objects=MAX_OBJECTS)


if __name__ == "__main__":
    import sys
    out = Path(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 1800
    trained = train_default(out, steps)
    print(json.dumps(evaluate_reference(trained, 60), indent=1))
