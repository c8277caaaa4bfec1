"""Vision-encoder distillation, Mini-InternVL's first method: a smaller InternViT learns to
reproduce the teacher's hidden states, then the projector (optionally the LLM) is aligned to it.

    mivl-export distill TEACHER -o STUDENT --layers 12 [--width W] [--last-k 4] [--layer-map 1,3,...]
        [--data synthetic|FOLDER|records.jsonl] [--steps 200 --batch-size 8 --lr 1e-4]
        [--align-steps 200 --align-mode projector|lora|llm|full --align-data synthetic|records.jsonl]
    torchrun --nproc_per_node 4 -m mivl.export.train distill TEACHER -o STUDENT ...

Student. An InternViT of `layers` layers (default half the teacher's) and `width` channels
(default the teacher's), initialised from the teacher: student layer i starts as teacher layer
map[i], by default every k-th layer ending at the last one (map[i] = ceil((i + 1) T / S) - 1 for
T teacher and S student layers: 24 -> 12 keeps layers 1, 3, ..., 23, counted from 0). A narrower
student keeps, of each teacher weight, the first `width` channels, the first width / head_dim
attention heads (the head size stays) and the first intermediate * width / hidden MLP units:
structured pruning by position, which the distillation then repairs. The projector keeps the
matching input columns (pixel unshuffle concatenates four patches, so four blocks of `width`);
the LLM is the teacher's.

Stage 1, distillation. Loss: the negative cosine similarity between student and teacher hidden
states, token by token, averaged over the last K student layers and the teacher layers they map
to (through a learned linear map per pair where widths differ; the maps are dropped afterwards),
on 448x448 tiles without dynamic tiling, as the paper did. The teacher is frozen; every student
ViT weight trains.

Stage 2, alignment. The trainer (`mivl.export.train.trainer`) fine-tunes the student checkpoint on
question/answer records: the projector alone by default, so that the student's tokens reach the
LLM in the form it was trained on; `align_mode` lora / llm / full also trains the LLM (LoRA or in
full) or everything.

The result is an ordinary checkpoint in the original layout that `mivl-export` exports and
validates. Both stages save their state every `save_every` steps in `work` and resume from it;
both run on one process or under torchrun with the trainer's global-batch rule (one process and
many give the same losses). A summary table (per stage: steps, loss start / end, cosine to the
teacher on held-out tiles, wall time) is printed and written to the student's distill_log.json.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...edge.errors import InputError
from ..checkpoint import load_checkpoint
from ..model.config import parse_config
from ..model.internvl import InternVLChat
from ..reference import preprocess_config
from . import distributed as D
from .trainer import (DTYPES, STATE_DIR, TrainConfig, autocast_dtype, check_dtypes, latest_state, load_state,
                      make_optimizer, optimizer_step, original_config, save_state, step_indices, train,
                      write_checkpoint)

ALIGN_MODES = {"projector": dict(mode="partial", freeze=("vit", "llm")),
               "lora": dict(mode="lora", lora_parts=("llm",)),
               "llm": dict(mode="partial", freeze=("vit",)),
               "full": dict(mode="full")}
LOG_FILE = "distill_log.json"


@dataclass
class DistillConfig:
    teacher: str
    output: str
    layers: int | None = None            # student depth (default: half the teacher's, at least 1)
    width: int | None = None             # student width (default: the teacher's)
    last_k: int = 4                      # distilled layers: the student's last K (at most its depth)
    layer_map: tuple[int, ...] | None = None   # teacher layer (from 0) of each student layer
    data: str = "synthetic"              # synthetic | image folder | records .jsonl
    steps: int = 200
    batch_size: int = 8                  # global batch, in tiles
    micro_batch: int = 4                 # tiles per forward pass on one process
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    held_out: int = 8                    # tiles for the cosine-to-teacher figures
    align_steps: int = 0                 # 0: no alignment stage
    align_mode: str = "projector"        # projector | lora | llm | full
    align_data: str = "synthetic"        # synthetic | records .jsonl (or pass align_dataset)
    align_kinds: tuple[str, ...] = ()    # synthetic question kinds (default: the domain kinds)
    align_max_objects: int = 3           # synthetic scenes: objects per camera
    align_turns: int = 1
    align_lr: float = 5e-4
    align_batch_size: int = 8
    save_every: int = 50
    resume: bool = True
    work: str | None = None              # stage checkpoints and resume state (default OUTPUT.work)
    dtype: str = "fp32"                  # autocast dtype: fp32 | bf16 | auto (trainer.autocast_dtype)
    save_dtype: str = "bf16"
    device: str = "auto"
    seed: int = 0
    quiet: bool = False
    log_every: int = 10

    def check(self) -> None:
        for name in ("steps", "batch_size", "micro_batch", "last_k", "held_out", "align_batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.align_steps < 0 or self.save_every < 0:
            raise InputError("align_steps and save_every must be >= 0")
        if self.align_mode not in ALIGN_MODES:
            raise InputError(f"align_mode must be one of {', '.join(ALIGN_MODES)}, got {self.align_mode!r}")
        check_dtypes(self.dtype, self.save_dtype)
        if not (self.lr > 0 and self.align_lr > 0):
            raise InputError("learning rates must be positive")


@dataclass
class StageSummary:
    stage: str
    steps: int
    loss_start: float | None
    loss_end: float | None
    cosine_before: float
    cosine_after: float
    metric: str                          # what the cosine compares
    seconds: float                       # its wall time, over every run that made its steps


@dataclass
class DistillResult:
    output: Path
    stages: list[StageSummary] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)   # distillation losses of the steps run here


# ---- the student -------------------------------------------------------------------------------

def default_layer_map(teacher_layers: int, student_layers: int) -> tuple[int, ...]:
    return tuple(math.ceil((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers))


def student_config(teacher_cfg: dict, layers: int, width: int) -> dict:
    """The teacher's original config with the student's vision depth and width."""
    v = dict(teacher_cfg["vision_config"])
    hidden, heads = int(v["hidden_size"]), int(v["num_attention_heads"])
    head_dim = hidden // heads
    if not 1 <= layers:
        raise InputError(f"the student needs at least one layer, got {layers}")
    if width < head_dim or width > hidden or width % head_dim:
        raise InputError(f"width must be a multiple of the head size {head_dim} between {head_dim} and the "
                         f"teacher's {hidden}, got {width}")
    v.update(num_hidden_layers=layers, hidden_size=width, num_attention_heads=width // head_dim,
             intermediate_size=round(int(v["intermediate_size"]) * width / hidden))
    return dict(teacher_cfg, vision_config=v)


def check_layer_map(layer_map, teacher_layers: int, student_layers: int) -> tuple[int, ...]:
    m = tuple(int(x) for x in layer_map)
    if len(m) != student_layers:
        raise InputError(f"the layer map names {len(m)} teacher layer(s) for a {student_layers}-layer student")
    if any(not 0 <= x < teacher_layers for x in m):
        raise InputError(f"layer map entries must be teacher layers 0..{teacher_layers - 1}, got {list(m)}")
    if any(b <= a for a, b in zip(m, m[1:])):
        raise InputError(f"the layer map must be strictly increasing (student layers keep the teacher's "
                         f"order), got {list(m)}")
    return m


@torch.no_grad()
def init_student(teacher: InternVLChat, student: InternVLChat, layer_map) -> None:
    """Copy the teacher's weights into the student (module docstring: the rule)."""
    tv, sv = teacher.vision_model, student.vision_model
    c, w, inter = tv.config.hidden_size, sv.config.hidden_size, sv.config.intermediate_size
    te, se = tv.embeddings, sv.embeddings
    se.class_embedding.copy_(te.class_embedding[..., :w])
    se.position_embedding.copy_(te.position_embedding[..., :w])
    se.patch_embedding.weight.copy_(te.patch_embedding.weight[:w])
    se.patch_embedding.bias.copy_(te.patch_embedding.bias[:w])
    qkv_rows = torch.cat([k * c + torch.arange(w) for k in range(3)])
    for s_layer, t_index in zip(sv.encoder.layers, layer_map):
        t_layer = tv.encoder.layers[t_index]
        s_layer.attn.qkv.weight.copy_(t_layer.attn.qkv.weight[qkv_rows][:, :w])
        if s_layer.attn.qkv.bias is not None:
            s_layer.attn.qkv.bias.copy_(t_layer.attn.qkv.bias[qkv_rows])
        s_layer.attn.proj.weight.copy_(t_layer.attn.proj.weight[:w, :w])
        s_layer.attn.proj.bias.copy_(t_layer.attn.proj.bias[:w])
        s_layer.mlp.fc1.weight.copy_(t_layer.mlp.fc1.weight[:inter, :w])
        s_layer.mlp.fc1.bias.copy_(t_layer.mlp.fc1.bias[:inter])
        s_layer.mlp.fc2.weight.copy_(t_layer.mlp.fc2.weight[:w, :inter])
        s_layer.mlp.fc2.bias.copy_(t_layer.mlp.fc2.bias[:w])
        for name in ("norm1", "norm2"):
            getattr(s_layer, name).weight.copy_(getattr(t_layer, name).weight[:w])
            getattr(s_layer, name).bias.copy_(getattr(t_layer, name).bias[:w])
        s_layer.ls1.copy_(t_layer.ls1[:w])
        s_layer.ls2.copy_(t_layer.ls2[:w])
    groups = round(teacher.mlp1[0].weight.shape[0] / c)       # pixel unshuffle: 4 patches side by side
    cols = torch.cat([k * c + torch.arange(w) for k in range(groups)])
    student.mlp1[0].weight.copy_(teacher.mlp1[0].weight[cols])
    student.mlp1[0].bias.copy_(teacher.mlp1[0].bias[cols])
    student.mlp1[1].weight.copy_(teacher.mlp1[1].weight[:, cols])
    student.mlp1[1].bias.copy_(teacher.mlp1[1].bias)
    student.mlp1[3].load_state_dict(teacher.mlp1[3].state_dict())
    student.language_model.load_state_dict(teacher.language_model.state_dict())


