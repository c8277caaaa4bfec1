"""What the engine needs of a backend. Every vision backend (ONNX Runtime, TensorRT, split ViT +
projector) and every LLM backend (llama.cpp, ONNX Runtime) implements one of these in full; the
engine calls nothing else and probes for nothing."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class VisionBackend(Protocol):
    backend: str                  # what runs it, for Session.backends
    max_tiles: int                # tiles per run (larger batches run in chunks)
    providers: list[str]          # ONNX Runtime providers for graphs that run beside it

    @property
    def on_gpu(self) -> bool: ...

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 tiles -> (N, T, D) float32 image embeddings."""

    def run_device(self, tiles, keep_on_device: bool = False):
        """The same for tiles already on the GPU (a CuPy array)."""

    def use_kernels(self, kernels) -> None:
        """Hand over the fused CUDA kernels (only a split encoder has work for them)."""

    def close(self) -> None:
        """Free the native resources; idempotent."""


class LLMBackend(Protocol):
    n_ctx: int
    n_embd: int
    n_vocab: int
    n_batch: int
    n_past: int

    # the chunker's tokenizer (mivl.edge.chunks.Tokenizer)
    def encode_plain(self, text: str, first: bool) -> list[int]: ...
    def special_id(self, token: str) -> int | None: ...
    @property
    def bos_id(self) -> int | None: ...

    def piece(self, token: int, special: bool = False) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...

    def reset(self, keep: int = 0) -> None:
        """Forget the KV cache from position `keep` on."""

    def eval_tokens(self, ids: list[int], all_logits: bool = False) -> None: ...
    def eval_embeddings(self, embeds: np.ndarray, all_logits: bool = False) -> None: ...
    def logits(self, i: int = -1) -> np.ndarray: ...
    def close(self) -> None: ...
