"""Qwen2 (Mini-InternVL 1B): canonical names as they are, q/k/v biases always."""
from __future__ import annotations

import gguf

from . import Family, register


@register
class Qwen2(Family):
    name = "qwen2"
    architecture = "Qwen2ForCausalLM"
    hf_model_type = "qwen2"
    template = "Hermes-2"
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    tokenizer_kind = "bpe"
    chat_specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

    def config_defaults(self, d: dict) -> dict:
        d = dict(d)
        d.setdefault("attention_bias", True)   # Qwen2 always has q/k/v biases
        return d

    def tiny_llm(self, cfg: dict, seed: int) -> dict:
        return dict(cfg, model_type="qwen2", use_sliding_window=False)
