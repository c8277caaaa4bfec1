"""Supervised fine-tuning of an InternVL checkpoint: full, partial (frozen parts) or LoRA.

The same function runs on one process or under torchrun. A step takes `batch_size` records (the
global batch): rank r encodes records r, r + world, ... of it, one record per micro-batch, and
every micro-batch's summed token loss is divided by the global number of target tokens of the
step, so one process and many give the same gradient (DDP and FSDP average over ranks, hence
the factor world size). The learning rate follows a linear warmup and a cosine decay; state is
saved every `save_every` steps and training resumes from the newest state in the output folder.
The result is written in the original checkpoint layout (LoRA merged) that mivl-export reads.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...edge.errors import InputError
from ...edge.feature_cache import FeatureCache
from ...edge.prompt import IMG_CONTEXT, get_template
from ..checkpoint import load_checkpoint, save_weights
from ..hf_layout import hf_config_to_original, is_hf_config
from ..reference import preprocess_config
from ...edge.tokenizer import TOKENIZER_FILES, load_tokenizer
from . import distributed as D
from .data import Sample, encode_record
from .focus import FocusConfig
from .tile_camera import LR_SCALE as TILE_CAMERA_LR_SCALE, TileCameraConfig
from .training_model import TrainingModel
from .lora import add_lora, merge_lora

MODES = ("full", "partial", "lora")
PARTS = ("vit", "projector", "llm")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
AUTOCAST = (*DTYPES, "auto")
STATE_DIR = "train_state"
# CPU flags of bf16 arithmetic in hardware (x86: AVX-512 BF16, AMX; Arm: the BF16 extension)
NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (its /proc/cpuinfo flags). Without it PyTorch
    converts to fp32 and back around every op: bf16 autocast then runs several times slower than
    fp32 (BENCHMARKS.md, "Autocast on a CPU without bf16")."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool(NATIVE_BF16 & set(value.split()))
    return False


def check_dtypes(dtype: str, save_dtype: str = "fp32") -> None:
    """A run's autocast dtype (fp32, bf16, auto) and the dtype its checkpoint is saved in."""
    if dtype not in AUTOCAST:
        raise InputError(f"dtype takes {', '.join(AUTOCAST)}, got {dtype!r}")
    if save_dtype not in DTYPES:
        raise InputError(f"save_dtype takes {', '.join(DTYPES)}, got {save_dtype!r}")


def autocast_dtype(name: str, device: str) -> torch.dtype:
    """The autocast dtype of a run: fp32, bf16, or auto (bf16 on a GPU that computes it, Ampere
    and later, Jetson Orin included, or on a CPU with bf16 in hardware; fp32 elsewhere)."""
    check_dtypes(name)
    if name != "auto":
        return DTYPES[name]
    if device.startswith("cuda"):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        native = cpu_has_bf16()
    return torch.bfloat16 if native else torch.float32


