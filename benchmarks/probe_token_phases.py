"""Probe: would image tokens that state their own place as phases let the LLM learn boxes?

Handed a point as phases (cos and sin of 2 pi x / P for P = 1000 .. 50), the default model's LLM
learns to spell it; handed it linearly, never past the hundreds (`probe_spelling.py`). There the
point filled every <IMG_CONTEXT> slot. Here the LLM must still find the object among the real
image tokens: each token's embedding (the frozen ViT and projector, as the recipe's QA stages
have them) gets, added, an encoding of where that token lies in the image, through a fixed random
map, as the ViT could state it from its own position embeddings:

  none   nothing added (the control)
  own    what a tile can know of itself: the thumbnail's tokens every period (the thumbnail is the
         whole image); a grid tile's tokens the periods that fit a whole number of times in the
         tile (a one-camera frame as 2 x 1 tiles: 500 units across, 1,000 down, so every period but
         1,000 across; the six-camera canvas's grid tiles none across, 166.7 units each)
  all    every token every period (the tile's place in the grid given too: an upper bound)

Training is the grounding probe's first stage (BENCHMARKS, "Grounding on one camera"): grounding
questions alone on one camera (2 x 1 tiles + thumbnail), the LLM alone learning, the attention
targets on, from the box format's text-only warm-up. Scored through the reference with the same
encoding added: IoU >= 0.5 and mean IoU on held-out grounding questions (stream 20260).

    .venv/bin/python benchmarks/probe_point_format.py warmup mivl/assets/default_model out/tp/gw \\
        --kind grounding --steps 400 --classes car,truck,bus,pedestrian,cone
    .venv/bin/python benchmarks/probe_token_phases.py train out/tp/gw out/tp/own --phases own --steps 600
    .venv/bin/python benchmarks/probe_token_phases.py eval out/tp/own --phases own --questions 100
"""
import argparse
import contextlib
import json
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from mivl.calib.questions import SCENE_SIZE
from mivl.edge.multiview import CANVAS_H, CANVAS_W
from mivl.edge.preprocess import PreprocessConfig, grid_for_size
from mivl.edge.tiling import TileGrid
from mivl.export.default_model import DEFAULT
from mivl.export.model.internvl import InternVLChat

from bench_common import positive
from probe_phase import grid_centres
from probe_spelling import PERIODS

MODES = ("none", "own", "all")


def layout(n_tiles: int) -> TileGrid:
    """The tile grid of an image of n tiles among this domain's frames as the default model tiles
    them: one camera (800x450 or 1600x900), the six-camera canvas, or one tile alone."""
    pre = PreprocessConfig(max_tiles=DEFAULT.max_tiles, use_thumbnail=DEFAULT.thumbnail)
    grids = [grid_for_size(w, h, pre) for w, h in (SCENE_SIZE, (1600, 900), (CANVAS_W, CANVAS_H))]
    for g in grids + [TileGrid(1, 1, thumbnail=False)]:
        if g.n_tiles == n_tiles:
            return g
    raise ValueError(f"no frame of this domain is tiled into {n_tiles} tiles")


def token_phases(n_tiles: int, mode: str) -> torch.Tensor:
    """(n_tiles * 256, 4 * len(PERIODS)): cos and sin of 2 pi x / P, then of 2 pi y / P, of each
    token's centre in 0..1000 of the image, zero where `mode` says the token cannot know it."""
    if mode not in MODES[1:]:
        raise ValueError(f"mode must be one of {MODES[1:]}, not {mode!r}")
    grid = layout(n_tiles)
    parts = [(grid_centres(1000, 1000, grid, False), 1000 / grid.cols, 1000 / grid.rows)]
    if grid.thumbnail:    # the whole image: its own place is its place in the image
        parts.append((grid_centres(1000, 1000, TileGrid(1, 1, thumbnail=False), False), 1000, 1000))
    periods = np.array(PERIODS, dtype=np.float64)
    out = []
    for xy, across, down in parts:
        # a period the tile spans a whole number of times has the same phase at the same place of
        # every tile: what a tile, seen alone by the ViT, can state
        keep_x, keep_y = ((np.abs(s / periods - np.round(s / periods)) < 1e-9) | (mode == "all")
                          for s in (across, down))
        ax, ay = (2 * np.pi * xy[:, k:k + 1] / periods for k in (0, 1))
        out.append(np.concatenate([np.cos(ax) * keep_x, np.sin(ax) * keep_x,
                                   np.cos(ay) * keep_y, np.sin(ay) * keep_y], 1))
    return torch.from_numpy(np.concatenate(out)).float()


