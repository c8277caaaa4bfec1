"""Validation of exported vision graphs in ONNX Runtime against the PyTorch reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..edge.errors import ValidationError
from ..runtimes.ort import session_options
from .model.internvl import InternVLChat
from .tolerances import VISION
from .vision_onnx import INPUT


def cosine_per_token(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)


def run_onnx(path: Path, pixels: np.ndarray, batch: int = 4) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {INPUT: pixels[i:i + batch]})[0]
                           for i in range(0, len(pixels), batch)])


def reference_features(model: InternVLChat, pixels: np.ndarray, batch: int = 4) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model.extract_feature(torch.from_numpy(pixels[i:i + batch])).numpy()
                               for i in range(0, len(pixels), batch)])


def run_split(vit_path: Path, projector_path: Path, norm_path: Path, eps: float, pixels: np.ndarray,
              batch: int = 4) -> np.ndarray:
    """A split vision encoder as the runtime runs it on a CPU: ViT graph, NumPy unshuffle +
    LayerNorm, projector graph."""
    import onnxruntime as ort

    from ..runtimes.vision_split import read_norm, unshuffle_layernorm
    from .vision_onnx import PROJECTOR_INPUT

    gamma, beta = read_norm(norm_path)
    proj = ort.InferenceSession(str(projector_path), session_options(), providers=["CPUExecutionProvider"])
    hidden = run_onnx(vit_path, pixels, batch)
    return proj.run(None, {PROJECTOR_INPUT: unshuffle_layernorm(hidden, gamma, beta, eps)})[0]


def check_vision(path: Path, precision: str, pixels: np.ndarray, reference: np.ndarray, run=None) -> dict:
    """Figures of one vision artifact (run(path, pixels) gives its features; default: the one-graph
    encoder in ONNX Runtime); raises ValidationError if it misses its bar."""
    out = (run or run_onnx)(path, pixels)
    cos = cosine_per_token(out, reference)
    figures = {"precision": precision, "tiles": int(len(pixels)), "min_cosine": float(cos.min()),
               "mean_cosine": float(cos.mean()), "max_abs_error": float(np.abs(out - reference).max())}
    bar = VISION[precision]
    failed = [f"{k[:-7] if k.endswith('_cosine') else k} cosine {figures[k]:.6f} < {v}"
              for k, v in bar.items() if figures[k] < v]
    figures["passed"] = not failed
    figures["bar"] = bar
    if failed:
        figures["failures"] = failed
    return figures


def require(figures: dict, what: str, force: bool) -> None:
    if not figures["passed"] and not force:
        raise ValidationError(f"{what} failed validation against the PyTorch reference: "
                              f"{'; '.join(figures['failures'])}. Use --force to write the bundle "
                              "anyway (it is marked failed)")
