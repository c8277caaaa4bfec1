"""Training-step kernels of the six-camera default model, before and after, in one run: the LLM's
forward + backward over a six-camera conversation (3,800 tokens) with the causal mask as a boolean
tensor (before) and as the kernel's causal flag (after), and the ViT's forward over the 13 tiles of
a six-camera canvas with attention written out (softmax(QK^T)V, before; what the ONNX export still
traces) and fused (after). Best of `--repeat`, `--threads` threads (default 2).

    .venv/bin/python benchmarks/bench_train_step.py [--threads 2] [--repeat 3]
"""
import argparse
import json
import tempfile
from pathlib import Path
from unittest import mock

import torch

from bench_common import best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.default_model import SIX_CAMERA, make_initial
    from mivl.export.model import decoder

    with tempfile.TemporaryDirectory() as tmp:
        model = load_checkpoint(make_initial(Path(tmp) / "init", 0, SIX_CAMERA), torch.float32).model
    lm, g = model.language_model, torch.Generator().manual_seed(0)
    x = torch.randn(1, 3800, lm.config.hidden_size, generator=g)

    sdpa, masks = torch.nn.functional.scaled_dot_product_attention, {}

    def with_mask_tensor(q, k, v, attn_mask=None, is_causal=False, **kw):
        """The kernel as it was called before: the causal mask as a boolean tensor (made once)."""
        if is_causal:
            t = q.shape[-2]
            attn_mask = masks.setdefault(t, torch.ones(t, t, dtype=torch.bool).tril())
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    def llm_step(mask_tensor: bool):
        kernel = with_mask_tensor if mask_tensor else sdpa

        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16), \
                    mock.patch.object(decoder.F, "scaled_dot_product_attention", kernel):
                lm(x.requires_grad_(True), hidden_only=True).float().square().mean().backward()
        return run

    pixels = torch.randn(13, 3, 448, 448, generator=g)

    def vit(explicit: bool):
        def run():
            with torch.no_grad(), mock.patch.object(torch.onnx, "is_in_onnx_export", lambda: explicit):
                model.vision_tokens(pixels)
        return run

    rows = {}
    for name, before, after in (("llm fwd+bwd, 3800 tokens, bf16 autocast", llm_step(True), llm_step(False)),
                                ("vit forward, 13 tiles, fp32", vit(True), vit(False))):
        b, f = best(before, a.repeat), best(after, a.repeat)
        rows[name] = {"before_s": round(b, 3), "after_s": round(f, 3), "speedup": round(b / f, 2)}
    print(json.dumps({"threads": a.threads, **rows}, indent=2))


if __name__ == "__main__":
    main()
