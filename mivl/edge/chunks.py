"""One request path: a question (and its history, images, template) -> typed chunks.

    segments = render(template, question, n_images, history, video=...)   # markup / text / image slots
    chunks = tokenize(segments, tiles_per_image, tokens_per_tile, tokenizer, add_bos)
    # [Text(ids), Image(index, n_tokens), Text(ids), ...]

as llama.cpp's `mtmd_tokenize` splits a multimodal prompt. The runtime feeds the chunks to the LLM
(text ids, or an image run's embeddings), the PyTorch reference flattens them to ids with
`<IMG_CONTEXT>` in the image runs, and the exporter's validation uses the same.

Who may write markup: only the chat template (role tokens, separators) and the image blocks
(`<img>`, `<IMG_CONTEXT>` x n, `</img>`) become special tokens. Text from a caller -- the
question, the history, a grounding phrase -- is tokenised as plain text, so a question that
contains `<|im_end|>` or `<IMG_CONTEXT>` is read as those characters. Grounding markup in a
question is asked for with typed parts (`Ref`, `Region`), never parsed out of a string. The one
string convention kept from InternVL's chat API is the `<image>` placeholder, which says where an
image goes (it is not a token of the model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, Union

from .errors import InputError

IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
IMAGE_PLACEHOLDER = "<image>"


# ---- what a question may be made of --------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """`<ref>phrase</ref>` in a question (grounding); the phrase itself is plain text."""
    phrase: str


@dataclass(frozen=True)
class Region:
    """`<box>[[x1, y1, x2, y2]]</box>` in a question (region perception), 0..1000 of the image."""
    box: tuple[int, int, int, int]


Part = Union[str, Ref, Region]
Question = Union[str, Sequence[Part]]


def grounding_question(phrase: str) -> list[Part]:
    """The authors' grounding prompt (internvl-spec.md section 7) for `phrase`."""
    return ["Please provide the bounding box coordinate of the region this sentence describes: ", Ref(phrase)]


def question_parts(question: Question) -> list[Part]:
    return [question] if isinstance(question, str) else list(question)


def question_text(question: Question) -> str:
    """The question as InternVL's chat would write it (for logs, history and the reference)."""
    out = []
    for p in question_parts(question):
        if isinstance(p, Ref):
            out.append(f"<ref>{p.phrase}</ref>")
        elif isinstance(p, Region):
            out.append("<box>[[" + ", ".join(str(v) for v in p.box) + "]]</box>")
        else:
            out.append(p)
    return "".join(out)


# ---- segments: markup, plain text and image slots, in order -------------------------------------
@dataclass(frozen=True)
class Markup:
    """A special token written by the template or the image block (trusted)."""
    token: str


@dataclass(frozen=True)
class Slot:
    """Where image number `index` goes."""
    index: int


Segment = Union[str, Markup, Slot]


