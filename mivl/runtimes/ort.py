"""ONNX Runtime sessions: the one place that chooses providers and makes InferenceSessions."""
from __future__ import annotations

from ..errors import BundleError, InputError

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


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
    gpu = [p for p in GPU_PROVIDERS if p in have]
    if device == "cuda" and not gpu:
        raise InputError("device='cuda' asked for, but this onnxruntime has no CUDA or TensorRT "
                         f"execution provider (it has {', '.join(have)}); install onnxruntime-gpu "
                         "or use device='cpu'")
    return gpu + ["CPUExecutionProvider"]


def ort_session(path: str, providers: list[str], threads: int | None, what: str):
    """An InferenceSession of `path` (`what` names it in errors), quiet, with `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=list(providers))
    except Exception as e:
        raise BundleError(f"ONNX Runtime could not load the {what} {path}: {e}") from None


def on_gpu(session) -> bool:
    return session.get_providers()[0] in GPU_PROVIDERS
