"""The decoder-only LLM of all three Mini-InternVL families (Qwen2, InternLM2, Phi-3).

They share one shape: RMSNorm, rotary position embedding (rotate-half form), grouped-query
attention, SwiGLU MLP, a separate output head. What differs (packed projections, biases, rope
scaling) is handled by the family's weight map (families.py) and by LLMConfig.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import LLMConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inv_freq(cfg: LLMConfig, seq_len: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (d/2,) and the cos/sin scale for a sequence of seq_len tokens."""
    d = cfg.d_head
    base = cfg.rope_theta
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("type") or scaling.get("rope_type")
    exponents = torch.arange(0, d, 2, dtype=torch.int64).float() / d
    if kind == "dynamic" and seq_len > cfg.max_position_embeddings:  # InternLM2 dynamic NTK
        f = float(scaling["factor"])
        base = base * ((f * seq_len / cfg.max_position_embeddings) - (f - 1)) ** (d / (d - 2))
    inv_freq = 1.0 / (base ** exponents)
    mscale = 1.0
    if kind in ("longrope", "su"):                                    # Phi-3 LongRoPE
        orig = cfg.original_max_position_embeddings or cfg.max_position_embeddings
        factors = scaling["long_factor"] if seq_len > orig else scaling["short_factor"]
        inv_freq = inv_freq / torch.tensor(factors, dtype=torch.float32)
        ratio = cfg.max_position_embeddings / orig
        if ratio > 1.0:
            mscale = math.sqrt(1 + math.log(ratio) / math.log(orig))
    elif kind == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    return inv_freq, mscale


def rope_cos_sin(cfg: LLMConfig, positions: torch.Tensor, seq_len: int):
    inv_freq, mscale = rope_inv_freq(cfg, seq_len)
    freqs = positions.float()[:, None] * inv_freq[None, :]          # (T, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)                          # (T, d)
    return emb.cos() * mscale, emb.sin() * mscale


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


CAUSAL = "causal"   # the attention mask of a forward pass with nothing cached


class Attention(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        h, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.d_head
        self.h, self.kv, self.d = h, kv, d
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, cache: list | None, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.d).transpose(1, 2)    # (B, H, T, d)
        k = self.k_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)   # (B, KV, T, d)
        v = self.v_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            if cache:
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        rep = self.h // self.kv                                         # query heads per kv head
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is CAUSAL:    # no cached tokens: plain causal attention (the kernel skips the masked half)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.h * self.d))


class MLP(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, cache, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class CausalLM(nn.Module):
    """Decoder + separate output head. `forward` takes embeddings so that images can be injected."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.config = cfg
        self.model = DecoderModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)

    def forward(self, embeds: torch.Tensor, cache: list | None = None, start: int = 0,
                hidden_only: bool = False, on_layer=None) -> torch.Tensor:
        """(B, T, D) embeddings at positions start.. -> (B, T, vocab) logits.

        `cache`, when given, is a list (one [k, v] per layer, empty at first) extended in place.
        `on_layer(i, layer, x, cos, sin)`, when given, sees each layer's input (training
        objectives on the attention, `mivl.export.train.focus`).
        """
        b, t, _ = embeds.shape
        total = start + t
        positions = torch.arange(start, total, device=embeds.device)
        cos, sin = rope_cos_sin(self.config, positions, total)
        cos, sin = cos.to(embeds.dtype), sin.to(embeds.dtype)
        mask = None
        if t > 1 and start == 0:
            mask = CAUSAL
        elif t > 1:  # causal over the new tokens; all cached ones are visible
            mask = torch.ones(t, total, dtype=torch.bool, device=embeds.device).tril(start)
        if cache is not None and not cache:
            cache.extend([] for _ in self.model.layers)
        x = embeds
        for i, layer in enumerate(self.model.layers):
            if on_layer is not None:
                on_layer(i, layer, x, cos, sin)
            x = layer(x, cos, sin, cache[i] if cache is not None else None, mask)
        x = self.model.norm(x)
        return x if hidden_only else self.lm_head(x)
