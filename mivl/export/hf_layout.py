"""The Hugging Face "-hf" re-packaging of InternVL (transformers' InternVLForConditionalGeneration):
its config and tensor names mapped back to the original OpenGVLab layout, so that one model
and one exporter serve both.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..edge.errors import CheckpointError

# -hf vision-layer name -> original name (after the "encoder.layer(s).{i}." prefix)
VISION_LAYER_RENAME = {
    "attention.projection_layer": "attn.proj",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "lambda_1": "ls1",
    "lambda_2": "ls2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
VISION_EMBED_RENAME = {
    "embeddings.cls_token": "embeddings.class_embedding",
    "embeddings.position_embeddings": "embeddings.position_embedding",
    "embeddings.patch_embeddings.projection.weight": "embeddings.patch_embedding.weight",
    "embeddings.patch_embeddings.projection.bias": "embeddings.patch_embedding.bias",
}
PROJECTOR_RENAME = {"layer_norm": "mlp1.0", "linear_1": "mlp1.1", "linear_2": "mlp1.3"}


def is_hf_config(raw: dict) -> bool:
    return raw.get("model_type") == "internvl" and "text_config" in raw


def _size(v) -> int:
    return int(v[0] if isinstance(v, (list, tuple)) else v)


def hf_config_to_original(raw: dict, path: Path) -> dict:
    v, t = raw["vision_config"], raw["text_config"]
    if v.get("use_qk_norm"):
        raise CheckpointError("vision encoder uses qk normalisation (InternViT-6B); only the "
                              "300M encoder of Mini-InternVL is supported")
    vision = {
        "hidden_size": v["hidden_size"], "intermediate_size": v["intermediate_size"],
        "num_hidden_layers": v["num_hidden_layers"], "num_attention_heads": v["num_attention_heads"],
        "image_size": _size(v.get("image_size", 448)), "patch_size": _size(v.get("patch_size", 14)),
        "layer_norm_eps": v.get("layer_norm_eps", 1e-6), "qkv_bias": v.get("attention_bias", True),
    }
    llm = dict(t)
    if not llm.get("architectures"):
        from .families import family_of_hf_model_type

        llm["architectures"] = [family_of_hf_model_type(t.get("model_type")).architecture]
    pre = {}
    pre_file = path / "preprocessor_config.json"
    if pre_file.is_file():
        p = json.loads(pre_file.read_text())
        pre = {"min_dynamic_patch": p.get("min_patches", 1), "max_dynamic_patch": p.get("max_patches", 12),
               "dynamic_image_size": p.get("crop_to_patches", True)}
    return {
        "vision_config": vision, "llm_config": llm, "template": "internvl2_5",
        "downsample_ratio": raw.get("downsample_ratio", 0.5), "ps_version": "v2",
        "select_layer": raw.get("vision_feature_layer", -1), "force_image_size": vision["image_size"],
        "use_thumbnail": True, **pre,
    }


def _strip(key: str) -> tuple[str, str]:
    """-> (part, rest): part is vision | projector | llm | head."""
    for pfx, part in (("model.vision_tower.", "vision"), ("vision_tower.", "vision"),
                      ("model.multi_modal_projector.", "projector"), ("multi_modal_projector.", "projector"),
                      ("model.language_model.", "llm"), ("language_model.model.", "llm"),
                      ("lm_head.", "head"), ("language_model.lm_head.", "head")):
        if key.startswith(pfx):
            return part, key[len(pfx):]
    raise CheckpointError(f"unmapped -hf tensor {key}")


_QKV = re.compile(r"^encoder\.layers?\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")
_VLAYER = re.compile(r"^encoder\.layers?\.(\d+)\.(.+)$")


def _vision_key(rest: str) -> str:
    if rest in VISION_EMBED_RENAME:
        return "vision_model." + VISION_EMBED_RENAME[rest]
    m = _VLAYER.match(rest)
    if m:
        i, name = m.group(1), m.group(2)
        for src, dst in VISION_LAYER_RENAME.items():
            if name == src or name.startswith(src + "."):
                return f"vision_model.encoder.layers.{i}.{dst}{name[len(src):]}"
    raise CheckpointError(f"unmapped -hf vision tensor vision_tower.{rest}")


def hf_state_to_original(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """-hf tensors -> original names; the split q/k/v of each vision layer packed back into qkv."""
    out, qkv = {}, {}
    for key, t in state.items():
        part, rest = _strip(key)
        if part == "llm":
            out["language_model.model." + rest] = t
        elif part == "head":
            out["language_model.lm_head." + rest] = t
        elif part == "projector":
            name, _, leaf = rest.partition(".")
            if name not in PROJECTOR_RENAME:
                raise CheckpointError(f"unmapped -hf projector tensor {key}")
            out[f"{PROJECTOR_RENAME[name]}.{leaf}"] = t
        elif _QKV.match(rest):
            m = _QKV.match(rest)
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = t
        else:
            out[_vision_key(rest)] = t
    for (i, leaf), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"-hf vision layer {i}: attention q/k/v {leaf} incomplete "
                                  f"(found {sorted(parts)})")
        out[f"vision_model.encoder.layers.{i}.attn.qkv.{leaf}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0)
    return out
