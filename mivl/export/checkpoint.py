"""Loading InternVL checkpoints: the original OpenGVLab layout and the Hugging Face "-hf" one.

Safetensors only (a .bin only through torch's weights_only loader); the checkpoint's own Python
code is never executed. Every tensor is checked against the model built from config.json: a
missing, unexpected or mis-shaped tensor fails with its name and the expected shape.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..edge.errors import CheckpointError
from .model.config import InternVLConfig, parse_config
from .families import from_canonical, to_canonical
from .model.internvl import InternVLChat
from .hf_layout import hf_config_to_original, hf_state_to_original, is_hf_config

LLM_PREFIX = "language_model."


@dataclass
class Checkpoint:
    path: Path
    config: InternVLConfig
    model: InternVLChat
    dtype: torch.dtype            # dtype of the stored weights
    weights_sha256: str           # over the weight files, in name order


def resolve(source: str | os.PathLike) -> Path:
    """A local directory, or a hub id (org/name) downloaded when the network allows."""
    path = Path(source)
    if path.is_dir():
        return path
    text = str(source)
    if path.exists():
        raise CheckpointError(f"{text!r} is a file; expected a checkpoint directory with config.json")
    if text.count("/") == 1 and not text.startswith((".", "/")):
        return _download(text)
    raise CheckpointError(f"checkpoint directory not found: {text!r}")


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{repo_id!r} is not a local directory, and huggingface_hub is not "
                              "installed to fetch it; download the checkpoint and pass its path") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                                "*.txt", "*.tiktoken"]))
    except Exception as e:  # network errors come in many types
        raise CheckpointError(f"could not download {repo_id!r} from the hub ({type(e).__name__}: "
                              f"{e}); without network, pass a local checkpoint directory") from None


def read_config(path: Path) -> tuple[InternVLConfig, bool]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json; expected an InternVL checkpoint directory")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from None
    hf = is_hf_config(raw)
    if hf:
        raw = hf_config_to_original(raw, path)
    return parse_config(raw), hf


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise CheckpointError(f"{path}: shard(s) {', '.join(missing)} named in "
                                  "model.safetensors.index.json are missing")
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return bins
    raise CheckpointError(f"{path} has no *.safetensors (or pytorch_model*.bin) weight files")


def read_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            try:
                part = load_file(str(f))
            except Exception as e:  # SafetensorError, OSError, ... : a damaged or lying file
                raise CheckpointError(f"{f.name} is not a readable safetensors file ({type(e).__name__}: "
                                      f"{str(e)[:200]}); the checkpoint is damaged or incomplete") from None
        else:
            try:  # weights only: never unpickle arbitrary objects
                part = torch.load(str(f), map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"{f.name} cannot be loaded safely ({e}); convert it to "
                                      "safetensors") from None
        dup = set(part) & set(out)
        if dup:
            raise CheckpointError(f"tensor {sorted(dup)[0]} appears in more than one weight file")
        out.update(part)
    return out


def sha256_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def split_state(state: dict, cfg: InternVLConfig) -> dict:
    """Checkpoint tensors -> our module's state dict (LLM tensors through the family map)."""
    llm = {k[len(LLM_PREFIX):]: v for k, v in state.items() if k.startswith(LLM_PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(LLM_PREFIX)}
    rest.update({LLM_PREFIX + k: v for k, v in to_canonical(llm, cfg.llm).items()})
    return rest


def check_state(state: dict, model: torch.nn.Module) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    problems = [f"missing {k} (expected shape {list(expected[k])})" for k in missing[:10]]
    problems += [f"unexpected {k} {list(state[k].shape)}" for k in unexpected[:10]]
    problems += [f"{k} has shape {list(state[k].shape)}, expected {list(expected[k])}" for k in wrong[:10]]
    if problems:
        n = len(missing) + len(unexpected) + len(wrong)
        raise CheckpointError(f"checkpoint tensors do not match config.json ({n} problem(s)): "
                              + "; ".join(problems))


def load_checkpoint(source: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """Load a checkpoint into the reference model (fp32 by default: the yardstick)."""
    path = resolve(source)
    cfg, hf = read_config(path)
    files = weight_files(path)
    raw = read_tensors(files)
    if hf:
        raw = hf_state_to_original(raw, cfg)
    stored = next(iter(raw.values())).dtype if raw else torch.float32
    state = split_state(raw, cfg)
    del raw
    with torch.device("meta"):
        model = InternVLChat(cfg)
    check_state(state, model)
    # Convert tensor by tensor, each stored one freed as its converted copy takes its place, and
    # hand the copies to the model as its parameters (assign): the stored weights and the model
    # are never both whole in memory beside a third copy (the 1B: 9.0 -> 5.5 GiB peak, bf16 -> fp32).
    for k in list(state):
        state[k] = state.pop(k).to(dtype).contiguous()
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model.eval()
    return Checkpoint(path, cfg, model, stored, sha256_files(files))


def original_state(model: InternVLChat) -> dict[str, torch.Tensor]:
    """Our module's tensors in the original OpenGVLab names and packing."""
    sd = model.state_dict()
    llm = {k[len(LLM_PREFIX):]: v for k, v in sd.items() if k.startswith(LLM_PREFIX)}
    out = {k: v for k, v in sd.items() if not k.startswith(LLM_PREFIX)}
    out.update({LLM_PREFIX + k: v for k, v in from_canonical(llm, model.config.llm).items()})
    return out


def save_weights(model: InternVLChat, out_dir: Path, dtype: torch.dtype = torch.bfloat16,
                 max_shard_bytes: int = 4 << 30) -> list[Path]:
    """Write the model's weights in the original layout (sharded with an index when large)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(dtype).contiguous() for k, v in original_state(model).items()}
    shards, current, size = [], {}, 0
    for k in sorted(tensors):
        n = tensors[k].numel() * tensors[k].element_size()
        if current and size + n > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k] = tensors[k]
        size += n
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return [out_dir / "model.safetensors"]
    names, weight_map = [], {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / name), metadata={"format": "pt"})
        names.append(out_dir / name)
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return names
