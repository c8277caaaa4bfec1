"""Prompt building: InternVL's conversation templates and `<image>` expansion.

The text produced here is exactly what the reference `model.chat` tokenises. Special tokens are
written as text (`<img>`, `<IMG_CONTEXT>`, `<|im_end|>` ...); tokenisers that parse specials turn
each into its single id, which is always read from the tokenizer, never hard-coded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from . import chunks
from .chunks import IMAGE_PLACEHOLDER, IMG_CONTEXT, IMG_END, IMG_START  # noqa: F401 - re-exported
from .errors import InputError

INTERNVL_SPECIAL_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>",
                           "<ref>", "</ref>", "<box>", "</box>")
# Special tokens that are part of an answer's text (grounding markup): kept when answers are
# decoded, so that boxes can be parsed; every other special token is dropped.
ANSWER_MARKUP = ("<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")

INTERNVL_SYSTEM = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
                   "是一个有用无害的人工智能助手。")
INTERNVL2_5_SYSTEM = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
                      "多模态大语言模型。")


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    system_fmt: str       # wraps the system message
    user: str             # role prefix of a user turn
    assistant: str        # role prefix of an assistant turn
    sep: str              # closes the system message and every completed turn
    stop: str             # the token that ends an answer
    default_system: str
    specials: tuple[str, ...] = ()   # the special tokens the template itself writes

    def markup(self, s: str) -> list:
        """A string the template wrote, split into its special tokens (Markup) and text."""
        from .chunks import Markup

        if not self.specials:
            return [s] if s else []
        return [Markup(p) if p in self.specials else p for p in _splitter(self.specials).split(s) if p]

    def render(self, question: str, history: list[tuple[str, str]] = (),
               system: str | None = None) -> str:
        """Prompt text up to and including the assistant prefix of the new answer."""
        return segments_text(chunks.render(self, question, 0, history, system), [])


@lru_cache(maxsize=None)
def _splitter(specials: tuple[str, ...]) -> re.Pattern:
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")")


_IM = dict(system_fmt="<|im_start|>system\n{system}", user="<|im_start|>user\n",
           assistant="<|im_start|>assistant\n", stop="<|im_end|>", specials=("<|im_start|>", "<|im_end|>"))
TEMPLATES = {
    "Hermes-2": ChatTemplate("Hermes-2", sep="<|im_end|>", default_system=INTERNVL_SYSTEM, **_IM),
    "internlm2-chat": ChatTemplate("internlm2-chat", sep="<|im_end|>", default_system=INTERNVL_SYSTEM,
                                   **_IM),
    "internvl2_5": ChatTemplate("internvl2_5", sep="<|im_end|>\n", default_system=INTERNVL2_5_SYSTEM,
                                **_IM),
    "phi3-chat": ChatTemplate("phi3-chat", system_fmt="<|system|>\n{system}", user="<|user|>\n",
                              assistant="<|assistant|>\n", sep="<|end|>", stop="<|end|>",
                              default_system=INTERNVL_SYSTEM,
                              specials=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")),
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise InputError(f"unknown chat template {name!r}; known: {', '.join(TEMPLATES)}") from None


def image_block(n_tiles: int, tokens_per_tile: int = 256) -> str:
    """`<img>` + `<IMG_CONTEXT>` x (tokens_per_tile * n_tiles) + `</img>`."""
    return IMG_START + IMG_CONTEXT * (tokens_per_tile * n_tiles) + IMG_END


def segments_text(segments, tiles_per_image, tokens_per_tile: int = 256) -> str:
    """Segments written out as InternVL's text prompt (markup as its token text, images as blocks)."""
    out = []
    for seg in segments:
        if isinstance(seg, chunks.Slot):
            out.append(image_block(tiles_per_image[seg.index], tokens_per_tile))
        elif isinstance(seg, chunks.Markup):
            out.append(seg.token)
        else:
            out.append(seg)
    return "".join(out)


def build_prompt(template: ChatTemplate | str, question, tiles_per_image: list[int] = (),
                 history: list[tuple[str, str]] | None = None, system: str | None = None,
                 tokens_per_tile: int = 256, video: bool = False) -> str:
    """The full prompt text, as InternVL's `model.chat` builds it (for display: the runtime feeds
    `chunks.prompt_chunks`, which is the same prompt with caller text kept plain).

    With images and no history, a question without `<image>` gets `<image>\\n` prepended (one
    image) or the `Image-k: <image>` lines (several images; `Frame{k}:` for video).
    """
    tpl = get_template(template) if isinstance(template, str) else template
    tiles_per_image = list(tiles_per_image)
    segs = chunks.render(tpl, question, len(tiles_per_image), history or [], system, video)
    return segments_text(segs, tiles_per_image, tokens_per_tile)

