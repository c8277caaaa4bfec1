"""The vision graph's attention as one ONNX Runtime node, and written out again for TensorRT."""
import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mivl.edge.bundle import open_bundle
from mivl.export.vision_onnx import export_vision
from mivl.runtimes import attention_graph


def run(model_or_path, x):
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def ops(model):
    return collections.Counter((n.domain, n.op_type) for n in model.graph.node)


@pytest.fixture(scope="module")
def written_out(reference, tmp_path_factory):
    ref = reference("qwen2")
    path = export_vision(ref.model, tmp_path_factory.mktemp("attn") / "vision.onnx")
    return ref, path


def test_fuse_and_expand_keep_the_encoder(written_out):
    ref, path = written_out
    layers, heads = ref.ckpt.config.vision.num_hidden_layers, ref.ckpt.config.vision.num_attention_heads
    x = np.random.default_rng(0).standard_normal((2, 3, 448, 448)).astype(np.float32)
    want = run(path, x)
    model = onnx.load(str(path))
    assert ops(model)[("", "Softmax")] == layers
    assert attention_graph.fuse(model, heads) == layers
    assert ops(model)[("com.microsoft", "MultiHeadAttention")] == layers
    assert ops(model)[("", "Softmax")] == 0 and ops(model)[("", "MatMul")] < ops(onnx.load(str(path)))[("", "MatMul")]
    np.testing.assert_allclose(run(model, x), want, rtol=1e-4, atol=1e-5)
    assert attention_graph.expand(model) == layers
    assert {d for d, _ in ops(model)} == {""} and {o.domain for o in model.opset_import} == {""}
    onnx.checker.check_model(model)
    np.testing.assert_allclose(run(model, x), want, rtol=1e-5, atol=1e-6)


def test_blocks_that_do_not_match_are_left_alone(written_out):
    ref, path = written_out
    heads = ref.ckpt.config.vision.num_attention_heads
    model = onnx.load(str(path))
    before = model.SerializeToString()
    assert attention_graph.fuse(model, heads * 2) == 0        # the reshape says another head count
    assert model.SerializeToString() == before
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    softmax.attribute[0].i = 2                                # softmax over another axis: not attention
    layers = ref.ckpt.config.vision.num_hidden_layers
    assert attention_graph.fuse(model, heads) == layers - 1
    assert ops(model)[("", "Softmax")] == 1


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_bundles_run_attention_as_one_node(bundle_dir, precision):
    b = open_bundle(bundle_dir("qwen2", precision))
    layers = b.vision["vit_layers"]
    model = onnx.load(str(b.file(b.vision["file"])))
    assert ops(model)[("com.microsoft", "MultiHeadAttention")] == layers
    assert ops(model)[("", "Softmax")] == 0
    assert b.report()["vision"]["fused_attention_blocks"] == layers


def test_tensorrt_reads_the_bundle_graph_in_standard_ops(bundle_dir):
    """What `build_plan` hands TensorRT's parser: the INT8 bundle's graph with attention written out
    (no contrib op), computing what ONNX Runtime computes from the bundle's file."""
    b = open_bundle(bundle_dir("qwen2", "int8"))
    portable = onnx.load_from_string(attention_graph.portable_graph(b.file(b.vision["file"])))
    assert {n.domain for n in portable.graph.node} == {""}
    assert ops(portable)[("", "Softmax")] == b.vision["vit_layers"]
    x = np.random.default_rng(1).standard_normal((1, 3, 448, 448)).astype(np.float32)
    got, want = run(portable, x), run(b.file(b.vision["file"]), x)
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() > 0.999


def test_tensorrt_path_without_onnx_says_what_to_install(bundle_dir, monkeypatch):
    import sys

    from mivl.errors import MivlError

    monkeypatch.setitem(sys.modules, "onnx", None)          # import onnx raises ImportError
    b = open_bundle(bundle_dir("qwen2", "fp32"))
    with pytest.raises(MivlError, match="pip install onnx"):
        attention_graph.portable_graph(b.file(b.vision["file"]))