def make_student(teacher_ck, layers: int, width: int, layer_map) -> tuple[InternVLChat, dict]:
    cfg = student_config(original_config(teacher_ck.path), layers, width)
    student = InternVLChat(parse_config(cfg)).float()
    init_student(teacher_ck.model, student, layer_map)
    return student, cfg


# ---- stage 1: distillation ---------------------------------------------------------------------

class DistillLoss(nn.Module):
    """forward(pixels) -> the summed per-tile loss: for each tile, minus the cosine similarity of
    student and teacher hidden states, averaged over tokens and over the distilled layer pairs."""

    def __init__(self, student_vit, teacher_vit, pairs: list[tuple[int, int]], autocast_dtype=torch.float32):
        super().__init__()
        self.student, self.pairs, self.autocast_dtype = student_vit, list(pairs), autocast_dtype
        self.teacher = [teacher_vit]     # a list: not a submodule (frozen, not saved, not wrapped by DDP)
        w, c = student_vit.config.hidden_size, teacher_vit.config.hidden_size
        self.maps = nn.ModuleList(nn.Linear(w, c, bias=False) for _ in self.pairs) if w != c else None
        if self.maps is not None:
            with torch.no_grad():
                for m in self.maps:     # start as "the student's channels are the teacher's first ones"
                    m.weight.zero_()
                    m.weight[:w, :w] = torch.eye(w)

    def pair_cosines(self, pixels: torch.Tensor) -> torch.Tensor:
        """(pairs, N) mean token cosine of each distilled pair for each tile."""
        ctx = (torch.autocast(pixels.device.type, dtype=self.autocast_dtype)
               if self.autocast_dtype != torch.float32 else torch.autocast(pixels.device.type, enabled=False))
        with ctx:
            with torch.no_grad():
                t_states = self.teacher[0].states(pixels)
            s_states = self.student.states(pixels)
            out = []
            for k, (i, j) in enumerate(self.pairs):
                s = s_states[i + 1] if self.maps is None else self.maps[k](s_states[i + 1])
                out.append(F.cosine_similarity(s.float(), t_states[j + 1].float(), dim=-1).mean(dim=-1))
        return torch.stack(out)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return -self.pair_cosines(pixels).mean(dim=0).sum()


