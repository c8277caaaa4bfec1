"""mivl-export train | distill | convert | make-default.

  mivl-export train CHECKPOINT -o OUT --data domain.jsonl [--general general.jsonl] [--mode lora] ...
  torchrun --nproc_per_node 4 -m mivl.export.train CHECKPOINT -o OUT --data ...   (several processes)
  mivl-export distill TEACHER -o STUDENT --layers 12 [--align-steps 200] ...       (a smaller vision encoder)
  torchrun --nproc_per_node 4 -m mivl.export.train distill TEACHER -o STUDENT ...
  mivl-export convert folder ROOT -o records.jsonl | convert coco annotations.json -o records.jsonl
  mivl-export make-default -o DIR      (regenerates the embedded default model)

--data / --general take JSONL record files (see mivl.export.train.records) or `synthetic`
(driving-scene questions drawn on the fly; for --general: scene captions).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .records import read_records, write_records


class Concat:
    def __init__(self, parts):
        self.parts = parts

    def __len__(self):
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i):
        for p in self.parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)


def source(paths: list[str], general: bool, seed: int):
    from .synthetic import DOMAIN_KINDS, GENERAL_KINDS, SyntheticTasks

    parts = []
    for p in paths:
        if p == "synthetic":
            parts.append(SyntheticTasks(GENERAL_KINDS if general else DOMAIN_KINDS, seed + int(general)))
        else:
            parts.append(read_records(p))
    return parts[0] if len(parts) == 1 else Concat(parts)


def train_parser() -> argparse.ArgumentParser:
    from .trainer import AUTOCAST, MODES, PARTS

    p = argparse.ArgumentParser(prog="mivl-export train", description="Fine-tune an InternVL checkpoint "
                                "(full, partial or LoRA); writes the original checkpoint layout.")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="output checkpoint folder (also holds resume state)")
    p.add_argument("--data", action="append", required=True, help="domain records (.jsonl) or 'synthetic'")
    p.add_argument("--general", action="append", default=[], help="general records (.jsonl) or 'synthetic'")
    p.add_argument("--general-ratio", type=float, default=None,
                   help="share of general records (default 0.25 with --general, else 0)")
    p.add_argument("--max-domain", type=int, help="cap on domain records (a fixed random subset)")
    p.add_argument("--mode", choices=MODES, default="full")
    p.add_argument("--freeze", action="append", choices=PARTS, default=[], help="partial: freeze a part")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-parts", default="llm", help="comma list of llm,vit (default llm)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8, help="global batch in records")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dtype", choices=AUTOCAST, default="auto",
                   help="autocast dtype (weights stay fp32); auto (default): bf16 on a GPU or a CPU with bf16 "
                        "in hardware, fp32 elsewhere (bf16 is emulated, several times slower, on other CPUs)")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--max-length", type=int, default=8192)
    p.add_argument("--save-every", type=int, default=0)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    p.add_argument("--device", default="auto")
    p.add_argument("--save-dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--feature-cache-gb", type=float, default=0.0,
                   help="with --mode partial --freeze vit: keep each distinct image's ViT tokens (image "
                        "features when the projector is frozen too) in memory up to this size, so that "
                        "records that repeat an image encode it once (default 0: off)")
    p.add_argument("--focus-weight", type=float, default=0.0,
                   help="> 0: attention targets from the answers' focus, with this weight (default 0: off)")
    p.add_argument("--focus-heads", type=index_list, default=(0,), help="comma list of LLM heads (default 0)")
    p.add_argument("--focus-whole-heads", type=index_list, default=(),
                   help="comma list of LLM heads that look at the subject on the thumbnail (or the only tile) "
                        "alone, where tokens know where they lie (default: none)")
    p.add_argument("--focus-image-layers", type=index_list, default=(1, 2),
                   help="LLM layers whose focus heads look at the subject's image tokens (default 1,2)")
    p.add_argument("--focus-word-layers", type=index_list, default=(0,),
                   help="LLM layers whose focus heads look at the words naming it (default 0)")
    p.add_argument("--seed", type=int, default=0)
    return p


def index_list(text: str) -> tuple[int, ...]:
    """'1,2' -> (1, 2); '' -> ()."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def main_train(argv) -> int:
    from .mixing import Mixture
    from .trainer import TrainConfig, train

    a = train_parser().parse_args(argv)
    domain = source(a.data, False, a.seed)
    ratio = a.general_ratio if a.general_ratio is not None else (0.25 if a.general else 0.0)
    general = source(a.general, True, a.seed) if a.general else []
    data = Mixture(general, domain, ratio, a.max_domain, a.seed)
    cfg = TrainConfig(a.checkpoint, a.output, mode=a.mode, freeze=tuple(a.freeze), lora_rank=a.lora_rank,
                      lora_alpha=a.lora_alpha, lora_parts=tuple(a.lora_parts.split(",")), steps=a.steps,
                      batch_size=a.batch_size, lr=a.lr, warmup_ratio=a.warmup_ratio,
                      weight_decay=a.weight_decay, dtype=a.dtype, grad_checkpointing=a.grad_checkpointing,
                      max_length=a.max_length, save_every=a.save_every, resume=not a.no_resume,
                      strategy=a.strategy, device=a.device, save_dtype=a.save_dtype, seed=a.seed,
                      feature_cache_gb=a.feature_cache_gb, focus_weight=a.focus_weight,
                      focus_heads=a.focus_heads, focus_whole_heads=a.focus_whole_heads,
                      focus_image_layers=a.focus_image_layers,
                      focus_word_layers=a.focus_word_layers)
    r = train(cfg, data)
    if r.losses:
        print(f"trained {r.steps} step(s) in {r.seconds:.0f} s, loss {r.losses[0]:.4f} -> {r.losses[-1]:.4f}; "
              f"checkpoint {r.output}\nnext: mivl-export {r.output} -o BUNDLE --int8")
    return 0


