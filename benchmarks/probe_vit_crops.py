"""Probe: does the ViT learn an object's class faster, per second, from windows of a tile?

A dense step's compute is 70% the ViT's attention over a tile's 1,025 tokens
(`bench_dense_step.py`), and the class is bound by dense steps (BENCHMARKS.md, "What the ViT lacks
for class"). An object's class is local: a 224-pixel window of the tile (16 x 16 patches, the
patches' own position embeddings sliced from the 32 x 32 table, so the model and its checkpoint
stay InternViT's) costs a sixteenth of the tile's attention. Each run starts from the recipe's
initial checkpoint (`default_model.make_initial`: sine-cosine positions) and trains the ViT and
projector on the class-only terms of the class curve (`probe_vit_class.py`'s c1: colour and class,
balanced, class weight 2; lr 2e-3, warm-up 20 steps then constant; 4 views a step, six cameras 0.6
of them, up to 3 objects a camera; the same samples in every run) for the same wall time:

- `tiles`: whole 448 tiles, as the recipe trains;
- `crops`: every tile cut into its four 224 windows (the same tokens, attention within a window);
- `object-crops`: only the windows with an object token in them (the rest is background);
- `object-crops-then-tiles`: `object-crops` for three quarters of the time, then whole tiles
  (does what the windows taught carry over once the tokens see the whole tile again?).

Each is scored (at the end, and with `--every` along the way) on whole held-out tiles
(`dense.dense_accuracy`, stream 99): the class and colour per object token, on the thumbnail and
on the grid tiles. Resumable: a finished run's figures are kept in OUT/results.json.

    .venv/bin/python benchmarks/probe_vit_crops.py out/crops --seconds 300 [--every 150] [--views 30]
        [--ways tiles,crops,object-crops,object-crops-then-tiles]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from bench_common import positive

WAYS = ("tiles", "crops", "object-crops", "object-crops-then-tiles")
THEN_TILES = 0.25      # object-crops-then-tiles: the last quarter of the time on whole tiles
HELD_OUT = 99
WARM = 20
TERMS = dict(class_weight=2.0, balance=True)     # class-only: no camera or digit terms
LR, BATCH, SIX_SHARE, OBJECT_WEIGHT = 2e-3, 4, 0.6, 10.0


def window_features(model, pixels: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """Image features of windows of a tile: `pixels` (N, 3, h, w) cut from 448 tiles at patch row
    `row` and column `col`, each patch with its own position embedding from the 32 x 32 table (not
    interpolated); the tokens as the projector gives them, (N, h * w / 784, d_llm). The whole tile
    (row = col = 0, 448 x 448) gives `model.image_features` exactly."""
    from mivl.export.model.projector import vit_to_tokens
    emb = model.vision_model.embeddings
    patches = emb.patch_embedding(pixels)
    n, c, h, w = patches.shape
    if row < 0 or col < 0 or row + h > emb.grid or col + w > emb.grid or h != w:
        raise ValueError(f"a square window inside the {emb.grid} x {emb.grid} patch grid, not {h} x {w} at ({row}, {col})")
    table = emb.position_embedding[:, 1:].reshape(1, emb.grid, emb.grid, c)[:, row:row + h, col:col + w]
    pos = torch.cat([emb.position_embedding[:, :1], table.reshape(1, h * w, c)], dim=1)
    x = torch.cat([emb.class_embedding.expand(n, 1, c), patches.flatten(2).transpose(1, 2)], dim=1) + pos
    states = [x]
    for layer in model.vision_model.encoder.layers:
        states.append(layer(states[-1]))
    cfg = model.config
    return model.mlp1(vit_to_tokens(states[cfg.select_layer], cfg.downsample_ratio, cfg.ps_version))


def quadrants(batch: dict, objects_only: bool):
    """The batch's tiles as four 224 windows each: [(row, col, pixels, colours, classes)], one entry
    per window place; `objects_only`: the windows with an object token (all four places if none has)."""
    pixels, colours, classes = batch["pixels"], batch["colours"], batch["classes"]
    n = pixels.shape[0]
    grid = colours.reshape(n, 16, 16), classes.reshape(n, 16, 16)
    out = []
    for r in (0, 8):
        for c in (0, 8):
            col, cls = grid[0][:, r:r + 8, c:c + 8].reshape(n, 64), grid[1][:, r:r + 8, c:c + 8].reshape(n, 64)
            keep = (col > 0).any(1) if objects_only else torch.ones(n, dtype=torch.bool)
            out.append((2 * r, 2 * c, pixels[:, :, 28 * r:28 * r + 224, 28 * c:28 * c + 224][keep], col[keep], cls[keep]))
    if objects_only and not any(len(p) for _, _, p, _, _ in out):
        return quadrants(batch, False)
    return [q for q in out if len(q[2])]


def step_loss(model, heads, batch: dict, way: str) -> torch.Tensor:
    from mivl.export.train.dense import dense_loss
    if way == "tiles":
        return dense_loss(heads, model.image_features(batch["pixels"]), batch["colours"], batch["classes"],
                          OBJECT_WEIGHT, **TERMS)
    feats, colours, classes = [], [], []
    for row, col, pixels, c, k in quadrants(batch, way == "object-crops"):
        feats.append(window_features(model, pixels, row, col).reshape(-1, heads.cls.in_features))
        colours.append(c.reshape(-1))
        classes.append(k.reshape(-1))
    return dense_loss(heads, torch.cat(feats), torch.cat(colours), torch.cat(classes), OBJECT_WEIGHT, **TERMS)


def run(init: Path, way: str, seconds: float, views: int, every: float) -> dict:
    """One way's training for `seconds` of training time, scored on held-out whole tiles every
    `every` seconds of it (the scoring's own time not counted) and at the end."""
    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.default_model import DEFAULT
    from mivl.export.reference import preprocess_config
    from mivl.export.train.dense import DenseHeads, dense_accuracy, dense_batch, dense_sample, descend

    ck = load_checkpoint(init)
    model, pre = ck.model, preprocess_config(ck)
    val = [dense_sample(HELD_OUT, i, pre, DEFAULT.max_objects, SIX_SHARE) for i in range(views)]
    torch.manual_seed(0)
    heads = DenseHeads(model.mlp1[-1].out_features)
    params = list(model.vision_model.parameters()) + list(model.mlp1.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / WARM))
    keys = ("class", "class on thumbnail", "class on grid", "colour")

    def score(step: int, trained: float) -> dict:
        model.eval()
        acc = dense_accuracy(model, heads, val)
        model.train()
        return {"steps": step, "seconds": round(trained, 1), "loss_last_20": round(sum(losses[-20:]) / len(losses[-20:]), 4),
                **{k: round(acc[k], 3) for k in keys if k in acc}}

    model.train()
    losses, trained, step, curve = [], 0.0, 0, []
    while trained < seconds:
        t0 = time.perf_counter()
        now = way
        if way == "object-crops-then-tiles":
            now = "object-crops" if trained < (1 - THEN_TILES) * seconds else "tiles"
        batch = dense_batch(0, step, BATCH, pre, DEFAULT.max_objects, SIX_SHARE)
        losses.append(descend(step_loss(model, heads, batch, now), params, opt, sched))
        step += 1
        before, trained = trained, trained + time.perf_counter() - t0
        if every and int(trained // every) > int(before // every) and trained < seconds:
            curve.append(score(step, trained))
    return {**score(step, trained), "curve": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=positive(float), default=300.0)
    p.add_argument("--views", type=positive(), default=30)
    p.add_argument("--every", type=float, default=0.0, help="score every this many seconds of training too (0: at the end only)")
    p.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {', '.join(WAYS)}")
    p.add_argument("--threads", type=positive(), default=2)
    a = p.parse_args()
    ways = a.ways.split(",")
    if set(ways) - set(WAYS):
        raise SystemExit(f"--ways: comma-separated names of {', '.join(WAYS)}, not {a.ways!r}")
    torch.set_num_threads(a.threads)
    from mivl.export.default_model import DEFAULT, TRAIN_SEED, make_initial
    init = a.out / "init"
    if not (init / "config.json").is_file():
        make_initial(init, TRAIN_SEED, DEFAULT)
    results_file = a.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for way in ways:
        key = f"{way} {a.seconds:g} s" + (f", scored every {a.every:g} s" if a.every else "")
        if key not in results:
            results[key] = run(init, way, a.seconds, a.views, a.every)
            results_file.write_text(json.dumps(results, indent=2))
        print(key, json.dumps(results[key]), flush=True)


if __name__ == "__main__":
    main()
