"""The reference pipeline in one object: checkpoint + tokenizer + the SDK's preprocessing.

`Reference(ckpt).ask(question, images=[...])` answers as InternVL's own `model.chat` would. It is
what every exported artifact, and the edge runtime end to end, is compared against.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..edge.multiview import preprocess_cameras
from ..edge.preprocess import PreprocessConfig, TileBatch, preprocess_frames, preprocess_images
from ..edge.chunks import flat_ids, prompt_chunks
from ..edge.prompt import ANSWER_MARKUP, IMG_CONTEXT, get_template
from .checkpoint import Checkpoint, load_checkpoint
from .model.internvl import Generation
from ..edge.tokenizer import TextTokenizer, load_tokenizer


def preprocess_config(ckpt: Checkpoint) -> PreprocessConfig:
    c = ckpt.config
    return PreprocessConfig(image_size=c.force_image_size, min_tiles=c.min_dynamic_patch,
                            max_tiles=c.max_dynamic_patch, use_thumbnail=c.use_thumbnail,
                            dynamic=c.dynamic_image_size)


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    prompt_ids: list[int] = field(repr=False)
    tiles: TileBatch | None = field(default=None, repr=False)
    generation: Generation | None = field(default=None, repr=False)


class Reference:
    def __init__(self, checkpoint, tokenizer: TextTokenizer | None = None):
        self.ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.tok = tokenizer or load_tokenizer(self.ckpt.path)
        self.model = self.ckpt.model
        self.template = get_template(self.ckpt.config.template)
        self.pre = preprocess_config(self.ckpt)
        self.img_context_id = self.tok.token_to_id(IMG_CONTEXT)
        self.stop_ids = {self.tok.token_to_id(self.template.stop)}
        if self.tok.eos_id is not None:
            self.stop_ids.add(self.tok.eos_id)

    def tiles(self, images=None, cameras=None, video=None, max_tiles=None) -> TileBatch | None:
        if cameras is not None:
            return preprocess_cameras(cameras, self.pre, max_tiles=max_tiles)
        if video is not None:
            return preprocess_frames(list(video), self.pre)
        if images:
            return preprocess_images(list(images), self.pre, max_tiles=max_tiles)
        return None

    def prompt_ids(self, question, tiles: TileBatch | None, history=None, video: bool = False) -> list[int]:
        """The prompt as the runtime feeds it (mivl.edge.chunks), image runs as `<IMG_CONTEXT>` ids."""
        per_image = tiles.tiles_per_image if tiles is not None else []
        prompt = prompt_chunks(self.template, question, per_image, self.ckpt.config.tokens_per_tile, self.tok,
                               self.tok.add_bos, history or [], video=video)
        return flat_ids(prompt, self.img_context_id)

    def image_embeds(self, tiles: TileBatch | None) -> torch.Tensor | None:
        if tiles is None:
            return None
        return self.model.extract_feature(torch.from_numpy(np.ascontiguousarray(tiles.pixels)))

    def ask(self, question: str, images=None, cameras=None, video=None, history=None,
            max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
            max_tiles: int | None = None, keep_logits: bool = False) -> Answer:
        tiles = self.tiles(images, cameras, video, max_tiles)
        ids = self.prompt_ids(question, tiles, history, video=video is not None)
        gen = self.model.generate(torch.tensor(ids), self.image_embeds(tiles), self.img_context_id,
                                  self.stop_ids, max_new_tokens, temperature, top_p, seed, keep_logits)
        return Answer(self.tok.decode(gen.tokens, skip_special=True, keep=ANSWER_MARKUP), gen.tokens, ids, tiles, gen)
