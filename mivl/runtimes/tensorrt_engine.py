"""TensorRT engines for a bundle's vision graph: built on the device that runs them, cached.

The cache key binds an engine to what it was built for: the GPU (name and compute capability),
the TensorRT version, and the vision file's sha256. The optimisation profile covers 1 .. max_tiles
tiles (optimum at a single image's 13). A timing cache next to the engines makes rebuilds fast.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import MivlError

ENGINES = "engines"


class TensorRTUnavailable(MivlError):
    """TensorRT or a CUDA GPU is missing here."""


def profile_shapes(max_tiles: int, image_size: int = 448, typical: int = 13) -> dict:
    """min / opt / max input shapes of the tile-batch profile."""
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    opt = min(typical, max_tiles)
    shape = lambda n: (n, 3, image_size, image_size)  # noqa: E731
    return {"min": shape(1), "opt": shape(opt), "max": shape(max_tiles)}


def engine_key(vision_sha256: str, gpu_name: str, compute_capability: str, trt_version: str,
               fp16: bool) -> str:
    blob = json.dumps([vision_sha256, gpu_name, compute_capability, trt_version, fp16])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def engine_path(bundle_dir: Path, key: str) -> Path:
    return Path(bundle_dir) / ENGINES / f"vision-{key}.plan"


def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed here (on Jetson it comes with JetPack: "
                                  "python3-libnvinfer; on x86: pip install tensorrt); the bundle runs "
                                  "on ONNX Runtime instead") from None
    return trt


def gpu_identity() -> tuple[str, str]:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python
    except ImportError:
        try:
            import cupy
        except ImportError:
            raise TensorRTUnavailable("no CUDA Python binding (cuda-python or cupy) to query the GPU") from None
        try:
            props = cupy.cuda.runtime.getDeviceProperties(0)
        except Exception as e:
            raise TensorRTUnavailable(f"no usable CUDA GPU: {e}") from None
        return props["name"].decode(), f"{props['major']}.{props['minor']}"
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise TensorRTUnavailable(f"no usable CUDA GPU (cudaGetDeviceProperties: {err})")
    return props.name.decode(), f"{props.major}.{props.minor}"


def this_gpu_key(vision_sha256: str, fp16: bool) -> str:
    """The engine key of a vision file for this GPU and this TensorRT."""
    trt = _trt()
    name, cc = gpu_identity()
    return engine_key(vision_sha256, name, cc, trt.__version__, fp16)


def find_engine(bundle_dir: Path, vision_sha256: str, precision: str) -> Path | None:
    """The engine `mivl-export build-engine` built for a bundle's vision file on this GPU and
    TensorRT, or None (never builds: a build takes minutes, so it is an explicit step). Raises
    TensorRTUnavailable where TensorRT or a GPU is missing."""
    for fp16 in (precision == "fp16", True):   # as exported, or build-engine --fp16
        path = engine_path(bundle_dir, this_gpu_key(vision_sha256, fp16))
        if path.is_file():
            return path
    return None


def build_plan(onnx: Path, out: Path, input_name: str, max_tiles: int, image_size: int = 448,
               fp16: bool = False, int8: bool = False, workspace_gib: float = 2.0) -> Path:
    """Build a TensorRT plan from an ONNX vision graph (profile 1 .. max_tiles tiles), with a
    timing cache beside it; written atomically to `out`. A bundle's graph runs attention as ONNX
    Runtime's fused node; TensorRT parses it written out in standard ops (`portable_graph`)."""
    from .attention_graph import portable_graph

    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(portable_graph(onnx), str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise MivlError(f"TensorRT could not parse {Path(onnx).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ graph: scales come from the ONNX
    shapes = profile_shapes(max_tiles, image_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_file = out.parent / "timing.cache"
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MivlError("TensorRT failed to build the vision engine (see the log above)")
    tmp = out.with_suffix(".partial")
    tmp.write_bytes(bytes(plan))
    tmp.rename(out)
    cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    return out
