"""Records -> training samples: the SDK's own tiling and prompt template, loss on assistant tokens.

A sample is the tile batch of its images and the token ids of the whole conversation, rendered by
the checkpoint's chat template exactly as inference renders it; `labels` repeats the ids of each
assistant answer and its closing separator (the stop token the runtime waits for) and holds
IGNORE everywhere else (system prompt, user turns, image tokens, role prefixes). An answer with a
`focus` (records.py) becomes a `Focus`: the positions that predict it, the image tokens that show
its subject (every tile of InternVL's tiling, the thumbnail included) and the question's tokens
that name it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...edge.multiview import preprocess_cameras
from ...edge.preprocess import PreprocessConfig, preprocess_frames, preprocess_images
from ...edge.chunks import conversation
from ...edge.prompt import ChatTemplate, segments_text
from .records import check_record, images_of
from .tile_camera import tile_cameras

IGNORE = -100


@dataclass
class Focus:
    """Where one answer should look, as token indices of its sample."""
    positions: list[int]           # the positions whose next token is a piece of the answer (its
                                   # closing end mark excluded)
    image_tokens: np.ndarray       # indices into the sample's image tokens (tile after tile, 256
                                   # each, as the model reads them) that show the subject
                                   # (empty for a focus of words alone)
    words: list[int]               # positions of the question's tokens naming the subject (may be empty)
    whole_tokens: np.ndarray | None = None   # those of image_tokens on the tile showing the whole
                                   # image (the thumbnail, or the only tile), the one whose tokens
                                   # know where they lie; None: no such tile, or no box


@dataclass
class Sample:
    pixels: np.ndarray | None      # (N, 3, 448, 448) float32 tiles, or None for text only
    input_ids: list[int]
    labels: list[int]              # IGNORE except on assistant tokens
    focus: list[Focus] = field(default_factory=list)
    tile_cameras: np.ndarray | None = None   # six cameras: the camera of each tile (`tile_camera.tile_cameras`)

    @property
    def n_targets(self) -> int:
        """Tokens that are predicted (a label at position t is predicted from position t-1)."""
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def record_tiles(rec: dict, pre: PreprocessConfig):
    """The record's tile batch (None without images)."""
    if rec.get("cameras") is not None:
        return preprocess_cameras(rec["cameras"], pre, max_tiles=rec.get("max_tiles"))
    if rec.get("video") is not None:
        return preprocess_frames(list(rec["video"]), pre)
    imgs = images_of(rec)
    return preprocess_images(imgs, pre, max_tiles=rec.get("max_tiles")) if imgs else None


def render_turns(rec: dict, tpl: ChatTemplate, tiles_per_image: list[int], tokens_per_tile: int,
                 system: str | None = None) -> list[tuple[str, bool]]:
    """(text, is_answer) pieces of the conversation, images expanded: the runtime's own rule
    (mivl.edge.chunks.conversation), written out as text. A record is trusted data, so its markup
    (`<ref>`, `<box>` ...) is parsed when the pieces are tokenised, as InternVL's training does."""
    conv = rec["conversations"]
    turns = [(conv[k]["value"], conv[k + 1]["value"]) for k in range(0, len(conv), 2)]
    pieces = conversation(tpl, turns, len(tiles_per_image), system, video=rec.get("video") is not None)
    return [(segments_text(segs, tiles_per_image, tokens_per_tile), is_answer) for segs, is_answer in pieces]


def tokenize_pieces(tok, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Token ids of the joined pieces, labels that keep only the answer pieces, and each piece's
    (start, end) in the ids.

    Each boundary is tokenised as inference sees it: the ids of text[:boundary] are the prompt,
    and the answer is what follows. If joint tokenisation merges across a boundary, the answer is
    tokenised on its own and appended (what a model generating after that prompt must produce).
    """
    ids: list[int] = []
    labels: list[int] = []
    spans: list[tuple[int, int]] = []
    text = ""
    for piece, is_answer in pieces:
        text += piece
        full = tok.encode(text)
        new = full[len(ids):] if full[:len(ids)] == ids else tok.encode(piece, add_bos=False)
        spans.append((len(ids), len(ids) + len(new)))
        ids.extend(new)
        labels.extend(new if is_answer else [IGNORE] * len(new))
    return ids, labels, spans


def find_words(tok, ids: list[int], lo: int, hi: int, words) -> list[int]:
    """Positions in ids[lo:hi] of each word (as tokenised after a space; its last occurrence)."""
    out: list[int] = []
    for w in words:
        seq = tok.encode(" " + w, add_bos=False)
        for p in range(hi - len(seq), lo - 1, -1):
            if ids[p:p + len(seq)] == seq:
                out += range(p, p + len(seq))
                break
    return out


def focus_targets(rec: dict, tiles, tok, ids: list[int], pieces, spans) -> list[Focus]:
    """The `Focus` of each answer of rec that carries a focus."""
    from ...calib.labels import tile_owners

    answers = [k for k, (_, is_answer) in enumerate(pieces) if is_answer]
    out = []
    for turn, k in zip(rec["conversations"][1::2], answers):
        f = turn.get("focus")
        if f is None or tiles is None:
            continue
        start, end = spans[k]
        question = spans[k - 1]          # the user piece before the answer
        tokens, whole = np.zeros(0, dtype=np.int64), None   # words alone: nothing shows it
        if f.get("box") is not None:
            (w, h), grid = tiles.sizes[0], tiles.grids[0]
            x1, y1, x2, y2 = (v / 1000 for v in f["box"])
            owners = tile_owners([(x1 * w, y1 * h, x2 * w, y2 * h)], w, h, grid, tiles.pixels.shape[-1])
            tokens = np.flatnonzero(owners.reshape(-1) == 0)
            if grid.thumbnail or len(owners) == 1:   # the thumbnail or the only tile: the last one
                whole = tokens[tokens // owners.shape[1] == len(owners) - 1]
        out.append(Focus(list(range(start - 1, end - 2)), tokens,
                         find_words(tok, ids, question[0], question[1], f.get("words", [])), whole))
    return out


def encode_record(rec: dict, tok, tpl: ChatTemplate, pre: PreprocessConfig, tokens_per_tile: int,
                  max_length: int | None = None, system: str | None = None) -> Sample:
    check_record(rec)
    tiles = record_tiles(rec, pre)
    per_image = tiles.tiles_per_image if tiles is not None else []
    pieces = render_turns(rec, tpl, per_image, tokens_per_tile, system)
    ids, labels, spans = tokenize_pieces(tok, pieces)
    if max_length is not None and len(ids) > max_length:
        from ...edge.errors import InputError
        raise InputError(f"record {rec.get('id', '?')!r} is {len(ids)} tokens, more than max_length="
                         f"{max_length}; lower its max_tiles or raise max_length")
    cameras = tile_cameras(tiles.grids[0]) if rec.get("cameras") is not None else None
    return Sample(None if tiles is None else tiles.pixels, ids, labels, focus_targets(rec, tiles, tok, ids, pieces, spans),
                  cameras)
