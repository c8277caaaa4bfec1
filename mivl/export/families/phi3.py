"""Phi-3 mini (Mini-InternVL 4B): fused qkv_proj and gate_up_proj in the checkpoint (split for the
canonical decoder, fused again for llama.cpp's phi3 graph), LongRoPE factors, no GQA."""
from __future__ import annotations

import math

import gguf
import torch

from ...errors import CheckpointError
from . import Family, register

T = gguf.MODEL_TENSOR


@register
class Phi3(Family):
    name = "phi3"
    architecture = "Phi3ForCausalLM"
    hf_model_type = "phi3"
    template = "phi3-chat"
    gguf_arch = gguf.MODEL_ARCH.PHI3
    chat_specials = ("<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>",
                     "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>",
                     "<|placeholder5|>", "<|placeholder6|>", "<|user|>")

    def config_defaults(self, d: dict) -> dict:
        d = dict(d)
        d.setdefault("rope_theta", 10000.0)
        d.setdefault("rms_norm_eps", 1e-5)
        return d

    def to_canonical(self, sd: dict, cfg) -> dict:
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

    def from_canonical(self, sd: dict, cfg) -> dict:
        out = {}
        for key, t in sd.items():
            if key.endswith("self_attn.q_proj.weight"):
                p = key[: -len("q_proj.weight")]
                out[p + "qkv_proj.weight"] = torch.cat([t, sd[p + "k_proj.weight"], sd[p + "v_proj.weight"]], dim=0)
            elif key.endswith("mlp.gate_proj.weight"):
                p = key[: -len("gate_proj.weight")]
                out[p + "gate_up_proj.weight"] = torch.cat([t, sd[p + "up_proj.weight"]], dim=0)
            elif key.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.up_proj.weight")):
                continue
            else:
                out[key] = t
        return out

    def gguf_parameters(self, w, cfg) -> None:
        scaling = cfg.rope_scaling or {}
        if (scaling.get("type") or scaling.get("rope_type")) in ("longrope", "su"):
            orig = cfg.original_max_position_embeddings or cfg.max_position_embeddings
            scale = cfg.max_position_embeddings / orig
            attn = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
            w.add_rope_scaling_attn_factors(attn)
            w.add_rope_scaling_orig_ctx_len(orig)

    def gguf_rewrite(self, sd: dict, cfg, name) -> dict:
        out = {}
        for key, t in sd.items():
            p = key.rsplit(".", 2)[0] + "." if key.startswith("model.layers.") else ""
            if key.endswith("self_attn.q_proj.weight"):
                out["gguf:" + name(T.ATTN_QKV, int(key.split(".")[2]), ".weight")] = torch.cat(
                    [t, sd[p + "k_proj.weight"], sd[p + "v_proj.weight"]])
            elif key.endswith("mlp.gate_proj.weight"):
                out["gguf:" + name(T.FFN_UP, int(key.split(".")[2]), ".weight")] = torch.cat(
                    [t, sd[p + "up_proj.weight"]])
            elif not key.endswith(("k_proj.weight", "v_proj.weight", "up_proj.weight")):
                out[key] = t
        scaling = cfg.rope_scaling or {}
        if "long_factor" in scaling:
            out["gguf:" + name(T.ROPE_FACTORS_LONG, None, ".weight")] = torch.tensor(scaling["long_factor"])
            out["gguf:" + name(T.ROPE_FACTORS_SHORT, None, ".weight")] = torch.tensor(scaling["short_factor"])
        return out

    def tiny_llm(self, cfg: dict, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed + 7)
        half = cfg["hidden_size"] // cfg["num_attention_heads"] // 2
        return dict(cfg, model_type="phi3", num_key_value_heads=cfg["num_attention_heads"], rope_theta=10000.0,
                    rms_norm_eps=1e-5, max_position_embeddings=131072, original_max_position_embeddings=4096,
                    rope_scaling={"type": "longrope", "short_factor": (1 + torch.rand(half, generator=g)).tolist(),
                                  "long_factor": (1 + 4 * torch.rand(half, generator=g)).tolist()})
