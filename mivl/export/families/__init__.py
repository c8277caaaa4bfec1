"""LLM families, one registered class each (the pattern of llama.cpp's converter and mlx-lm).

A family holds everything that is specific to its LLM: the config architecture it is read from,
its config defaults, its default chat template, its checkpoint tensor names and packing (to and
from the canonical decoder of model/decoder.py), its GGUF architecture and tensor rewrites, and
what a tiny test checkpoint of it looks like. The rest of the exporter asks the registry:

    fam = family("internlm2")              # or family_of_architecture("InternLM2ForCausalLM")
    canonical = fam.to_canonical(tensors, cfg)

An unknown family or architecture is refused with the list of known ones.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ...errors import CheckpointError, InputError

if TYPE_CHECKING:
    from ..model.config import LLMConfig

IGNORED = re.compile(r".*rotary_emb\.inv_freq$")  # recomputed buffers some checkpoints carry
LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

_REGISTRY: dict[str, "Family"] = {}


def register(cls):
    """Class decorator: make a Family subclass known by its `name`."""
    _REGISTRY[cls.name] = cls()
    return cls


class Family:
    name: str                       # qwen2 | internlm2 | phi3 | llama
    architecture: str               # llm_config.architectures[0]
    hf_model_type: str | None = None  # text_config.model_type in the transformers "-hf" layout
    template: str                   # default chat template (mivl.edge.prompt.TEMPLATES)
    gguf_arch = None                # gguf.MODEL_ARCH, or None where no GGUF writer exists
    tokenizer_kind = "spm"          # tiny checkpoints: "bpe" (byte-level) or "spm" (SentencePiece)
    chat_specials: tuple[str, ...] = ()  # the family's own special tokens (tiny tokenizers)

    # ---- config ----------------------------------------------------------------------------------
    def config_defaults(self, d: dict) -> dict:
        """llm_config with this family's implicit values filled in (a copy)."""
        return dict(d)

    # ---- checkpoint tensors <-> canonical decoder (keys without `language_model.`) -----------------
    def to_canonical(self, sd: dict, cfg: "LLMConfig") -> dict:
        return dict(sd)

    def from_canonical(self, sd: dict, cfg: "LLMConfig") -> dict:
        return dict(sd)

    # ---- GGUF ---------------------------------------------------------------------------------------
    def gguf_parameters(self, w, cfg: "LLMConfig") -> None:
        """Metadata beyond the common set (gguf_export.ArchWriter.parameters writes that)."""

    def gguf_rewrite(self, sd: dict, cfg: "LLMConfig", name) -> dict:
        """Tensor rewrites on canonical names; `name(tensor, layer, suffix)` spells a GGUF name, and
        a key "gguf:NAME" is written under NAME as is."""
        return sd

    # ---- tiny test checkpoints ---------------------------------------------------------------------
    def tiny_llm(self, cfg: dict, seed: int) -> dict:
        """A tiny llm_config of this family from the common one (a copy)."""
        return dict(cfg, model_type=self.hf_model_type or self.name)


def family(name: str) -> Family:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown LLM family {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def family_of_architecture(arch: str) -> Family:
    for f in _REGISTRY.values():
        if f.architecture == arch:
            return f
    raise CheckpointError(f"unknown LLM architecture {arch!r} in llm_config; supported: "
                          f"{', '.join(f.architecture for f in _REGISTRY.values())}")


def family_of_hf_model_type(model_type) -> Family:
    for f in _REGISTRY.values():
        if f.hf_model_type == model_type:
            return f
    raise CheckpointError(f"-hf checkpoint with text model_type {model_type!r}; supported: "
                          f"{', '.join(f.hf_model_type for f in _REGISTRY.values() if f.hf_model_type)}")


def names(with_tiny: bool = False) -> tuple[str, ...]:
    """Registered family names (with_tiny: those make-tiny can write)."""
    return tuple(n for n, f in _REGISTRY.items() if not with_tiny or f.gguf_arch is not None)


def to_canonical(sd: dict, cfg: "LLMConfig") -> dict:
    """Checkpoint LLM tensors (keys without `language_model.`) -> canonical decoder tensors."""
    return family(cfg.family).to_canonical({k: v for k, v in sd.items() if not IGNORED.match(k)}, cfg)


def from_canonical(sd: dict, cfg: "LLMConfig") -> dict:
    """Canonical decoder tensors -> the family's own checkpoint names and packing."""
    return family(cfg.family).from_canonical(sd, cfg)


from . import internlm2, llama, phi3, qwen2  # noqa: E402,F401 - registers the families
