"""llama.cpp through llama-cpp-python's raw bindings: one object owns one model and one context.

Image features enter as embeddings through llama_batch's `embd` field, interleaved with the
prompt's text tokens in order, in chunks of n_batch. Quantised models are loaded with llama.cpp's
extra CPU buffer types off (`use_extra_bufts = False`): the repacked AMX path crashes on some
Xeons, and the flag costs nothing on CPUs without it.
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from ..errors import check_room
from ..errors import BundleError, InputError, MivlError

_init_lock = threading.Lock()
_ATTR_CONTROL = 1 << 3          # LLAMA_TOKEN_ATTR_CONTROL
_backend_ready = False


def _llama():
    import llama_cpp

    global _backend_ready
    with _init_lock:
        if not _backend_ready:
            llama_cpp.llama_backend_init()
            if not os.environ.get("MIVL_LLAMA_LOG"):
                _silence(llama_cpp)
            _backend_ready = True
    return llama_cpp


_LOG_CB = None


def _silence(llama_cpp) -> None:
    global _LOG_CB

    @llama_cpp.llama_log_callback
    def quiet(level, text, user_data):  # noqa: ARG001 - signature fixed by llama.cpp
        return None

    _LOG_CB = quiet  # keep a reference: llama.cpp calls it for the process lifetime
    llama_cpp.llama_log_set(_LOG_CB, ctypes.c_void_p(0))


KV_TYPES = {"f32": 0, "f16": 1}    # ggml_type of the KV cache: GGML_TYPE_F32, GGML_TYPE_F16


def kv_type_for(quant: str) -> str:
    """The KV cache's type for LLM weights of `quant`: f32 weights keep f32 keys and values (the
    fp32 preset is the reference-grade one: llama.cpp's default f16 cache alone moves the logits
    by up to ~1e-3 of their range), every other quantisation llama.cpp's f16."""
    return "f32" if quant == "f32" else "f16"


