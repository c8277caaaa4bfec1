"""Probe: six-camera grid tiles that read their camera off the names drawn in the canvas.

InternVL gives a tile no position, so a grid token of the six-camera canvas can know its camera only
from its place in the sequence (which the decoder reads poorly) or from what the tile shows: the
left tile of each camera's cell holds its name in magenta (`mivl.edge.multiview`), and the longer
names run on into the right tile. `dense` trains the vision encoder (the projector frozen, so the
LLM keeps reading the features it learnt) on the dense targets with the camera under every grid
token too (`tile_targets(grid_cameras=True)`), from a checkpoint and a dense stage's heads, and
prints the heads' camera accuracy per tile of 12 held-out six-camera views (tiles 0-11 row-major,
two a camera; 12 the thumbnail) and `dense_accuracy` before and after; it writes the checkpoint
with the heads beside it. `qa` runs the recipe's last stage (f7: the one-word kinds, busy scenes,
the ViT and LLM training, the projector frozen, the attention targets) from such a checkpoint,
anchored to its heads with the grid-tile camera term in the anchor.

    .venv/bin/python benchmarks/probe_grid_cameras.py dense out/default-model-work-six-camera/f6 out/gc1 \\
        --heads out/default-model-work-six-camera/dense3 --steps 200 --lr 1e-3 --seed 77 --six-share 0.7 --grid-tiles 2
    .venv/bin/python benchmarks/probe_grid_cameras.py qa out/gc3 out/g7 --stream 6
"""
import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mivl.export.checkpoint import load_checkpoint
from mivl.export.default_model import (HEADS, ONE_WORD_KINDS, SIX_CAMERA, SIX_FOCUS, Stage, dense_terms, run_qa,
                                       saved_heads)
from mivl.export.reference import preprocess_config
from mivl.export.train.dense import dense_accuracy, dense_sample, pretrain_vision
from mivl.export.train.trainer import write_checkpoint

from bench_common import positive

HELD_OUT = 99       # the dense stream no stage trains on (as benchmarks/dense_accuracy.py)
# the recipe's last dense stage, whose terms and heads f7's anchor uses, with the grid-tile camera term
DENSE = replace(SIX_CAMERA.stage("dense3"), grid_cameras=True)


@torch.no_grad()
def report(tag: str, model, heads, pre) -> None:
    six = [dense_sample(HELD_OUT, i, pre, 3, 1.0, grid_tiles=12, grid_cameras=True) for i in range(12)]
    one = [dense_sample(HELD_OUT, i, pre, 3, 0.0) for i in range(12)]
    per_tile = np.zeros(13)
    for s in six:
        f = model.image_features(torch.from_numpy(s.pixels))
        per_tile += (heads.camera(f).argmax(-1).numpy() == s.cameras).mean(1)
    print(tag, "camera per tile", np.round(per_tile / len(six), 2).tolist())
    for name, views in (("six cameras", six), ("one camera", one)):
        acc = dense_accuracy(model, heads, views)
        print(tag, name, {k: round(v, 3) for k, v in acc.items() if not k.startswith("class ")}, flush=True)


def dense(a) -> None:
    ck = load_checkpoint(a.src)
    pre = preprocess_config(ck)
    heads = saved_heads(Path(a.heads), ck)
    if heads is None:
        raise SystemExit(f"--heads {a.heads}: no {HEADS} there (a dense stage's folder)")
    report("before", ck.model, heads, pre)
    ck.model.mlp1.requires_grad_(False)
    t0 = time.perf_counter()
    losses, heads = pretrain_vision(ck.model, pre, a.steps, 4, a.lr, a.seed, max_objects=3, six_share=a.six_share,
                                    grid_tiles=a.grid_tiles, heads=heads, log_every=25, **dense_terms(DENSE))
    seconds = time.perf_counter() - t0
    report("after", ck.model, heads, pre)
    out = Path(a.out)
    write_checkpoint(ck.model, Path(a.src), out, torch.float32,
                     {"stage": out.name, "losses": losses, "seconds_this_run": seconds})
    torch.save(heads.state_dict(), out / HEADS)
    print(f"{seconds:.0f} s")


def qa(a) -> None:
    src, out = Path(a.src), Path(a.out)
    if not (src / HEADS).is_file():
        raise SystemExit(f"{src}: no {HEADS} (run `dense` into it first)")
    anchor = replace(DENSE, name=src.name)
    stage = Stage(out.name, a.steps, 3e-4, ONE_WORD_KINDS, **dict(
        SIX_FOCUS, max_tiles=0, max_objects=3, stream=a.stream, absent_share=0.3, reserve_absent=True,
        freeze=("projector",), anchor=0.1, anchor_stage=src.name))
    run_qa(src, out, stage, 0, False, replace(SIX_CAMERA, stages=(anchor, stage)))


def share(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is within 0..1, got {text}")
    return v


def main() -> None:
    torch.set_num_threads(2)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dense", help="vision encoder steps with the grid-tile camera term")
    d.add_argument("src")
    d.add_argument("out")
    d.add_argument("--heads", required=True, help="a dense stage's folder whose heads to start from")
    d.add_argument("--steps", type=positive(int), default=200)
    d.add_argument("--lr", type=positive(float), default=1e-3)
    d.add_argument("--seed", type=int, default=77)
    d.add_argument("--six-share", type=share, default=0.7)
    d.add_argument("--grid-tiles", type=int, choices=range(1, 13), default=2, metavar="1..12")
    q = sub.add_parser("qa", help="the recipe's last stage, anchored with the grid-tile camera term")
    q.add_argument("src")
    q.add_argument("out")
    q.add_argument("--stream", type=int, default=6)
    q.add_argument("--steps", type=positive(int), default=300)
    a = p.parse_args()
    (dense if a.cmd == "dense" else qa)(a)


if __name__ == "__main__":
    main()
