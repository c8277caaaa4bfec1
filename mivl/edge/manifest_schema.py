"""The manifest's declared schema: every key the runtime reads, its type, range and finiteness.

`check_manifest(m)` refuses, naming the key, a manifest with a missing or unknown key, a value of
the wrong type (a float where an id belongs, a bool where a count belongs), a non-finite or
out-of-range number, or a file name that is not a plain relative name inside the bundle. It runs
before anything native reads the bundle.
"""
from __future__ import annotations

import math
import re
from pathlib import PurePosixPath

from .errors import BundleError

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Check:
    optional = False

    def __call__(self, key: str, v) -> None:
        raise NotImplementedError


class Opt(Check):
    """An optional key (may be absent); `nullable` also admits null."""

    def __init__(self, inner, nullable: bool = False):
        self.inner, self.optional, self.nullable = inner, True, nullable

    def __call__(self, key, v):
        if v is None and self.nullable:
            return
        _check(key, v, self.inner)


class Int(Check):
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def __call__(self, key, v):
        if isinstance(v, bool) or not isinstance(v, int) or not self.lo <= v <= self.hi:
            _fail(key, v, f"an integer in {self.lo}..{self.hi}")


class Num(Check):
    def __init__(self, lo: float, hi: float, lo_open: bool = False):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def __call__(self, key, v):
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v > self.hi
                or v < self.lo or (self.lo_open and v == self.lo)):
            _fail(key, v, f"a finite number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]")


class Bool(Check):
    def __call__(self, key, v):
        if not isinstance(v, bool):
            _fail(key, v, "true or false")


class Str(Check):
    def __init__(self, max_len: int = 100_000, choices: tuple[str, ...] | None = None):
        self.max_len, self.choices = max_len, choices

    def __call__(self, key, v):
        if not isinstance(v, str) or len(v) > self.max_len:
            _fail(key, v, f"a string of at most {self.max_len} characters")
        if self.choices is not None and v not in self.choices:
            _fail(key, v, f"one of {', '.join(self.choices)}")


class Hex64(Check):
    def __call__(self, key, v):
        if not isinstance(v, str) or not HEX64.match(v):
            _fail(key, v, "a sha256 as 64 lowercase hex digits")


class FileName(Check):
    """A relative path inside the bundle: no absolute path, no '..', no backslash or NUL."""

    def __call__(self, key, v):
        if not isinstance(v, str) or not v or "\\" in v or "\x00" in v or len(v) > 255:
            _fail(key, v, "a plain file name inside the bundle")
        p = PurePosixPath(v)
        if p.is_absolute() or ".." in p.parts or v.startswith("~") or p.parts[0] in ("", "."):
            _fail(key, v, "a plain file name inside the bundle (no absolute path, no '..')")


class ListOf(Check):
    def __init__(self, item: Check, min_len: int = 0, max_len: int = 1_000_000):
        self.item, self.min_len, self.max_len = item, min_len, max_len

    def __call__(self, key, v):
        if not isinstance(v, list) or not self.min_len <= len(v) <= self.max_len:
            _fail(key, v, f"a list of {self.min_len}..{self.max_len} items")
        for i, x in enumerate(v):
            self.item(f"{key}[{i}]", x)


class MapOf(Check):
    def __init__(self, key_check: Check, value: Check, max_len: int = 100_000):
        self.key_check, self.value, self.max_len = key_check, value, max_len

    def __call__(self, key, v):
        if not isinstance(v, dict) or len(v) > self.max_len:
            _fail(key, v, "an object")
        for k, x in v.items():
            self.key_check(f"{key} key", k)
            self.value(f"{key}[{k!r}]", x)


class Shape(Check):
    """A tensor shape: integers and at most one named (dynamic) axis."""

    def __call__(self, key, v):
        if not isinstance(v, list) or not 1 <= len(v) <= 8:
            _fail(key, v, "a list of 1..8 dimensions")
        for i, d in enumerate(v):
            if not (isinstance(d, str) and len(d) <= 64) and not (isinstance(d, int) and not isinstance(d, bool)
                                                                  and 1 <= d <= 1 << 20):
                _fail(f"{key}[{i}]", d, "a positive integer or an axis name")


def _fail(key: str, v, expected: str):
    shown = repr(v)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise BundleError(f"manifest.json: {key} is {shown}; expected {expected}. The bundle is damaged or was "
                      "edited; re-export it")


