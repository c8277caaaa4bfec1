"""Tiny random InternVL checkpoints in the original layout, for tests and demos.

`make_tiny("qwen2" | "internlm2" | "phi3", out_dir, seed)` writes config.json, bf16 safetensors
and a real tokenizer trained on the fly. The vision side keeps the real 448px / patch-14 geometry
(so tiling, 1025 ViT tokens and 256 tokens per tile are real) at a tiny width.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..edge.errors import InputError
from .bundle_writer import staging
from .checkpoint import save_weights
from .families import family as family_of
from .families import names
from .model.config import parse_config
from .model.internvl import InternVLChat
from .tiny_tokenizer import write_bpe_tokenizer, write_spm_tokenizer
from ..edge.tokenizer import load_tokenizer

FAMILIES = names(with_tiny=True)          # the families a GGUF can be written for

TINY_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   image_size=448, patch_size=14, layer_norm_eps=1e-6, qkv_bias=True,
                   qk_normalization=False, norm_type="layer_norm", architectures=["InternVisionModel"])


# Real-size architectures (random weights): compute cost is real, answers are not.
VISION_300M = dict(TINY_VISION, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                   num_attention_heads=16)
REAL_LLM = {
    "1B": dict(family="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
               num_attention_heads=14, num_key_value_heads=2, vocab_size=151655),
    "2B": dict(family="internlm2", hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
               num_attention_heads=16, num_key_value_heads=8, vocab_size=92553),
}


def tiny_llm_config(family: str, vocab_size: int, seed: int, dims: dict | None = None) -> dict:
    fam = family_of(family)
    cfg = dict(architectures=[fam.architecture], hidden_size=64, intermediate_size=160, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab_size,
               rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=32768,
               tie_word_embeddings=False, torch_dtype="bfloat16")
    cfg.update(dims or {})
    return fam.tiny_llm(cfg, seed)


def tiny_config(family: str, vocab_size: int, seed: int, vision: dict | None = None,
                llm_dims: dict | None = None, max_tiles: int = 12) -> dict:
    return {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
        "template": family_of(family).template, "downsample_ratio": 0.5, "ps_version": "v2",
        "select_layer": -1, "force_image_size": 448, "dynamic_image_size": True,
        "use_thumbnail": True, "min_dynamic_patch": 1, "max_dynamic_patch": max_tiles,
        "vision_config": vision or TINY_VISION,
        "llm_config": tiny_llm_config(family, vocab_size, seed, llm_dims),
        "torch_dtype": "bfloat16",
    }


@torch.no_grad()
def randomise(model: InternVLChat, seed: int) -> None:
    """Random weights that give well-spread logits (so greedy choices are not near-ties)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if name.endswith(("norm1.weight", "norm2.weight", "layernorm.weight", "norm.weight",
                          "mlp1.0.weight")):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif name.endswith((".ls1", ".ls2")):
            p.copy_(0.5 + 0.2 * torch.rand(p.shape, generator=g))
        elif name.endswith("lm_head.weight") or name.endswith("embed_tokens.weight"):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        elif p.ndim == 1:
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
        else:  # 1/sqrt(fan_in), damped inside the LLM so that the random network is not chaotic
            fan_in = p[0].numel()
            damp = 0.5 if name.startswith("language_model.model.layers.") else 1.0
            p.copy_(damp * torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def make_real_size(size: str, out_dir: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """A random checkpoint with the real 1B or 2B architecture (for benchmarks)."""
    if size not in REAL_LLM:
        raise InputError(f"size must be one of {', '.join(REAL_LLM)}, got {size!r}")
    dims = dict(REAL_LLM[size])
    family = dims.pop("family")
    return make_tiny(family, out_dir, seed, overwrite, vision=VISION_300M, llm_dims=dims)


def make_tiny(family: str, out_dir: str | Path, seed: int = 0, overwrite: bool = False,
              vision: dict | None = None, llm_dims: dict | None = None, max_tiles: int = 12,
              init=None, cased_tokenizer: bool = False) -> Path:
    """Write a tiny random checkpoint of `family` to out_dir (atomically). `cased_tokenizer`: its
    tokenizer is trained with the camera names in their case (`tiny_tokenizer.corpus`)."""
    if family not in FAMILIES:
        raise InputError(f"unknown LLM family {family!r}; choose one of {', '.join(FAMILIES)}")
    out = Path(out_dir)
    with staging(out, overwrite) as tmp:
        if family_of(family).tokenizer_kind == "bpe":
            write_bpe_tokenizer(tmp, seed, cased=cased_tokenizer)
        else:
            write_spm_tokenizer(tmp, family, seed, cased=cased_tokenizer)
        vocab = max(load_tokenizer(tmp).vocab_size, (llm_dims or {}).get("vocab_size", 0))
        cfg = tiny_config(family, vocab, seed, vision, llm_dims, max_tiles)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        model = InternVLChat(parse_config(cfg))
        (init or randomise)(model, seed)
        save_weights(model, tmp, torch.bfloat16)
    return out
