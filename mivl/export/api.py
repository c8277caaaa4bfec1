"""`export()`: a checkpoint to a validated bundle. Its keyword arguments are mivl-export's flags.

  export("ckpt/", "bundle/", precision="int8")   ==   mivl-export ckpt/ -o bundle/ --int8
"""
from __future__ import annotations

import ctypes
import gc
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..edge.bundle import SCHEMA_VERSION
from ..edge import args
from ..edge.errors import InputError
from ..edge.prompt import IMG_CONTEXT, INTERNVL_SPECIAL_TOKENS
from ..runtimes.attention_graph import fuse_file as fuse_attention
from .bundle_writer import finish, staging
from .quantize import KEEP_FLOAT
from .llm_export import QUANT_TYPES, check_llm, reference_cases, write_llm
from .quantize import METHODS, quantize_vision_isolated
from .reference import Reference
from .vision_check import check_vision, reference_features, require, run_split
from .vision_onnx import VIT_FILES, export_projector, export_vision, export_vit, io_spec, split_spec

# precision preset -> (vision precision, LLM GGUF type)
PRESETS = {"fp32": ("fp32", "f32"), "fp16": ("fp16", "f16"), "int8": ("int8", "q8_0"),
           "int4": ("int8", "q4_k_m")}
VISION_FILES = {"fp32": "vision.onnx", "fp16": "vision.fp16.onnx", "int8": "vision.int8.onnx"}


@dataclass
class ExportResult:
    path: Path
    manifest: dict
    report: dict
    seconds: float
    sizes: dict = field(default_factory=dict)


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _progress(quiet: bool, what: str):
    tty = sys.stderr.isatty()

    def show(i: int, n: int) -> None:
        if not quiet and (tty or i >= n):
            bar = "#" * int(30 * i / max(n, 1))
            print(f"\r  {what} [{bar:<30}] {i}/{n}", end="\n" if i >= n else "", file=sys.stderr, flush=True)
    return show


def validation_tiles(ref: Reference, n_images: int, seed: int) -> tuple[np.ndarray, list]:
    """Held-out tiles (synthetic scenes with seeds apart from calibration's) for validation: a
    tiled image with its thumbnail, single tiles, and two tiles of a six-camera canvas (its
    thumbnail of six labelled cameras and a grid tile)."""
    from ..calib.synthetic import calibration_scenes, scene_images

    images = scene_images(n_images, seed=seed + 100_000, width=800, height=450)
    tiles = ref.tiles(images=images[:1], max_tiles=4).pixels
    extra = [ref.tiles(images=[im], max_tiles=1).pixels for im in images[1:]]
    canvas = ref.tiles(images=calibration_scenes(1, seed=seed + 100_000, width=800, height=450),
                       max_tiles=12)
    extra.append(canvas.pixels[spread_tiles(canvas.grids[0], 2)])
    return np.concatenate([tiles, *extra]), images


