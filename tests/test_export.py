"""mivl-export: artifacts, validation figures, the bundle contract, the CLI."""
import json
import os
import shutil

import numpy as np
import onnx
import pytest

from mivl.edge.bundle import open_bundle
from mivl.edge.errors import BundleError, InputError
from mivl.export import api
from mivl.export.cli import main as export_main

FAMILIES = ["qwen2", "internlm2", "phi3"]


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_bundle_meets_the_precision_ladder(bundle_dir, family):
    b = open_bundle(bundle_dir(family, "fp32"))
    r = b.report()
    assert r["passed"]
    assert r["vision"]["min_cosine"] >= 0.99999                  # per token, against PyTorch fp32
    assert r["llm"]["greedy_identical"] and r["llm"]["max_rel_logit_error"] <= 1e-3
    # f32 weights run with an f32 KV cache: float rounding only (llama.cpp's f16 cache alone gives ~1e-3)
    assert r["llm"]["max_rel_logit_error"] <= 1e-4
    assert r["llm"]["image_prompts"] >= 2                         # the embedding-injection path too
    m = b.manifest
    assert m["vision"]["input"] == {"name": "pixel_values", "shape": ["tiles", 3, 448, 448], "dtype": "float32"}
    assert m["vision"]["output"]["shape"] == ["tiles", 256, 64] and m["llm"]["n_embd"] == 64
    assert set(m["files"]) == {"vision.onnx", "llm.f32.gguf", "report.json"}
    assert m["prompt"]["img_context_id"] == m["prompt"]["special_tokens"]["<IMG_CONTEXT>"]


def test_llm_kv_cache_follows_the_weights(bundle_dir):
    """The runtime opens an f32 LLM with an f32 KV cache (as export validated it), the others with f16."""
    from mivl.runtimes.backends import open_llm
    from mivl.runtimes.llm_llamacpp import LlamaCppLLM

    for precision, kv in (("fp32", "f32"), ("int8", "f16")):
        b = open_bundle(bundle_dir("qwen2", precision))
        llm, _ = open_llm(b.path, b.llm, b.prompt, "cpu", 1, 512, 512, False)
        try:
            assert llm.kv_type == kv
        finally:
            llm.close()
    with pytest.raises(InputError, match="kv_type"):
        LlamaCppLLM(str(b.path / b.llm["file"]), kv_type="q8_0")


def test_fp16_bundle(bundle_dir):
    r = open_bundle(bundle_dir("qwen2", "fp16")).report()
    assert r["vision"]["precision"] == "fp16" and r["vision"]["min_cosine"] >= 0.999
    assert r["llm"]["quant"] == "f16" and r["llm"]["greedy_identical"]


