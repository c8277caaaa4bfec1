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


# On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's u8s8 integer MatMul sums
# pairs of products in 16 bits with saturation, which an INT8 encoder's activations overflow (the
# tiny model's INT8 vision: mean cosine 0.986 against 0.9986 computed exactly, BENCHMARKS "INT8 on a
# CPU without VNNI"); this option makes such CPUs use the exact u8u8 kernel. Elsewhere it does nothing.
EXACT_INT8 = ("session.x64quantprecision", "1")


def session_options(threads: int | None = None):
    """The SDK's ONNX Runtime session options: quiet, exact INT8 MatMuls on every x86 CPU, and
    `threads` intra-op threads (None: ONNX Runtime's choice)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry(*EXACT_INT8)
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def ort_session(path: str, providers: list[str], threads: int | None, what: str):
    """An InferenceSession of `path` (`what` names it in errors), with `session_options(threads)`."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=list(providers))
    except Exception as e:
        raise BundleError(f"ONNX Runtime could not load the {what} {path}: {e}") from None


def on_gpu(session) -> bool:
    return session.get_providers()[0] in GPU_PROVIDERS
