"""mivl-export: checkpoints to bundles.

  mivl-export CHECKPOINT -o BUNDLE [--fp32 | --fp16 | --int8 | --int4] [--calib PATH] ...
  mivl-export make-tiny --llm qwen2|internlm2|phi3 -o DIR [--seed N]
  mivl-export build-engine BUNDLE
  mivl-export train | convert | make-default   (domain adaptation: mivl.export.train)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..edge.errors import MivlError

FORMATS = """formats (precision presets):
  preset   vision                 LLM (GGUF)   use
  --fp32   ONNX fp32              f32          parity work, reference runs
  --fp16   ONNX fp16 (default)    f16          GPUs, best fidelity at half the size
  --int8   ONNX INT8 Q/DQ         q8_0         CPUs and Jetson: smallest with ~no accuracy loss
  --int4   ONNX INT8 Q/DQ         q4_k_m       tightest memory (check task accuracy)
"""


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mivl-export", description="Export a Mini-InternVL checkpoint to a "
                                "validated edge bundle.", epilog=FORMATS + "\nother commands: make-tiny, "
                                "build-engine, train, convert, make-default (run 'mivl-export train -h')",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint directory (OpenGVLab or -hf layout) or hub id")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    g = p.add_mutually_exclusive_group()
    for name in ("fp32", "fp16", "int8", "int4"):
        g.add_argument(f"--{name}", dest="precision", action="store_const", const=name)
    p.add_argument("--calib", help="calibration images: a folder, a .jsonl of records, or 'synthetic' (default)")
    p.add_argument("--calib-size", type=int, default=16, help="calibration images (default 16)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--max-tiles", type=int, help="largest tile batch the vision engine takes "
                   "(default: the checkpoint's max tiles + thumbnail)")
    p.add_argument("--llm-quant", help="override the LLM GGUF type (f32 f16 bf16 q8_0 q6_k q5_k_m q4_k_m)")
    p.add_argument("--llm-format", default="gguf", choices=["gguf", "onnx"],
                   help="LLM as GGUF for llama.cpp (default) or as an ONNX decoder with KV cache for "
                        "ONNX Runtime / TensorRT (fp32 or int8)")
    p.add_argument("--n-ctx", type=int, default=4096, help="LLM context the bundle is made for (default 4096)")
    p.add_argument("--engine", action="store_true", help="also build a TensorRT engine (needs TensorRT and a GPU)")
    p.add_argument("--force", action="store_true", help="overwrite BUNDLE; write it even if validation fails")
    p.add_argument("--seed", type=int, default=0, help="seed of calibration sampling (default 0)")
    p.add_argument("--keep-float", default="projector",
                   help="comma list of vision parts left in float by --int8/--int4: projector, patch_embed, "
                        "first_block, last_block (default projector)")
    p.add_argument("--split-vision", action="store_true",
                   help="write the vision encoder as a ViT graph and a projector graph, with unshuffle + "
                        "LayerNorm between them done by the runtime (the fused CUDA kernel on a GPU)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(precision="fp16")
    return p


def summary(result) -> str:
    r, rows = result.report, []
    v, llm = r["vision"], r["llm"]
    files = {result.manifest["vision"]["file"]: "vision", result.manifest["llm"]["file"]: "llm"}
    for name, size in sorted(result.sizes.items()):
        if name in files:
            fig = (f"cosine min {v['min_cosine']:.5f} mean {v['mean_cosine']:.5f}" if files[name] == "vision"
                   else f"top-1 {llm['top1_agreement']:.3f} ({llm['top1_agreement_decisive']:.3f} decisive), greedy {'same' if llm['greedy_identical'] else 'differs'}, "
                        f"rel. logit err {llm['max_rel_logit_error']:.1e}")
            rows.append(f"  {name:<22} {size / 2**20:9.1f} MiB   {fig}")
    status = "passed" if r["passed"] else "FAILED (written with --force)"
    return ("\n".join([f"bundle {result.path}  ({result.seconds:.1f} s, validation {status})",
                       f"  {'artifact':<22} {'size':>13}   against PyTorch", *rows])
            + f"\n\nnext: mivl ask {result.path} --image PICTURE.jpg \"What is in the picture?\"")


def main_export(argv) -> int:
    from .api import export

    a = export_parser().parse_args(argv)
    result = export(a.checkpoint, a.output, precision=a.precision, calib=a.calib, calib_size=a.calib_size,
                    calib_method=a.calib_method, max_tiles=a.max_tiles, llm_quant=a.llm_quant,
                    n_ctx=a.n_ctx, engine=a.engine, force=a.force, seed=a.seed, llm_format=a.llm_format,
                    keep_float=tuple(k for k in a.keep_float.split(",") if k),
                    split_vision=a.split_vision, quiet=a.quiet)
    print(summary(result))
    return 0


def main_make_tiny(argv) -> int:
    from .tiny import FAMILIES, make_tiny

    p = argparse.ArgumentParser(prog="mivl-export make-tiny",
                                description="Write a tiny random InternVL checkpoint (original layout).")
    p.add_argument("--llm", required=True, choices=FAMILIES)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    out = make_tiny(a.llm, a.output, a.seed, overwrite=a.force)
    print(f"wrote tiny {a.llm} checkpoint to {out}\nnext: mivl-export {out} -o {out}-bundle --fp32")
    return 0


def main_build_engine(argv) -> int:
    from .tensorrt_build import build_engine

    p = argparse.ArgumentParser(prog="mivl-export build-engine",
                                description="Build the TensorRT engine of a bundle on this device.")
    p.add_argument("bundle")
    p.add_argument("--fp16", action="store_true", help="build fp16 even from an fp32 graph")
    a = p.parse_args(argv)
    print(f"engine: {build_engine(Path(a.bundle), fp16=a.fp16)}")
    return 0


def _train_command(name):
    def run(argv) -> int:
        from .train import cli
        return getattr(cli, name)(argv)
    return run


COMMANDS = {"make-tiny": main_make_tiny, "build-engine": main_build_engine,
            "train": _train_command("main_train"), "convert": _train_command("main_convert"),
            "make-default": _train_command("main_make_default")}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return main_export(argv)
    except MivlError as e:
        print(f"mivl-export: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mivl-export: interrupted; no bundle was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
