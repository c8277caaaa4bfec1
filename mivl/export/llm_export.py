"""The LLM side of an export: GGUF (f32/f16 written here, other types through llama.cpp's own
quantiser), validated with llama.cpp against the PyTorch reference on text and image prompts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..edge.errors import InputError, MivlError
from ..runtimes.llm_llamacpp import kv_type_for
from .gguf_export import write_gguf
from .llm_check import FTYPES
from .reference import Reference
from .tolerances import LLM

QUANT_TYPES = tuple(FTYPES)


def llm_state(ref: Reference) -> dict:
    p = "language_model."
    return {k[len(p):]: v for k, v in ref.model.state_dict().items() if k.startswith(p)}


def _run(args: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "mivl.export.llm_check", *args],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        raise MivlError(f"llama.cpp step {args[0]} failed (exit {r.returncode}): "
                        f"{(r.stderr or r.stdout).strip()[-800:]}")


def write_llm(ref: Reference, out: Path, quant: str, n_ctx: int, work: Path) -> Path:
    """Write the LLM as GGUF of type `quant` at `out`."""
    if quant not in QUANT_TYPES:
        raise InputError(f"LLM quantisation {quant!r} unknown; choose one of {', '.join(QUANT_TYPES)}")
    if quant in ("f32", "f16"):
        return write_gguf(llm_state(ref), ref.ckpt.config, ref.tok, out, quant, n_ctx)
    base = work / "llm.f16.gguf" if quant != "bf16" else work / "llm.f32.gguf"
    write_gguf(llm_state(ref), ref.ckpt.config, ref.tok, base, "f16" if quant != "bf16" else "f32", n_ctx)
    _run(["quantize", str(base), str(out), quant])
    base.unlink()
    return out


def reference_cases(ref: Reference, images: list, steps: int, n_ctx: int) -> dict:
    """Prompts with the reference's greedy continuation and logits, for the llama.cpp check."""
    questions = ["What do you see?", "Describe the scene in one sentence.", "你好！请介绍一下你自己。",
                 "List three colours:\n- red\n-"]
    cases = {"n_ctx": n_ctx, "img_context_id": ref.img_context_id}
    k = 0
    d = ref.ckpt.config.llm.hidden_size
    for q in questions[:2]:
        cases.update(_case(ref, k, q, None, steps, d))
        k += 1
    for img in images:
        cases.update(_case(ref, k, "What is in the image?", [img], steps, d))
        k += 1
    for q in questions[2:]:
        cases.update(_case(ref, k, q, None, steps, d))
        k += 1
    cases["n_cases"] = k
    cases["tokenizer_strings"] = np.array(json.dumps(tokenizer_cases(ref)))
    return cases


def tokenizer_strings(ref: Reference) -> list[str]:
    """What the GGUF's tokenizer must split exactly as the checkpoint's: the rendered chat template
    with a question, whitespace, digits, CJK, emoji and InternVL's markup."""
    from ..edge.prompt import build_prompt

    return [build_prompt(ref.template, "What is in front of the car?", [1], tokens_per_tile=2),
            build_prompt(ref.template, "And its colour?", history=[("Hi", "Hello!")]),
            "line one\nline two\n\n\nthree", "tabs\tand   runs  of    spaces ", "  leading and trailing  ",
            "0 7 42 1000 3.14159 -12 2026-11-30 1,234,567", "你好，世界！自动驾驶场景。", "图像中有几辆车？",
            "😀 🚗 🚦 👍🏽 ✅", "<ref>the bus</ref><box>[[12, 345, 678, 999]]</box>",
            "<img><IMG_CONTEXT><IMG_CONTEXT></img> <quad></quad>", "Image-1: <image>\nFrame1: x",
            "<c1,CAM_FRONT,512.3,480.0>", "MixedCase ÀÉÎõü ß ﬁ ｆｕｌｌ ①②", "a\r\nb\u00a0c\u200bd"]


def tokenizer_cases(ref: Reference) -> list[dict]:
    """Each string's ids from the checkpoint's tokenizer, as the runtime tokenises text: after a
    special token (the template's stop token: prompts never start with plain text), with markup
    parsed ("special": the template's own text) and as plain text (a caller's text)."""
    stop = ref.template.stop
    return [{"text": t, "special_text": stop + t, "special": ref.tok.encode(stop + t, add_bos=False),
             "plain": ref.tok.encode_plain(t, first=False)} for t in tokenizer_strings(ref)]


