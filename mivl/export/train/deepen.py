"""Deepen a trained decoder without changing what it computes: new layers appended after the last,
each starting as the identity (its attention and MLP output projections zero, so that each residual
branch adds nothing), the other weights of the new layers drawn small (std 0.02) so that they learn
as soon as their output projections move off zero.

A small model that has learnt its formats and priors can so be given more depth for what it still
gets wrong (the busy-scene lookups of the default model: BENCHMARKS.md) and train on from its own
answers instead of from scratch.

    mivl.export.train.deepen.deepen(src, out, layers=4)
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ...edge.errors import InputError
from ..model.decoder import DecoderLayer

MAX_NEW_LAYERS = 64


@torch.no_grad()
def add_identity_layers(model, layers: int, seed: int = 0) -> None:
    """Append `layers` identity-initialised decoder layers to `model`'s LLM, in place."""
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= MAX_NEW_LAYERS:
        raise InputError(f"layers must be an integer in 1..{MAX_NEW_LAYERS}, got {layers!r}")
    lm = model.language_model
    cfg = replace(lm.config, num_hidden_layers=lm.config.num_hidden_layers + layers)
    ref = next(lm.parameters())
    g = torch.Generator().manual_seed(seed)
    for _ in range(layers):
        layer = DecoderLayer(cfg).to(device=ref.device, dtype=ref.dtype)
        for name, p in layer.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")) or name.endswith(".bias"):
                p.zero_()
            elif name.endswith("layernorm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
        lm.model.layers.append(layer)
    lm.config = cfg
    model.config = replace(model.config, llm=cfg)


def deepen(src: str | Path, out: str | Path, layers: int, seed: int = 0) -> Path:
    """The checkpoint `src` with `layers` identity layers appended to its LLM, written to `out`
    (fp32, its config's layer count raised; the same answers as `src`)."""
    from ..checkpoint import load_checkpoint
    from .trainer import original_config, write_checkpoint

    src, out = Path(src), Path(out)
    ck = load_checkpoint(src)
    add_identity_layers(ck.model, layers, seed)
    cfg = original_config(src)
    cfg["llm_config"] = dict(cfg["llm_config"], num_hidden_layers=ck.model.config.llm.num_hidden_layers)
    write_checkpoint(ck.model, src, out, torch.float32, {"deepened_from": str(src), "new_layers": layers,
                                                         "seed": seed}, config=cfg)
    return out
