"""The vision encoder on ONNX Runtime: TensorRT or CUDA execution provider where present, else CPU."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .ort import available_providers, choose_providers, on_gpu, ort_session  # noqa: F401 - re-exported


def run_bound(session, input_name: str, array, output_device: str = "cpu"):
    """Run `session` on a float32 CuPy array bound as its input by device pointer (no host copy).
    The output comes back as a NumPy array (output_device "cpu") or stays on the GPU as an
    OrtValue ("cuda")."""
    binding = session.io_binding()
    binding.bind_input(input_name, "cuda", 0, np.float32, list(array.shape), array.data.ptr)
    binding.bind_output(session.get_outputs()[0].name, output_device)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0] if output_device == "cpu" else binding.get_outputs()[0]


def as_cupy(value, cupy):
    """An ONNX Runtime float32 OrtValue on the GPU as a CuPy array over the same memory (the array
    keeps the OrtValue alive)."""
    shape = tuple(value.shape())
    memory = cupy.cuda.UnownedMemory(value.data_ptr(), int(np.prod(shape)) * 4, value)
    return cupy.ndarray(shape, cupy.float32, cupy.cuda.MemoryPointer(memory, 0))


class OrtVision:
    """pixel_values (N, 3, S, S) float32 -> image_embeds (N, T, D) float32, in chunks of max_tiles."""

    def __init__(self, path: str, input_name: str, max_tiles: int, device: str = "auto",
                 threads: int | None = None):
        self.session = ort_session(path, choose_providers(device), threads, "vision encoder")
        self.providers = self.session.get_providers()
        self.input_name = input_name
        self.max_tiles = max_tiles
        self.backend = f"onnxruntime ({self.session.get_providers()[0]})"

    @property
    def on_gpu(self) -> bool:
        return on_gpu(self.session)

    def use_kernels(self, kernels) -> None:
        """A one-graph encoder has no work between graphs for the fused kernels."""

    def run_device(self, tiles, keep_on_device: bool = False):
        """Tiles already on the GPU (a CuPy array): bound to the graph input by device pointer,
        so they are not copied back to the host first. The features come back as a NumPy array,
        or with keep_on_device as a CuPy array that stays on the GPU."""
        if not self.on_gpu:
            out = self(tiles.get())
            if keep_on_device:
                import cupy
                return cupy.asarray(out)
            return out
        chunks = range(0, tiles.shape[0], self.max_tiles)
        if not keep_on_device:
            return np.concatenate([run_bound(self.session, self.input_name, tiles[i:i + self.max_tiles])
                                   for i in chunks])
        import cupy

        return cupy.concatenate([as_cupy(run_bound(self.session, self.input_name, tiles[i:i + self.max_tiles],
                                                   "cuda"), cupy) for i in chunks])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InputError(f"tiles must be (N, 3, S, S), got {pixels.shape}")
        parts = [self.session.run(None, {self.input_name: np.ascontiguousarray(pixels[i:i + self.max_tiles])})[0]
                 for i in range(0, len(pixels), self.max_tiles)]
        return np.concatenate(parts)

    def close(self) -> None:
        self.session = None
