"""The whole InternVL chat model: vision encoder -> unshuffle -> projector -> LLM.

`extract_feature` gives the (N, 256, d_llm) image embeddings; `embed` writes them over the
`<IMG_CONTEXT>` positions of a prompt in order; `generate` decodes greedily or by sampling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import InternVLConfig
from .decoder import CausalLM
from .internvit import InternVisionModel
from .projector import Projector, vit_to_tokens


@dataclass
class Generation:
    tokens: list[int]             # generated ids (the stop token excluded)
    logits: list[torch.Tensor]    # (vocab,) float32 logits of each step, when kept
    stopped: bool                 # ended on a stop token rather than max_new_tokens


class InternVLChat(nn.Module):
    def __init__(self, cfg: InternVLConfig):
        super().__init__()
        self.config = cfg
        self.vision_model = InternVisionModel(cfg.vision)
        self.mlp1 = Projector(cfg.vision.hidden_size, cfg.llm.hidden_size, cfg.downsample_ratio)
        self.language_model = CausalLM(cfg.llm)

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, 448, 448) normalised tiles -> (N, 256, 4 * d_vit): the ViT's tokens pixel-unshuffled,
        what the projector takes."""
        hidden = self.vision_model(pixels, self.config.select_layer)
        return vit_to_tokens(hidden, self.config.downsample_ratio, self.config.ps_version)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, 448, 448) normalised tiles -> (N, 256, d_llm) image embeddings (with gradients)."""
        return self.mlp1(self.vision_tokens(pixels))

    @torch.no_grad()
    def extract_feature(self, pixels: torch.Tensor) -> torch.Tensor:
        """image_features without gradients (inference)."""
        return self.image_features(pixels)

    def embed(self, ids: torch.Tensor, image_embeds: torch.Tensor | None, img_context_id: int
              ) -> torch.Tensor:
        """(T,) token ids -> (1, T, D) embeddings with image features at <IMG_CONTEXT> positions."""
        x = self.language_model.embed(ids[None])
        slots = (ids == img_context_id).nonzero().flatten()
        n_feat = 0 if image_embeds is None else image_embeds.shape[0] * image_embeds.shape[1]
        if slots.numel() != n_feat:
            raise ValueError(f"the prompt has {slots.numel()} <IMG_CONTEXT> tokens but the images "
                             f"give {n_feat} features; they must match")
        if n_feat:
            x = x.clone()
            x[0, slots] = image_embeds.reshape(-1, x.shape[-1]).to(x.dtype)
        return x

    @torch.no_grad()
    def prompt_logits(self, ids: torch.Tensor, image_embeds: torch.Tensor | None,
                      img_context_id: int) -> torch.Tensor:
        """(T, vocab) logits of every prompt position (no cache)."""
        return self.language_model(self.embed(ids, image_embeds, img_context_id))[0].float()

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, image_embeds: torch.Tensor | None, img_context_id: int,
                 stop_ids: set[int], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, keep_logits: bool = False) -> Generation:
        """Greedy (temperature 0) or nucleus-sampled decoding with a KV cache."""
        gen = torch.Generator().manual_seed(seed)
        cache: list = []
        logits = self.language_model(self.embed(ids, image_embeds, img_context_id), cache, 0)[0, -1]
        pos, out, kept = ids.numel(), [], []
        for _ in range(max_new_tokens):
            logits = logits.float()
            if keep_logits:
                kept.append(logits.clone())
            tok = pick_token(logits, temperature, top_p, gen)
            if tok in stop_ids:
                return Generation(out, kept, True)
            out.append(tok)
            emb = self.language_model.embed(torch.tensor([[tok]]))
            logits = self.language_model(emb, cache, pos)[0, -1]
            pos += 1
        return Generation(out, kept, False)


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p      # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))
