"""INT8 vision: explicit Q/DQ ONNX (what TensorRT 10 and ONNX Runtime both consume), calibrated
on tiles made by the SDK's own preprocessing.

Weights are quantised per channel, activations per tensor, both symmetric (TensorRT's INT8).
Nodes that hurt accuracy most can be kept in float: the projector (mlp1) by default, and the
first/last encoder blocks on request; the choice is measured by the validation that follows.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..edge.errors import InputError

METHODS = ("minmax", "entropy", "percentile")
OP_TYPES = ("MatMul", "Gemm", "Conv")


class TileReader:
    """onnxruntime CalibrationDataReader over a (N, 3, S, S) tile array, in small batches."""

    def __init__(self, tiles: np.ndarray, input_name: str, batch: int = 2, progress=None):
        self.tiles, self.name, self.batch = tiles, input_name, batch
        self.i = 0
        self.progress = progress

    def get_next(self):
        if self.i >= len(self.tiles):
            return None
        x = self.tiles[self.i:self.i + self.batch]
        self.i += self.batch
        if self.progress:
            self.progress(min(self.i, len(self.tiles)), len(self.tiles))
        return {self.name: x}

    def rewind(self):
        self.i = 0


KEEP_FLOAT = ("projector", "attention")   # the default: see excluded_nodes


def excluded_nodes(model_path: Path, keep_float: tuple[str, ...]) -> list[str]:
    """Names of MatMul/Gemm/Conv nodes to leave in float, by the module they came from.

    "attention" is every MatMul of two activations (Q.K^T and probabilities.V): quantising them
    also quantises the softmax between them, which ONNX Runtime's CPU provider then runs as
    QLinearSoftmax at ~4x the float softmax's time, and their batched per-head products are small;
    the weight MatMuls (qkv, out, fc1, fc2: ~85% of the FLOPs) are what INT8 speeds up."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    weights |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    patterns = {"projector": ("mlp1",), "patch_embed": ("patch_embedding",),
                "first_block": ("layers.0/",), "last_block": (), "attention": ()}
    layers = sorted({int(n.name.split("layers.")[1].split("/")[0]) for n in graph.node
                     if "layers." in n.name and n.name.split("layers.")[1].split("/")[0].isdigit()})
    if layers:
        patterns["last_block"] = (f"layers.{layers[-1]}/",)
    unknown = set(keep_float) - set(patterns)
    if unknown:
        raise InputError(f"unknown keep-float group(s) {sorted(unknown)}; known: {sorted(patterns)}")
    wanted = [p for k in keep_float for p in patterns[k]]
    attention = "attention" in keep_float
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
            and (any(p in n.name for p in wanted)
                 or (attention and n.op_type == "MatMul" and not any(i in weights for i in n.input)))]


def quantize_vision(fp32_path: Path, out_path: Path, tiles: np.ndarray, method: str = "minmax",
                    keep_float: tuple[str, ...] = KEEP_FLOAT, progress=None) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise InputError(f"calibration method {method!r} unknown; choose one of {', '.join(METHODS)}")
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    exclude = excluded_nodes(fp32_path, keep_float)
    reader = TileReader(tiles, "pixel_values", batch=1, progress=progress)
    with tempfile.TemporaryDirectory(prefix="mivl-calib-") as tmp:
        cache = Path(tmp) / "ranges.json"
        calibrate(fp32_path, reader, calib, cache, Path(tmp),
                  {"moving_average": method == "minmax", "percentile": 99.99})
        quantize_static(str(fp32_path), str(out_path), None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(OP_TYPES), per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calib, nodes_to_exclude=exclude, calibration_cache_path=str(cache),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    shapes = shapes_from_quantized(out_path)
    return {"method": method, "calibration_tiles": int(len(tiles)), "kept_float": list(keep_float),
            "float_nodes": len(exclude), "shape_reads_moved": shapes}


def calibrate(fp32_path: Path, reader, method, cache: Path, tmp: Path, options: dict) -> None:
    """Activation ranges by ONNX Runtime's calibrator, written as its calibration cache (which
    quantize_static then reads), with the calibration graph run in priority-based order.

    The calibrator adds a ReduceMin/ReduceMax pair behind every activation it calibrates and runs
    that graph in ONNX Runtime's default execution order, which schedules the reductions after the
    whole network: every activation of a tile stays alive at once (InternViT-300M: ~15 GB a tile).
    Priority-based order follows the node list, where each reduction sits next to its producer, so
    activations are freed as the network goes (a 4-layer 300M-wide encoder: 2.5 -> 0.9 GiB). The
    ranges are the same: the same reductions of the same tensors."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    cal = create_calibrator(Path(fp32_path), list(OP_TYPES), augmented_model_path=str(tmp / "augmented.onnx"),
                            calibrate_method=method, use_external_data_format=True, extra_options=options)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    cal.infer_session = None                      # the calibrator's own session, in default order
    cal.infer_session = ort.InferenceSession(cal.augmented_model_path, so, providers=["CPUExecutionProvider"])
    cal.collect_data(reader)
    save_tensors_data(cal.compute_data(), cache)


def shapes_from_quantized(path: Path) -> int:
    """Shape nodes that read a quantised activation (a DequantizeLinear's output, or the QuantizeLinear
    before it) read the float tensor in front of the QuantizeLinear instead: the same shape.

    The traced attention takes B, N, C from its input's shape, so the Q/DQ pair in front of each qkv
    MatMul had three Shape consumers besides the MatMul; ONNX Runtime fuses Q -> DQ -> MatMul -> Q into
    one integer QLinearMatMul only when that chain has no other consumer, so every qkv ran as a float
    MatMul on weights dequantised per run. Returns how many Shape inputs were moved."""
    import onnx

    model = onnx.load(str(path))
    q_input = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_input = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    moved = 0
    for n in model.graph.node:
        if n.op_type != "Shape":
            continue
        src = dq_input.get(n.input[0], n.input[0])
        src = q_input.get(src, src)
        if src != n.input[0]:
            n.input[0] = src
            moved += 1
    if moved:
        onnx.save(model, str(path))
    return moved


def quantize_vision_isolated(fp32_path: Path, out_path: Path, tiles: np.ndarray, method: str = "minmax",
                             keep_float: tuple[str, ...] = KEEP_FLOAT, progress=None) -> dict:
    """quantize_vision in a child process: ONNX Runtime's quantiser holds the model several times
    over, which must not add to the exporter's own memory."""
    import json
    import subprocess
    import sys

    from ..edge.errors import MivlError

    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "tiles.npy", tiles)
        r = subprocess.run([sys.executable, "-m", "mivl.export.quantize", str(fp32_path), str(out_path),
                            str(Path(tmp) / "tiles.npy"), method, ",".join(keep_float)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise MivlError(f"INT8 calibration failed (exit {r.returncode}): {r.stderr.strip()[-800:]}")
        info = json.loads(r.stdout.strip().splitlines()[-1])
    if progress:
        progress(len(tiles), len(tiles))
    return info


if __name__ == "__main__":
    import json
    import sys
    import warnings

    warnings.filterwarnings("ignore")
    src, dst, tiles_file, how, keep = sys.argv[1:6]
    print(json.dumps(quantize_vision(Path(src), Path(dst), np.load(tiles_file), how,
                                     tuple(k for k in keep.split(",") if k))))
