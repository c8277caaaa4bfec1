"""The LLM to GGUF: one writer per architecture, each overriding only what differs.

Names follow llama.cpp's tensor table (gguf.TENSOR_NAMES). InternLM2's q/k are permuted to the
interleaved rotary layout llama.cpp uses for that architecture; Phi-3 keeps its fused qkv and
gate_up (llama.cpp's phi3 graph wants them fused) and its LongRoPE factors. An unmapped tensor
is an error.
"""
from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import torch

from ..edge.errors import InputError
from ..edge.prompt import get_template
from .gguf_tokenizer import write_tokenizer
from .model.config import InternVLConfig, LLMConfig
from ..edge.tokenizer import TextTokenizer

T = gguf.MODEL_TENSOR
LAYER_MAP = {  # canonical per-layer name -> llama.cpp tensor
    "input_layernorm.weight": T.ATTN_NORM, "post_attention_layernorm.weight": T.FFN_NORM,
    "self_attn.q_proj.weight": T.ATTN_Q, "self_attn.k_proj.weight": T.ATTN_K,
    "self_attn.v_proj.weight": T.ATTN_V, "self_attn.q_proj.bias": T.ATTN_Q,
    "self_attn.k_proj.bias": T.ATTN_K, "self_attn.v_proj.bias": T.ATTN_V,
    "self_attn.o_proj.weight": T.ATTN_OUT, "mlp.gate_proj.weight": T.FFN_GATE,
    "mlp.up_proj.weight": T.FFN_UP, "mlp.down_proj.weight": T.FFN_DOWN,
}
GLOBAL_MAP = {"model.embed_tokens.weight": T.TOKEN_EMBD, "model.norm.weight": T.OUTPUT_NORM,
              "lm_head.weight": T.OUTPUT}
OUT_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}


def permute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rotate-half (HF) layout -> interleaved pairs (llama.cpp's NORM rope), per head."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


class ArchWriter:
    arch: gguf.MODEL_ARCH

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]

    def name(self, tensor: T, layer: int | None, suffix: str) -> str:
        base = gguf.TENSOR_NAMES[tensor]
        return (base.format(bid=layer) if layer is not None else base) + suffix

    def parameters(self, w: gguf.GGUFWriter, n_ctx: int) -> None:
        c = self.cfg
        w.add_context_length(n_ctx)
        w.add_embedding_length(c.hidden_size)
        w.add_block_count(c.num_hidden_layers)
        w.add_feed_forward_length(c.intermediate_size)
        w.add_head_count(c.num_attention_heads)
        w.add_head_count_kv(c.num_key_value_heads)
        w.add_rope_freq_base(c.rope_theta)
        w.add_layer_norm_rms_eps(c.rms_norm_eps)
        w.add_rope_dimension_count(c.d_head)

    def rewrite(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hook: family-specific tensor rewrites on canonical names."""
        return sd

    def tensors(self, sd: dict[str, torch.Tensor]):
        for key, t in self.rewrite(dict(sd)).items():
            if key in GLOBAL_MAP:
                yield self.name(GLOBAL_MAP[key], None, ".weight"), t
                continue
            if key.startswith("gguf:"):
                yield key[5:], t
                continue
            parts = key.split(".")
            if parts[:2] != ["model", "layers"]:
                raise InputError(f"unmapped LLM tensor {key}")
            layer, rest = int(parts[2]), ".".join(parts[3:])
            if rest not in LAYER_MAP:
                raise InputError(f"unmapped LLM tensor {key}")
            yield self.name(LAYER_MAP[rest], layer, "." + rest.rsplit(".", 1)[1]), t


class Qwen2Writer(ArchWriter):
    arch = gguf.MODEL_ARCH.QWEN2


class InternLM2Writer(ArchWriter):
    arch = gguf.MODEL_ARCH.INTERNLM2

    def rewrite(self, sd):
        c = self.cfg
        for key in list(sd):
            if key.endswith("self_attn.q_proj.weight"):
                sd[key] = permute_rotary(sd[key], c.num_attention_heads)
            elif key.endswith("self_attn.k_proj.weight"):
                sd[key] = permute_rotary(sd[key], c.num_key_value_heads)
        return sd


class Phi3Writer(ArchWriter):
    arch = gguf.MODEL_ARCH.PHI3

    def parameters(self, w, n_ctx):
        super().parameters(w, n_ctx)
        c = self.cfg
        scaling = c.rope_scaling or {}
        if (scaling.get("type") or scaling.get("rope_type")) in ("longrope", "su"):
            orig = c.original_max_position_embeddings or c.max_position_embeddings
            scale = c.max_position_embeddings / orig
            attn = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
            w.add_rope_scaling_attn_factors(attn)
            w.add_rope_scaling_orig_ctx_len(orig)

    def rewrite(self, sd):
        c = self.cfg
        out = {}
        for key, t in sd.items():
            p = key.rsplit(".", 2)[0] + "." if key.startswith("model.layers.") else ""
            if key.endswith("self_attn.q_proj.weight"):
                out["gguf:" + self.name(T.ATTN_QKV, int(key.split(".")[2]), ".weight")] = torch.cat(
                    [t, sd[p + "k_proj.weight"], sd[p + "v_proj.weight"]])
            elif key.endswith("mlp.gate_proj.weight"):
                out["gguf:" + self.name(T.FFN_UP, int(key.split(".")[2]), ".weight")] = torch.cat(
                    [t, sd[p + "up_proj.weight"]])
            elif not key.endswith(("k_proj.weight", "v_proj.weight", "up_proj.weight")):
                out[key] = t
        scaling = c.rope_scaling or {}
        if "long_factor" in scaling:
            out["gguf:" + self.name(T.ROPE_FACTORS_LONG, None, ".weight")] = torch.tensor(scaling["long_factor"])
            out["gguf:" + self.name(T.ROPE_FACTORS_SHORT, None, ".weight")] = torch.tensor(scaling["short_factor"])
        return out


WRITERS = {"qwen2": Qwen2Writer, "internlm2": InternLM2Writer, "phi3": Phi3Writer}


def _array(name: str, t: torch.Tensor, out_type: str) -> np.ndarray:
    a = t.detach().float().numpy()
    keep_f32 = a.ndim == 1 or "rope_factors" in name  # norms, biases, rope factors
    return a.astype(np.float32 if keep_f32 or out_type == "f32" else np.float16)


def write_gguf(llm_state: dict[str, torch.Tensor], config: InternVLConfig, tok: TextTokenizer,
               path: Path, out_type: str = "f16", n_ctx: int | None = None, name: str = "mivl") -> Path:
    """Write the LLM (canonical state dict) with its tokenizer to `path` as f32 or f16 GGUF."""
    if out_type not in OUT_TYPES:
        raise InputError(f"GGUF base type must be f32 or f16, got {out_type!r}")
    family = config.llm.family
    if family not in WRITERS:
        raise InputError(f"no GGUF writer for LLM family {family!r}; supported: {', '.join(WRITERS)}")
    arch = WRITERS[family](config.llm)
    w = gguf.GGUFWriter(str(path), arch.arch_name)
    w.add_name(name)
    arch.parameters(w, n_ctx or config.llm.max_position_embeddings)
    w.add_file_type(OUT_TYPES[out_type])
    template = get_template(config.template)
    write_tokenizer(w, tok, config.llm.vocab_size, config.template, template.stop)
    for tname, t in arch.tensors(llm_state):
        w.add_tensor(tname, _array(tname, t, out_type))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
