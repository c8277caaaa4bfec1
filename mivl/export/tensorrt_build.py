"""`mivl-export build-engine`: the TensorRT engine of a bundle (runs on the device; no torch)."""
from __future__ import annotations

from pathlib import Path

from ..edge.bundle import open_bundle
from ..runtimes.tensorrt_engine import build_plan, engine_key, engine_path, profile_shapes, this_gpu_key  # noqa: F401


def build_engine(bundle_path, fp16: bool = False, workspace_gib: float = 2.0) -> Path:
    """Build (or find in the cache) the vision engine of a bundle for this GPU."""
    bundle = open_bundle(bundle_path)
    v = bundle.vision
    fp16 = fp16 or v["precision"] == "fp16"
    out = engine_path(bundle.path, this_gpu_key(bundle.manifest["files"][v["file"]], fp16))
    if out.is_file():
        return out
    build_plan(bundle.file(v["file"]), out, v["input"]["name"], int(v["max_tiles"]),
               int(v["input"]["shape"][-1]), fp16, v["precision"] == "int8", workspace_gib)
    return out