def phase_map(dim: int, norm: float, seed: int = 0) -> torch.Tensor:
    """(4 * len(PERIODS), dim): a fixed random map; a token knowing every phase gets about `norm`."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(4 * len(PERIODS), dim, generator=g) / dim ** 0.5
    return m * norm / (2 * len(PERIODS)) ** 0.5


@contextlib.contextmanager
def with_phases(mode: str, norm: float):
    """InternVLChat.image_features with each token's phases added (the trainer, the feature cache
    and the reference all call it), or unchanged for mode "none"."""
    if mode == "none":
        yield
        return
    features = InternVLChat.image_features
    added: dict[tuple[int, int], torch.Tensor] = {}     # (tiles, width) -> what their tokens get

    def image_features(self, pixels):
        f = features(self, pixels)
        key = (pixels.shape[0], f.shape[-1])
        if key not in added:
            added[key] = (token_phases(key[0], mode) @ phase_map(key[1], norm)).reshape(f.shape)
        return f + added[key].to(f.dtype)

    with mock.patch.object(InternVLChat, "image_features", image_features):
        yield


def feature_norm(checkpoint) -> float:
    """The mean norm of the checkpoint's image tokens over a few one-camera frames."""
    from mivl.calib.synthetic import scene_images
    from mivl.edge.preprocess import preprocess_images
    from mivl.export.reference import Reference

    ref = Reference(checkpoint)
    norms = []
    for rgb in scene_images(4, seed=7, width=SCENE_SIZE[0], height=SCENE_SIZE[1]):
        with torch.no_grad():
            f = ref.model.image_features(torch.from_numpy(preprocess_images([rgb], ref.pre).pixels))
        norms.append(float(f.norm(dim=-1).mean()))
    return float(np.mean(norms))


def train(a) -> None:
    from mivl.export.default_model import SIX_FOCUS, Stage, run_qa

    stage = Stage("tp", a.steps, a.lr, ("grounding",), **dict(SIX_FOCUS, max_tiles=0, max_objects=3, six_share=0.0,
                                                               stream=a.stream))
    norm = a.scale * feature_norm(a.src)
    t0 = time.perf_counter()
    with with_phases(a.phases, norm):
        run_qa(Path(a.src), Path(a.out), stage, 0, True, DEFAULT)
    (Path(a.out) / "phases.json").write_text(json.dumps({"phases": a.phases, "norm": norm, "scale": a.scale}))
    print(f"{a.out}: {a.steps} steps, phases {a.phases} (norm {norm:.3f}), {time.perf_counter() - t0:.0f} s")


def evaluate(a) -> None:
    from mivl.export.default_model import evaluate_reference

    saved = json.loads((Path(a.checkpoint) / "phases.json").read_text())
    if saved["phases"] != a.phases:
        raise SystemExit(f"{a.checkpoint} was trained with phases {saved['phases']}, not {a.phases}")
    with with_phases(a.phases, saved["norm"]):
        for m in a.max_objects:
            r = evaluate_reference(a.checkpoint, a.questions, kinds=("grounding",), max_objects=m)["per_kind"]
            print(f"{a.checkpoint} phases {a.phases}, {a.questions} questions, up to {m} objects: "
                  f"{json.dumps(r['grounding'])}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("src")
    t.add_argument("out")
    t.add_argument("--phases", choices=MODES, default="own")
    t.add_argument("--steps", type=positive(), default=600)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--stream", type=int, default=8)
    t.add_argument("--scale", type=float, default=0.5, help="the phases' norm, in image tokens' mean norms")
    e = sub.add_parser("eval")
    e.add_argument("checkpoint")
    e.add_argument("--phases", choices=MODES, default="own")
    e.add_argument("--questions", type=positive(), default=100)
    e.add_argument("--max-objects", type=lambda s: [int(v) for v in s.split(",")], default=[3, 1])
    a = p.parse_args()
    torch.set_num_threads(2)
    train(a) if a.cmd == "train" else evaluate(a)


if __name__ == "__main__":
    main()