def distill_parser() -> argparse.ArgumentParser:
    from .distill import ALIGN_MODES, DistillConfig
    from .trainer import AUTOCAST

    d = DistillConfig("", "")
    p = argparse.ArgumentParser(prog="mivl-export distill", description="Distil the vision encoder into a "
                                "smaller InternViT (negative cosine on the last K layers' hidden states), then "
                                "align the projector (optionally the LLM); writes the original checkpoint layout.")
    p.add_argument("teacher", help="teacher checkpoint directory")
    p.add_argument("-o", "--output", required=True, help="student checkpoint folder to write")
    p.add_argument("--layers", type=int, help="student depth (default: half the teacher's)")
    p.add_argument("--width", type=int, help="student width (default: the teacher's; a multiple of the head size)")
    p.add_argument("--last-k", type=int, default=d.last_k, help="distil the student's last K layers (default 4)")
    p.add_argument("--layer-map", type=index_list, help="teacher layer (from 0) of each student layer, comma-separated "
                   "(default: every k-th, ending at the last)")
    p.add_argument("--data", default=d.data, help="tiles to distil on: 'synthetic', an image folder or a "
                   "records .jsonl (default synthetic)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch in tiles")
    p.add_argument("--micro-batch", type=int, default=d.micro_batch, help="tiles per forward pass")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--held-out", type=int, default=d.held_out, help="held-out tiles for the cosine figures")
    p.add_argument("--align-steps", type=int, default=d.align_steps, help="alignment steps (0: none)")
    p.add_argument("--align-mode", choices=list(ALIGN_MODES), default=d.align_mode,
                   help="what alignment trains: the projector, + LoRA on the LLM, + the LLM, everything")
    p.add_argument("--align-data", default=d.align_data, help="'synthetic' or question/answer records (.jsonl)")
    p.add_argument("--align-kinds", help="synthetic question kinds, comma-separated (default: the domain kinds)")
    p.add_argument("--align-max-objects", type=int, default=d.align_max_objects)
    p.add_argument("--align-lr", type=float, default=d.align_lr)
    p.add_argument("--align-batch-size", type=int, default=d.align_batch_size)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--work", help="stage checkpoints and resume state (default OUTPUT.work)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--dtype", choices=AUTOCAST, default=d.dtype, help="autocast dtype (default %(default)s; auto: "
                   "bf16 where the GPU or CPU computes it in hardware)")
    p.add_argument("--save-dtype", choices=["bf16", "fp32"], default=d.save_dtype)
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed)
    return p


