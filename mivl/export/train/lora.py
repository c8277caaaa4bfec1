"""LoRA through peft on the SDK's own modules, merged back into plain Linear layers on save."""
from __future__ import annotations

from torch import nn

from ...edge.errors import InputError

LLM_TARGETS = r"language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
VIT_TARGETS = r"vision_model\.encoder\.layers\.\d+\.(attn\.(qkv|proj)|mlp\.fc(1|2))"
PARTS = {"llm": LLM_TARGETS, "vit": VIT_TARGETS}


def add_lora(model: nn.Module, rank: int = 16, alpha: int = 32, dropout: float = 0.05,
             parts=("llm",)) -> nn.Module:
    """Inject LoRA adapters into the Linear layers of `parts` (llm, vit); base weights frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise InputError(f"LoRA parts must be some of {', '.join(PARTS)}, got {sorted(parts)}")
    pattern = "^(" + "|".join(PARTS[p] for p in parts) + ")$"
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    inject_adapter_in_model(cfg, model)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain base layer back (in place)."""
    from peft.tuners.lora import LoraLayer

    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, m in targets:
        m.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, m.get_base_layer())
    return model


def add_lora_like(target: nn.Module, source: nn.Module) -> nn.Module:
    """Give `target` the same adapters as `source` (so that its state dict loads)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in source.modules() if isinstance(m, LoraLayer)]
    if not layers:
        return target
    first = layers[0]
    names = [n for n, m in source.named_modules() if isinstance(m, LoraLayer)]
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=first.r["default"], lora_alpha=first.lora_alpha["default"],
                     target_modules="^(" + "|".join(n.replace(".", r"\.") for n in names) + ")$")
    inject_adapter_in_model(cfg, target)
    return target
