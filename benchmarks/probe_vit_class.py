"""Probe: why does the default model's ViT not state an object's class?

Every busy-scene lookup needs the class of the object asked about, and the recipe's dense stages
leave it at 0.4-0.5 a token. Variants of the recipe's first dense stage (the same samples and
seed; the same losses and steps unless said), each from a fresh model:

- `recipe`: the stage as the recipe runs it (the control);
- `deep6`: the ViT six layers deep instead of three;
- `sincos`: the ViT's position embeddings start as a 2-D sine-cosine table (each patch's row and
  column at 16 frequencies) instead of small noise, so that attention can tell near from far at
  step 0;
- `class-only`: `sincos`, with the camera and digit terms off (colour and class only) and 6,000
  steps in four stages (c1: 400 at lr 2e-3, c2: 800, c3 and c4: 2,400 each at 1e-3, each stage on
  new samples, its learning rate warmed up and decayed anew);
- `layer-scale`: `class-only`'s c1 with the ViT's layer scales starting at 1.0 instead of 0.1;
- `sincos-long`: `sincos` with all of the stage's terms for 3,000 steps instead of 400 (does the
  class still climb when the camera and digit terms share the ViT?).

`objects STAGE...` scores the class per object rather than per token: on each tile, the head's
log-probabilities summed over the tokens of an object (approximated as the tokens sharing a colour
and class label: two objects of one colour and class on one tile are rare), against its class,
on 60 held-out views of six cameras and 60 of one (stream 99, up to three objects per camera).
`qa STAGE OUT` asks whether a ViT's class reaches the answers: a fresh LLM (the stage's own, which
the dense stages do not train) learns one-camera class questions of busy scenes on that ViT, ViT
and projector frozen (f1's settings otherwise: the attention targets, views of the model's own
tiling, features computed once), then answers held-out ones through the reference (stream 20260).
`fit STAGE` compares the per-token class on samples a stage trained on (stream `--stream`, the
last steps' samples) with held-out ones: a ViT that memorises scores higher on the first.

    .venv/bin/python benchmarks/probe_vit_class.py train out/vitc --variant sincos
    .venv/bin/python benchmarks/dense_accuracy.py out/vitc/sincos/dense --views 30
    .venv/bin/python benchmarks/probe_vit_class.py objects out/vitc/recipe/dense out/vitc/sincos/dense
    .venv/bin/python benchmarks/probe_vit_class.py qa out/vitc/class-only/c4 out/vitc/qa-c4 --steps 600
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

import mivl.export.default_model as D
from mivl.export.checkpoint import load_checkpoint
from mivl.export.reference import preprocess_config
from mivl.export.train.dense import dense_accuracy, dense_sample

HELD_OUT = 99
VARIANTS = ("recipe", "deep6", "sincos", "class-only", "layer-scale", "sincos-long")


def with_layer_scale(plain, value: float):
    """The initialiser `plain`, then every ViT layer scale (ls1, ls2) set to `value`."""
    def init(model, seed, positions="noise"):
        plain(model, seed, positions)
        with torch.no_grad():
            for name, p in model.vision_model.named_parameters():
                if name.endswith((".ls1", ".ls2")):
                    p.fill_(value)
    return init


# the class-only curve: colour and class terms alone, each stage on new samples
CLASS_ONLY = (D.Stage("c1", 400, 2e-3, six_share=0.6, **D.SIX_DENSE),
              D.Stage("c2", 800, 1e-3, six_share=0.6, stream=1, **D.SIX_DENSE),
              D.Stage("c3", 2400, 1e-3, six_share=0.6, stream=2, **D.SIX_DENSE),
              D.Stage("c4", 2400, 1e-3, six_share=0.6, stream=3, **D.SIX_DENSE))


def train(out: Path, variant: str) -> None:
    first = D.SIX_CAMERA.stage("dense")
    stages = {"sincos-long": (replace(first, steps=3000),), "class-only": CLASS_ONLY,
              "layer-scale": CLASS_ONLY[:1]}.get(variant, (first,))
    if variant == "deep6":
        D.VISION = dict(D.VISION, num_hidden_layers=6)
    recipe = D.SIX_CAMERA
    if variant in ("sincos", "class-only", "layer-scale", "sincos-long"):
        recipe = replace(recipe, positions="sincos")       # default_model.sincos_positions
    if variant == "layer-scale":
        D.init_for_training = with_layer_scale(D.init_for_training, 1.0)
    work = out / variant
    D.train_default(work / "published", work=work, recipe=recipe, stages=stages)


def load(stage: str):
    """A dense stage's checkpoint and the heads it left beside it."""
    ck = load_checkpoint(stage)
    heads = D.saved_heads(Path(stage), ck)
    if heads is None:
        raise SystemExit(f"{stage}: no {D.HEADS} (not a dense stage's folder)")
    return ck, heads


