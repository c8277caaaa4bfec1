"""A GGUF's header read with gguf-py and checked before llama.cpp loads it: llama.cpp asserts (the
process aborts) on headers it cannot use, so every value it builds the model from is checked here
against sane ranges and against what the bundle's manifest says, and a deviation is refused with
the field named."""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import BundleError

# metadata key (after the "<arch>." prefix) -> manifest llm.shape key it must equal
SHAPE_KEYS = {"block_count": "n_layer", "embedding_length": "n_embd", "attention.head_count": "n_head",
              "attention.head_count_kv": "n_head_kv", "feed_forward_length": "n_ff"}
POSITIVE_FLOATS = ("attention.layer_norm_rms_epsilon", "rope.freq_base")


MAX_KV = 100_000
MAX_STRING = 1 << 24


def read_header(path: Path) -> tuple[dict, int]:
    """(metadata, tensor count) of a GGUF, arrays of more than 16 items kept as their length only.
    Bounded: a lying count or length is an error, never a huge allocation (value types: gguf-py's)."""
    import struct

    from gguf import GGUFValueType as T

    scalar = {T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I", T.INT32: "<i",
              T.FLOAT32: "<f", T.BOOL: "<?", T.UINT64: "<Q", T.INT64: "<q", T.FLOAT64: "<d"}
    size = path.stat().st_size
    with open(path, "rb") as f:
        def read(n: int) -> bytes:
            b = f.read(n)
            if len(b) != n:
                raise ValueError("the file ends inside its header")
            return b

        def unpack(fmt: str):
            return struct.unpack(fmt, read(struct.calcsize(fmt)))[0]

        def string() -> str:
            n = unpack("<Q")
            if n > min(MAX_STRING, size):
                raise ValueError(f"a string of {n} bytes")
            return read(n).decode("utf-8", "replace")

        def value(t: int):
            t = T(t)
            if t in scalar:
                return unpack(scalar[t])
            if t == T.STRING:
                return string()
            if t == T.ARRAY:
                et, n = T(unpack("<I")), unpack("<Q")
                if n > size:
                    raise ValueError(f"an array of {n} items")
                if et in scalar and n > 16:
                    f.seek(struct.calcsize(scalar[et]) * n, 1)
                    return ("array", n)
                items = [value(et) for _ in range(n)]
                return items if n <= 16 else ("array", n)
            raise ValueError(f"value type {t}")

        if read(4) != b"GGUF":
            raise ValueError("no GGUF magic")
        version, n_tensors, n_kv = unpack("<I"), unpack("<Q"), unpack("<Q")
        if version not in (2, 3) or n_kv > MAX_KV or n_tensors > 1 << 20:
            raise ValueError(f"version {version}, {n_tensors} tensors, {n_kv} keys")
        fields = {}
        for _ in range(n_kv):
            key = string()
            fields[key] = value(unpack("<I"))
    return fields, n_tensors


def check_gguf(path: Path, llm: dict) -> None:
    """Refuse a GGUF whose header is malformed or disagrees with the manifest's `llm` section."""
    try:
        fields, n_tensors = read_header(path)
    except Exception as e:  # struct.error, ValueError, UnicodeError ... on a broken file
        raise BundleError(f"{path.name} is not a readable GGUF ({type(e).__name__}: {str(e)[:200]})") from None
    tokens = fields.get("tokenizer.ggml.tokens")
    vocab = tokens[1] if isinstance(tokens, tuple) else len(tokens or [])
    arch = fields.get("general.architecture")
    if not isinstance(arch, str) or arch != llm["arch"]:
        raise BundleError(f"{path.name}: general.architecture is {arch!r} but the manifest says {llm['arch']!r}")
    shape = llm["shape"]
    for key, mkey in SHAPE_KEYS.items():
        v = fields.get(f"{arch}.{key}")
        if isinstance(v, bool) or not isinstance(v, int) or v != shape[mkey]:
            raise BundleError(f"{path.name}: {arch}.{key} is {v!r} but the manifest says {shape[mkey]} "
                              f"(llm.shape.{mkey}); the GGUF was altered or comes from another model")
    ctx = fields.get(f"{arch}.context_length")
    if isinstance(ctx, bool) or not isinstance(ctx, int) or not 64 <= ctx <= 1 << 24:
        raise BundleError(f"{path.name}: {arch}.context_length is {ctx!r}; expected an integer in 64..{1 << 24}")
    for key in POSITIVE_FLOATS:
        v = fields.get(f"{arch}.{key}")
        if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
            raise BundleError(f"{path.name}: {arch}.{key} is {v!r}; expected a finite positive number")
    rope = fields.get(f"{arch}.rope.dimension_count")
    head_dim = shape["n_embd"] // shape["n_head"]
    if rope is not None and rope != head_dim:
        raise BundleError(f"{path.name}: {arch}.rope.dimension_count is {rope!r}; the model's head size is "
                          f"{head_dim} (n_embd / n_head)")
    if vocab != shape["n_vocab"] and vocab != llm["vocab_size"]:
        raise BundleError(f"{path.name}: the tokenizer has {vocab} tokens but the manifest says {shape['n_vocab']}")
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eot_token_id"):
        v = fields.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab):
            raise BundleError(f"{path.name}: {key} is {v!r}; expected a token id below {vocab}")
    if n_tensors < 3:
        raise BundleError(f"{path.name} holds {n_tensors} tensors: not a whole model")
