"""The model as the trainer runs it: `TrainingModel` wraps an InternVL model for one record's loss
(image features from a cache when the encoder is frozen, the attention and tile-camera targets
added to the answer loss), and `weights_key` names the weights a cached feature came from."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ...edge.feature_cache import FeatureCache, tile_key
from .data import IGNORE
from .focus import FocusConfig, decode as focus_decode
from .tile_camera import TileCameraConfig, TileCameraHeads


def weights_key(*modules: nn.Module) -> bytes:
    """A digest of the modules' parameters: what a cached feature was computed with."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for m in modules:
        for name, p in m.named_parameters():
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
    return h.digest()


class TrainingModel(nn.Module):
    """forward(pixels, ids, labels[, focus, tile_cameras]) -> the summed token loss of one record;
    with a FocusConfig and a sample's focus, or a TileCameraConfig and a six-camera sample, (that
    loss + the weighted attention and tile-camera targets, the token loss). The tile-camera heads
    are parameters of this wrapper, not of the model: they train with it and are not saved.

    With a feature cache (the ViT frozen), a tile batch's features are looked up by a key naming
    everything that produced them: the frozen weights, the autocast dtype and the pixels. So a
    cache may be shared by runs (the stages of a recipe) and never hands back features of other
    weights."""

    def __init__(self, model, img_context_id: int, autocast_dtype: torch.dtype, cache: FeatureCache | None = None,
                 focus: FocusConfig | None = None, tile_camera: TileCameraConfig | None = None):
        super().__init__()
        self.model = model
        self.focus = focus
        self.focus_mass: dict[str, list[float]] = {}      # attention mass on the targets, per kind
                                                          # (and "tile camera": the heads' share right)
        self.tile_camera = None if tile_camera is None else TileCameraHeads(
            tile_camera, model.language_model.config.hidden_size)
        self.img_context_id = img_context_id
        self.autocast_dtype = autocast_dtype
        self.cache = cache
        if cache is not None:
            self.projector_frozen = not any(p.requires_grad for p in model.mlp1.parameters())
            frozen = (model.vision_model, model.mlp1) if self.projector_frozen else (model.vision_model,)
            self.producer = weights_key(*frozen) + str(autocast_dtype).encode() + bytes([self.projector_frozen])

    def cached(self, pixels, compute):
        key = self.producer + tile_key(pixels.detach().cpu().numpy())
        feats = self.cache.get(key)
        if feats is None:
            with torch.no_grad():
                feats = compute(pixels)
            self.cache.put(key, feats)
        return feats

    def image_features(self, pixels):
        """The image embeddings, from the cache when there is one: the projector's output when it is
        frozen too, else the ViT's tokens (the projector runs on them, with gradients)."""
        m = self.model
        if self.cache is None:
            return m.image_features(pixels)
        if self.projector_frozen:
            return self.cached(pixels, m.image_features)
        return m.mlp1(self.cached(pixels, m.vision_tokens))

    def forward(self, pixels, ids, labels, focus=(), tile_cameras=None):
        m = self.model
        aux = None
        seen: dict[int, torch.Tensor] = {}          # the tile-camera layers' inputs
        want = self.tile_camera is not None and tile_cameras is not None and pixels is not None

        def keep_input(i, _layer, h, _cos, _sin):
            if i in self.tile_camera.cfg.layers:
                seen[i] = h

        on_layer = keep_input if want else None
        device_type = ids.device.type
        ctx = (torch.autocast(device_type, dtype=self.autocast_dtype)
               if self.autocast_dtype != torch.float32 else contextlib.nullcontext())
        with ctx:
            x = m.language_model.embed(ids[None])
            if pixels is not None:
                feats = self.image_features(pixels)
                slots = (ids == self.img_context_id).nonzero().flatten()
                x = x.clone()
                x[0, slots] = feats.reshape(-1, x.shape[-1]).to(x.dtype)
            if self.focus is not None and focus and pixels is not None:
                h, aux, mass = focus_decode(m.language_model, x, focus, slots, self.focus, on_layer)
                h = h[0]
                for k, v in mass.items():
                    self.focus_mass.setdefault(k, []).append(v)
            else:
                h = m.language_model(x, hidden_only=True, on_layer=on_layer)[0]
            if want:
                cam, right = self.tile_camera.loss(seen, slots, tile_cameras, slots.numel() // len(tile_cameras))
                aux = cam if aux is None else aux + cam
                if right is not None:
                    self.focus_mass.setdefault("tile camera", []).append(right)
            keep = labels[1:] != IGNORE
            logits = m.language_model.lm_head(h[:-1][keep])
        ce = F.cross_entropy(logits.float(), labels[1:][keep], reduction="sum")
        return ce if aux is None else (ce + aux, ce)
