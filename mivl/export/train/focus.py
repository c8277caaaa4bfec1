"""Attention targets from the records' `focus`: teach the answer where to look.

A small LLM trained on answers alone can learn the formats and the option priors without ever
learning the lookup itself ("the object the question names -> its camera / colour / class"): the
answer position must find the question's words that name the subject and the image tokens that show
it. When a record's answer carries a focus (`records.py`; `data.Focus` after encoding), two targets
are added to the answer loss at every position that predicts a piece of that answer:
  - word layers: the chosen heads put their attention on the question's tokens naming the subject
    (for an absence question, whose focus is words alone, the only target: what is asked about);
  - image layers: the chosen heads put their attention on the image tokens showing it (every tile
    of the tiling, the thumbnail included); `whole_heads`, if any, on those of the tile showing the
    whole image only (the thumbnail, or the only tile). InternVL gives grid tiles no position, so
    only that tile's tokens can tell where the subject is (which camera); on 13 tiles they are a
    twelfth of the subject's tokens, and a head spread over all of them reads mostly grid tokens.
Each target is -log(the head's attention mass on the target tokens). The sum over positions, heads
and layers is divided by (len(heads) + len(whole_heads)) * len(image_layers) and weighted by
`weight` (the unit in which the probe of BENCHMARKS.md measured it). The targets only shape
training: the model's computation and its checkpoint are the ordinary InternVL ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...edge.errors import InputError
from ..model.decoder import apply_rope


@dataclass(frozen=True)
class FocusConfig:
    weight: float
    image_layers: tuple[int, ...] = (1, 2)
    word_layers: tuple[int, ...] = (0,)
    heads: tuple[int, ...] = (0,)            # words (word layers), every tile (image layers)
    whole_heads: tuple[int, ...] = ()        # the whole-image tile only (image layers)

    def check(self, n_layers: int, n_heads: int) -> None:
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise InputError(f"focus weight must be a positive number, got {self.weight}")
        for name, values, bound in (("image_layers", self.image_layers, n_layers),
                                    ("word_layers", self.word_layers, n_layers), ("heads", self.heads, n_heads),
                                    ("whole_heads", self.whole_heads, n_heads)):
            bad = [v for v in values if not isinstance(v, int) or not 0 <= v < bound]
            if bad or (name == "heads" and not values):
                raise InputError(f"focus {name} must be indices in 0..{bound - 1} (the LLM's), got {list(values)}")
        if not self.image_layers and not self.word_layers:
            raise InputError("focus needs image_layers or word_layers")
        both = sorted(set(self.heads) & set(self.whole_heads))
        if both:
            raise InputError(f"focus heads and whole_heads must differ; both have {both}")
        if self.whole_heads and not self.image_layers:
            raise InputError("focus whole_heads need image_layers")

    @property
    def unit(self) -> int:
        return max(1, (len(self.heads) + len(self.whole_heads)) * len(self.image_layers))


def log_mass(layer, x: torch.Tensor, cos, sin, positions: torch.Tensor, targets: torch.Tensor,
             heads: tuple[int, ...]) -> torch.Tensor:
    """(len(heads), P): log of the attention mass that `layer`'s `heads` put, at each of the P
    `positions` of x (1, T, D), on the tokens where `targets` (P, T) is True (causal attention)."""
    at, T = layer.self_attn, x.shape[1]
    xn = layer.input_layernorm(x)
    q = at.q_proj(xn[:, positions]).view(1, len(positions), at.h, at.d).transpose(1, 2)
    q = apply_rope(q, cos[positions], sin[positions])
    k = apply_rope(at.k_proj(xn).view(1, T, at.kv, at.d).transpose(1, 2), cos, sin)
    hs = torch.tensor(heads, device=x.device)
    k = k[0, hs // (at.h // at.kv)]                                      # the kv head of each query head
    scores = (q[0, hs].float() @ k.float().transpose(-1, -2)) / math.sqrt(at.d)
    future = torch.arange(T, device=x.device)[None, :] > positions[:, None]
    lp = scores.masked_fill(future, float("-inf")).log_softmax(-1)
    return lp.masked_fill(~targets, float("-inf")).logsumexp(-1)


def _targets(focus, slots: torch.Tensor, T: int, kind: str):
    """(positions, (P, T) bool targets) of the "image", "whole" or "words" targets of a sample's
    focus (`data.Focus`: image_tokens, whole_tokens, words)."""
    pos, rows = [], []
    for f in focus:
        if kind == "words":
            idx = torch.tensor(f.words, dtype=torch.long)
        else:
            tokens = f.image_tokens if kind == "image" else f.whole_tokens
            if tokens is None:
                continue
            idx = slots[torch.from_numpy(tokens)]
        if len(idx) == 0:
            continue
        row = torch.zeros(T, dtype=torch.bool, device=slots.device)
        row[idx.to(slots.device)] = True
        pos += f.positions
        rows += [row] * len(f.positions)
    if not pos:
        return None
    return torch.tensor(pos, device=slots.device), torch.stack(rows)


def decode(lm, x: torch.Tensor, focus, slots: torch.Tensor, cfg: FocusConfig, on_layer=None):
    """Run the decoder `lm` (a CausalLM) over the embeddings x (1, T, D) and score the focus
    targets on each layer's input (`on_layer`, when given, sees each layer's input too). Returns
    (final hidden states (1, T, D), the weighted target loss summed over positions,
    {"image" | "whole" | "words": mean mass} of the targets scored)."""
    T = x.shape[1]
    targets = [(name, _targets(focus, slots, T, name), layers, heads) for name, layers, heads in (
        ("image", cfg.image_layers, cfg.heads), ("whole", cfg.image_layers, cfg.whole_heads),
        ("words", cfg.word_layers, cfg.heads)) if heads]
    terms, mass = [], {}

    def score(li, layer, h, cos, sin):
        if on_layer is not None:
            on_layer(li, layer, h, cos, sin)
        for name, tg, layers, heads in targets:
            if tg is not None and li in layers:
                lm_ = log_mass(layer, h, cos, sin, tg[0], tg[1], heads)
                terms.append(lm_.sum())
                mass.setdefault(name, []).append(lm_.detach().exp().mean().item())

    hidden = lm(x, hidden_only=True, on_layer=score)
    loss = -torch.stack(terms).sum() if terms else x.new_zeros((), dtype=torch.float32)
    return hidden, cfg.weight * loss / cfg.unit, {k: sum(v) / len(v) for k, v in mass.items()}