def place_images(question: Question, n_images: int, video: bool = False) -> list[Part]:
    """InternVL's rule for a first question without `<image>`: one image -> `<image>\\n` before it,
    several -> `Image-k: <image>` lines, video frames -> `Frame{k}: <image>` lines."""
    parts = question_parts(question)
    if not n_images or any(isinstance(p, str) and IMAGE_PLACEHOLDER in p for p in parts):
        return parts
    if video:
        prefix = "".join(f"Frame{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(n_images))
    elif n_images == 1:
        prefix = IMAGE_PLACEHOLDER + "\n"
    else:
        prefix = "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(n_images))
    return [prefix, *parts]


def _user_segments(parts: Sequence[Part], slots: list[int]) -> list[Segment]:
    """A user turn's parts; `<image>` in its text becomes the next image slot."""
    out: list[Segment] = []
    for p in parts:
        if isinstance(p, Ref):
            out += [Markup("<ref>"), p.phrase, Markup("</ref>")]
        elif isinstance(p, Region):
            out += [Markup("<box>"), "[[" + ", ".join(str(int(v)) for v in p.box) + "]]", Markup("</box>")]
        else:
            pieces = p.split(IMAGE_PLACEHOLDER)
            for k, piece in enumerate(pieces):
                if k:
                    out.append(Slot(len(slots)))
                    slots.append(len(slots))
                if piece:
                    out.append(piece)
    return out


def conversation(template, turns: Sequence, n_images: int = 0, system: str | None = None,
                 video: bool = False) -> list[tuple[list[Segment], bool]]:
    """A conversation as pieces (segments, is_answer), the one rule for inference and training.

    `turns` are (question, answer) pairs; the last answer may be None (the prompt of a new answer).
    Pieces: the system message; per turn the user part (role prefix, question, separator and the
    assistant prefix) and, when answered, the answer with its closing separator. Images are placed
    in the first question by `place_images`; `<image>` elsewhere marks further image slots.
    `template` is a prompt.ChatTemplate.
    """
    slots: list[int] = []
    pieces = [([*template.markup(template.system_fmt.format(
        system=template.default_system if system is None else system) + template.sep)], False)]
    for k, (q, a) in enumerate(turns):
        parts = place_images(q, n_images, video) if k == 0 else question_parts(q)
        pieces.append(([*template.markup(template.user), *_user_segments(parts, slots),
                        *template.markup(template.sep + template.assistant)], False))
        if a is not None:
            pieces.append(([a, *template.markup(template.sep)] if a else [*template.markup(template.sep)], True))
    if len(slots) != n_images:
        raise InputError(f"the prompt has {len(slots)} {IMAGE_PLACEHOLDER} placeholder(s) but {n_images} "
                         "image(s) were given; they must match")
    return pieces


def render(template, question: Question, n_images: int = 0, history: Sequence = (), system: str | None = None,
           video: bool = False) -> list[Segment]:
    """The whole prompt up to the assistant prefix of the new answer, as segments.
    `history` holds (question, answer) pairs of earlier turns (images go in the first question)."""
    pieces = conversation(template, [*history, (question, None)], n_images, system, video)
    return [seg for segs, _ in pieces for seg in segs]


# ---- chunks: what the LLM is fed ----------------------------------------------------------------
@dataclass(frozen=True)
class Text:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Image:
    index: int           # which image of the request
    n_tokens: int        # tiles x tokens per tile


Chunk = Union[Text, Image]


class Tokenizer(Protocol):
    def encode_plain(self, text: str, first: bool) -> list[int]:
        """Ids of text with no special-token parsing; `first`: nothing precedes it in the prompt."""

    def special_id(self, token: str) -> int | None:
        """The id of a special token, or None if the vocabulary has no such single token."""

    @property
    def bos_id(self) -> int | None: ...


def tokenize(segments: Sequence[Segment], tiles_per_image: Sequence[int], tokens_per_tile: int,
             tokenizer: Tokenizer, add_bos: bool) -> list[Chunk]:
    """Segments -> chunks. Adjacent text is tokenised as one run (as a tokenizer splitting at
    special tokens would), markup that the vocabulary lacks as one token is text too."""
    chunks: list[Chunk] = []
    ids: list[int] = []
    run: list[str] = []
    seen_any = False

    def flush():
        nonlocal seen_any
        if run:
            ids.extend(tokenizer.encode_plain("".join(run), first=not seen_any))
            run.clear()
            seen_any = True

    if add_bos and tokenizer.bos_id is not None:
        ids.append(int(tokenizer.bos_id))      # text after it still counts as the prompt's first
    for seg in segments:
        if isinstance(seg, Slot):
            flush()
            seg_ids = [tokenizer.special_id(IMG_START), tokenizer.special_id(IMG_END)]
            if None in seg_ids:
                raise InputError("the tokenizer has no <img>/</img> tokens: not an InternVL tokenizer")
            ids.append(seg_ids[0])
            chunks.append(Text(tuple(ids)))
            ids = [seg_ids[1]]
            chunks.append(Image(seg.index, int(tiles_per_image[seg.index]) * tokens_per_tile))
            seen_any = True
        elif isinstance(seg, Markup):
            sid = tokenizer.special_id(seg.token)
            if sid is None:
                run.append(seg.token)
            else:
                flush()
                ids.append(sid)
                seen_any = True
        else:
            run.append(seg)
    flush()
    if ids:
        chunks.append(Text(tuple(ids)))
    return [c for c in chunks if not (isinstance(c, Text) and not c.ids)]


def flat_ids(chunks: Sequence[Chunk], img_context_id: int) -> list[int]:
    """The prompt's token ids, each image run written as `<IMG_CONTEXT>` ids (the reference's input)."""
    out: list[int] = []
    for c in chunks:
        out.extend(c.ids if isinstance(c, Text) else [img_context_id] * c.n_tokens)
    return out


def from_ids(ids: Sequence[int], img_context_id: int) -> list[Chunk]:
    """The inverse of flat_ids (for stored validation cases): runs of `<IMG_CONTEXT>` are images."""
    out: list[Chunk] = []
    i = 0
    while i < len(ids):
        j, is_img = i, ids[i] == img_context_id
        while j < len(ids) and (ids[j] == img_context_id) == is_img:
            j += 1
        out.append(Image(len(out), j - i) if is_img else Text(tuple(ids[i:j])))
        i = j
    return out


def n_tokens(chunks: Sequence[Chunk]) -> int:
    return sum(len(c.ids) if isinstance(c, Text) else c.n_tokens for c in chunks)


def prompt_chunks(template, question: Question, tiles_per_image: Sequence[int], tokens_per_tile: int,
                  tokenizer: Tokenizer, add_bos: bool, history: Sequence = (), system: str | None = None,
                  video: bool = False) -> list[Chunk]:
    """render + tokenize: the one call every caller makes."""
    segs = render(template, question, len(tiles_per_image), history, system, video)
    return tokenize(segs, tiles_per_image, tokens_per_tile, tokenizer, add_bos)