def main_distill(argv) -> int:
    from .distill import DistillConfig, distill

    a = distill_parser().parse_args(argv)
    layer_map = a.layer_map or None
    kinds = tuple(k.strip() for k in a.align_kinds.split(",")) if a.align_kinds else ()
    cfg = DistillConfig(a.teacher, a.output, layers=a.layers, width=a.width, last_k=a.last_k, layer_map=layer_map,
                        data=a.data, steps=a.steps, batch_size=a.batch_size, micro_batch=a.micro_batch, lr=a.lr,
                        held_out=a.held_out, align_steps=a.align_steps, align_mode=a.align_mode,
                        align_data=a.align_data, align_kinds=kinds, align_max_objects=a.align_max_objects,
                        align_lr=a.align_lr, align_batch_size=a.align_batch_size, save_every=a.save_every,
                        work=a.work, resume=not a.no_resume, dtype=a.dtype, save_dtype=a.save_dtype,
                        device=a.device, seed=a.seed)
    r = distill(cfg)
    print(f"student checkpoint {r.output}\nnext: mivl-export {r.output} -o BUNDLE --int8")
    return 0


def main_convert(argv) -> int:
    from . import converters

    p = argparse.ArgumentParser(prog="mivl-export convert", description="Convert a dataset to records.")
    p.add_argument("kind", choices=["folder", "coco"])
    p.add_argument("source", help="image-folder root (root/<label>/*.jpg) or COCO annotations .json")
    p.add_argument("-o", "--output", required=True, help="records .jsonl to write")
    p.add_argument("--images", help="COCO: folder of the images (default: the JSON's folder)")
    a = p.parse_args(argv)
    recs = converters.image_folder(a.source) if a.kind == "folder" else converters.coco(a.source, a.images)
    n = write_records(a.output, recs)
    print(f"wrote {n} record(s) to {a.output}")
    return 0


def main_make_default(argv) -> int:
    from ...edge.errors import InputError
    from ..default_model import ASSET, DEFAULT, RECIPES, evaluate_reference, publish, train_default

    p = argparse.ArgumentParser(prog="mivl-export make-default",
                                description="Train the embedded default model on synthetic driving scenes.")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT.name,
                   help=f"{DEFAULT.name} (default): the shipped model, 12 tiles + thumbnail, the one-word "
                        "question kinds and `where`, its ViT's positions started as a sine-cosine table and "
                        "one long dense stage; six-camera-long: the same without `where`, shipped before it; "
                        "six-camera: the model before that; one-tile: the earlier model, one tile, colour "
                        "and class")
    p.add_argument("-o", "--output", help=f"where to publish (default {ASSET} for {DEFAULT.name}, "
                   "out/default-model-RECIPE otherwise)")
    p.add_argument("--work", help="folder of the stages' checkpoints and resume state (default "
                                  "out/default-model-work-RECIPE); finished stages are not run again")
    p.add_argument("--questions", type=int, default=200, help="held-out questions to score at the end (the "
                   "recipe's kinds, through the PyTorch reference; 0: none)")
    a = p.parse_args(argv)
    if a.questions < 0:
        raise InputError(f"--questions must be >= 0, got {a.questions}")
    recipe = RECIPES[a.recipe]
    output = Path(a.output) if a.output else (ASSET if recipe is DEFAULT else Path("out") / f"default-model-{recipe.name}")
    trained = train_default(output, work=a.work, recipe=recipe)
    publish(trained, output, recipe)
    print(f"published {output}")
    if a.questions:
        r = evaluate_reference(output, a.questions, kinds=recipe.kinds, max_objects=recipe.max_objects)
        print(f"held-out accuracy {r['accuracy']:.3f} on {r['n']} questions (stream {r['seed']}):")
        for k, v in r["per_kind"].items():
            print(f"  {k:<13} {v['accuracy']:.3f}  ({v['n']})")
    return 0