def test_int8_bundle_is_qdq_and_close(bundle_dir):
    b = open_bundle(bundle_dir("internlm2", "int8"))
    r = b.report()
    assert r["vision"]["mean_cosine"] >= 0.99          # held-out synthetic scenes, not calibration ones
    assert r["llm"]["quant"] == "q8_0" and r["llm"]["top1_agreement_decisive"] >= 0.98
    ops = {n.op_type for n in onnx.load(str(b.file(b.vision["file"]))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert b.file(b.vision["file"]).stat().st_size < 0.8 * os.path.getsize(
        open_bundle(bundle_dir("internlm2", "fp32")).file("vision.onnx"))


def test_int8_vision_runs_exact_integer_matmuls_on_every_cpu(bundle_dir):
    """The SDK's ONNX Runtime sessions ask for exact INT8 MatMuls: on an x86 CPU without VNNI the
    default u8s8 kernel saturates 16-bit pair sums (the tiny INT8 encoder fell to mean cosine 0.986
    there), so the runtime's session must compute what the Q/DQ graph says, as its float
    reference (each DequantizeLinear -> MatMul run in float, no integer kernel) does."""
    import onnxruntime as ort

    from mivl.calib.synthetic import draw_scene
    from mivl.edge.preprocess import PreprocessConfig, preprocess_images
    from mivl.runtimes.ort import EXACT_INT8, ort_session, session_options

    opts = session_options(3)
    assert opts.get_session_config_entry(EXACT_INT8[0]) == "1" and opts.intra_op_num_threads == 3
    b = open_bundle(bundle_dir("qwen2", "int8"))
    path = b.file(b.vision["file"])
    runtime = ort_session(path, ["CPUExecutionProvider"], 2, "vision encoder")
    assert runtime.get_session_options().get_session_config_entry(EXACT_INT8[0]) == "1"
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
    x = preprocess_images([draw_scene(123, 800, 450, max_objects=3).cameras["CAM_FRONT"]],
                          PreprocessConfig(max_tiles=6, use_thumbnail=True)).pixels
    a, r = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in (runtime, reference))
    a, r = a.reshape(-1, a.shape[-1]).astype(np.float64), r.reshape(-1, r.shape[-1]).astype(np.float64)
    cos = (a * r).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(r, axis=-1)
    assert cos.mean() > 0.9999 and cos.min() > 0.999, (cos.mean(), cos.min())


def test_int8_weight_matmuls_run_as_integer_matmuls_on_the_cpu(bundle_dir, tmp_path):
    """What ONNX Runtime's CPU provider makes of the INT8 graph: every weight MatMul of the encoder
    (qkv, proj, fc1, fc2) fused into QLinearMatMul (integer dot products: VNNI where the CPU has
    it), attention in float as one fused kernel per block, no Shape node reading a quantised
    activation."""
    import collections

    import onnxruntime as ort

    b = open_bundle(bundle_dir("qwen2", "int8"))
    graph = onnx.load(str(b.file(b.vision["file"]))).graph
    dq_outs = {o for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for o in n.output}
    assert not [n.name for n in graph.node if n.op_type == "Shape" and n.input[0] in dq_outs]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(b.file(b.vision["file"])), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    layers = b.vision["vit_layers"]
    assert ops["QLinearMatMul"] == 4 * layers, ops
    assert ops["QLinearSoftmax"] == 0 and ops["Softmax"] == 0 and ops["MultiHeadAttention"] == layers, ops


def test_int8_calibration_reproducible(tiny_dir, tmp_path):
    a = api.export(tiny_dir("qwen2"), tmp_path / "a", "int8", calib_size=4, quiet=True)
    b = api.export(tiny_dir("qwen2"), tmp_path / "b", "int8", calib_size=4, quiet=True)
    assert a.manifest["files"]["vision.int8.onnx"] == b.manifest["files"]["vision.int8.onnx"]


def test_priority_ordered_calibration_gives_ort_default_ranges(bundle_dir, tmp_path):
    """The calibration graph run in priority-based order (bounded memory) computes the same
    activation ranges as ONNX Runtime's calibrator in its own session."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, load_tensors_data

    from mivl.export.quantize import OP_TYPES, TileReader, calibrate

    b = open_bundle(bundle_dir("qwen2", "fp32"))
    model = b.file(b.vision["file"])
    tiles = np.random.default_rng(0).standard_normal((3, 3, 448, 448)).astype(np.float32)
    opts = {"moving_average": True}
    calibrate(model, TileReader(tiles, "pixel_values", batch=1), CalibrationMethod.MinMax, tmp_path / "ours.json",
              tmp_path, opts)
    ours = load_tensors_data(tmp_path / "ours.json")
    (tmp_path / "ort").mkdir()
    cal = create_calibrator(model, list(OP_TYPES), augmented_model_path=str(tmp_path / "ort" / "aug.onnx"),
                            calibrate_method=CalibrationMethod.MinMax, extra_options=opts)
    cal.collect_data(TileReader(tiles, "pixel_values", batch=1))
    theirs = cal.compute_data()
    assert set(ours.data) == set(theirs.data) and len(ours.data) > 10
    for name, r in theirs.data.items():
        np.testing.assert_allclose(np.asarray(ours.data[name].range_value, np.float64),
                                   np.asarray(r.range_value, np.float64), rtol=1e-6, err_msg=name)


def test_refuses_to_overwrite(bundle_dir):
    with pytest.raises(InputError, match="already exists"):
        api.export("unused", bundle_dir("qwen2", "fp32"))


def test_interrupted_export_leaves_nothing(tiny_dir, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(api, "write_llm", boom)
    with pytest.raises(KeyboardInterrupt):
        api.export(tiny_dir("qwen2"), tmp_path / "b", quiet=True)
    assert list(tmp_path.iterdir()) == []


def copy_bundle(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_tampered_file_detected(bundle_dir, tmp_path):
    b = copy_bundle(bundle_dir("qwen2", "fp32"), tmp_path)
    with open(b / "llm.f32.gguf", "r+b") as f:
        f.seek(-10, 2)
        f.write(b"\x00" * 10)
    with pytest.raises(BundleError, match="llm.f32.gguf does not match its sha256"):
        open_bundle(b)


def test_unknown_schema_and_inconsistent_parts(bundle_dir, tmp_path):
    b = copy_bundle(bundle_dir("qwen2", "fp32"), tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**m, "schema_version": 99}))
    with pytest.raises(BundleError, match="manifest.json of .* does not match its sha256"):
        open_bundle(b)
    (b / "manifest.sha256").unlink()            # an editor who also drops the integrity record
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        open_bundle(b)
    m["llm"]["n_embd"] = m["llm"]["shape"]["n_embd"] = 896
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="vision output dim 64 != LLM n_embd 896"):
        open_bundle(b)
    (b / "vision.onnx").unlink()
    with pytest.raises(BundleError, match="vision.onnx is missing"):
        open_bundle(b)
    with pytest.raises(BundleError, match="not a mivl bundle"):
        open_bundle(tmp_path)


def test_cli_exports_and_prints_summary(tiny_dir, tmp_path, capsys):
    rc = export_main([str(tiny_dir("phi3")), "-o", str(tmp_path / "b"), "--fp32", "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and "validation passed" in out and "mivl ask" in out.split("next: ")[1]
    assert "llm.f32.gguf" in out and "vision.onnx" in out
    rc = export_main([str(tiny_dir("phi3")), "-o", str(tmp_path / "b"), "--fp32", "-q"])
    assert rc == 2 and "already exists" in capsys.readouterr().err


def test_cli_bad_arguments(tiny_dir, tmp_path, capsys):
    assert export_main([str(tiny_dir("qwen2")), "-o", str(tmp_path / "x"), "--llm-quant", "q3_z", "-q"]) == 2
    assert "q3_z" in capsys.readouterr().err
    assert export_main([str(tmp_path / "nope"), "-o", str(tmp_path / "y"), "-q"]) == 2
    assert "not found" in capsys.readouterr().err


def test_calibration_sources(tmp_path):
    from mivl.calib.readers import calibration_images

    from PIL import Image
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), i * 50, np.uint8)).save(tmp_path / f"{i}.png")
    assert len(calibration_images(tmp_path, 2, seed=1)) == 2
    (tmp_path / "c.jsonl").write_text('{"image": "0.png", "prompt": "x"}\n{"images": ["1.png", "2.png"]}\n')
    assert len(calibration_images(tmp_path / "c.jsonl", 5)) == 3
    imgs = calibration_images(None, 3)          # synthetic scenes (export prints a note, no warning)
    # as the SDK is fed: a six-camera canvas, a single camera frame, another canvas
    assert [im.shape for im in imgs] == [(896, 2688, 3), (900, 1600, 3), (896, 2688, 3)]
    assert not np.array_equal(imgs[0], imgs[2])
    with pytest.raises(InputError, match="expected a folder"):
        calibration_images(tmp_path / "nope.txt", 2)


def test_calibration_tiles_spread_over_every_image():
    """Each image gives its share of the tile budget: its thumbnail and grid tiles spread evenly,
    not the first images' whole grids (a 13-tile canvas would fill a 16-image budget of 64 in five)."""
    from mivl.edge.tiling import TileGrid
    from mivl.export.api import spread_tiles

    six = TileGrid(6, 2, True)
    assert spread_tiles(six, 4) == [0, 6, 11, 12]          # first, middle, last grid tile + thumbnail
    assert spread_tiles(six, 1) == [12]                     # the thumbnail alone
    assert spread_tiles(six, 13) == list(range(13))
    assert spread_tiles(TileGrid(2, 1, True), 4) == [0, 1, 2]
    assert spread_tiles(TileGrid(3, 1, False), 2) == [0, 2]


def test_validation_checks_a_six_camera_thumbnail(tiny_dir):
    """The export's validation tiles include the tile only multi-view input gives: the thumbnail
    of a six-camera canvas (six small labelled cameras), and one of its grid tiles."""
    from mivl.calib.synthetic import calibration_scenes
    from mivl.export.reference import Reference

    ref = Reference(tiny_dir("qwen2"))
    tiles, _ = api.validation_tiles(ref, 4, seed=0)
    canvas = ref.tiles(images=calibration_scenes(1, seed=100_000, width=800, height=450), max_tiles=12)
    assert canvas.grids[0].n_tiles == 13
    np.testing.assert_array_equal(tiles[-2], canvas.pixels[0])
    np.testing.assert_array_equal(tiles[-1], canvas.pixels[12])
