"""mivl-export: checkpoints to bundles.

  mivl-export CHECKPOINT -o BUNDLE [--fp32 | --fp16 | --int8 | --int4] [--calib PATH] ...
  mivl-export make-tiny --llm qwen2|internlm2|phi3 -o DIR [--seed N]
  mivl-export build-engine BUNDLE
  mivl-export train | distill | convert | make-default   (training: mivl.export.train)
"""
from __future__ import annotations

import argparse
import os
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
                                "build-engine, train, distill, convert, make-default (run 'mivl-export train -h')",
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
    p.add_argument("--keep-float", default="projector,attention",
                   help="comma list of vision parts left in float by --int8/--int4: projector, attention (the "
                        "two activation x activation MatMuls and the softmax between them), patch_embed, "
                        "first_block, last_block (default projector,attention)")
    p.add_argument("--split-vision", action="store_true",
                   help="write the vision encoder as a ViT graph and a projector graph, with unshuffle + "
                        "LayerNorm between them done by the runtime (the fused CUDA kernel on a GPU)")
    p.add_argument("--sign", metavar="PRIVATE.pem", help="sign the written bundle with this elliptic-curve key "
                   "(OpenSSF model-signing; make a key pair with mivl-export keygen)")
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
                   else f"top-1 {llm['top1_agreement']:.3f} ({llm['top1_agreement_decisive']:.3f} decisive), "
                        f"{_greedy(llm)}, rel. logit err {llm['max_rel_logit_error']:.1e}")
            rows.append(f"  {name:<22} {size / 2**20:9.1f} MiB   {fig}")
    status = "passed" if r["passed"] else "FAILED (written with --force)"
    return ("\n".join([f"bundle {result.path}  ({result.seconds:.1f} s, validation {status})",
                       f"  {'artifact':<22} {'size':>13}   against PyTorch", *rows])
            + f"\n\nnext: {command('mivl')} ask {result.path} --image PICTURE.jpg \"What is in the picture?\"")


def _greedy(llm: dict) -> str:
    if llm["greedy_identical"]:
        return "greedy tokens identical"
    required = llm.get("bar", {}).get("greedy_identical")
    return ("greedy tokens DIFFER" if required else
            "greedy differs on near-ties (not required at this precision)")


def command(name: str) -> str:
    """How to run one of the SDK's commands from a new shell: its name where it is on PATH, else
    its path beside this Python (a virtual environment's bin/)."""
    import shutil

    if shutil.which(name):
        return name
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def main_export(argv) -> int:
    from .api import export

    a = export_parser().parse_args(argv)
    result = export(a.checkpoint, a.output, precision=a.precision, calib=a.calib, calib_size=a.calib_size,
                    calib_method=a.calib_method, max_tiles=a.max_tiles, llm_quant=a.llm_quant,
                    n_ctx=a.n_ctx, engine=a.engine, force=a.force, seed=a.seed, llm_format=a.llm_format,
                    keep_float=tuple(k for k in a.keep_float.split(",") if k),
                    split_vision=a.split_vision, quiet=a.quiet)
    print(summary(result))
    if a.sign:
        from ..edge.signing import sign_bundle

        print(f"signed: {sign_bundle(result.path, a.sign)}")
    return 0


def main_sign(argv) -> int:
    from ..edge.signing import sign_bundle

    p = argparse.ArgumentParser(prog="mivl-export sign", description="Sign a bundle (every file, manifest "
                                "included) with an elliptic-curve private key (OpenSSF model-signing).")
    p.add_argument("bundle")
    p.add_argument("--key", required=True, metavar="PRIVATE.pem")
    a = p.parse_args(argv)
    print(f"signed {a.bundle}: {sign_bundle(a.bundle, a.key)}\n"
          f"check: {command('mivl')} info {a.bundle} --trusted-key PUBLIC.pem")
    return 0


def main_keygen(argv) -> int:
    p = argparse.ArgumentParser(prog="mivl-export keygen", description="Write an elliptic-curve (P-256) key pair "
                                "for signing bundles: private.pem (keep it) and public.pem (ship it).")
    p.add_argument("-o", "--output", required=True, help="folder for private.pem and public.pem")
    a = p.parse_args(argv)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "private.pem").exists():
        raise MivlError(f"{out / 'private.pem'} exists; refusing to overwrite a key")
    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(out / "private.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    (out / "public.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    print(f"wrote {out / 'private.pem'} (mode 600) and {out / 'public.pem'}")
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


COMMANDS = {"make-tiny": main_make_tiny, "build-engine": main_build_engine, "sign": main_sign, "keygen": main_keygen,
            "train": _train_command("main_train"), "convert": _train_command("main_convert"),
            "make-default": _train_command("main_make_default"), "distill": _train_command("main_distill")}
HELP = {"CHECKPOINT -o BUNDLE": "export a checkpoint to a validated bundle (its flags: mivl-export export -h)",
        "make-tiny": "write a tiny random checkpoint of an LLM family (tests, trying things)",
        "build-engine": "build the TensorRT engine of a bundle on this GPU",
        "keygen": "write an elliptic-curve key pair for signing bundles",
        "sign": "sign a bundle (every file, manifest included)",
        "train": "domain adaptation: fine-tune a checkpoint on records (full, partial or LoRA)",
        "distill": "distil the vision encoder into a smaller one, then align it (runs under torchrun too)",
        "convert": "turn an image folder or COCO annotations into training records",
        "make-default": "regenerate the embedded default model (its recipe, resumable)"}


def usage() -> str:
    lines = ["usage: mivl-export COMMAND [options]   (mivl-export COMMAND -h for its options)", "", "commands:"]
    lines += [f"  {name:<22} {text}" for name, text in HELP.items()]
    return "\n".join(lines) + "\n\n" + FORMATS


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]) or not argv:
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    try:
        if argv[0] == "export":          # the default command, by name
            return main_export(argv[1:])
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
