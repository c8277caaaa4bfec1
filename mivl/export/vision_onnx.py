"""The vision path (InternViT + CLS drop + pixel unshuffle + mlp1) to ONNX.

One graph: pixel_values (tiles, 3, 448, 448) float32 -> image_embeds (tiles, 256, d_llm) float32,
the tile count dynamic, position embeddings baked for 448. The fp16 variant computes in half
precision inside the same float32 interface (casts at the edges), so every backend feeds it alike.

Split (`--split-vision`): two graphs, the ViT (pixel_values -> vit_hidden (tiles, 1025, C)) and the
projector's MLP (tokens (tiles, 256, 4C), already unshuffled and LayerNorm'd -> image_embeds),
with the LayerNorm's weights beside them; the runtime does the unshuffle + LayerNorm in between
(the fused CUDA kernel on a GPU, NumPy on a CPU: mivl.runtimes.vision_split).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .model.internvl import InternVLChat

INPUT, OUTPUT = "pixel_values", "image_embeds"
VIT_OUTPUT, PROJECTOR_INPUT = "vit_hidden", "tokens"
VIT_FILES = {"fp32": "vision.vit.onnx", "fp16": "vision.vit.fp16.onnx", "int8": "vision.vit.int8.onnx"}
PROJECTOR_FILE = "vision.projector.onnx"     # fp32 whatever the ViT's precision
NORM_FILE = "vision.projector_norm.npz"
OPSET = 17


class VisionPath(nn.Module):
    """InternViT + CLS drop + unshuffle + mlp1, holding only the vision half of the model."""

    def __init__(self, model: InternVLChat, half: bool = False):
        super().__init__()
        self.vision_model, self.mlp1, self.config = model.vision_model, model.mlp1, model.config
        self.half_precision = half

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        from .model.projector import vit_to_tokens

        x = pixel_values.half() if self.half_precision else pixel_values
        hidden = self.vision_model(x, self.config.select_layer)
        tokens = vit_to_tokens(hidden, self.config.downsample_ratio, self.config.ps_version)
        return self.mlp1(tokens).float()


def export_vision(model: InternVLChat, path: Path, half: bool = False, opset: int = OPSET) -> Path:
    """Write the vision path as ONNX (fp32, or fp16 compute with fp32 I/O)."""
    import copy

    wrapper = VisionPath(model, half).eval()
    if half:  # a half-precision copy of the vision half only; the reference stays fp32
        wrapper.vision_model = copy.deepcopy(model.vision_model).half()
        wrapper.mlp1 = copy.deepcopy(model.mlp1).half()
    dummy = torch.zeros(2, 3, model.config.force_image_size, model.config.force_image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape ints: the shapes are fixed
        torch.onnx.export(wrapper, (dummy,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "tiles"}, OUTPUT: {0: "tiles"}},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    return path


def io_spec(model: InternVLChat) -> dict:
    s = model.config.force_image_size
    return {"input": {"name": INPUT, "shape": ["tiles", 3, s, s], "dtype": "float32"},
            "output": {"name": OUTPUT, "shape": ["tiles", model.config.tokens_per_tile,
                                                 model.config.llm.hidden_size], "dtype": "float32"}}


class ViTPart(nn.Module):
    """InternViT alone: pixel_values -> the hidden states of the selected layer, CLS included."""

    def __init__(self, vision_model, select_layer: int, half: bool = False):
        super().__init__()
        self.vision_model, self.select_layer, self.half_precision = vision_model, select_layer, half

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.half() if self.half_precision else pixel_values
        return self.vision_model(x, self.select_layer).float()


class ProjectorMLP(nn.Module):
    """mlp1 after its LayerNorm: Linear -> GELU -> Linear."""

    def __init__(self, mlp1):
        super().__init__()
        self.mlp1 = nn.Sequential(*list(mlp1)[1:])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp1(tokens)


def _export(module: nn.Module, dummy: torch.Tensor, path: Path, inp: str, out: str, opset: int) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (dummy,), str(path), input_names=[inp], output_names=[out],
                          dynamic_axes={inp: {0: "tiles"}, out: {0: "tiles"}}, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    return path


def export_vit(model: InternVLChat, path: Path, half: bool = False, opset: int = OPSET) -> Path:
    """The ViT graph of a split vision encoder (fp32, or fp16 compute with fp32 I/O)."""
    import copy

    if model.config.ps_version == "v1":
        from ..edge.errors import InputError
        raise InputError("--split-vision needs ps_version v2 (the unshuffle kernel's token order); "
                         "this checkpoint uses v1: export it without --split-vision")
    vit = copy.deepcopy(model.vision_model).half() if half else model.vision_model
    s = model.config.force_image_size
    return _export(ViTPart(vit, model.config.select_layer, half), torch.zeros(2, 3, s, s), path, INPUT,
                   VIT_OUTPUT, opset)


def export_projector(model: InternVLChat, directory: Path, opset: int = OPSET) -> tuple[Path, Path, float]:
    """The projector graph (fp32) and its LayerNorm's weights; returns (graph, norm file, eps)."""
    import numpy as np

    norm = model.mlp1[0]
    d_in = norm.normalized_shape[0]
    graph = _export(ProjectorMLP(model.mlp1), torch.zeros(2, model.config.tokens_per_tile, d_in),
                    directory / PROJECTOR_FILE, PROJECTOR_INPUT, OUTPUT, opset)
    np.savez(directory / NORM_FILE, gamma=norm.weight.detach().float().numpy(),
             beta=norm.bias.detach().float().numpy())
    return graph, directory / NORM_FILE, float(norm.eps)


def split_spec(model: InternVLChat, vit_file: str, projector_file: str, eps: float) -> dict:
    cfg = model.config
    return {"vit_output": {"name": VIT_OUTPUT, "shape": ["tiles", cfg.vision.grid ** 2 + 1, cfg.vision.hidden_size],
                           "dtype": "float32"},
            "vit_file": vit_file, "projector_file": projector_file, "projector_input": PROJECTOR_INPUT,
            "norm_file": NORM_FILE, "norm_eps": eps, "ps_version": cfg.ps_version}
