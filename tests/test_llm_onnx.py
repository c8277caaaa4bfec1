"""The ONNX decoder alternative for the LLM (--llm-format onnx): exported from the reference,
validated against it, and run by the edge runtime (torch unimportable) with the reference's tokens."""
import numpy as np
import pytest

from mivl.edge.errors import InputError
from test_runtime_parity import FAMILIES, inputs, parity_cases, reference_answers, run_runtime  # noqa: F401 - fixture reused


@pytest.fixture(scope="module")
def onnx_bundle(tiny_dir, tmp_path_factory):
    from mivl.export.api import export

    made = {}

    def get(family: str, precision: str = "fp32"):
        if (family, precision) not in made:
            out = tmp_path_factory.mktemp("onnx-llm") / f"{family}-{precision}"
            made[family, precision] = export(tiny_dir(family), out, precision=precision, llm_format="onnx",
                                             quiet=True, calib_size=8)
        return made[family, precision]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_decoder_validates_and_runtime_matches_reference(family, onnx_bundle, reference, inputs, tmp_path):
    res = onnx_bundle(family)
    llm = res.report["llm"]
    assert llm["passed"] and llm["greedy_identical"] and llm["format"] == "onnx"
    assert llm["max_rel_logit_error"] <= 1e-3 and llm["image_prompts"] == 2
    assert res.manifest["llm"]["format"] == "onnx" and res.manifest["llm"]["file"] == "llm.onnx"
    assert any(f.startswith("tokenizer/") for f in res.manifest["files"])
    ref = reference(family)
    cases = parity_cases(inputs)
    got = run_runtime(res.path, cases, tmp_path)
    expected = reference_answers(ref, cases, inputs)
    for g, e in zip(got, expected):
        assert g["tokens"] == e.token_ids
        assert g["text"] == e.text


def test_info_and_budget_read_an_onnx_bundle(onnx_bundle):
    from mivl.edge.budget import budget
    from mivl.edge.bundle import open_bundle

    res = onnx_bundle("qwen2")
    r = budget(open_bundle(res.path), n_ctx=1000)
    assert r["parts"]["LLM weights"] == res.sizes["llm.onnx"]
    s = res.manifest["llm"]["shape"]
    assert r["parts"]["KV cache (n_ctx 1000, f32)"] == 2 * s["n_layer"] * 1000 * s["n_head_kv"] * (s["n_embd"] // s["n_head"]) * 4


def test_int8_decoder_keeps_top1(onnx_bundle):
    res = onnx_bundle("qwen2", "int8")
    llm = res.report["llm"]
    assert res.manifest["llm"]["file"] == "llm.int8.onnx" and res.manifest["llm"]["quant"] == "int8"
    assert llm["passed"] and llm["top1_agreement_decisive"] >= 0.98
    rope = 2 * res.manifest["llm"]["n_ctx"] * (64 // 4) * 4   # the cos/sin table stays fp32 (tiny: d_head 16)
    assert res.sizes["llm.int8.onnx"] - rope < 0.6 * (onnx_bundle("qwen2").sizes["llm.onnx"] - rope)


@pytest.mark.parametrize("precision,quant", [("fp16", None), ("int4", None), ("fp32", "q4_k_m")])
def test_onnx_rejects_what_it_does_not_offer(tiny_dir, tmp_path, precision, quant):
    from mivl.export.api import export

    with pytest.raises(InputError, match="fp32"):
        export(tiny_dir("qwen2"), tmp_path / "b", precision=precision, llm_quant=quant, llm_format="onnx",
               quiet=True)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_token_pieces_equal_llama_cpp(family, bundle_dir, tiny_dir):
    """Streaming text is built from pieces: the tokenizer's equal llama.cpp's for every id."""
    import json

    from mivl.edge.tokenizer import load_tokenizer
    from mivl.runtimes.llm_llamacpp import LlamaCppLLM

    b = bundle_dir(family, "fp32")
    m = json.loads((b / "manifest.json").read_text())
    llm = LlamaCppLLM(str(b / m["llm"]["file"]), n_ctx=64)
    tok = load_tokenizer(tiny_dir(family))
    try:
        for special in (False, True):
            bad = [i for i in range(llm.n_vocab) if llm.piece(i, special) != tok.piece(i, special)]
            assert not bad, [(i, llm.piece(i, special), tok.piece(i, special)) for i in bad[:5]]
    finally:
        llm.close()


def test_rope_table_refuses_a_length_dependent_scaling(reference):
    from mivl.export.llm_onnx import rope_table

    lm = reference("phi3").model.language_model
    cfg = lm.config
    orig = cfg.original_max_position_embeddings or cfg.max_position_embeddings
    cos, sin = rope_table(lm, 64)
    assert cos.shape == (64, cfg.d_head)
    if (cfg.rope_scaling or {}).get("type") in ("longrope", "su") or \
            (cfg.rope_scaling or {}).get("rope_type") in ("longrope", "su"):
        with pytest.raises(InputError, match="n_ctx"):
            rope_table(lm, orig + 1)
    else:
        pytest.skip("the tiny phi3 has no length-dependent RoPE scaling")
