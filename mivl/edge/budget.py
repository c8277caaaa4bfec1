"""Memory a bundle needs on a device, against the Jetson Orin modules.

Computed from the bundle alone: weights (the vision ONNX / TensorRT engine and the GGUF as stored),
the LLM's KV cache at the chosen context (K and V in f16, or f32 under f32 weights and in ONNX
Runtime: `mivl.runtimes.llm_llamacpp.kv_type_for`), the LLM's compute
buffer for one n_batch ubatch (attention scores without flash attention, MLP and logits of one
row), and the vision encoder's activations for the tile batch (one layer's attention scores, MLP
and hidden states for every tile, fp32 or fp16 as the engine runs). On Jetson, CPU and GPU share
one memory, so everything counts against the module's total minus what the OS keeps.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..runtimes.llm_llamacpp import kv_type_for
from . import args
from .bundle import vision_files
from .errors import BundleError

GiB = 1 << 30
MiB = 1 << 20
# (name, total memory, memory JetPack 6 with a desktop leaves free for applications; measured
# figures vary with the carrier board and services, so this is a planning number)
DEVICES = (("Orin Nano 8GB", 8 * GiB, 1.6 * GiB), ("Orin NX 16GB", 16 * GiB, 1.8 * GiB),
           ("AGX Orin 64GB", 64 * GiB, 2.2 * GiB))
RUNTIME_OVERHEAD = 350 * MiB   # Python, NumPy/OpenCV, ONNX Runtime and llama.cpp code and arenas


@dataclass
class LLMShape:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# ------------------------------------------------------------------ GGUF metadata (header only)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _read_value(f, vtype: int):
    if vtype in _SCALARS:
        fmt = "<" + _SCALARS[vtype]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if vtype == 8:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n).decode("utf-8", "replace")
    if vtype == 9:
        itype, n = struct.unpack("<IQ", f.read(12))
        if itype in _SCALARS and itype != 8:   # skip large numeric arrays without decoding them
            f.seek(n * struct.calcsize("<" + _SCALARS[itype]), 1)
            return n
        return [_read_value(f, itype) for _ in range(n)] if itype != 8 else [
            _read_value(f, 8) for _ in range(n)]
    raise BundleError(f"unknown GGUF value type {vtype}")


def gguf_metadata(path: Path) -> dict:
    """The key/value metadata of a GGUF file (arrays of numbers give their length)."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise BundleError(f"{path} is not a GGUF file")
        version, n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
        if version < 2:
            raise BundleError(f"{path}: GGUF version {version} is too old")
        meta = {}
        for _ in range(n_kv):
            (klen,) = struct.unpack("<Q", f.read(8))
            key = f.read(klen).decode("utf-8")
            (vtype,) = struct.unpack("<I", f.read(4))
            meta[key] = _read_value(f, vtype)
        return meta


def llm_shape(path: Path) -> LLMShape:
    m = gguf_metadata(path)
    arch = m["general.architecture"]
    g = lambda k: m[f"{arch}.{k}"]   # noqa: E731
    tokens = m.get("tokenizer.ggml.tokens")
    vocab = m.get(f"{arch}.vocab_size") or (len(tokens) if isinstance(tokens, list) else tokens)
    return LLMShape(int(g("block_count")), int(g("embedding_length")), int(g("attention.head_count")),
                    int(m.get(f"{arch}.attention.head_count_kv", g("attention.head_count"))),
                    int(g("feed_forward_length")), int(vocab))


# ------------------------------------------------------------------ the budget
def kv_cache_bytes(s: LLMShape, n_ctx: int, bytes_per: int = 2) -> int:
    return 2 * s.n_layer * n_ctx * s.n_head_kv * s.head_dim * bytes_per


def llm_compute_bytes(s: LLMShape, n_ctx: int, n_batch: int) -> int:
    scores = s.n_head * n_batch * n_ctx * 4
    mlp = 3 * n_batch * s.n_ff * 4
    hidden = 6 * n_batch * s.n_embd * 4
    return scores + mlp + hidden + s.n_vocab * 4


def vision_activation_bytes(vision: dict, tiles: int, bytes_per: int = 4) -> int:
    tokens = vision.get("vit_tokens", 1025)
    c, heads = vision.get("vit_hidden", 1024), vision.get("vit_heads", 16)
    ff = vision.get("vit_intermediate", 4 * c)
    per_tile = heads * tokens * tokens + tokens * (4 * c + ff)
    return tiles * per_tile * bytes_per


def budget(bundle, n_ctx: int | None = None, n_batch: int = 512, tiles: int | None = None) -> dict:
    """Memory needs of a bundle (bytes), and how they fit each Jetson Orin module."""
    b = bundle
    m = b.manifest
    v = m["vision"]
    n_ctx = args.optional_integer("n_ctx", n_ctx, 1, 1 << 24) or int(m["llm"]["n_ctx"])
    n_batch = args.integer("n_batch", n_batch, 1, 1 << 24)
    tiles = args.optional_integer("tiles", tiles, 1, 4096) or int(v["max_tiles"])
    onnx_llm = m["llm"].get("format", "gguf") == "onnx"
    shape = LLMShape(**m["llm"]["shape"]) if "shape" in m["llm"] else llm_shape(b.file(m["llm"]["file"]))
    engine = [f for f in m["files"] if f.endswith(".engine")]
    vision_file = engine[0] if engine else v["file"]
    weights_v = sum(b.file(f).stat().st_size for f in [vision_file, *vision_files(v)[1:]])
    weights_l = sum(b.file(f).stat().st_size for f in m["files"]
                    if f == m["llm"]["file"] or f == m["llm"]["file"] + ".data")
    act_bytes = 2 if (engine or v.get("precision") in ("fp16", "int8")) else 4
    # ONNX Runtime's cache is fp32 host arrays; llama.cpp's follows the weights, as the runtime opens it
    kv_type = "f32" if onnx_llm else kv_type_for(str(m["llm"].get("quant")))
    kv_bytes = 4 if kv_type == "f32" else 2
    parts = {
        "vision weights": weights_v,
        "LLM weights": weights_l,
        f"KV cache (n_ctx {n_ctx}, {kv_type})": kv_cache_bytes(shape, n_ctx, kv_bytes),
        f"LLM compute (n_batch {n_batch})": llm_compute_bytes(shape, n_ctx, n_batch),
        f"vision activations ({tiles} tiles)": vision_activation_bytes(v, tiles, act_bytes),
        "runtime": RUNTIME_OVERHEAD,
    }
    total = sum(parts.values())
    fits = [{"device": name, "total": mem, "available": mem - reserved, "fits": total <= mem - reserved,
             "headroom": mem - reserved - total} for name, mem, reserved in DEVICES]
    return {"n_ctx": n_ctx, "tiles": tiles, "parts": parts, "total": total, "devices": fits,
            "llm_shape": shape.__dict__}


def format_budget(r: dict) -> str:
    lines = ["memory budget (estimate; Jetson shares one memory between CPU and GPU)"]
    for name, n in r["parts"].items():
        lines.append(f"  {name:<32} {n / MiB:10.1f} MiB")
    lines.append(f"  {'total':<32} {r['total'] / MiB:10.1f} MiB")
    for d in r["devices"]:
        verdict = "fits" if d["fits"] else "does NOT fit"
        lines.append(f"  {d['device']:<14} {d['available'] / GiB:5.1f} GiB free for apps: {verdict} "
                     f"({d['headroom'] / MiB:+.0f} MiB)")
    return "\n".join(lines)
