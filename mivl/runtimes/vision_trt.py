"""The vision encoder on a TensorRT engine (built on the device by `mivl-export build-engine`).

Tiles go in and features come out as CuPy device buffers bound to the engine's named tensors by
address (TensorRT 10's name-based I/O, enqueueV3 on CuPy's current stream), so tiles made on the GPU
by the fused preprocessing kernels never visit the host. For a split bundle the engine is the ViT,
and its hidden states stay on the device for the unshuffle kernel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, MivlError
from .tensorrt_engine import TensorRTUnavailable, _trt


class TrtVision:
    """pixel_values (N, 3, S, S) -> the engine's output (N, T, D), in chunks of max_tiles."""

    def __init__(self, plan: Path, input_name: str, max_tiles: int):
        trt = _trt()
        try:
            import cupy
        except ImportError:
            raise TensorRTUnavailable("CuPy is needed to feed the TensorRT engine (pip install 'mivl[gpu]')") from None
        self.cupy = cupy
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise MivlError(f"TensorRT could not load the engine {plan}: rebuild it with mivl-export build-engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if input_name not in names or len(outputs) != 1:
            raise MivlError(f"the engine {plan} has tensors {names}; expected input {input_name!r} and one output")
        self.input_name, self.output_name, self.max_tiles = input_name, outputs[0], max_tiles
        self.backend = f"tensorrt {trt.__version__} engine ({Path(plan).name})"
        self.on_gpu = True
        self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]   # for graphs run beside it

    def use_kernels(self, kernels) -> None:
        """A one-graph encoder has no work between graphs for the fused kernels."""

    def run_device(self, tiles, keep_on_device: bool = False):
        """Tiles as a CuPy (or NumPy) array -> features: a NumPy array, or a CuPy one with keep_on_device."""
        cp = self.cupy
        if tiles.ndim != 4 or tiles.shape[1] != 3:
            raise InputError(f"tiles must be (N, 3, S, S), got {tiles.shape}")
        stream = cp.cuda.get_current_stream()
        outs = []
        for i in range(0, tiles.shape[0], self.max_tiles):
            chunk = cp.ascontiguousarray(cp.asarray(tiles[i:i + self.max_tiles], dtype=cp.float32))
            self.context.set_input_shape(self.input_name, tuple(chunk.shape))
            out = cp.empty(tuple(self.context.get_tensor_shape(self.output_name)), cp.float32)
            self.context.set_tensor_address(self.input_name, chunk.data.ptr)
            self.context.set_tensor_address(self.output_name, out.data.ptr)
            if not self.context.execute_async_v3(stream.ptr):
                raise MivlError("TensorRT failed to run the vision engine (see its log above)")
            outs.append(out)
        stream.synchronize()
        result = cp.concatenate(outs)
        return result if keep_on_device else cp.asnumpy(result)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.run_device(pixels)

    def close(self) -> None:
        self.context = self.engine = self.runtime = None
