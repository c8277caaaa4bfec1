"""Dense vision pretraining on synthetic scenes: every vision token learns what it sees.

A warm-up stage before conversation training (like the paper's projector warm-up, but with a
denser signal): the vision encoder and projector are trained, with two temporary linear heads on
the projector's output tokens, to predict the colour and the class of the object under each token
(`mivl.calib.labels`; 0 = background). Question answering then starts from tokens that already
say "a red bus is here", and the language model only has to learn to look for them. The heads
are dropped afterwards; the checkpoint keeps the original layout.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...calib.labels import camera_labels, canvas_labels
from ...calib.questions import SCENE_SIZE, jpeg_roundtrip
from ...calib.synthetic import CLASSES, COLOURS, draw_scene
from ...edge.multiview import CAMERAS, stitch_cameras
from ...edge.preprocess import preprocess_images
from ..model.projector import vit_to_tokens


@dataclass
class DenseSample:
    pixels: np.ndarray      # (1, 3, 448, 448)
    colours: np.ndarray     # (256,) int64
    classes: np.ndarray     # (256,)


def dense_sample(seed: int, i: int, pre, max_objects: int, canvas_share: float,
                 size: tuple[int, int] = SCENE_SIZE) -> DenseSample:
    """Sample i of stream `seed`: one camera frame, or the six-camera canvas, with token labels."""
    rng = np.random.default_rng([seed, i, 7])
    scene = draw_scene(int(rng.integers(2 ** 62)), *size, max_objects=max_objects)
    quality = int(rng.integers(75, 96))
    if rng.random() < canvas_share:
        frames = {k: jpeg_roundtrip(scene.cameras[k], quality) for k in CAMERAS}
        image = stitch_cameras(frames)
        colours, classes = canvas_labels(scene.objects, *size)
    else:
        with_objects = sorted({o.camera for o in scene.objects}) or list(CAMERAS)
        cam = with_objects[int(rng.integers(len(with_objects)))]
        image = jpeg_roundtrip(scene.cameras[cam], quality)
        colours, classes = camera_labels(scene.in_camera(cam), *size)
    tiles = preprocess_images([image], pre, max_tiles=1)
    return DenseSample(tiles.pixels, colours.reshape(-1), classes.reshape(-1))


class DenseHeads(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.colour = nn.Linear(dim, len(COLOURS) + 1)
        self.cls = nn.Linear(dim, len(CLASSES) + 1)


def token_features(model, pixels: torch.Tensor) -> torch.Tensor:
    cfg = model.config
    hidden = model.vision_model(pixels, cfg.select_layer)
    return model.mlp1(vit_to_tokens(hidden, cfg.downsample_ratio, cfg.ps_version))


def dense_loss(heads: DenseHeads, feats, colours, classes, object_weight: float):
    """Cross-entropy per token, object tokens weighted (they are a few percent of the tokens)."""
    feats, colours, classes = feats.reshape(-1, feats.shape[-1]), colours.reshape(-1), classes.reshape(-1)
    w = torch.where(colours > 0, object_weight, 1.0)
    lc = F.cross_entropy(heads.colour(feats), colours, reduction="none")
    lk = F.cross_entropy(heads.cls(feats), classes, reduction="none")
    return ((lc + lk) * w).sum() / w.sum()


@torch.no_grad()
def dense_accuracy(model, heads, samples) -> dict:
    """Accuracy of the heads on object tokens (colour, class) and on background tokens."""
    hit_c = hit_k = n_obj = hit_bg = n_bg = 0
    for s in samples:
        f = token_features(model, torch.from_numpy(s.pixels)).reshape(-1, heads.colour.in_features)
        pc, pk = heads.colour(f).argmax(-1).numpy(), heads.cls(f).argmax(-1).numpy()
        obj = s.colours > 0
        hit_c += int((pc[obj] == s.colours[obj]).sum())
        hit_k += int((pk[obj] == s.classes[obj]).sum())
        n_obj += int(obj.sum())
        hit_bg += int(((pc == 0) & (pk == 0))[~obj].sum())
        n_bg += int((~obj).sum())
    return {"colour": hit_c / max(1, n_obj), "class": hit_k / max(1, n_obj), "background": hit_bg / max(1, n_bg)}


def pretrain_vision(model, pre, steps: int, batch_size: int = 8, lr: float = 2e-3, seed: int = 0,
                    max_objects: int = 1, canvas_share: float = 0.3, object_weight: float = 10.0,
                    log_every: int = 20, quiet: bool = False) -> tuple[list[float], DenseHeads]:
    """Train model.vision_model and model.mlp1 in place on dense token labels; returns the losses
    and the temporary heads (for dense_accuracy; they are not part of the checkpoint)."""
    torch.manual_seed(seed)
    heads = DenseHeads(model.mlp1[-1].out_features)
    params = list(model.vision_model.parameters()) + list(model.mlp1.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps)))))
    model.train()
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        batch = [dense_sample(seed, step * batch_size + k, pre, max_objects, canvas_share) for k in range(batch_size)]
        pixels = torch.from_numpy(np.concatenate([b.pixels for b in batch]))
        feats = token_features(model, pixels)
        loss = dense_loss(heads, feats, torch.from_numpy(np.stack([b.colours for b in batch])),
                          torch.from_numpy(np.stack([b.classes for b in batch])), object_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if not quiet and ((step + 1) % log_every == 0 or step == 0):
            print(f"dense step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    return losses, heads