def calibration_tiles(ref: Reference, calib, calib_size: int, seed: int, quiet: bool) -> np.ndarray:
    from ..calib.readers import calibration_images

    if calib is None or str(calib) == "synthetic":
        _say(quiet, "note: calibrating INT8 on synthetic driving scenes; images from your own cameras "
             "calibrate it better (--calib PATH)")
    images = calibration_images(calib, calib_size, seed)
    budget = max(calib_size, 1) * 4
    share = max(1, budget // len(images))
    show = _progress(quiet, "preprocessing calibration images")
    tiles = []
    for i, im in enumerate(images):
        batch = ref.tiles(images=[im], max_tiles=ref.pre.max_tiles)
        tiles.append(batch.pixels[spread_tiles(batch.grids[0], share)])
        show(i + 1, len(images))
    return np.concatenate(tiles)[:budget]


def spread_tiles(grid, k: int) -> list[int]:
    """Which of an image's tiles calibrate when it may give k: all when it has no more; else its
    thumbnail (the whole image) and grid tiles spread evenly over the rest, so that every image
    of the set counts, not the first few's whole grids."""
    if grid.n_tiles <= k:
        return list(range(grid.n_tiles))
    n_grid = k - 1 if grid.thumbnail else k
    picked = sorted({round(j * (grid.n_grid - 1) / max(n_grid - 1, 1)) for j in range(n_grid)})
    return picked + ([grid.n_grid] if grid.thumbnail else [])


def export(checkpoint: str | Path, output: str | Path, precision: str = "fp16", calib=None,
           calib_size: int = 16, calib_method: str = "minmax", max_tiles: int | None = None,
           llm_quant: str | None = None, n_ctx: int = 4096, engine: bool = False, force: bool = False,
           seed: int = 0, keep_float: tuple[str, ...] = KEEP_FLOAT, llm_format: str = "gguf",
           split_vision: bool = False, quiet: bool = False) -> ExportResult:
    """Export `checkpoint` to a bundle at `output`; every artifact is validated first."""
    t0 = time.time()
    if precision not in PRESETS:
        raise InputError(f"precision {precision!r} unknown; choose one of {', '.join(PRESETS)}")
    if calib_method not in METHODS:
        raise InputError(f"--calib-method {calib_method!r} unknown; choose one of {', '.join(METHODS)}")
    vision_precision, quant = PRESETS[precision]
    quant = _llm_quant(precision, llm_format, llm_quant)
    calib_size = args.integer("calib_size", calib_size, 1, 4096)
    max_tiles = args.optional_integer("max_tiles", max_tiles, 1, 64)
    n_ctx = args.integer("n_ctx", n_ctx, 256, 1 << 20)
    seed = args.integer("seed", seed, 0, 2 ** 32 - 1)
    output = Path(args.path_like("output", output))
    if output.exists() and not force:
        raise InputError(f"{output} already exists; pass --force to overwrite it")
    _say(quiet, f"loading {checkpoint}")
    ref = Reference(checkpoint)
    cfg = ref.ckpt.config
    if n_ctx > cfg.llm.max_position_embeddings:
        raise InputError(f"n_ctx must be at most {cfg.llm.max_position_embeddings} for this checkpoint (its "
                         f"max_position_embeddings); got {n_ctx}")
    max_tiles = max_tiles or cfg.max_dynamic_patch + (1 if cfg.use_thumbnail else 0)
    report: dict = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": platform.platform()}
    with staging(output, force) as tmp:
        val_tiles, val_images = validation_tiles(ref, 4, seed)
        reference = reference_features(ref.model, val_tiles)
        cases = reference_cases(ref, val_images[:2], steps=16, n_ctx=n_ctx)
        llm_file, report["llm"] = _export_llm(ref, tmp, llm_format, quant, n_ctx, cases, quiet)
        require(report["llm"], f"{llm_format} LLM {quant}", force)
        vision_file, split = _export_vision(ref, tmp, vision_precision, val_tiles, reference, calib,
                                            calib_size, calib_method, seed, keep_float, force, quiet,
                                            report, split_vision)
        report["passed"] = all(report[k]["passed"] for k in ("vision", "llm"))
        manifest = build_manifest(ref, checkpoint, precision, vision_precision, vision_file.name,
                                  llm_file.name, quant, n_ctx, max_tiles, llm_format)
        if split:
            manifest["vision"]["split"] = split
        finish(tmp, manifest, report)
    sizes = {f: (output / f).stat().st_size for f in manifest["files"]}
    result = ExportResult(output, manifest, report, time.time() - t0, sizes)
    if engine:
        from .tensorrt_build import build_engine
        build_engine(output)
    return result


def _llm_quant(precision: str, llm_format: str, llm_quant: str | None) -> str:
    """The LLM type to write, checked against the format before any work is done."""
    if llm_format == "gguf":
        quant = llm_quant or PRESETS[precision][1]
        if quant not in QUANT_TYPES:
            raise InputError(f"--llm-quant {quant!r} unknown; choose one of {', '.join(QUANT_TYPES)}")
        return quant
    if llm_format == "onnx":
        from .llm_onnx import PRECISIONS

        if llm_quant is None and precision not in PRECISIONS:
            raise InputError(f"--llm-format onnx comes in fp32 and int8 (--fp32, --int8, or --llm-quant "
                             f"fp32|int8), not the {precision} preset")
        quant = llm_quant or precision
        if quant not in PRECISIONS:
            raise InputError(f"--llm-quant {quant!r} is not an ONNX LLM precision; choose one of "
                             f"{', '.join(PRECISIONS)}")
        return quant
    raise InputError(f"--llm-format {llm_format!r} unknown; choose gguf or onnx")


def _export_llm(ref, tmp: Path, llm_format: str, quant: str, n_ctx: int, cases: dict, quiet: bool):
    """Write the LLM in `llm_format` and validate it; returns (file, figures)."""
    if llm_format == "onnx":
        from .llm_onnx import check_onnx_llm, write_onnx_llm

        _say(quiet, f"writing LLM as an ONNX decoder ({quant})")
        path, tok_dir = write_onnx_llm(ref, tmp, quant, n_ctx)
        drop_llm(ref)
        _say(quiet, "validating the ONNX LLM in ONNX Runtime against PyTorch")
        return path, check_onnx_llm(path, tok_dir, quant, cases, sorted(ref.stop_ids))
    _say(quiet, f"writing LLM as GGUF {quant}")
    path = tmp / f"llm.{quant}.gguf"
    write_llm(ref, path, quant, n_ctx, tmp)
    drop_llm(ref)
    _say(quiet, "validating the LLM in llama.cpp against PyTorch")
    return path, check_llm(path, quant, cases)


def drop_llm(ref: Reference) -> None:
    """Once the LLM is written (its reference cases computed before), the exporter needs its
    weights no more: they leave before the validation's process and the vision stage start (2 GB
    in fp32 for the 1B), so neither runs beside them."""
    del ref.model.language_model
    release_freed_memory()


def _export_vision(ref, tmp, precision, val_tiles, reference, calib, calib_size, calib_method, seed,
                   keep_float, force, quiet, report, split: bool = False) -> tuple[Path, dict | None]:
    """Export, validate and report the vision encoder; returns its file (the ViT's, when split)
    and the manifest's `vision.split` section (None for one graph)."""
    if split:   # ViT graph + projector graph + LayerNorm weights (mivl.runtimes.vision_split)
        files = VIT_FILES
        proj, norm, eps = export_projector(ref.model, tmp)

        def write(path, half=False):
            return export_vit(ref.model, path, half)

        def run(path, pixels):
            return run_split(path, proj, norm, eps, pixels)
    else:
        files, run = VISION_FILES, None

        def write(path, half=False):
            return export_vision(ref.model, path, half)
    what = "ViT" if split else "vision encoder"
    heads = ref.ckpt.config.vision.num_attention_heads

    def fused(path):
        """The bundle's graph: each block's attention as one ONNX Runtime node (the INT8
        quantiser reads the written-out graph, so this is the last step of every precision)."""
        return {"fused_attention_blocks": fuse_attention(path, heads)}

    _say(quiet, f"exporting the {what} to ONNX (fp32)")
    fp32 = write(tmp / files["fp32"])
    info = fused(fp32) if precision == "fp32" else {}
    figures = {"fp32": {**check_vision(fp32, "fp32", val_tiles, reference, run), **info}}
    require(figures["fp32"], "vision fp32 ONNX", force)
    out = fp32
    if precision == "fp16":
        out = write(tmp / files["fp16"], half=True)
        figures["fp16"] = {**check_vision(out, "fp16", val_tiles, reference, run), **fused(out)}
    elif precision == "int8":
        _say(quiet, f"calibrating INT8 ({calib_method}, {calib_size} images)")
        tiles = calibration_tiles(ref, calib, calib_size, seed, quiet)
        release_freed_memory()         # the ONNX export's and the fp32 check's buffers, before the quantiser starts
        out = tmp / files["int8"]
        info = quantize_vision_isolated(fp32, out, tiles, calib_method, keep_float,
                               progress=_progress(quiet, "calibrating"))
        info.update(fused(out))
        figures["int8"] = {**check_vision(out, "int8", val_tiles, reference, run), **info}
    if out != fp32:
        fp32.unlink()
    report["vision"] = {**figures[precision], "checks": figures}
    require(report["vision"], f"vision {precision}", force)
    return out, (split_spec(ref.model, out.name, proj.name, eps) if split else None)


def release_freed_memory() -> None:
    """Hand memory freed by earlier steps back to the system before a step that needs a lot (the
    INT8 quantiser's process): glibc keeps freed heap pages otherwise; the 1B's ONNX export alone
    left 0.8 GB of them in the exporter (4.66 -> 3.90 GB)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):     # not glibc (musl): nothing to do
            pass


def build_manifest(ref: Reference, checkpoint, preset, vision_precision, vision_file, llm_file, quant,
                   n_ctx, max_tiles, llm_format: str = "gguf") -> dict:
    cfg, tok, tpl = ref.ckpt.config, ref.tok, ref.template
    specials = {t: tok.token_to_id(t) for t in INTERNVL_SPECIAL_TOKENS}
    return {
        "schema_version": SCHEMA_VERSION, "sdk_version": __version__, "preset": preset,
        "source": {"checkpoint": Path(str(checkpoint)).name, "weights_sha256": ref.ckpt.weights_sha256,
                   "llm_family": cfg.llm.family},
        "preprocessing": {**ref.pre.to_dict(), "ps_version": cfg.ps_version},
        "prompt": {"template": cfg.template, "system": tpl.default_system,
                   "tokens_per_tile": cfg.tokens_per_tile, "img_context": IMG_CONTEXT,
                   "img_context_id": tok.token_to_id(IMG_CONTEXT), "special_tokens": specials,
                   "stop": [tpl.stop], "stop_ids": sorted(ref.stop_ids), "add_bos": bool(tok.add_bos),
                   "bos_id": tok.bos_id},
        "vision": {"file": vision_file, "precision": vision_precision, **io_spec(ref.model),
                   "max_tiles": max_tiles, "output_dim": cfg.llm.hidden_size,
                   "vit_hidden": cfg.vision.hidden_size, "vit_heads": cfg.vision.num_attention_heads,
                   "vit_intermediate": cfg.vision.intermediate_size, "vit_layers": cfg.vision.num_hidden_layers,
                   "vit_tokens": cfg.vision.grid ** 2 + 1},
        "llm": {"file": llm_file, "quant": quant, "format": llm_format, "n_embd": cfg.llm.hidden_size,
                "n_ctx": n_ctx, "arch": cfg.llm.family, "vocab_size": cfg.llm.vocab_size,
                "shape": {"n_layer": cfg.llm.num_hidden_layers, "n_embd": cfg.llm.hidden_size,
                          "n_head": cfg.llm.num_attention_heads, "n_head_kv": cfg.llm.num_key_value_heads,
                          "n_ff": cfg.llm.intermediate_size, "n_vocab": cfg.llm.vocab_size},
                **({"tokenizer": "tokenizer"} if llm_format == "onnx" else {})},
    }
