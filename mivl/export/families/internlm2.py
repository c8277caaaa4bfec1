"""InternLM2 (Mini-InternVL 2B): its own tensor names, a grouped wqkv, and (in GGUF) q/k rows in
llama.cpp's interleaved rotary order."""
from __future__ import annotations

import gguf
import torch

from ...errors import CheckpointError
from . import LAYER, Family, register

# InternLM2 name -> canonical name (per-layer names without the "model.layers.{i}." prefix)
RENAME = {
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


def split_wqkv(w: torch.Tensor, cfg) -> tuple[torch.Tensor, ...]:
    """wqkv rows laid out as [KV, G+2, d]: G query heads of each kv head, then its k, then its v."""
    kv, d = cfg.num_key_value_heads, cfg.d_head
    g = cfg.num_attention_heads // kv
    w = w.reshape(kv, g + 2, d, -1)
    q = w[:, :g].reshape(kv * g * d, -1)    # query head index = kv_head * G + g
    k = w[:, g].reshape(kv * d, -1)
    v = w[:, g + 1].reshape(kv * d, -1)
    return q, k, v


def pack_wqkv(q, k, v, cfg) -> torch.Tensor:
    kv, d = cfg.num_key_value_heads, cfg.d_head
    g = cfg.num_attention_heads // kv
    q = q.reshape(kv, g, d, -1)
    return torch.cat([q, k.reshape(kv, 1, d, -1), v.reshape(kv, 1, d, -1)], dim=1).reshape(
        kv * (g + 2) * d, -1)


def permute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rotate-half (HF) layout -> interleaved pairs (llama.cpp's NORM rope), per head."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _split_key(key: str) -> tuple[str, str]:
    m = LAYER.match(key)
    return (f"model.layers.{m.group(1)}.", m.group(2)) if m else ("", key)


@register
class InternLM2(Family):
    name = "internlm2"
    architecture = "InternLM2ForCausalLM"
    template = "internlm2-chat"
    gguf_arch = gguf.MODEL_ARCH.INTERNLM2
    chat_specials = ("<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>",
                     "<|im_start|>")

    def config_defaults(self, d: dict) -> dict:
        return dict(d, attention_bias=bool(d.get("bias", False)))

    def to_canonical(self, sd: dict, cfg) -> dict:
        out = {}
        for key, t in sd.items():
            prefix, name = _split_key(key)
            if name == "attention.wqkv.weight":
                q, k, v = split_wqkv(t, cfg)
                out[prefix + "self_attn.q_proj.weight"] = q
                out[prefix + "self_attn.k_proj.weight"] = k
                out[prefix + "self_attn.v_proj.weight"] = v
            elif name in RENAME:
                out[prefix + RENAME[name]] = t
            else:
                raise CheckpointError(f"unmapped InternLM2 tensor language_model.{key}")
        return out

    def from_canonical(self, sd: dict, cfg) -> dict:
        back = {v: k for k, v in RENAME.items()}
        out = {}
        for key, t in sd.items():
            prefix, name = _split_key(key)
            if name == "self_attn.q_proj.weight":
                out[prefix + "attention.wqkv.weight"] = pack_wqkv(
                    t, sd[prefix + "self_attn.k_proj.weight"], sd[prefix + "self_attn.v_proj.weight"], cfg)
            elif name in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
                continue
            else:
                out[prefix + back[name]] = t
        return out

    def gguf_rewrite(self, sd: dict, cfg, name) -> dict:
        for key in list(sd):
            if key.endswith("self_attn.q_proj.weight"):
                sd[key] = permute_rotary(sd[key], cfg.num_attention_heads)
            elif key.endswith("self_attn.k_proj.weight"):
                sd[key] = permute_rotary(sd[key], cfg.num_key_value_heads)
        return sd

    def tiny_llm(self, cfg: dict, seed: int) -> dict:
        return dict(cfg, model_type="internlm2", bias=False, rope_scaling={"type": "dynamic", "factor": 2.0})
