"""Tile-camera targets: the LLM learns which camera each grid tile of the six-camera canvas shows,
from the tile's place in the sequence.

InternVL gives grid tiles no position: a grid token's ViT features say what it shows, not where. On
the six-camera canvas (6 x 2 tiles, each camera two tiles side by side) only the thumbnail knows
the camera, at a sixteenth of the grid's resolution, so a question about "the car in CAM_FRONT"
must either read class off the blurred thumbnail or tell CAM_FRONT's grid tiles from the others by
where they sit in the prompt. The decoder can do the latter (RoPE makes attention depend on
distance, and the tiles always come in the same order): in the default model a linear probe reads
the camera off its hidden states at grid tokens on about half of them with no target at all
(`benchmarks/probe_point_format.py positions --layer k`). This target asks for it outright: at the
input of each of `layers`, a linear head (trained with the model, thrown away after) predicts the
camera of every grid token of a six-camera sample; the loss is the cross-entropy's mean over those
tokens, times `weight`, added to the sample's answer loss. Like the attention targets it only shapes
training: the checkpoint stays an ordinary InternVL one and inference is unchanged.

Not in the default model's recipe: from its last stage, 300 steps of the LLM with this target took
that probe's reading from 0.45 to 0.48 (weight 1) or 0.68 (weight 5) and the answers no higher
(BENCHMARKS.md, "Grid tiles that know their camera").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...edge.errors import InputError
from ...edge.multiview import CAMERAS
from ...edge.tiling import TileGrid

NO_CAMERA = -1


@dataclass(frozen=True)
class TileCameraConfig:
    weight: float
    layers: tuple[int, ...] = (1,)

    def check(self, n_layers: int) -> None:
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise InputError(f"tile-camera weight must be a positive number, got {self.weight}")
        bad = [v for v in self.layers if not isinstance(v, int) or not 0 < v < n_layers]
        if bad or not self.layers:
            raise InputError(f"tile-camera layers must be indices in 1..{n_layers - 1} (a layer's input: "
                             f"after at least one decoder layer), got {list(self.layers)}")


def tile_cameras(grid: TileGrid) -> np.ndarray:
    """(n_tiles,) the index in CAMERAS of the camera each tile of `grid` (cut from the six-camera
    canvas, 3 x 2 cells, resized to the grid) lies in; NO_CAMERA for a tile across two cameras and
    for the thumbnail."""
    cw, ch = grid.canvas_size
    out = np.full(grid.n_tiles, NO_CAMERA, dtype=np.int64)
    for k in range(grid.n_grid):
        x1, y1, x2, y2 = grid.tile_box(k)
        # the tile's edges in canvas cells (3 x 2); inside one cell when both ends fall in it
        c1, c2 = int(x1 * 3 // cw), int((x2 - 1) * 3 // cw)
        r1, r2 = int(y1 * 2 // ch), int((y2 - 1) * 2 // ch)
        if c1 == c2 and r1 == r2:
            out[k] = 3 * r1 + c1
    return out


LR_SCALE = 30.0      # the heads start from nothing each run: they learn at this many times the model's rate


class TileCameraHeads(nn.Module):
    """One linear camera head per target layer, on the layer's input with each feature standardised
    over the sample's grid tokens; `loss(hidden_by_layer, slots, cameras)`. The trainer gives the heads LR_SCALE
    times the learning rate: a head starts from nothing, and at the rate of a model that is being
    fine-tuned it would stay near chance for hundreds of steps."""

    def __init__(self, cfg: TileCameraConfig, hidden: int):
        super().__init__()
        self.cfg = cfg
        self.heads = nn.ModuleDict({str(layer): nn.Linear(hidden, len(CAMERAS)) for layer in cfg.layers})
        # each feature standardised over the sample's grid tokens: the residual stream's few large
        # features would drown, under a layer norm, the small ones that carry the token's place
        self.norms = nn.ModuleDict({str(layer): nn.BatchNorm1d(hidden, affine=False, track_running_stats=False)
                                    for layer in cfg.layers})

    def loss(self, hidden: dict[int, torch.Tensor], slots: torch.Tensor, cameras: np.ndarray,
             tokens_per_tile: int) -> tuple[torch.Tensor, float | None]:
        """(the weighted mean cross-entropy over the grid tokens of known camera, summed over the
        layers; the share of them the heads get right, None when the sample has none). hidden:
        layer -> (1, T, D) input of that layer; slots: the image tokens' positions; cameras:
        tile_cameras of the sample's tiling."""
        labels = torch.from_numpy(np.repeat(cameras, tokens_per_tile)).to(slots.device)
        keep = labels != NO_CAMERA
        if not bool(keep.any()):
            return hidden[self.cfg.layers[0]].new_zeros((), dtype=torch.float32), None
        terms, right = [], []
        for layer in self.cfg.layers:
            h = hidden[layer][0, slots[keep]]
            logits = self.heads[str(layer)](self.norms[str(layer)](h.float()))
            terms.append(F.cross_entropy(logits, labels[keep]))
            right.append(float((logits.argmax(-1) == labels[keep]).float().mean()))
        return self.cfg.weight * torch.stack(terms).sum(), sum(right) / len(right)
