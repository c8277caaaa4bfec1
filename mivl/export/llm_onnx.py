"""The LLM as an ONNX decoder with its KV cache, for deployments that run everything on ONNX
Runtime / TensorRT (`mivl-export --llm-format onnx`). The GGUF path stays the default.

The graph is traced from the reference decoder itself (all three families share it), so it needs
no model code from elsewhere. Inputs and outputs follow the convention of Hugging Face optimum's
decoder exports (`past_key_values.{i}.key|value` in, `present.{i}.key|value` out), with two
differences an InternVL runtime wants: the graph takes `image_embeds` + `image_mask` beside
`input_ids`, so image features are injected inside it (the embedding table lives once, in the
graph), and it returns the last position's logits only (a 1,000-token prefill of a 151k vocabulary
would otherwise write 600 MB of logits). RoPE is baked as a cos/sin table for n_ctx positions.

Precisions: fp32 (validated like the f32 GGUF: greedy identical, logits within 1e-3) and int8
(every MatMul weight in blocks of 32 with a scale each, as q8_0 does, run by ONNX Runtime's
MatMulNBits; validated by top-1 agreement like q8_0). Per-tensor dynamic quantisation was tried
first and missed the bar (95% top-1 on decisive steps of a tiny model). Weights over 1.5 GB go to one external data file beside the graph.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..edge.errors import InputError
from .model.decoder import CausalLM, rope_inv_freq

OPSET = 17
PRECISIONS = ("fp32", "int8")
EXTERNAL_DATA_BYTES = 1_500_000_000


def rope_table(lm: CausalLM, n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n_ctx, d) exactly as the reference computes them for any length <= n_ctx."""
    cfg = lm.config
    inv_short, m_short = rope_inv_freq(cfg, 1)
    inv_long, m_long = rope_inv_freq(cfg, n_ctx)
    if not (torch.equal(inv_short, inv_long) and m_short == m_long):
        scaling = cfg.rope_scaling or {}
        raise InputError(f"this model's RoPE scaling ({scaling.get('type') or scaling.get('rope_type')}) "
                         f"changes with the sequence length below n_ctx={n_ctx}; the ONNX decoder bakes "
                         f"one table: lower n_ctx to the model's original context or use the GGUF format")
    pos = torch.arange(n_ctx, dtype=torch.float32)
    freqs = pos[:, None] * inv_short[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos() * m_short, emb.sin() * m_short


class OnnxDecoder(nn.Module):
    def __init__(self, lm: CausalLM, n_ctx: int):
        super().__init__()
        self.lm = lm
        cos, sin = rope_table(lm, n_ctx)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, input_ids, image_embeds, image_mask, *past):
        t = input_ids.shape[1]
        p = past[0].shape[2]
        positions = torch.arange(t, device=input_ids.device) + p
        cos, sin = self.cos[positions], self.sin[positions]
        visible = torch.arange(p + t, device=input_ids.device)[None, :] <= positions[:, None]  # causal
        x = torch.where(image_mask[..., None], image_embeds, self.lm.embed(input_ids))
        present = []
        for i, layer in enumerate(self.lm.model.layers):
            cache = [past[2 * i], past[2 * i + 1]]
            x = layer(x, cos, sin, cache, visible)
            present.extend(cache)
        x = self.lm.model.norm(x[:, -1])
        return (self.lm.lm_head(x), *present)


def io_names(n_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    return ["input_ids", "image_embeds", "image_mask", *past], ["logits", *present]


def export_decoder(lm: CausalLM, path: Path, n_ctx: int, opset: int = OPSET) -> Path:
    """Write the fp32 decoder graph at `path` (plus `path.data` for large models)."""
    cfg = lm.config
    wrapper = OnnxDecoder(lm, n_ctx).eval()
    t, p = 3, 2
    kv = (1, cfg.num_key_value_heads, p, cfg.d_head)
    dummy = (torch.zeros(1, t, dtype=torch.int64), torch.zeros(1, t, cfg.hidden_size),
             torch.tensor([[False, True, False]]),
             *[torch.zeros(kv) for _ in range(2 * cfg.num_hidden_layers)])
    inputs, outputs = io_names(cfg.num_hidden_layers)
    axes = {"input_ids": {1: "tokens"}, "image_embeds": {1: "tokens"}, "image_mask": {1: "tokens"}}
    axes.update({n: {2: "past"} for n in inputs[3:]})
    axes.update({n: {2: "total"} for n in outputs[1:]})
    big = sum(x.numel() * 4 for x in lm.parameters()) > EXTERNAL_DATA_BYTES
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, dummy, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
    if big:
        _to_external_data(path)
    return path


def _to_external_data(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def quantize_decoder(src: Path, dst: Path) -> Path:
    """int8 weights in blocks of 32 with one scale each (symmetric, like q8_0), activations
    quantised to int8 per block inside MatMulNBits (ONNX Runtime's accuracy level 4)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
    q.process()
    big = (src.parent / (src.name + ".data")).exists()
    q.model.save_model_to_file(str(dst), use_external_data_format=big)
    return dst


def write_onnx_llm(ref, out_dir: Path, precision: str, n_ctx: int) -> tuple[Path, Path]:
    """The decoder graph of `precision` and the checkpoint's tokenizer files (out_dir/tokenizer)."""
    import shutil

    from ..edge.tokenizer import TOKENIZER_FILES

    if precision not in PRECISIONS:
        raise InputError(f"the ONNX LLM comes in {', '.join(PRECISIONS)}, not {precision!r}; "
                         f"use --llm-format gguf for f16/bf16/k-quants")
    fp32 = export_decoder(ref.model.language_model, out_dir / "llm.onnx", n_ctx)
    path = fp32
    if precision == "int8":
        path = quantize_decoder(fp32, out_dir / "llm.int8.onnx")
        for f in (fp32, fp32.parent / (fp32.name + ".data")):
            f.unlink(missing_ok=True)
    tok_dir = out_dir / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        if (ref.tok.path / name).is_file():
            shutil.copyfile(ref.tok.path / name, tok_dir / name)
    return path, tok_dir


def check_onnx_llm(path: Path, tok_dir: Path, precision: str, cases: dict, stop_ids=()) -> dict:
    """compare() the graph against the reference cases, in this process (no llama.cpp here)."""
    from ..runtimes.llm_ort import OrtLLM
    from .llm_check import compare
    from .llm_export import figures
    from .tolerances import LLM_ONNX

    llm = OrtLLM(str(path), str(tok_dir), n_ctx=int(cases["n_ctx"]), eog_ids=stop_ids)
    try:
        results = compare(llm, cases)
    finally:
        llm.close()
    return figures(results, precision, LLM_ONNX[precision], format="onnx")
