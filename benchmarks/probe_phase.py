"""Probe: can the image tokens carry an object's position to the tens of 0..1000, as a phase?

A `where` point needs the tens digit of the object's centre (objects are 16-30 units of 0..1000
wide). Teacher-forced, the default model writes the x tens digit at chance (`probe_point_format.py
digits`), and a dense head that classifies each token's digits gets the tens at chance too (0.13 a
token, BENCHMARKS.md), although a linear map from the token holding the centre to the centre's
offset inside it gets the tens within one on 0.71 (`probe_point_format.py offsets`): the tens digit
is a sawtooth of the position (it wraps every 100 units), which a linear read of a position
cannot give. A phase can: the tens digit of x is the sector, among ten, of the angle 2 pi x / 100,
and a linear head over (cos, sin) of it picks the sector. This probe fits a linear head from each
thumbnail token under an object (the LLM's inputs: the projector's output) to (cos, sin) of
2 pi cx / 100 and 2 pi cy / 100 (and at period 1000 for the hundreds), on the dense stage's views
(`train.dense.dense_batch`: the object's centre is in its digit targets), either with the vision
side frozen (`--train head`: what the tokens already hold) or training with it (`--train vit`: the
ViT and projector learn the phase too, the recipe's dense stage's loss under its heads, frozen,
kept as an anchor, `--anchor` its weight), and scores held-out views: each token's tens and
hundreds digits read as the sector of the predicted angle, right and within one (0.10 and 0.30 by
chance). `--tokens grid` reads the grid tiles' tokens under an object instead (the vision side
frozen), in the object's camera's 0..1000 (where a grid tile spans exactly five periods of 100
across and down, so the tens' phase does not depend on which tile it is): the phase of the
object's centre (`--target centre`) or of the token's own centre (`--target own`, what the ViT's
position embeddings could hand on).

    .venv/bin/python benchmarks/probe_phase.py mivl/assets/default_model --tokens grid --target own
    .venv/bin/python benchmarks/probe_phase.py out/default-model-work-m3/m3 --train head
    .venv/bin/python benchmarks/probe_phase.py out/default-model-work-m3/m3 --train vit --steps 300
    .venv/bin/python benchmarks/probe_phase.py out/default-model-work-m3/m3 --train vit --steps 1000 --lr 2e-3 --anchor 0
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mivl.calib.labels import DIGITS, GRID, IGNORE, NUMBERS, tile_owners
from mivl.calib.questions import SCENE_SIZE
from mivl.edge.multiview import CELL_H, CELL_W
from mivl.edge.preprocess import grid_for_size, preprocess_images
from mivl.export.checkpoint import load_checkpoint
from mivl.export.default_model import DEFAULT, dense_terms, saved_heads
from mivl.export.reference import preprocess_config
from mivl.export.train.dense import DenseObjective, dense_batch, scene_view

from bench_common import positive

TRAIN_STREAM, EVAL_STREAM = 3000, 4000      # apart from the recipe's dense streams (seed + 0..)
PERIODS = (100, 1000)                       # the tens and the hundreds of 0..1000
SIX_SHARE = 0.7                             # six-camera canvases among the probe's views


def centres(digits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, 2) centre x, y of the object under each token (0..1000) and the mask of tokens under one."""
    d = digits.reshape(-1, len(NUMBERS), DIGITS)[:, NUMBERS.index("cx"):NUMBERS.index("cy") + 1]
    valid = (d != IGNORE).all(-1).all(-1)
    return (d.clamp(min=0) * torch.tensor([100, 10, 1])).sum(-1).float(), valid


def phase_targets(c: torch.Tensor) -> torch.Tensor:
    """(tokens, 8): cos and sin of 2 pi c / period for x and y at each of PERIODS."""
    a = torch.cat([2 * torch.pi * c / p for p in PERIODS], 1)
    return torch.cat([a.cos(), a.sin()], 1)


def sectors(pred: torch.Tensor) -> torch.Tensor:
    """(tokens, 4): the digit each predicted angle names (x, y at each period), 0..9."""
    n = pred.shape[1] // 2
    a = torch.atan2(pred[:, n:], pred[:, :n]) % (2 * torch.pi)
    return (a / (2 * torch.pi) * 10).floor().clamp(0, 9).long()


