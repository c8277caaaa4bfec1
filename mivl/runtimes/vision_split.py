"""A split vision encoder: the ViT graph, then unshuffle + LayerNorm, then the projector's MLP.

Bundles exported with `--split-vision` hold the vision path in two graphs: `vit` (pixel_values ->
the ViT's hidden states (N, 1 + g*g, C), what a TensorRT ViT engine runs) and `projector`
(LayerNorm'd tokens (N, g*g/4, 4C) -> image_embeds: Linear, GELU, Linear). Between them sit the
CLS drop, InternVL's v2 2x2 space-to-depth and the projector's LayerNorm, with its weights in the
bundle: on a GPU the fused kernel (kernels/unshuffle.cu) does them on the device, on a CPU NumPy
(`unshuffle_layernorm`, the kernel's reference).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import BundleError, InputError
from .ort import ort_session


def unshuffle(hidden: np.ndarray) -> np.ndarray:
    """(N, 1 + g*g, C) -> (N, g*g/4, 4C): CLS dropped, token (r, c) = patches (2r,2c), (2r,2c+1),
    (2r+1,2c), (2r+1,2c+1) concatenated (InternVL's pixel_shuffle, scale 0.5, ps_version v2)."""
    n, t, c = hidden.shape
    g = math.isqrt(t - 1)
    if g * g != t - 1 or g % 2:
        raise InputError(f"ViT hidden states must be (N, 1 + g*g, C) with even g, got {hidden.shape}")
    x = hidden[:, 1:].reshape(n, g // 2, 2, g // 2, 2, c)          # [n, r, row pair, c, col pair, ch]
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, (g // 2) ** 2, 4 * c)


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=-1, keepdims=True)
    return (d / np.sqrt(var + np.float32(eps)) * gamma + beta).astype(np.float32)


def unshuffle_layernorm(hidden: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """What the fused kernel computes, in NumPy."""
    return layer_norm(unshuffle(hidden), gamma, beta, eps)


def read_norm(path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        gamma, beta = z["gamma"].astype(np.float32), z["beta"].astype(np.float32)
    if gamma.shape != beta.shape or gamma.ndim != 1:
        raise BundleError(f"{path}: projector LayerNorm weights have shapes {gamma.shape} / {beta.shape}")
    return gamma, beta


class SplitVision:
    """pixel_values (N, 3, S, S) -> image_embeds (N, T, D) through vit, unshuffle + LN, projector.

    `vit` is the ViT backend (an OrtVision on the ViT graph, or a TrtVision on its engine);
    `projector` an ONNX Runtime session of the projector graph. On the GPU, `kernels` (a mivl.runtimes.kernels.Preprocessor on the CUDA
    backend) runs unshuffle + LayerNorm on device buffers."""

    def __init__(self, vit, projector_path: str, projector_input: str, gamma: np.ndarray, beta: np.ndarray,
                 eps: float, threads: int | None = None):
        self.vit, self.gamma, self.beta, self.eps = vit, gamma, beta, float(eps)
        self.providers = vit.providers
        self.projector = ort_session(projector_path, self.providers, threads, "projector")
        self.projector_input = projector_input
        if self.projector.get_inputs()[0].shape[-1] != gamma.shape[0]:
            raise BundleError(f"the projector takes {self.projector.get_inputs()[0].shape[-1]} features "
                              f"but its LayerNorm has {gamma.shape[0]}: the split vision files disagree")
        self.kernels = None
        self.max_tiles = vit.max_tiles
        self.backend = f"{vit.backend} ViT + projector, unshuffle+LayerNorm in NumPy"

    @property
    def on_gpu(self) -> bool:
        return self.vit.on_gpu

    def use_kernels(self, kernels) -> None:
        """Run unshuffle + LayerNorm with the fused CUDA kernel (device buffers throughout)."""
        self.kernels = kernels
        self.backend = self.backend.replace("in NumPy", "in the fused CUDA kernel")

    def project(self, tokens: np.ndarray) -> np.ndarray:
        return self.projector.run(None, {self.projector_input: np.ascontiguousarray(tokens, np.float32)})[0]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        hidden = self.vit(pixels)
        if self.kernels is not None:
            tokens = self.kernels.unshuffle_layernorm(hidden, self.gamma, self.beta, self.eps)
            return self.project(self.kernels.k.to_host(tokens))
        return self.project(unshuffle_layernorm(hidden, self.gamma, self.beta, self.eps))

    def run_device(self, tiles) -> np.ndarray:
        """Tiles on the GPU (a CuPy array): the ViT's hidden states stay on the device, the fused
        kernel turns them into LayerNorm'd tokens there, and the projector reads them by pointer."""
        if not self.on_gpu or self.kernels is None:
            return self(tiles.get())
        from .vision_ort import run_bound

        outs = []
        for i in range(0, tiles.shape[0], self.max_tiles):
            hidden = self.vit.run_device(tiles[i:i + self.max_tiles], keep_on_device=True)
            tokens = self.kernels.unshuffle_layernorm(hidden, self.gamma, self.beta, self.eps)
            outs.append(run_bound(self.projector, self.projector_input, tokens))
        return np.concatenate(outs)

    def close(self) -> None:
        if self.vit is not None:
            self.vit.close()
        self.vit = self.projector = None
