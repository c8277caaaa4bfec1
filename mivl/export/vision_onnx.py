"""The vision path (InternViT + CLS drop + pixel unshuffle + mlp1) to ONNX.

One graph: pixel_values (tiles, 3, 448, 448) float32 -> image_embeds (tiles, 256, d_llm) float32,
the tile count dynamic, position embeddings baked for 448. The fp16 variant computes in half
precision inside the same float32 interface (casts at the edges), so every backend feeds it alike.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .model.internvl import InternVLChat

INPUT, OUTPUT = "pixel_values", "image_embeds"
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
