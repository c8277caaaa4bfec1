"""InternViT (the 300M vision encoder of Mini-InternVL), read top to bottom.

Parameter names follow the original checkpoint (vision_model.*), so weights load as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig


class InternVisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        c, g = cfg.hidden_size, cfg.grid
        self.grid = g
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, c))
        self.patch_embedding = nn.Conv2d(3, c, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + g * g, c))  # CLS + 32x32

    def grid_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings of an h x w patch grid (bicubic from the trained 32x32; identity at 448)."""
        pos = self.position_embedding[:, 1:]
        if (h, w) == (self.grid, self.grid):
            return pos
        c = pos.shape[-1]
        pos = pos.float().reshape(1, self.grid, self.grid, c).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        return pos.reshape(1, c, h * w).permute(0, 2, 1).to(self.position_embedding.dtype)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels)                       # (N, C, 32, 32)
        n, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)                       # (N, 1024, C)
        cls = self.class_embedding.expand(n, 1, c).to(x.dtype)
        x = torch.cat([cls, x], dim=1)                         # (N, 1025, C)
        pos = torch.cat([self.position_embedding[:, :1], self.grid_pos_embed(h, w)], dim=1)
        return x + pos.to(x.dtype)


class InternAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=cfg.qkv_bias)  # rows [q; k; v]
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                # each (N, heads, T, d)
        if torch.onnx.is_in_onnx_export():
            # the explicit graph: its MatMuls and Softmax are what the INT8 quantiser looks for
            attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
            out = attn.softmax(dim=-1) @ v                     # (N, heads, T, d)
        else:                                # the same in one fused kernel (~3x faster on a CPU)
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class InternMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))                   # exact (erf) GELU


class InternVisionEncoderLayer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if cfg.norm_type != "layer_norm" or cfg.qk_normalization:
            raise NotImplementedError("only InternViT-300M style layers (LayerNorm, no qk norm) "
                                      "are supported; InternViT-6B is not a Mini-InternVL encoder")
        self.attn = InternAttention(cfg)
        self.mlp = InternMLP(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ls1 = nn.Parameter(torch.ones(cfg.hidden_size))   # layer scale
        self.ls2 = nn.Parameter(torch.ones(cfg.hidden_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm1(h)) * self.ls1
        return h + self.mlp(self.norm2(h)) * self.ls2


class InternVisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(InternVisionEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))


class InternVisionModel(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = InternVisionEmbeddings(cfg)
        self.encoder = InternVisionEncoder(cfg)

    def states(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, 448, 448) -> [embeddings, after layer 1, ..., after the last layer], each (N, 1025, C)."""
        h = self.embeddings(pixels)
        states = [h]
        for layer in self.encoder.layers:
            h = layer(h)
            states.append(h)
        return states

    def forward(self, pixels: torch.Tensor, select_layer: int = -1) -> torch.Tensor:
        """(N, 3, 448, 448) -> hidden states (N, 1025, C) of `select_layer` (-1: the last)."""
        return self.states(pixels)[select_layer]
