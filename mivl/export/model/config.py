"""Model configuration read from an InternVL checkpoint's config.json (original or -hf layout).

Only the fields the architecture needs are read; unknown keys are ignored; an unknown LLM family
is refused with the list of known ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...edge.errors import CheckpointError



@dataclass
class VisionConfig:
    hidden_size: int = 1024          # InternViT-300M
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 448
    patch_size: int = 14
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    qk_normalization: bool = False   # only InternViT-6B uses it
    norm_type: str = "layer_norm"

    @property
    def grid(self) -> int:           # patches per side: 448 / 14 = 32
        return self.image_size // self.patch_size


@dataclass
class LLMConfig:
    family: str                      # qwen2 | internlm2 | phi3
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    rope_scaling: dict | None = None
    max_position_embeddings: int = 32768
    original_max_position_embeddings: int | None = None  # phi3 LongRoPE
    attention_bias: bool = False     # q/k/v biases (qwen2: True)
    head_dim: int | None = None

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclass
class InternVLConfig:
    vision: VisionConfig
    llm: LLMConfig
    template: str
    downsample_ratio: float = 0.5
    ps_version: str = "v2"
    select_layer: int = -1
    force_image_size: int = 448
    dynamic_image_size: bool = True
    use_thumbnail: bool = True
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def tokens_per_tile(self) -> int:  # (448/14)^2 * 0.5^2 = 256
        return int(self.vision.grid ** 2 * self.downsample_ratio ** 2)


def _pick(d: dict, cls, **override):
    known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "family"}
    known.update(override)
    return cls(**known)


def vision_config(d: dict) -> VisionConfig:
    return _pick(d, VisionConfig)


def llm_config(d: dict) -> LLMConfig:
    from ..families import family_of_architecture

    arch = (d.get("architectures") or [""])[0]
    fam = family_of_architecture(arch)
    d = dict(d)
    rp = d.get("rope_parameters")  # transformers >= 5 keeps theta and scaling here
    if isinstance(rp, dict):
        if "rope_theta" in rp:
            d["rope_theta"] = rp["rope_theta"]
        kind = rp.get("rope_type") or rp.get("type")
        if kind and kind != "default" and not d.get("rope_scaling"):
            d["rope_scaling"] = {**rp, "type": kind}
        if "original_max_position_embeddings" in rp:
            d.setdefault("original_max_position_embeddings", rp["original_max_position_embeddings"])
    d.setdefault("num_key_value_heads", d.get("num_attention_heads"))
    d = fam.config_defaults(d)
    try:
        return _pick(d, LLMConfig, family=fam.name)
    except TypeError as e:
        raise CheckpointError(f"llm_config is missing a required field: {e}") from None


# name -> (low, high) of every size the architecture is built from: a config outside these is
# refused before any tensor is allocated (zero heads divide by zero; 10**6 layers never return).
VISION_BOUNDS = {"hidden_size": (1, 16384), "intermediate_size": (1, 65536), "num_hidden_layers": (1, 128),
                 "num_attention_heads": (1, 256), "image_size": (14, 4096), "patch_size": (1, 64)}
LLM_BOUNDS = {"hidden_size": (1, 65536), "intermediate_size": (1, 262144), "num_hidden_layers": (1, 512),
              "num_attention_heads": (1, 1024), "num_key_value_heads": (1, 1024), "vocab_size": (1, 4_000_000),
              "max_position_embeddings": (1, 1 << 24)}


def _bounded(where: str, obj, bounds: dict) -> None:
    import math

    for name, (lo, hi) in bounds.items():
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise CheckpointError(f"config.json {where}.{name} is {v!r}; it must be an integer in {lo}..{hi}")
    for name in ("layer_norm_eps", "rms_norm_eps", "rope_theta"):
        v = getattr(obj, name, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
            raise CheckpointError(f"config.json {where}.{name} is {v!r}; it must be a finite positive number")


def check_config(c: InternVLConfig) -> None:
    """Every size in range and every divisibility the model relies on, each refusal naming its key."""
    v, m = c.vision, c.llm
    _bounded("vision_config", v, VISION_BOUNDS)
    _bounded("llm_config", m, LLM_BOUNDS)
    if v.hidden_size % v.num_attention_heads:
        raise CheckpointError(f"vision_config.hidden_size {v.hidden_size} is not a multiple of num_attention_heads "
                              f"{v.num_attention_heads}")
    if v.image_size % v.patch_size:
        raise CheckpointError(f"vision_config.image_size {v.image_size} is not a multiple of patch_size {v.patch_size}")
    if m.head_dim is None and m.hidden_size % m.num_attention_heads:
        raise CheckpointError(f"llm_config.hidden_size {m.hidden_size} is not a multiple of num_attention_heads "
                              f"{m.num_attention_heads}")
    if m.num_attention_heads % m.num_key_value_heads:
        raise CheckpointError(f"llm_config.num_attention_heads {m.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {m.num_key_value_heads}")
    if not (isinstance(c.downsample_ratio, (int, float)) and c.downsample_ratio in (0.5, 1.0)):
        raise CheckpointError(f"config.json downsample_ratio is {c.downsample_ratio!r}; InternVL uses 0.5")
    if (v.grid * c.downsample_ratio) % 1:
        raise CheckpointError(f"a {v.grid}x{v.grid} patch grid cannot be pixel-unshuffled by {c.downsample_ratio}")
    if c.force_image_size != v.image_size:
        raise CheckpointError(f"config.json force_image_size {c.force_image_size!r} differs from "
                              f"vision_config.image_size {v.image_size}")
    for name in ("min_dynamic_patch", "max_dynamic_patch"):
        t = getattr(c, name)
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 64:
            raise CheckpointError(f"config.json {name} is {t!r}; it must be an integer in 1..64")
    if c.min_dynamic_patch > c.max_dynamic_patch:
        raise CheckpointError("config.json min_dynamic_patch is larger than max_dynamic_patch")


def parse_config(cfg: dict) -> InternVLConfig:
    """config.json of an original-layout InternVL checkpoint -> InternVLConfig."""
    if "vision_config" not in cfg or "llm_config" not in cfg:
        raise CheckpointError("config.json has no vision_config / llm_config: not an InternVL "
                              "checkpoint in the original OpenGVLab layout")
    llm = llm_config(cfg["llm_config"])
    top = {k: cfg[k] for k in InternVLConfig.__dataclass_fields__
           if k in cfg and k not in ("vision", "llm", "raw", "template")}
    from ..families import family

    template = cfg.get("template") or family(llm.family).template
    try:
        c = InternVLConfig(vision_config(cfg["vision_config"]), llm, template, raw=cfg, **top)
    except TypeError as e:
        raise CheckpointError(f"config.json is malformed: {e}") from None
    check_config(c)
    return c
