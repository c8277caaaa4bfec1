"""Llama: the transformers "-hf" re-packaging of InternLM2-based InternVL models (canonical names)."""
from __future__ import annotations

from . import Family, register


@register
class Llama(Family):
    name = "llama"
    architecture = "LlamaForCausalLM"
    hf_model_type = "llama"
    template = "internvl2_5"