@dataclass
class TrainConfig:
    checkpoint: str
    output: str
    mode: str = "full"                   # full | partial | lora
    freeze: tuple = ()                   # partial: any of vit, projector, llm
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_parts: tuple = ("llm",)         # LoRA on llm and/or vit; the projector is trained fully
    steps: int = 100
    batch_size: int = 8                  # global batch, in records
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    dtype: str = "auto"                  # autocast dtype: bf16 | fp32 | auto (`autocast_dtype`;
                                         # weights stay fp32)
    grad_checkpointing: bool = False
    max_length: int = 8192
    save_every: int = 0                  # 0: only at the end
    resume: bool = True
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    strategy: str = "ddp"                # ddp | fsdp (with several processes)
    save_dtype: str = "bf16"
    quiet: bool = False
    feature_cache_gb: float = 0.0        # > 0 with the ViT frozen: each distinct tile batch's ViT tokens
                                         # (or image features, the projector frozen too) are computed
                                         # once and kept (LRU, bounded)
    focus_weight: float = 0.0            # > 0: attention targets from the records' focus (`focus.py`)
    focus_image_layers: tuple = (1, 2)   # LLM layers whose focus_heads learn to look at the subject's image tokens
    focus_word_layers: tuple = (0,)      # LLM layers whose focus_heads learn to look at the words naming it
    focus_heads: tuple = (0,)
    focus_whole_heads: tuple = ()        # heads that learn to look at the subject on the whole-image tile only
    tile_camera_weight: float = 0.0      # > 0: the LLM learns each six-camera grid tile's camera (`tile_camera.py`)
    tile_camera_layers: tuple = (1,)     # at the input of these decoder layers

    def check(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        bad = set(self.freeze) - set(PARTS)
        if bad:
            raise InputError(f"freeze takes {', '.join(PARTS)}; unknown: {', '.join(sorted(bad))}")
        if self.mode == "partial" and not self.freeze:
            raise InputError("partial fine-tuning needs freeze=(some of vit, projector, llm)")
        if self.mode == "partial" and set(self.freeze) == set(PARTS):
            raise InputError("everything is frozen: nothing to train")
        check_dtypes(self.dtype, self.save_dtype)
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("steps and batch_size must be positive")
        if self.feature_cache_gb < 0:
            raise InputError(f"feature_cache_gb must be >= 0, got {self.feature_cache_gb}")
        if self.focus_weight < 0 or not math.isfinite(self.focus_weight):
            raise InputError(f"focus_weight must be >= 0, got {self.focus_weight}")
        if self.tile_camera_weight < 0 or not math.isfinite(self.tile_camera_weight):
            raise InputError(f"tile_camera_weight must be >= 0, got {self.tile_camera_weight}")
        if self.tile_camera_weight and self.mode == "partial" and "llm" in self.freeze:
            raise InputError("tile_camera_weight teaches the LLM: it cannot be frozen (freeze without llm)")
        if self.feature_cache_gb and not (self.mode == "partial" and "vit" in self.freeze):
            raise InputError("feature_cache_gb needs a frozen ViT: mode='partial' with freeze including vit "
                             "(a trained encoder's features change every step)")


    def focus(self) -> FocusConfig | None:
        if not self.focus_weight:
            return None
        return FocusConfig(self.focus_weight, tuple(self.focus_image_layers), tuple(self.focus_word_layers),
                           tuple(self.focus_heads), tuple(self.focus_whole_heads))

    def tile_camera(self) -> TileCameraConfig | None:
        return TileCameraConfig(self.tile_camera_weight, tuple(self.tile_camera_layers)) if self.tile_camera_weight else None


@dataclass
class TrainResult:
    output: Path
    losses: list[float] = field(default_factory=list)     # mean token loss of each step run here
    steps: int = 0
    seconds: float = 0.0


def set_trainable(model, cfg: TrainConfig) -> None:
    groups = {"vit": model.vision_model, "projector": model.mlp1, "llm": model.language_model}
    if cfg.mode == "lora":
        add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_parts)
        for p in model.mlp1.parameters():
            p.requires_grad = True
        return
    for name, mod in groups.items():
        for p in mod.parameters():
            p.requires_grad = not (cfg.mode == "partial" and name in cfg.freeze)


def enable_checkpointing(model) -> None:
    """Recompute each ViT and decoder layer in the backward pass instead of keeping activations."""
    from torch.utils.checkpoint import checkpoint

    from ..model.decoder import DecoderLayer
    from ..model.internvit import InternVisionEncoderLayer

    for m in model.modules():
        if isinstance(m, (DecoderLayer, InternVisionEncoderLayer)):
            inner = m.forward
            m.forward = (lambda f: lambda *a: checkpoint(f, *a, use_reentrant=False))(inner)


def lr_lambda(cfg: TrainConfig):
    warm = max(1, round(cfg.warmup_ratio * cfg.steps)) if cfg.warmup_ratio > 0 else 0

    def f(step: int) -> float:   # step = number of optimizer steps taken so far
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, cfg.steps - warm)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def make_optimizer(model, cfg: TrainConfig):
    """AdamW: weight decay on matrices only; the tile-camera heads (`tile_camera.py`) apart, at
    their own scale of the learning rate."""
    inner = getattr(model, "module", model)              # DDP wraps the TrainingModel
    camera = getattr(inner, "tile_camera", None)
    own = {id(p) for p in camera.parameters()} if camera is not None else set()
    decay, no_decay, heads = [], [], []
    for p in model.parameters():
        if p.requires_grad:
            (heads if id(p) in own else decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if heads:
        groups.append({"params": heads, "weight_decay": 0.0, "lr": cfg.lr * TILE_CAMERA_LR_SCALE})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))


