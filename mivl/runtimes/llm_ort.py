"""The LLM on ONNX Runtime: a decoder graph with its KV cache as inputs and outputs.

The graph (written by `mivl.export.llm_onnx`) takes `input_ids` (1, T), `image_embeds` (1, T, D)
and `image_mask` (1, T) (where the mask is set, the row of image_embeds replaces the token's
embedding: this is how image features enter), plus `past_key_values.{i}.key|value`
(1, KV, P, d) per layer; it returns the last position's `logits` (1, V) and
`present.{i}.key|value` (1, KV, P + T, d). Positions are P.. (the past length), so the cache is
all the state there is: forgetting from position k is slicing it.

Tokenisation is the checkpoint's own tokenizer, shipped in the bundle (`mivl.edge.tokenizer`).
The class offers the same methods as the llama.cpp backend, so the engine drives either.
"""
from __future__ import annotations

import numpy as np

from ..errors import check_room
from ..errors import BundleError, InputError, MivlError
from .tokenizer import TextTokenizer
from .ort import choose_providers, ort_session

PAST = "past_key_values.{}.{}"
PRESENT = "present.{}.{}"


class OrtLLM:
    """One ONNX decoder, its tokenizer, and one sequence's KV cache (host arrays)."""

    def __init__(self, path: str, tokenizer_dir: str, n_ctx: int, n_batch: int = 512,
                 n_threads: int | None = None, device: str = "cpu", eog_ids=()):
        self.session = ort_session(path, choose_providers(device), n_threads, "LLM")
        self.tok = TextTokenizer(tokenizer_dir)
        inputs = {i.name: i for i in self.session.get_inputs()}
        for name in ("input_ids", "image_embeds", "image_mask", PAST.format(0, "key")):
            if name not in inputs:
                raise BundleError(f"{path} is not an mivl decoder graph: it has no input {name!r}")
        self.n_layers = sum(1 for n in inputs if n.startswith("past_key_values.") and n.endswith(".key"))
        _, kv, _, d = inputs[PAST.format(0, "key")].shape
        self.kv_shape = (1, int(kv), 0, int(d))
        self.n_embd = int(inputs["image_embeds"].shape[2])
        self.n_vocab = int(self.session.get_outputs()[0].shape[1])
        self.n_ctx, self.n_batch = int(n_ctx), int(n_batch)
        self.eog = {int(i) for i in eog_ids} | ({self.tok.eos_id} if self.tok.eos_id is not None else set())
        self.backend = f"onnxruntime ({self.session.get_providers()[0]})"
        self._out_names = [o.name for o in self.session.get_outputs()]
        self.reset()

    # ---- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.session = None
        self.cache = None

    def _check_open(self):
        if self.session is None:
            raise MivlError("the LLM has been closed")

    # ---- text -------------------------------------------------------------------------------
    # ---- the chunker's protocol (mivl.edge.chunks.Tokenizer) ----------------------------------------
    def encode_plain(self, text: str, first: bool) -> list[int]:
        return self.tok.encode_plain(text, first)

    def special_id(self, token: str) -> int | None:
        return self.tok.special_id(token)

    @property
    def bos_id(self) -> int | None:
        return self.tok.bos_id

    def piece(self, token: int, special: bool = False) -> bytes:
        return self.tok.piece(int(token), special)

    def is_eog(self, token: int) -> bool:
        return int(token) in self.eog

    # ---- decoding ---------------------------------------------------------------------------
    @property
    def n_past(self) -> int:
        return int(self.cache[0].shape[2])

    def reset(self, keep: int = 0) -> None:
        """Forget the KV cache from position `keep` on (0: everything)."""
        if keep <= 0 or getattr(self, "cache", None) is None:
            self.cache = [np.zeros(self.kv_shape, np.float32) for _ in range(2 * self.n_layers)]
        else:
            self.cache = [c[:, :, :keep] for c in self.cache]
        self._last = None

    def _room(self, n: int) -> None:
        check_room(self.n_past, n, self.n_ctx)

    def _run(self, ids: np.ndarray, embeds: np.ndarray, mask: np.ndarray) -> None:
        feed = {"input_ids": ids[None], "image_embeds": embeds[None], "image_mask": mask[None]}
        for i in range(self.n_layers):
            feed[PAST.format(i, "key")] = self.cache[2 * i]
            feed[PAST.format(i, "value")] = self.cache[2 * i + 1]
        try:
            out = self.session.run(self._out_names, feed)
        except Exception as e:
            raise MivlError(f"ONNX Runtime decoder step failed: {e}") from None
        self._last, self.cache = out[0][0], out[1:]

    def eval_tokens(self, ids: list[int], all_logits: bool = False) -> None:
        self._check_open()
        if all_logits:
            raise InputError("the ONNX decoder returns the last position's logits only")
        self._room(len(ids))
        for s in range(0, len(ids), self.n_batch):
            chunk = np.asarray(ids[s:s + self.n_batch], np.int64)
            self._run(chunk, np.zeros((len(chunk), self.n_embd), np.float32), np.zeros(len(chunk), bool))

    def eval_embeddings(self, embeds: np.ndarray, all_logits: bool = False) -> None:
        """Feed (n, n_embd) float32 embeddings at the next positions."""
        self._check_open()
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise InputError(f"image embeddings have shape {embeds.shape}; the LLM takes (n, {self.n_embd})")
        if all_logits:
            raise InputError("the ONNX decoder returns the last position's logits only")
        self._room(embeds.shape[0])
        for s in range(0, embeds.shape[0], self.n_batch):
            chunk = embeds[s:s + self.n_batch]
            self._run(np.zeros(len(chunk), np.int64), chunk, np.ones(len(chunk), bool))

    def logits(self, i: int = -1) -> np.ndarray:
        if self._last is None or i != -1:
            raise MivlError("no logits: evaluate a prompt first (only the last position's are kept)")
        return self._last.copy()
