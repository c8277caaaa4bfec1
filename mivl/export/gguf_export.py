"""The LLM to GGUF: the common layout here, each family's parameters and tensor rewrites in its
class (mivl.export.families: InternLM2's q/k in llama.cpp's interleaved rotary order, Phi-3's fused
qkv and gate_up and LongRoPE factors).

Names follow llama.cpp's tensor table (gguf.TENSOR_NAMES). An unmapped tensor is an error.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from ..edge.errors import InputError
from ..edge.prompt import get_template
from .families import family, names
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


class ArchWriter:
    """The common GGUF layout; the family (mivl.export.families) adds its parameters and rewrites."""

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self.family = family(cfg.family)
        if self.family.gguf_arch is None:
            raise InputError(f"no GGUF writer for LLM family {cfg.family!r}; supported: "
                             f"{', '.join(names(with_tiny=True))}")
        self.arch = self.family.gguf_arch

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
        self.family.gguf_parameters(w, c)

    def rewrite(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.family.gguf_rewrite(sd, self.cfg, self.name)

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


def _array(name: str, t: torch.Tensor, out_type: str) -> np.ndarray:
    a = t.detach().float().numpy()
    keep_f32 = a.ndim == 1 or "rope_factors" in name  # norms, biases, rope factors
    return a.astype(np.float32 if keep_f32 or out_type == "f32" else np.float16)


def write_gguf(llm_state: dict[str, torch.Tensor], config: InternVLConfig, tok: TextTokenizer,
               path: Path, out_type: str = "f16", n_ctx: int | None = None, name: str = "mivl") -> Path:
    """Write the LLM (canonical state dict) with its tokenizer to `path` as f32 or f16 GGUF."""
    if out_type not in OUT_TYPES:
        raise InputError(f"GGUF base type must be f32 or f16, got {out_type!r}")
    arch = ArchWriter(config.llm)
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