@torch.no_grad()
def objects(stage: str, views: int = 60) -> dict:
    ck, heads = load(stage)
    pre = preprocess_config(ck)
    hits: dict[str, list[int]] = {}
    for share, name in ((1.0, "six"), (0.0, "one")):
        for i in range(views):
            s = dense_sample(HELD_OUT, i, pre, 3, share)
            n_tiles = s.pixels.shape[0]
            logp = heads.cls(ck.model.image_features(torch.from_numpy(s.pixels))).log_softmax(-1)
            logp = logp.reshape(n_tiles, -1, heads.cls.out_features).numpy()
            for t in range(n_tiles):
                where = f"{name} {'thumbnail' if s.thumbnail and t == n_tiles - 1 else 'grid'}"
                colours, classes = s.colours[t], s.classes[t]
                on = colours > 0
                for c, k in set(zip(colours[on].tolist(), classes[on].tolist())):
                    mine = (colours == c) & (classes == k)
                    guess = int(logp[t][mine, 1:].sum(0).argmax()) + 1
                    h = hits.setdefault(where, [0, 0])
                    h[0] += guess == k
                    h[1] += 1
    return {w: {"class": round(h / n, 3), "objects": n} for w, (h, n) in sorted(hits.items())}


def fit(stage: str, stream: int, start: int, samples: int = 40) -> dict:
    ck, heads = load(stage)
    pre = preprocess_config(ck)
    out = {}
    for name, seed in (("trained on", stream), ("held out", HELD_OUT)):
        val = [dense_sample(seed, start + i, pre, 3, 0.6) for i in range(samples)]
        out[name] = round(dense_accuracy(ck.model, heads, val)["class"], 3)
    return out


def qa(stage: Path, out: Path, steps: int, lr: float, questions: int) -> dict:
    """A fresh LLM on `stage`'s frozen ViT, trained on one-camera class questions; held-out figures."""
    kinds = ("class",)
    qa_stage = D.Stage("qa", steps, lr, kinds, **dict(D.SIX_FOCUS, max_tiles=0, max_objects=3, six_share=0.0))
    D.run_qa(stage, out, qa_stage, D.TRAIN_SEED, False, D.SIX_CAMERA)
    return D.evaluate_reference(out, questions, kinds=kinds, max_objects=3)["per_kind"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="run a variant of the recipe's first dense stage in OUT/VARIANT")
    t.add_argument("out", type=Path)
    t.add_argument("--variant", choices=VARIANTS, required=True)
    o = sub.add_parser("objects", help="class per object of dense stages")
    o.add_argument("stages", nargs="+")
    f = sub.add_parser("fit", help="per-token class on trained-on against held-out samples")
    f.add_argument("stages", nargs="+")
    f.add_argument("--stream", type=int, default=1, help="the stage's sample stream (seed + stream)")
    f.add_argument("--start", type=int, default=3100, help="first sample index (steps x batch)")
    q = sub.add_parser("qa", help="a fresh LLM on a stage's frozen ViT, one-camera class questions")
    q.add_argument("stage", type=Path)
    q.add_argument("out", type=Path)
    q.add_argument("--steps", type=int, default=600)
    q.add_argument("--lr", type=float, default=1.5e-3)
    q.add_argument("--questions", type=int, default=200)
    a = p.parse_args()
    if a.what == "train":
        train(a.out, a.variant)
    elif a.what == "qa":
        print(json.dumps(qa(a.stage, a.out, a.steps, a.lr, a.questions)))
    else:
        for st in a.stages:
            print(st, json.dumps(objects(st) if a.what == "objects" else fit(st, a.stream, a.start)))


if __name__ == "__main__":
    main()
