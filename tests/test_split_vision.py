"""--split-vision: a ViT graph and a projector graph with unshuffle + LayerNorm between them, as the
fused kernel does it on a GPU; on the CPU the same step runs in NumPy and in the kernel's harness."""
import json

import numpy as np
import pytest
import torch

from mivl.edge.errors import BundleError
from mivl.runtimes.vision_split import unshuffle, unshuffle_layernorm

from test_runtime_parity import STEPS, inputs, reference_answers, run_runtime  # noqa: F401


def test_numpy_unshuffle_is_internvl_v2_order():
    from mivl.export.model.projector import vit_to_tokens

    hidden = np.random.default_rng(0).standard_normal((3, 1 + 32 * 32, 8)).astype(np.float32)
    ref = vit_to_tokens(torch.from_numpy(hidden), 0.5, "v2").numpy()
    assert np.array_equal(unshuffle(hidden), ref)


def test_numpy_layernorm_and_kernel_harness_agree_with_torch():
    from mivl.export.model.projector import vit_to_tokens
    from mivl.runtimes.kernels import KernelUnavailable, cpu_backend
    from mivl.edge.gpu_preprocess import Preprocessor

    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((2, 1 + 32 * 32, 24)).astype(np.float32) * 3 + 1
    gamma, beta = rng.standard_normal(96).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    tokens = vit_to_tokens(torch.from_numpy(hidden), 0.5, "v2")
    ref = torch.nn.functional.layer_norm(tokens, (96,), torch.from_numpy(gamma), torch.from_numpy(beta), 1e-5).numpy()
    ours = unshuffle_layernorm(hidden, gamma, beta, 1e-5)
    assert np.abs(ours - ref).max() <= 1e-5
    try:
        kernel = Preprocessor(cpu_backend()).unshuffle_layernorm(hidden, gamma, beta, 1e-5)
    except KernelUnavailable as e:
        pytest.skip(f"kernel harness: {e}")
    assert np.abs(kernel - ours).max() <= 1e-5


@pytest.fixture(scope="module")
def split_bundle(tiny_dir, tmp_path_factory):
    from mivl.export.api import export

    made = {}

    def get(family, precision="fp32"):
        if (family, precision) not in made:
            out = tmp_path_factory.mktemp("split") / f"{family}-{precision}"
            made[family, precision] = export(tiny_dir(family), out, precision=precision, split_vision=True,
                                             quiet=True, calib_size=8)
        return made[family, precision]
    return get


def test_split_bundle_layout_and_validation(split_bundle):
    r = split_bundle("qwen2")
    v = r.manifest["vision"]
    assert v["file"] == "vision.vit.onnx" and v["split"]["projector_file"] == "vision.projector.onnx"
    assert v["split"]["vit_output"]["shape"][1:] == [1025, v["vit_hidden"]]
    assert {"vision.vit.onnx", "vision.projector.onnx", "vision.projector_norm.npz"} <= set(r.manifest["files"])
    assert "vision.onnx" not in r.manifest["files"]
    assert r.report["vision"]["passed"] and r.report["vision"]["min_cosine"] >= 0.99999


def test_split_int8_passes_its_bar(split_bundle):
    r = split_bundle("qwen2", "int8")
    assert r.manifest["vision"]["file"] == "vision.vit.int8.onnx"
    assert r.report["vision"]["passed"] and r.report["vision"]["mean_cosine"] >= 0.99


@pytest.mark.parametrize("family", ["qwen2", "internlm2"])
def test_split_runtime_matches_reference(family, split_bundle, reference, inputs, tmp_path):  # noqa: F811
    cases = [{"question": "What is in the picture?", "images": inputs["one"], "max_new_tokens": STEPS},
             {"question": "What is in front of the car?", "cameras": inputs["cameras"], "max_new_tokens": STEPS}]
    got = run_runtime(split_bundle(family).path, cases, tmp_path)   # torch unimportable in there
    expected = reference_answers(reference(family), cases, inputs)
    for g, e in zip(got, expected):
        assert g["tokens"] == e.token_ids


def test_split_bundle_missing_norm_is_refused(split_bundle, tmp_path):
    import shutil

    from mivl.edge.bundle import open_bundle

    b = tmp_path / "b"
    shutil.copytree(split_bundle("qwen2").path, b)
    m = json.loads((b / "manifest.json").read_text())
    del m["files"]["vision.projector_norm.npz"]
    (b / "manifest.json").write_text(json.dumps(m))
    (b / "manifest.sha256").unlink()
    with pytest.raises(BundleError, match="vision.projector_norm.npz is in the bundle .* but not listed"):
        open_bundle(b)
    (b / "vision.projector_norm.npz").unlink()
    with pytest.raises(BundleError, match="vision.projector_norm.npz is referenced but has no sha256"):
        open_bundle(b)


def test_budget_counts_both_vision_graphs(split_bundle):
    from mivl.edge.budget import budget
    from mivl.edge.bundle import open_bundle

    r = split_bundle("qwen2")
    b = open_bundle(r.path)
    want = sum((r.path / f).stat().st_size for f in ("vision.vit.onnx", "vision.projector.onnx",
                                                      "vision.projector_norm.npz"))
    assert budget(b)["parts"]["vision weights"] == want
