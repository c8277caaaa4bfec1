"""TensorRT: what needs no GPU is tested here; the engine build itself needs TensorRT and a GPU."""
import pytest

from mivl.export.tensorrt_build import build_engine
from mivl.runtimes.tensorrt_engine import TensorRTUnavailable, engine_key, profile_shapes


def test_profile_covers_one_to_max_tiles():
    p = profile_shapes(13)
    assert p["min"] == (1, 3, 448, 448) and p["opt"] == (13, 3, 448, 448) and p["max"] == (13, 3, 448, 448)
    assert profile_shapes(40)["opt"][0] == 13 and profile_shapes(4)["opt"][0] == 4
    with pytest.raises(ValueError):
        profile_shapes(0)


def test_engine_key_changes_with_what_the_engine_is_bound_to():
    base = ("abc", "Orin", "8.7", "10.3.0", True)
    keys = {engine_key(*base), engine_key("abd", *base[1:]), engine_key("abc", "H100", "9.0", "10.3.0", True),
            engine_key("abc", "Orin", "8.7", "10.4.0", True), engine_key("abc", "Orin", "8.7", "10.3.0", False)}
    assert len(keys) == 5 and engine_key(*base) == engine_key(*base)


def test_build_engine_says_clearly_when_tensorrt_is_missing(bundle_dir):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
            build_engine(bundle_dir("qwen2", "fp32"))
    else:
        pytest.skip("TensorRT is installed here; the GPU build test covers it")


def test_engine_build_on_gpu(bundle_dir):
    pytest.importorskip("tensorrt", reason="needs TensorRT and a CUDA GPU")
    path = build_engine(bundle_dir("qwen2", "fp32"))
    assert path.is_file() and path.stat().st_size > 0


def test_session_falls_back_to_onnxruntime_without_an_engine(bundle_dir):
    """No TensorRT (or no engine built): the vision runs on ONNX Runtime, and says so."""
    from mivl.edge.bundle import open_bundle
    from mivl.edge.session import Session
    from mivl.runtimes.backends import tensorrt_vision

    b = open_bundle(bundle_dir("qwen2", "fp32"))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert tensorrt_vision(b.path, b.vision, b.manifest["files"][b.vision["file"]]) is None
    with Session(b.path) as s:
        assert s.backends["vision"].startswith("onnxruntime")


def test_engine_runs_like_onnxruntime(bundle_dir):
    """On a GPU: the built engine, run by the runtime's TrtVision, gives ONNX Runtime's features."""
    pytest.importorskip("tensorrt", reason="needs TensorRT and a CUDA GPU")
    cupy = pytest.importorskip("cupy", reason="needs CuPy and a CUDA GPU")
    import numpy as np

    from mivl.edge.bundle import open_bundle
    from mivl.export.vision_check import cosine_per_token, run_onnx
    from mivl.runtimes.vision_trt import TrtVision

    path = bundle_dir("qwen2", "fp32")
    plan = build_engine(path)
    b = open_bundle(path)
    tiles = np.random.default_rng(0).standard_normal((3, 3, 448, 448)).astype(np.float32)
    trt_out = TrtVision(plan, b.vision["input"]["name"], int(b.vision["max_tiles"])).run_device(cupy.asarray(tiles))
    ort_out = run_onnx(path / b.vision["file"], tiles)
    assert cosine_per_token(trt_out, ort_out).min() >= 0.9999