def distill_pairs(layer_map, last_k: int) -> list[tuple[int, int]]:
    """(student layer, teacher layer) of the last K student layers (from 0)."""
    s = len(layer_map)
    return [(i, layer_map[i]) for i in range(s - min(last_k, s), s)]


@torch.no_grad()
def held_out_cosine(loss: DistillLoss, tiles, micro_batch: int) -> float:
    """Mean cosine of the student's last layer to its teacher layer on held-out tiles."""
    vals = []
    for k in range(0, len(tiles), micro_batch):
        px = torch.from_numpy(np.concatenate([tiles[j] for j in range(k, min(len(tiles), k + micro_batch))]))
        vals.append(loss.pair_cosines(px)[-1])
    return float(torch.cat(vals).mean())


@torch.no_grad()
def embedding_cosine(student: InternVLChat, teacher: InternVLChat, tiles) -> float:
    """Mean token cosine of the student's and the teacher's image embeddings (the LLM's input)."""
    px = torch.from_numpy(np.concatenate([tiles[j] for j in range(len(tiles))]))
    a, b = student.extract_feature(px), teacher.extract_feature(px)
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).mean())


def _distill_stage(cfg: DistillConfig, teacher_ck, student, layer_map, stage_dir: Path, world):
    """Train the student ViT; return (losses of all steps, held-out cosine before, after, the wall
    time of the steps a resumed state held)."""
    from .distill_data import tile_source

    pre = preprocess_config(teacher_ck)
    train_tiles, held = tile_source(cfg.data, pre, cfg.seed, cfg.held_out)
    teacher_vit = teacher_ck.model.vision_model.eval().to(world.device)
    for p in teacher_ck.model.parameters():
        p.requires_grad = False
    for p in student.parameters():
        p.requires_grad = False
    for p in student.vision_model.parameters():
        p.requires_grad = True
    loss_mod = DistillLoss(student.vision_model.train(), teacher_vit, distill_pairs(layer_map, cfg.last_k),
                           autocast_dtype(cfg.dtype, world.device))
    net = D.wrap(loss_mod.to(world.device), world, "ddp")
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt, sched = make_optimizer(net, cfg)      # the trainer's AdamW groups and warmup + cosine schedule
    cos_before = held_out_cosine(loss_mod, held, cfg.micro_batch) if world.main else None
    start, losses, earlier = 0, [], 0.0
    state = latest_state(stage_dir) if cfg.resume else None
    if state is not None:
        start, losses, earlier = load_state(state, net, opt, sched)
        _log(cfg, world, f"distill: resumed from {state} at step {start}")
    t0 = time.perf_counter()
    bar = _bar(cfg, world, "distill", start)
    for step in range(start, cfg.steps):
        idx = step_indices(step, cfg, world)
        chunks = [idx[k:k + cfg.micro_batch] for k in range(0, len(idx), cfg.micro_batch)]

        def run(chunk):
            tiles = np.concatenate([train_tiles[i % len(train_tiles)] for i in chunk])
            return net(torch.from_numpy(tiles).to(world.device))
        total = optimizer_step(net, chunks, run, cfg.batch_size, world, trainable, opt, sched, cfg.max_grad_norm)
        losses.append(D.all_sum(total, world) / cfg.batch_size)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_state(stage_dir, step + 1, net, opt, sched, losses, world, earlier + time.perf_counter() - t0)
    if bar is not None:
        bar.close()
    cos_after = held_out_cosine(loss_mod, held, cfg.micro_batch) if world.main else None
    return losses, cos_before, cos_after, earlier


