"""Per-family weight maps: checkpoint tensor names <-> the canonical decoder (decoder.py).

Each family overrides only what differs: a rename table and the packed tensors it splits
(InternLM2's grouped wqkv, Phi-3's qkv_proj and gate_up_proj). An unmapped tensor is an error.
Keys here are relative to `language_model.`.
"""
from __future__ import annotations

import re

import torch

from ...edge.errors import CheckpointError
from .config import LLMConfig

IGNORED = re.compile(r".*rotary_emb\.inv_freq$")  # recomputed buffers some checkpoints carry

# InternLM2 name -> canonical name (per-layer names without the "model.layers.{i}." prefix)
INTERNLM2_RENAME = {
    "model.tok_embeddings.weight": "model.embed_tokens.weight",
    "output.weight": "lm_head.weight",
    "model.norm.weight": "model.norm.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def split_internlm2_wqkv(w: torch.Tensor, cfg: LLMConfig) -> tuple[torch.Tensor, ...]:
    """wqkv rows laid out as [KV, G+2, d]: G query heads of each kv head, then its k, then its v."""
    kv, d = cfg.num_key_value_heads, cfg.d_head
    g = cfg.num_attention_heads // kv
    w = w.reshape(kv, g + 2, d, -1)
    q = w[:, :g].reshape(kv * g * d, -1)    # query head index = kv_head * G + g
    k = w[:, g].reshape(kv * d, -1)
    v = w[:, g + 1].reshape(kv * d, -1)
    return q, k, v


def pack_internlm2_wqkv(q, k, v, cfg: LLMConfig) -> torch.Tensor:
    kv, d = cfg.num_key_value_heads, cfg.d_head
    g = cfg.num_attention_heads // kv
    q = q.reshape(kv, g, d, -1)
    return torch.cat([q, k.reshape(kv, 1, d, -1), v.reshape(kv, 1, d, -1)], dim=1).reshape(
        kv * (g + 2) * d, -1)


def _internlm2_in(sd: dict, cfg: LLMConfig) -> dict:
    out = {}
    for key, t in sd.items():
        m = _LAYER.match(key)
        prefix, name = (f"model.layers.{m.group(1)}.", m.group(2)) if m else ("", key)
        if name == "attention.wqkv.weight":
            q, k, v = split_internlm2_wqkv(t, cfg)
            out[prefix + "self_attn.q_proj.weight"] = q
            out[prefix + "self_attn.k_proj.weight"] = k
            out[prefix + "self_attn.v_proj.weight"] = v
        elif name in INTERNLM2_RENAME:
            out[prefix + INTERNLM2_RENAME[name]] = t
        else:
            raise CheckpointError(f"unmapped InternLM2 tensor language_model.{key}")
    return out


def _internlm2_out(sd: dict, cfg: LLMConfig) -> dict:
    back = {v: k for k, v in INTERNLM2_RENAME.items()}
    out = {}
    for key, t in sd.items():
        m = _LAYER.match(key)
        prefix, name = (f"model.layers.{m.group(1)}.", m.group(2)) if m else ("", key)
        if name == "self_attn.q_proj.weight":
            out[prefix + "attention.wqkv.weight"] = pack_internlm2_wqkv(
                t, sd[prefix + "self_attn.k_proj.weight"], sd[prefix + "self_attn.v_proj.weight"], cfg)
        elif name in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
            continue
        else:
            out[prefix + back[name]] = t
    return out


def _phi3_in(sd: dict, cfg: LLMConfig) -> dict:
    out = {}
    qn, kvn = cfg.num_attention_heads * cfg.d_head, cfg.num_key_value_heads * cfg.d_head
    for key, t in sd.items():
        if key.endswith("self_attn.qkv_proj.weight"):                 # rows: q, then k, then v
            p = key[: -len("qkv_proj.weight")]
            if t.shape[0] != qn + 2 * kvn:
                raise CheckpointError(f"language_model.{key} has {t.shape[0]} rows, expected "
                                      f"{qn + 2 * kvn} = q {qn} + k {kvn} + v {kvn}")
            out[p + "q_proj.weight"], out[p + "k_proj.weight"], out[p + "v_proj.weight"] = (
                t[:qn], t[qn:qn + kvn], t[qn + kvn:])
        elif key.endswith("mlp.gate_up_proj.weight"):                 # first half gate, then up
            p = key[: -len("gate_up_proj.weight")]
            out[p + "gate_proj.weight"], out[p + "up_proj.weight"] = t.chunk(2, dim=0)
        else:
            out[key] = t
    return out


def _phi3_out(sd: dict, cfg: LLMConfig) -> dict:
    out = {}
    for key, t in sd.items():
        if key.endswith("self_attn.q_proj.weight"):
            p = key[: -len("q_proj.weight")]
            out[p + "qkv_proj.weight"] = torch.cat(
                [t, sd[p + "k_proj.weight"], sd[p + "v_proj.weight"]], dim=0)
        elif key.endswith("mlp.gate_proj.weight"):
            p = key[: -len("gate_proj.weight")]
            out[p + "gate_up_proj.weight"] = torch.cat([t, sd[p + "up_proj.weight"]], dim=0)
        elif key.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.up_proj.weight")):
            continue
        else:
            out[key] = t
    return out


def _identity(sd: dict, cfg: LLMConfig) -> dict:
    return dict(sd)


_IN = {"qwen2": _identity, "llama": _identity, "internlm2": _internlm2_in, "phi3": _phi3_in}
_OUT = {"qwen2": _identity, "llama": _identity, "internlm2": _internlm2_out, "phi3": _phi3_out}


def to_canonical(sd: dict, cfg: LLMConfig) -> dict:
    """Checkpoint LLM tensors (keys without `language_model.`) -> canonical decoder tensors."""
    return _IN[cfg.family]({k: v for k, v in sd.items() if not IGNORED.match(k)}, cfg)


def from_canonical(sd: dict, cfg: LLMConfig) -> dict:
    """Canonical decoder tensors -> the family's own checkpoint names and packing."""
    return _OUT[cfg.family](sd, cfg)