def object_tokens(model, pre, stream: int, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM's inputs at the thumbnail tokens under an object in batch `step` of `stream` (the
    dense stage's views: `dense_batch`, whose digit targets only the thumbnail carries) and the
    centre of the object under each."""
    b = dense_batch(stream, step, size, pre, DEFAULT.max_objects, six_share=SIX_SHARE)
    feats = model.image_features(b["pixels"])
    c, valid = centres(b["digits"])
    return feats.reshape(-1, feats.shape[-1])[valid], c[valid]


def grid_centres(w: int, h: int, grid, six: bool) -> np.ndarray:
    """(n_grid * 256, 2): the centre of each grid-tile token in its camera's 0..1000 (x, y): a grid
    tile (r, c) token (i, j) covers ((c * 16 + j) * w / (16 cols), ...) of the image, and on the
    six-camera canvas a camera is a CELL_W x CELL_H cell of it."""
    t = np.arange(grid.n_grid)
    r, c = np.divmod(t, grid.cols)
    i, j = np.divmod(np.arange(GRID * GRID), GRID)
    x = (c[:, None] * GRID + j[None, :] + 0.5) * w / (GRID * grid.cols)
    y = (r[:, None] * GRID + i[None, :] + 0.5) * h / (GRID * grid.rows)
    cw, ch = (CELL_W, CELL_H) if six else (w, h)
    return np.stack([(x % cw) / cw * 1000, (y % ch) / ch * 1000], -1).reshape(-1, 2)


def grid_object_tokens(model, pre, stream: int, step: int, size: int, target: str):
    """The LLM's inputs at the grid-tile tokens under an object in the views of batch `step` of
    `stream` (`scene_view`, the dense stage's views, every grid tile), and per token the object's
    centre (`target` "centre") or the token's own centre ("own"), in its camera's 0..1000."""
    feats, cs = [], []
    for k in range(size):
        image, objects, boxes, six = scene_view(stream, step * size + k, DEFAULT.max_objects, SIX_SHARE)
        if not objects:
            continue
        h, w = image.shape[:2]
        grid = grid_for_size(w, h, pre)
        owners = tile_owners(boxes, w, h, grid)[:grid.n_grid].reshape(-1)
        pixels = torch.from_numpy(preprocess_images([image], pre).pixels[:grid.n_grid])
        f = model.image_features(pixels).reshape(-1, model.mlp1[-1].out_features)
        sw, sh = SCENE_SIZE
        obj = np.array([[(o.box[0] + o.box[2]) / 2 / sw * 1000, (o.box[1] + o.box[3]) / 2 / sh * 1000]
                        for o in objects]).reshape(-1, 2)
        c = grid_centres(w, h, grid, six) if target == "own" else obj[owners.clip(0)]
        keep = torch.from_numpy(owners >= 0)
        feats.append(f[keep])
        cs.append(torch.from_numpy(c).float()[keep])
    return torch.cat(feats), torch.cat(cs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="a stage folder of the recipe's work folder (its dense heads beside it)")
    p.add_argument("--train", choices=("head", "vit"), default="head")
    p.add_argument("--steps", type=positive(), default=300)
    p.add_argument("--batch", type=positive(), default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--anchor", type=float, default=1.0, help="--train vit: weight of the dense stage's loss (0: none)")
    p.add_argument("--tokens", choices=("thumbnail", "grid"), default="thumbnail",
                   help="the thumbnail's tokens (the object's centre in the canvas's 0..1000) or the grid tiles' "
                        "(in its camera's 0..1000; --train head only)")
    p.add_argument("--target", choices=("centre", "own"), default="centre",
                   help="--tokens grid: the phase of the object's centre, or of the token's own centre")
    p.add_argument("--eval-steps", type=positive(), default=16, help="held-out batches scored")
    a = p.parse_args()
    if a.tokens == "grid" and a.train != "head":
        p.error("--tokens grid is read with --train head")
    if a.tokens == "grid":
        def tokens(model, pre, stream, step, size):
            return grid_object_tokens(model, pre, stream, step, size, a.target)
    else:
        tokens = object_tokens
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ck = load_checkpoint(a.checkpoint)
    model, pre = ck.model, preprocess_config(ck)
    head = torch.nn.Linear(model.mlp1[-1].out_features, 4 * len(PERIODS))
    params = list(head.parameters())
    anchor = None
    if a.train == "vit" and a.anchor > 0:
        dense = DEFAULT.stage("dense")
        heads = saved_heads(a.checkpoint.parent / dense.name, ck)
        if heads is None:
            raise SystemExit(f"--train vit needs the dense stage's heads in {a.checkpoint.parent / dense.name}")
        heads.requires_grad_(False)
        anchor = DenseObjective(heads, pre, TRAIN_STREAM + 1, DEFAULT.max_objects, dense.six_share, a.batch,
                                weight=a.anchor, **dense_terms(dense))
    if a.train == "vit":
        params += list(model.vision_model.parameters()) + list(model.mlp1.parameters())
    else:
        model.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    t0, losses = time.perf_counter(), []
    model.train(a.train == "vit")
    for step in range(a.steps):
        with torch.set_grad_enabled(a.train == "vit"):
            feats, c = tokens(model, pre, TRAIN_STREAM, step, a.batch)
        loss = F.mse_loss(head(feats), phase_targets(c))
        if anchor is not None:
            loss = loss + anchor(model, step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}/{a.steps} loss {np.mean(losses[-50:]):.4f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    model.eval()
    right, near, n = torch.zeros(4), torch.zeros(4), 0
    with torch.no_grad():
        for step in range(a.eval_steps):
            feats, c = tokens(model, pre, EVAL_STREAM, step, a.batch)
            got = sectors(head(feats))
            truth = torch.cat([(c % p) // (p // 10) for p in PERIODS], 1).long()
            d = (got - truth).abs()
            right += (d == 0).float().sum(0)
            near += (torch.minimum(d, 10 - d) <= 1).float().sum(0)
            n += len(got)
    names = [f"{axis} {place}" for place in ("tens", "hundreds") for axis in ("x", "y")]
    print(f"{a.checkpoint} --train {a.train}, {a.steps} steps ({time.perf_counter() - t0:.0f} s); "
          f"{n} held-out {a.tokens} tokens under an object (target: {a.target}):")
    for k, name in enumerate(names):
        print(f"  {name:<11} right {right[k] / n:.3f}, within one {near[k] / n:.3f}")


if __name__ == "__main__":
    main()