class LlamaCppLLM:
    """A GGUF model and one decoding context (sequence 0)."""

    def __init__(self, path: str, n_ctx: int = 4096, n_batch: int = 512, n_threads: int | None = None,
                 n_gpu_layers: int = 0, flash_attn: bool = False, embeddings_only_logits: bool = False,
                 n_ubatch: int = 256, kv_type: str = "f16"):
        if kv_type not in KV_TYPES:
            raise InputError(f"kv_type must be one of {', '.join(KV_TYPES)}; got {kv_type!r}")
        ll = self._ll = _llama()
        if not os.path.isfile(path):
            raise BundleError(f"GGUF file not found: {path}")
        mp = ll.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers
        mp.use_extra_bufts = False
        self.model = ll.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise BundleError(f"llama.cpp could not load {path} (corrupt or unsupported GGUF)")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_embd = ll.llama_model_n_embd(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        trained = int(ll.llama_model_n_ctx_train(self.model))
        if trained > 0 and n_ctx > trained:
            ll.llama_model_free(self.model)
            self.model = None
            raise InputError(f"n_ctx must be at most {trained}, what the model was trained for; got {n_ctx}")
        n_batch = min(n_batch, n_ctx)
        cp = ll.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        # llama.cpp computes a batch in micro-batches of n_ubatch; on a 2-core AVX-512 CPU 256 gave
        # 122 prompt tokens/s against 96 at 512 (llama-bench pp3362, 1B q8_0; BENCHMARKS.md)
        cp.n_ubatch = min(n_ubatch, n_batch)
        threads = n_threads or max(1, os.cpu_count() or 1)
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.flash_attn_type = 1 if flash_attn else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED / _DISABLED
        cp.type_k = cp.type_v = KV_TYPES[kv_type]
        self.ctx = ll.llama_init_from_model(self.model, cp)
        if not self.ctx:
            ll.llama_model_free(self.model)
            self.model = None
            raise MivlError(f"llama.cpp could not create a context of {n_ctx} tokens (out of memory?)")
        self.n_ctx = ll.llama_n_ctx(self.ctx)
        self.n_batch = n_batch
        self.flash_attn, self.kv_type = flash_attn, kv_type
        self._tok_batch = ll.llama_batch_init(n_batch, 0, 1)
        self._emb_batch = ll.llama_batch_init(n_batch, self.n_embd, 1)
        self.n_past = 0
        self._specials: dict[str, int | None] = {}

    # ---- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        ll = getattr(self, "_ll", None)
        if ll is None:
            return
        if getattr(self, "_tok_batch", None) is not None:
            ll.llama_batch_free(self._tok_batch)
            ll.llama_batch_free(self._emb_batch)
            self._tok_batch = self._emb_batch = None
        if getattr(self, "ctx", None):
            ll.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            ll.llama_model_free(self.model)
            self.model = None
        self._ll = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _check_open(self):
        if self._ll is None:
            raise MivlError("the LLM has been closed")

    # ---- text -------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = self._ll.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def tokenize(self, text: str, add_bos: bool, parse_special: bool = True) -> list[int]:
        self._check_open()
        data = text.encode("utf-8")
        cap = len(data) + 16
        out = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self.vocab, data, len(data), out, cap, add_bos, parse_special)
        if n < 0:
            cap = -n
            out = (self._ll.llama_token * cap)()
            n = self._ll.llama_tokenize(self.vocab, data, len(data), out, cap, add_bos, parse_special)
        return list(out[:n])

    # ---- the chunker's protocol (mivl.edge.chunks.Tokenizer) ----------------------------------------
    def encode_plain(self, text: str, first: bool) -> list[int]:  # noqa: ARG002 - llama.cpp needs no hint
        """Ids of text with no special-token parsing (control tokens in it stay characters)."""
        return self.tokenize(text, add_bos=False, parse_special=False) if text else []

    def special_id(self, token: str) -> int | None:
        if token not in self._specials:
            ids = self.tokenize(token, add_bos=False, parse_special=True)
            ok = len(ids) == 1 and bool(self._ll.llama_vocab_get_attr(self.vocab, ids[0]) & _ATTR_CONTROL)
            self._specials[token] = ids[0] if ok else None
        return self._specials[token]

    @property
    def bos_id(self) -> int | None:
        b = self._ll.llama_vocab_bos(self.vocab)
        return None if b < 0 else int(b)

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self.vocab, token))

    # ---- decoding ---------------------------------------------------------------------------
    def reset(self, keep: int = 0) -> None:
        """Forget the KV cache from position `keep` on (0: everything)."""
        mem = self._ll.llama_get_memory(self.ctx)
        if keep <= 0:
            self._ll.llama_memory_clear(mem, True)
        else:
            self._ll.llama_memory_seq_rm(mem, 0, keep, -1)
        self.n_past = max(0, min(keep, self.n_past))

    def _room(self, n: int) -> None:
        check_room(self.n_past, n, self.n_ctx)

    def _decode(self, batch, n: int) -> None:
        batch.n_tokens = n
        rc = self._ll.llama_decode(self.ctx, batch)
        if rc != 0:
            raise MivlError(f"llama_decode failed with status {rc}")

    def eval_tokens(self, ids: list[int], all_logits: bool = False) -> None:
        self._check_open()
        self._room(len(ids))
        b = self._tok_batch
        for start in range(0, len(ids), self.n_batch):
            chunk = ids[start:start + self.n_batch]
            last = start + len(chunk) == len(ids)
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = self.n_past + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = 1 if (all_logits or (last and i == len(chunk) - 1)) else 0
            self._decode(b, len(chunk))
            self.n_past += len(chunk)

    def eval_embeddings(self, embeds: np.ndarray, all_logits: bool = False) -> None:
        """Feed (n, n_embd) float32 embeddings at the next positions."""
        self._check_open()
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise InputError(f"image embeddings have shape {embeds.shape}; the LLM takes "
                             f"(n, {self.n_embd})")
        self._room(embeds.shape[0])
        b = self._emb_batch
        dst = ctypes.cast(b.embd, ctypes.POINTER(ctypes.c_float))
        for start in range(0, embeds.shape[0], self.n_batch):
            chunk = embeds[start:start + self.n_batch]
            n = chunk.shape[0]
            ctypes.memmove(dst, chunk.ctypes.data, chunk.nbytes)
            last = start + n == embeds.shape[0]
            for i in range(n):
                b.pos[i] = self.n_past + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = 1 if (all_logits or (last and i == n - 1)) else 0
            self._decode(b, n)
            self.n_past += n

    def logits(self, i: int = -1) -> np.ndarray:
        ptr = self._ll.llama_get_logits_ith(self.ctx, i)
        if not ptr:
            raise MivlError(f"no logits at batch index {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
