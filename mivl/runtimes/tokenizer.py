"""The checkpoint's tokenizer, loaded from its files without running any of its Python code.

Three layouts are read: tokenizer.json (Hugging Face `tokenizers`), vocab.json + merges.txt
(byte-level BPE, Qwen2), and tokenizer.model (SentencePiece, InternLM2 and Phi-3). Added and
special tokens come from tokenizer_config.json's added_tokens_decoder (or added_tokens.json);
they are split out of the text first, so `<IMG_CONTEXT>` is always one id.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from ..errors import CheckpointError

# What a checkpoint's tokenizer is made of (copied with it by the trainer and into ONNX-LLM bundles).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "generation_config.json")

# Qwen2's pre-tokenisation pattern (GPT-4 style, single digits).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _added_tokens(path: Path) -> dict[str, int]:
    tokens: dict[str, int] = {}
    cfg_file = path / "tokenizer_config.json"
    if cfg_file.is_file():
        for i, tok in json.loads(cfg_file.read_text()).get("added_tokens_decoder", {}).items():
            tokens[tok["content"]] = int(i)
    extra = path / "added_tokens.json"
    if extra.is_file():
        tokens.update({k: int(v) for k, v in json.loads(extra.read_text()).items()})
    return tokens


def _tokenizer_config(path: Path) -> dict:
    f = path / "tokenizer_config.json"
    return json.loads(f.read_text()) if f.is_file() else {}


class TextTokenizer:
    """encode / decode with special tokens parsed, ids read from the checkpoint."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = _tokenizer_config(self.path)
        self.added = _added_tokens(self.path)
        self._sp = None
        self._hf = None
        if (self.path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer
            self._hf = Tokenizer.from_file(str(self.path / "tokenizer.json"))
            self.added.update({t.content: i for i, t in self._hf.get_added_tokens_decoder().items()})
            self.kind = "bpe"
        elif (self.path / "vocab.json").is_file() and (self.path / "merges.txt").is_file():
            self._hf = _bpe_from_vocab(self.path, self.added)
            self.kind = "bpe"
        elif (self.path / "tokenizer.model").is_file():
            import sentencepiece as spm
            self._sp = spm.SentencePieceProcessor(model_file=str(self.path / "tokenizer.model"))
            self.kind = "spm"
        else:
            raise CheckpointError(f"{self.path} has no tokenizer (tokenizer.json, vocab.json + "
                                  "merges.txt, or tokenizer.model)")
        self.id_to_added = {i: t for t, i in self.added.items()}
        longest_first = sorted(self.added, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if self.added else None
        # encode() matches a run of one added token at once (an image's hundreds of <IMG_CONTEXT>):
        # the same split as one at a time when no added token begins another (in sorted order a
        # token's extensions follow it directly), else one at a time
        by_text = sorted(self.added)
        self._runs = (re.compile("(" + "|".join(f"(?:{re.escape(t)})+" for t in longest_first) + ")")
                      if self.added and not any(b.startswith(a) for a, b in zip(by_text, by_text[1:]))
                      else self._split)
        self.bos_token = _content(self.config.get("bos_token"))
        self.eos_token = _content(self.config.get("eos_token"))
        self.add_bos = bool(self.config.get("add_bos_token", self.kind == "spm"
                                            and self.bos_token is not None))

    @property
    def vocab_size(self) -> int:
        base = self._sp.get_piece_size() if self._sp else self._hf.get_vocab_size(with_added_tokens=False)
        return max([base - 1, *self.added.values()]) + 1

    def token_to_id(self, token: str) -> int:
        if token in self.added:
            return self.added[token]
        i = self._sp.piece_to_id(token) if self._sp else self._hf.token_to_id(token)
        if i is None or (self._sp and i == self._sp.unk_id() and token != self._sp.id_to_piece(i)):
            raise CheckpointError(f"token {token!r} is not in the tokenizer of {self.path}")
        return int(i)

    def id_to_token(self, i: int) -> str:
        if i in self.id_to_added:
            return self.id_to_added[i]
        return self._sp.id_to_piece(i) if self._sp else self._hf.id_to_token(i)

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.bos_token) if self.bos_token else None

    @property
    def eos_id(self) -> int | None:
        return self.token_to_id(self.eos_token) if self.eos_token else None

    @property
    def legacy(self) -> bool:
        """SentencePiece chunks after a special token get the dummy-prefix space (HF 'legacy')."""
        return bool(self.config.get("legacy", True))

    def _encode_text(self, text: str, first: bool) -> list[int]:
        if not text:
            return []
        if self._hf:
            return list(self._hf.encode(text, add_special_tokens=False).ids)
        if first or self.legacy:
            return list(self._sp.encode(text))
        # Non-legacy: no dummy-prefix space after a special token. Encode behind a fixed
        # marker and drop the marker's pieces (the marker never merges with the text).
        marker = self._sp.encode("<unk>")
        return list(self._sp.encode("<unk>" + text)[len(marker):])

    # ---- the chunker's protocol (mivl.edge.chunks.Tokenizer) --------------------------------------
    def encode_plain(self, text: str, first: bool) -> list[int]:
        """Ids of text with no special-token parsing: `<|im_end|>` in it is those characters."""
        if not text:
            return []
        if self._hf:
            return list(self._plain_hf.encode(text, add_special_tokens=False).ids)
        ids = self._encode_text(text, first)
        if self._split is None or not any(i in self.id_to_added for i in ids):
            return ids
        # SentencePiece matches its user-defined symbols (InternLM2's <|im_end|> ...) in any text:
        # encode such an occurrence as its first character and the rest, which match nothing.
        out: list[int] = []
        for k, part in enumerate(self._split.split(text)):
            pieces = [part[:1], part[1:]] if part in self.added else [part]
            for piece in pieces:
                out.extend(self._encode_text(piece, first and not out) if piece else [])
        return out

    def special_id(self, token: str) -> int | None:
        return self.added.get(token)

    @property
    def _plain_hf(self):
        """The HF tokenizer without its added-token matching (built once)."""
        if getattr(self, "_hf_plain", None) is None:
            from tokenizers import Tokenizer

            spec = json.loads(self._hf.to_str())
            spec["added_tokens"] = []
            self._hf_plain = Tokenizer.from_str(json.dumps(spec))
        return self._hf_plain

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = [self.bos_id] if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None else []
        parts = self._runs.split(text) if self._runs else [text]
        for i, part in enumerate(parts):
            if i % 2:    # a run of one added token: _split matches that token at its start
                token = self._split.match(part).group()
                ids.extend([self.added[token]] * (len(part) // len(token)))
            else:
                ids.extend(self._encode_text(part, first=(i == 0)))
        return ids

    def piece(self, i: int, special: bool = False) -> bytes:
        """The bytes token i adds to the text, as llama.cpp's token_to_piece gives them: added
        (special) tokens only when `special`, byte tokens as their byte, byte-level BPE symbols
        mapped back to bytes, SentencePiece's word marker as a space."""
        control = (self._sp is not None and i < self._sp.get_piece_size()
                   and (self._sp.is_control(i) or self._sp.is_unknown(i)))
        if i in self.id_to_added or control:
            return self.id_to_token(i).encode("utf-8") if special else b""
        t = self.id_to_token(i)
        if t is None:
            return b""
        m = _BYTE_TOKEN.fullmatch(t)
        if m:
            return bytes([int(m.group(1), 16)])
        if self._byte_level:
            dec = _byte_decoder()
            return bytes(dec[c] for c in t if c in dec)
        return t.replace("\u2581", " ").encode("utf-8")

    @property
    def _byte_level(self) -> bool:
        return self._hf is not None and type(self._hf.decoder).__name__ == "ByteLevel"

    def decode(self, ids: list[int], skip_special: bool = False, keep: tuple[str, ...] = ()) -> str:
        """Text of ids; with skip_special, added tokens are dropped except those in `keep`."""
        out, run = [], []
        for i in ids:
            if i in self.id_to_added:
                out.append(self._decode_run(run))
                run = []
                if not skip_special or self.id_to_added[i] in keep:
                    out.append(self.id_to_added[i])
            else:
                run.append(int(i))
        out.append(self._decode_run(run))
        return "".join(out)

    def _decode_run(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self._sp.decode(ids) if self._sp else self._hf.decode(ids, skip_special_tokens=False)


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable stand-in character -> byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _content(tok) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def _bpe_from_vocab(path: Path, added: dict[str, int]):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split(" ", 1)) for line in
              (path / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]
    tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    for content, _ in sorted(added.items(), key=lambda kv: kv[1]):
        tok.add_special_tokens([AddedToken(content, special=True, normalized=False)])
    return tok


def load_tokenizer(path: str | Path) -> TextTokenizer:
    return TextTokenizer(Path(path))