# ---- the whole recipe --------------------------------------------------------------------------

def _align_dataset(cfg: DistillConfig):
    if cfg.align_data == "synthetic":
        from .synthetic import DOMAIN_KINDS, SyntheticTasks

        return SyntheticTasks(cfg.align_kinds or DOMAIN_KINDS, 7000 + cfg.seed, turns=cfg.align_turns,
                              max_objects=cfg.align_max_objects)
    from .records import read_records

    return read_records(cfg.align_data)


def distill(cfg: DistillConfig | None = None, align_dataset=None, **options) -> DistillResult:
    """Distil the teacher's vision encoder into a smaller student and align it (module docstring).

    Give a DistillConfig, or its fields as keyword arguments (the CLI's options):
    `distill(teacher="ckpt", output="student", layers=12, align_steps=200)`."""
    if cfg is None:
        try:
            cfg = DistillConfig(**options)
        except TypeError as e:
            raise InputError(f"distill options: {e}") from None
    elif options:
        raise InputError("give a DistillConfig or keyword options, not both")
    cfg.check()
    world = D.init_world(cfg.device)
    if cfg.batch_size % world.size or cfg.align_batch_size % world.size:
        raise InputError(f"batch sizes must be multiples of the number of processes ({world.size})")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    if out.resolve() == Path(cfg.teacher).resolve():
        raise InputError("the student's output folder is the teacher's; choose another -o")
    work = Path(cfg.work) if cfg.work else out.with_name(out.name + ".work")
    stage_dir = work / "distilled"
    teacher_ck = load_checkpoint(cfg.teacher, torch.float32)
    t_layers = teacher_ck.config.vision.num_hidden_layers
    layers = cfg.layers if cfg.layers is not None else max(1, t_layers // 2)
    if not 1 <= layers <= t_layers:
        raise InputError(f"the student's depth must be 1..{t_layers} (the teacher's), got {layers}")
    width = cfg.width if cfg.width is not None else teacher_ck.config.vision.hidden_size
    layer_map = check_layer_map(cfg.layer_map if cfg.layer_map is not None
                                else default_layer_map(t_layers, layers), t_layers, layers)
    summaries: list[StageSummary] = []
    log_path = work / LOG_FILE
    done = json.loads(log_path.read_text()) if log_path.is_file() and cfg.resume else {}   # finished stages
    result = DistillResult(out)

    if "distill" not in done:
        student, scfg = make_student(teacher_ck, layers, width, layer_map)
        t0 = time.perf_counter()
        losses, cos0, cos1, earlier = _distill_stage(cfg, teacher_ck, student, layer_map, stage_dir, world)
        result.losses = losses
        if world.main:
            write_checkpoint(student.cpu(), teacher_ck.path, stage_dir, torch.float32,
                             {"stage": "distill", "config": asdict(cfg), "layer_map": list(layer_map),
                              "losses": losses}, config=scfg)
            shutil.rmtree(stage_dir / STATE_DIR, ignore_errors=True)
            done["distill"] = asdict(StageSummary("distill", cfg.steps, losses[0] if losses else None,
                                                  losses[-1] if losses else None, cos0, cos1,
                                                  "last ViT layer vs its teacher layer",
                                                  earlier + time.perf_counter() - t0))
            work.mkdir(parents=True, exist_ok=True)
            log_path.write_text(json.dumps(done, indent=2))
        D.barrier(world)
    if cfg.align_steps and "align" not in done:
        from .distill_data import tile_source

        held = tile_source(cfg.data, preprocess_config(teacher_ck), cfg.seed, cfg.held_out)[1]
        cos0 = embedding_cosine(load_checkpoint(stage_dir).model, teacher_ck.model, held) if world.main else None
        t0 = time.perf_counter()
        tc = TrainConfig(str(stage_dir), str(out), steps=cfg.align_steps, batch_size=cfg.align_batch_size,
                         lr=cfg.align_lr, warmup_ratio=0.05, min_lr_ratio=0.1, weight_decay=0.0, dtype=cfg.dtype,
                         save_every=cfg.save_every, resume=cfg.resume, seed=cfg.seed, device=cfg.device,
                         save_dtype=cfg.save_dtype, quiet=cfg.quiet, log_every=cfg.log_every,
                         **ALIGN_MODES[cfg.align_mode])
        train(tc, align_dataset if align_dataset is not None else _align_dataset(cfg))
        if world.main:
            log = json.loads((out / "train_log.json").read_text())
            cos1 = embedding_cosine(load_checkpoint(out).model, teacher_ck.model, held)
            earlier = log["seconds"] - log["seconds_this_run"]    # of the steps a resumed state held
            done["align"] = asdict(StageSummary("align", cfg.align_steps, log["losses"][0], log["losses"][-1],
                                                cos0, cos1, "image embeddings vs the teacher's",
                                                earlier + time.perf_counter() - t0))
            log_path.write_text(json.dumps(done, indent=2))
        D.barrier(world)
    elif not cfg.align_steps and world.main:
        ck = load_checkpoint(stage_dir)
        write_checkpoint(ck.model, stage_dir, out, DTYPES[cfg.save_dtype],
                         json.loads((stage_dir / "train_log.json").read_text()))
    if world.main:
        (out / LOG_FILE).write_text(json.dumps({"teacher": str(teacher_ck.path), "layers": layers, "width": width,
                                                "layer_map": list(layer_map), "stages": done}, indent=2))
        summaries = [StageSummary(**done[k]) for k in ("distill", "align") if k in done]
        if not cfg.quiet:
            print(summary_table(summaries))
    D.barrier(world)
    result.stages = summaries
    return result


def summary_table(stages: list[StageSummary]) -> str:
    rows = ["| stage | steps | loss start | loss end | cosine to teacher (held-out), before -> after | wall s |",
            "|---|---|---|---|---|---|"]
    for s in stages:
        f = (lambda x: "-" if x is None else f"{x:.4f}")
        rows.append(f"| {s.stage} | {s.steps} | {f(s.loss_start)} | {f(s.loss_end)} | "
                    f"{s.cosine_before:.4f} -> {s.cosine_after:.4f} ({s.metric}) | {s.seconds:.0f} |")
    return "\n".join(rows)


def _bar(cfg: DistillConfig, world, desc: str, start: int):
    if cfg.quiet or not world.main:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True)


def _log(cfg, world, msg: str) -> None:
    if world.main and not cfg.quiet:
        print(msg, flush=True)
