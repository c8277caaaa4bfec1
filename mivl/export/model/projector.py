"""Pixel unshuffle and the mlp1 projector: ViT tokens -> LLM embeddings (256 per tile)."""
from __future__ import annotations

import math

import torch
from torch import nn


def pixel_unshuffle(x: torch.Tensor, scale: float = 0.5, ps_version: str = "v2") -> torch.Tensor:
    """(N, W, H, C) -> (N, W*s, H*s, C/s^2), InternVL's `pixel_shuffle` with scale 0.5.

    Token (r, c) becomes the concatenation of patches (2r,2c), (2r,2c+1), (2r+1,2c), (2r+1,2c+1);
    v2 orders tokens row-major, v1 leaves them column-major. This is not torch's PixelUnshuffle.
    """
    _, w, h, c = (int(s) for s in x.shape)                            # batch stays dynamic (-1)
    x = x.reshape(-1, w, int(h * scale), int(c / scale))             # merge column pairs
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.reshape(-1, int(h * scale), int(w * scale), int(c / (scale * scale)))  # merge row pairs
    if ps_version != "v1":
        x = x.permute(0, 2, 1, 3).contiguous()
    return x


class Projector(nn.Sequential):
    """mlp1: LayerNorm(4C, eps 1e-5) -> Linear(4C, d) -> GELU -> Linear(d, d); keys mlp1.0/1/3."""

    def __init__(self, vit_hidden: int, llm_hidden: int, downsample_ratio: float = 0.5):
        d_in = int(vit_hidden * (1 / downsample_ratio) ** 2)
        super().__init__(nn.LayerNorm(d_in), nn.Linear(d_in, llm_hidden), nn.GELU(),
                         nn.Linear(llm_hidden, llm_hidden))


def vit_to_tokens(hidden: torch.Tensor, scale: float = 0.5, ps_version: str = "v2") -> torch.Tensor:
    """(N, 1 + g*g, C) ViT hidden states -> (N, g*g*s^2, C/s^2): drop CLS, unshuffle, flatten."""
    x = hidden[:, 1:]
    t, c = int(x.shape[1]), int(x.shape[2])
    g = math.isqrt(t)                                                 # 32 patches per side at 448
    x = pixel_unshuffle(x.reshape(-1, g, g, c), scale, ps_version)
    return x.reshape(-1, int(t * scale * scale), int(c / (scale * scale)))


