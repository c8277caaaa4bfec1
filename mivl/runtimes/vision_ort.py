"""The vision encoder on ONNX Runtime: TensorRT or CUDA execution provider where present, else CPU."""
from __future__ import annotations

import numpy as np

from ..edge.errors import BundleError, InputError


def available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def choose_providers(device: str) -> list[str]:
    have = available_providers()
    if not have:
        raise BundleError("onnxruntime is not installed: pip install 'mivl[edge]' (or onnxruntime-gpu)")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]
    if device == "cuda" and not gpu:
        raise InputError("device='cuda' asked for, but this onnxruntime has no CUDA or TensorRT "
                         f"execution provider (it has {', '.join(have)}); install onnxruntime-gpu "
                         "or use device='cpu'")
    return gpu + ["CPUExecutionProvider"]


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
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.providers = choose_providers(device)
        try:
            self.session = ort.InferenceSession(path, opts, providers=self.providers)
        except Exception as e:
            raise BundleError(f"ONNX Runtime could not load {path}: {e}") from None
        self.input_name = input_name
        self.max_tiles = max_tiles
        self.backend = f"onnxruntime ({self.session.get_providers()[0]})"

    @property
    def on_gpu(self) -> bool:
        return self.session.get_providers()[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")

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
