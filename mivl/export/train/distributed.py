"""One script on one process or many: torchrun sets RANK / WORLD_SIZE, this picks it up.

DDP by default (gloo on CPUs, NCCL on GPUs); FSDP (fully_shard) as an option for models whose
optimizer state does not fit one device.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ...edge.errors import InputError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: str = "auto") -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    world = World(rank, size, local, device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        # a rank that exits with its process group alive can abort in interpreter teardown (gloo's
        # worker threads still hold tensors: SIGABRT, "terminate called without an active
        # exception"; torch asks for destroy_process_group before exit): closed while Python lives
        atexit.register(shutdown, world)
    return world


def all_sum(value: float, world: World) -> float:
    if world.size == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def wrap(module: torch.nn.Module, world: World, strategy: str = "ddp") -> torch.nn.Module:
    if world.size == 1:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [world.local_rank] if world.device.startswith("cuda") else None
        return DDP(module, device_ids=ids, find_unused_parameters=True)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in _blocks(module):
            fully_shard(layer)
        fully_shard(module)
        return module
    raise InputError(f"unknown distributed strategy {strategy!r}; use ddp or fsdp")


def _blocks(module: torch.nn.Module):
    from ..model.decoder import DecoderLayer
    from ..model.internvit import InternVisionEncoderLayer

    return [m for m in module.modules() if isinstance(m, (DecoderLayer, InternVisionEncoderLayer))]


def gather_model(net: torch.nn.Module, model: torch.nn.Module, world: World, strategy: str):
    """The full, unsharded model on the main rank (FSDP shards are gathered; DDP holds it whole)."""
    if world.size == 1 or strategy != "fsdp":
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(net, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not world.main:
        return model
    from ..model.internvl import InternVLChat

    plain = InternVLChat(model.config)
    prefix = "model."
    sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in full.items()}
    if any("lora_" in k for k in sd):
        from .lora import add_lora_like

        add_lora_like(plain, model)
    plain.load_state_dict(sd, strict=True)
    return plain


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