def _case(ref: Reference, k: int, question: str, images, steps: int, d: int) -> dict:
    ans = ref.ask(question, images=images, max_new_tokens=steps, keep_logits=True)
    feats = (ref.image_embeds(ans.tiles).reshape(-1, d).numpy() if ans.tiles is not None
             else np.zeros((0, d), np.float32))
    # continue past a stop token too, so every case has `steps` comparable positions
    toks = list(ans.token_ids)
    logits = [x.numpy() for x in ans.generation.logits[:len(toks)]]
    if len(toks) < steps:
        ids = list(ans.prompt_ids) + toks
        with torch.no_grad():
            for _ in range(steps - len(toks)):
                lg = ref.model.prompt_logits(torch.tensor(ids), ref.image_embeds(ans.tiles),
                                             ref.img_context_id)[-1]
                t = int(lg.argmax())
                logits.append(lg.numpy())
                toks.append(t)
                ids.append(t)
    return {f"ids{k}": np.array(ans.prompt_ids, np.int32), f"feats{k}": feats.astype(np.float32),
            f"tokens{k}": np.array(toks[:steps], np.int32), f"logits{k}": np.stack(logits[:steps])}


def check_llm(path: Path, quant: str, cases: dict, flash_attn: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cases_file, out = Path(tmp) / "cases.npz", Path(tmp) / "out.json"
        np.savez(cases_file, **cases)
        args = ["validate", str(path), str(cases_file), str(out)] + (["--flash-attn"] if flash_attn else [])
        args += ["--kv-f32"] if kv_type_for(quant) == "f32" else []     # as the runtime opens it
        _run(args)
        results = json.loads(out.read_text())
    fig = figures(results["cases"], quant, LLM[quant], flash_attn=flash_attn)
    return judge_tokenizer(fig, results["tokenizer"])


def judge_tokenizer(fig: dict, mismatches: list[dict]) -> dict:
    """Add the tokenizer parity figures; a mismatch fails validation, showing the first string."""
    fig["tokenizer_mismatches"] = len(mismatches)
    if mismatches:
        m = mismatches[0]
        fig.setdefault("failures", []).append(
            f"the GGUF's tokenizer differs from the checkpoint's on {len(mismatches)} string(s); first: "
            f"{m['text']!r} ({m['mode']}): checkpoint {m['expected'][:12]}... llama.cpp {m['got'][:12]}...")
        fig["passed"] = False
    return fig


def figures(results: list[dict], quant: str, bar: dict, **extra) -> dict:
    """The validation figures of compare()'s results, judged against the precision bar."""
    steps = sum(r["steps"] for r in results)
    fig = {"quant": quant, "prompts": len(results), "image_prompts": sum(r["image"] for r in results),
           "steps": steps, "top1_agreement": sum(r["top1_agree"] for r in results) / max(steps, 1),
           "max_rel_logit_error": max(r["max_rel_logit_error"] for r in results),
           "decisive_steps": sum(r["decisive_steps"] for r in results),
           "top1_agreement_decisive": (sum(r["decisive_agree"] for r in results)
                                       / max(sum(r["decisive_steps"] for r in results), 1)),
           "greedy_identical": all(r["greedy_identical"] for r in results), **extra}
    failed = []
    if bar.get("greedy_identical") and not fig["greedy_identical"]:
        failed.append("greedy tokens differ from PyTorch")
    if "max_rel_logit_error" in bar and fig["max_rel_logit_error"] > bar["max_rel_logit_error"]:
        failed.append(f"logits relative error {fig['max_rel_logit_error']:.2e} > {bar['max_rel_logit_error']}")
    if fig["top1_agreement_decisive"] < bar.get("min_top1_agreement", 0.0):
        failed.append(f"top-1 agreement on decisive steps {fig['top1_agreement_decisive']:.3f} < "
                      f"{bar['min_top1_agreement']}")
    fig.update(passed=not failed, bar=bar)
    if failed:
        fig["failures"] = failed
    return fig