def latest_state(out: Path) -> Path | None:
    states = sorted((out / STATE_DIR).glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return states[-1] if states else None


def save_state(out: Path, step: int, model, opt, sched, losses, world, seconds: float = 0.0) -> None:
    """The train state after `step` steps (`seconds`: the wall time those steps took, over runs)."""
    if not world.main:
        return
    d = out / STATE_DIR
    d.mkdir(parents=True, exist_ok=True)
    trainable = {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad}
    tmp = d / f".step-{step}.pt.tmp"
    torch.save({"step": step, "model": trainable, "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "losses": losses, "seconds": float(seconds)}, tmp)
    tmp.replace(d / f"step-{step}.pt")
    for old in d.glob("step-*.pt"):
        if old.name != f"step-{step}.pt":
            old.unlink()


def whole_run_seconds(t0: float) -> dict:
    """A train log's wall-time fields for a run that made every step (one that cannot resume)."""
    seconds = time.perf_counter() - t0
    return {"seconds_this_run": seconds, "seconds": seconds}


def load_state(path: Path, model, opt, sched) -> tuple[int, list, float]:
    """(steps done, their losses, the wall time they took: 0 for a state written without it)."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in st["model"].items():
            params[k].copy_(v)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    return int(st["step"]), list(st["losses"]), float(st.get("seconds", 0.0))


def original_config(path: Path) -> dict:
    raw = json.loads((path / "config.json").read_text())
    return hf_config_to_original(raw, path) if is_hf_config(raw) else raw


def write_checkpoint(model, src: Path, out: Path, dtype: torch.dtype, log: dict, config: dict | None = None) -> None:
    """The trained model in the original layout: config.json (src's, or `config`), safetensors,
    tokenizer files."""
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    cfg = dict(config) if config is not None else original_config(src)
    cfg["torch_dtype"] = "bfloat16" if dtype == torch.bfloat16 else "float32"
    cfg.setdefault("llm_config", {})["torch_dtype"] = cfg["torch_dtype"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    save_weights(model, out, dtype)
    (out / "train_log.json").write_text(json.dumps(log, indent=2))


def step_indices(step: int, cfg: TrainConfig, world) -> list[int]:
    base = step * cfg.batch_size
    return [base + j for j in range(cfg.batch_size) if j % world.size == world.rank]


def to_device(s: Sample, device):
    pixels = None if s.pixels is None else torch.from_numpy(s.pixels).to(device)
    return (pixels, torch.tensor(s.input_ids, device=device), torch.tensor(s.labels, device=device), s.focus,
            s.tile_cameras)


def sync_context(net, last: bool):
    """Reduce gradients over ranks only in the last micro-batch of a step (DDP, FSDP2)."""
    if hasattr(net, "set_requires_gradient_sync"):   # FSDP2
        net.set_requires_gradient_sync(last)
    elif hasattr(net, "no_sync") and not last:
        return net.no_sync()
    return contextlib.nullcontext()


def optimizer_step(net, micro_batches, run, denominator: float, world, trainable, opt, sched,
                   max_grad_norm: float, extra=None) -> float:
    """One step of the global-batch rule: each of this rank's micro-batches' summed loss (`run`)
    is divided by the global denominator (DDP averages over ranks, hence the world size; gradients
    are reduced in the last micro-batch only), then clip, step, schedule. Returns this rank's summed
    loss; the step's loss is its all_sum over ranks divided by the denominator. `run` may return
    (objective, loss): the objective is minimised, the loss reported. `extra()` (one process only):
    a loss of the step as a whole, added to the objective as it is."""
    total = 0.0
    for k, mb in enumerate(micro_batches):
        with sync_context(net, k == len(micro_batches) - 1):
            out = run(mb)
            objective, loss = out if isinstance(out, tuple) else (out, out)
            (objective * (world.size / denominator)).backward()
        total += float(loss.detach())
    if extra is not None:
        extra().backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return total


def train(cfg: TrainConfig, dataset, feature_cache: FeatureCache | None = None, anchor=None) -> TrainResult:
    """Fine-tune cfg.checkpoint on `dataset` (an indexable sequence of records). With
    cfg.feature_cache_gb, `feature_cache` (else a new one) keeps the frozen encoder's features,
    bounded to that size: pass the same cache to runs that freeze the same encoder. `anchor(model,
    step)`: a loss added to each step's objective (`dense.DenseObjective`: a dense stage's targets kept
    while the encoder trains), logged apart; one process only."""
    cfg.check()
    if len(dataset) < 1:
        raise InputError("the training data holds no records")
    world = D.init_world(cfg.device)
    if cfg.batch_size % world.size:
        raise InputError(f"batch_size={cfg.batch_size} must be a multiple of the number of processes "
                         f"({world.size})")
    if anchor is not None and (world.size > 1 or cfg.feature_cache_gb or cfg.mode == "lora"):
        raise InputError("an anchor loss needs one process, the encoder training (no feature cache) and "
                         "mode 'full' or 'partial'")
    if world.size > 1 and cfg.strategy == "fsdp" and cfg.save_every:
        raise InputError("intermediate train states are written for ddp only; use save_every=0 with fsdp")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    ckpt = load_checkpoint(cfg.checkpoint, torch.float32)
    model, tok = ckpt.model.train(), load_tokenizer(ckpt.path)
    tpl, pre = get_template(ckpt.config.template), preprocess_config(ckpt)
    set_trainable(model, cfg)
    if cfg.grad_checkpointing:
        enable_checkpointing(model)
    cache = None
    if cfg.feature_cache_gb:
        cache = feature_cache if feature_cache is not None else FeatureCache(0)
        cache.resize(cfg.feature_cache_gb * 2 ** 30)
    focus = cfg.focus()
    if focus is not None:
        focus.check(len(model.language_model.model.layers), model.language_model.config.num_attention_heads)
    autocast = autocast_dtype(cfg.dtype, world.device)
    tile_camera = cfg.tile_camera()
    if tile_camera is not None:
        tile_camera.check(len(model.language_model.model.layers))
    inner = TrainingModel(model, tok.token_to_id(IMG_CONTEXT), autocast, cache, focus, tile_camera).to(world.device)
    net = D.wrap(inner, world, cfg.strategy)
    opt, sched = make_optimizer(net, cfg)
    start, losses, earlier = 0, [], 0.0      # earlier: the wall time of the steps a resumed state holds
    state = latest_state(out) if cfg.resume else None
    if state is not None:
        start, losses, earlier = load_state(state, net, opt, sched)
        _log(cfg, world, f"resumed from {state} at step {start}")
    t0 = time.perf_counter()
    trainable = [p for p in net.parameters() if p.requires_grad]
    anchor_losses: list[float] = []
    for step in range(start, cfg.steps):
        samples = [encode_record(dataset[i % len(dataset)], tok, tpl, pre, ckpt.config.tokens_per_tile,
                                 cfg.max_length) for i in step_indices(step, cfg, world)]
        n_tokens = D.all_sum(sum(s.n_targets for s in samples), world)
        if n_tokens == 0:
            raise InputError(f"step {step}: no assistant tokens in the batch (empty answers?)")
        extra = None
        if anchor is not None:
            def extra(step=step):
                loss = anchor(model, step)
                anchor_losses.append(float(loss.detach()))
                return loss
        total = optimizer_step(net, samples, lambda s: net(*to_device(s, world.device)), n_tokens, world,
                               trainable, opt, sched, cfg.max_grad_norm, extra)
        losses.append(D.all_sum(total, world) / n_tokens)
        if (step + 1) % cfg.log_every == 0 or step == start:
            mass = "".join(f" focus {k} {sum(v[-50:]) / len(v[-50:]):.3f}" for k, v in sorted(inner.focus_mass.items()))
            if anchor_losses:
                mass += f" anchor {sum(anchor_losses[-cfg.log_every:]) / len(anchor_losses[-cfg.log_every:]):.4f}"
            _log(cfg, world, f"step {step + 1}/{cfg.steps} loss {losses[-1]:.4f}{mass} "
                             f"lr {sched.get_last_lr()[0]:.2e} ({time.perf_counter() - t0:.0f} s)")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_state(out, step + 1, net, opt, sched, losses, world, earlier + time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    model = D.gather_model(net, model, world, cfg.strategy)
    if world.main:
        if cfg.mode == "lora":
            merge_lora(model)
        log = {"config": asdict(cfg), "autocast": str(autocast).removeprefix("torch."), "losses": losses,
               "seconds_this_run": seconds, "seconds": earlier + seconds, "world_size": world.size}
        if anchor is not None:
            log["anchor_losses_this_run"] = anchor_losses
        write_checkpoint(model.cpu(), ckpt.path, out, DTYPES[cfg.save_dtype], log)
        shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    D.barrier(world)
    return TrainResult(out, losses[start:], cfg.steps - start, seconds)


def _log(cfg, world, msg: str) -> None:
    if world.main and not cfg.quiet:
        print(msg, flush=True)
