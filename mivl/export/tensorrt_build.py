"""`mivl-export build-engine`: the TensorRT engine of a bundle (runs on the device; no torch)."""
from ..runtimes.tensorrt_engine import build_engine, profile_shapes, engine_key  # noqa: F401