def _check(key: str, v, spec) -> None:
    if isinstance(spec, dict):
        if not isinstance(v, dict):
            _fail(key, v, "an object")
        for k, sub in spec.items():
            if k not in v:
                if not getattr(sub, "optional", False):
                    raise BundleError(f"manifest.json: {key}.{k} is missing; the bundle is damaged or was edited")
                continue
            _check(f"{key}.{k}" if key else k, v[k], sub)
        unknown = sorted(set(v) - set(spec))
        if unknown:
            raise BundleError(f"manifest.json: unknown key {key + '.' if key else ''}{unknown[0]}; the bundle "
                              "was edited or comes from a newer SDK")
        return
    spec(key, v)


TOKEN = Int(0, 4_000_000)
TENSOR = {"name": Str(256), "shape": Shape(), "dtype": Str(16, ("float32", "float16"))}
DIM = Int(1, 1 << 18)

SCHEMA = {
    "schema_version": Int(1, 1),
    "sdk_version": Str(64),
    "preset": Str(16, ("fp32", "fp16", "int8", "int4")),
    "source": {"checkpoint": Str(1024), "weights_sha256": Hex64(), "llm_family": Str(32)},
    "preprocessing": {"image_size": Int(14, 4096), "min_tiles": Int(1, 64), "max_tiles": Int(1, 64),
                      "use_thumbnail": Bool(), "dynamic": Bool(), "mean": ListOf(Num(0.0, 1.0), 3, 3),
                      "std": ListOf(Num(1e-3, 10.0), 3, 3), "ps_version": Str(4, ("v1", "v2"))},
    "prompt": {"template": Str(64), "system": Str(100_000), "tokens_per_tile": Int(1, 4096),
               "img_context": Str(64), "img_context_id": TOKEN, "special_tokens": MapOf(Str(64), TOKEN, 64),
               "stop": ListOf(Str(64), 1, 16), "stop_ids": ListOf(TOKEN, 1, 16), "add_bos": Bool(),
               "bos_id": Opt(TOKEN, nullable=True)},
    "vision": {"file": FileName(), "precision": Str(16, ("fp32", "fp16", "int8")), "input": TENSOR,
               "output": TENSOR, "max_tiles": Int(1, 256), "output_dim": DIM, "vit_hidden": DIM,
               "vit_heads": Int(1, 1024), "vit_intermediate": DIM, "vit_layers": Int(1, 512),
               "vit_tokens": Int(1, 1 << 20),
               "split": Opt({"vit_output": TENSOR, "vit_file": FileName(), "projector_file": FileName(),
                             "projector_input": Str(256), "norm_file": FileName(), "norm_eps": Num(0.0, 1.0, True),
                             "ps_version": Str(4, ("v1", "v2"))})},
    "llm": {"file": FileName(), "quant": Str(16), "format": Str(8, ("gguf", "onnx")), "n_embd": DIM,
            "n_ctx": Int(64, 1 << 20), "arch": Str(32), "vocab_size": Int(1, 4_000_000),
            "shape": {"n_layer": Int(1, 512), "n_embd": DIM, "n_head": Int(1, 1024), "n_head_kv": Int(1, 1024),
                      "n_ff": DIM, "n_vocab": Int(1, 4_000_000)},
            "tokenizer": Opt(FileName())},
    "files": MapOf(FileName(), Hex64(), 10_000),
}


def check_manifest(manifest) -> None:
    """Raise BundleError naming the first key that breaks the schema."""
    from .prompt import TEMPLATES

    _check("", manifest, SCHEMA)
    p, v = manifest["prompt"], manifest["vision"]
    if p["template"] not in TEMPLATES:
        _fail("prompt.template", p["template"], f"one of {', '.join(TEMPLATES)}")
    if p["img_context_id"] != p["special_tokens"].get(p["img_context"]):
        raise BundleError("manifest.json: prompt.img_context_id disagrees with prompt.special_tokens; "
                          "the bundle was edited")
    if v["max_tiles"] < manifest["preprocessing"]["max_tiles"]:
        raise BundleError("manifest.json: vision.max_tiles is below preprocessing.max_tiles; the bundle was edited")
    if manifest["llm"]["n_embd"] != manifest["llm"]["shape"]["n_embd"]:
        raise BundleError("manifest.json: llm.n_embd disagrees with llm.shape.n_embd; the bundle was edited")
