"""llama.cpp-side work of the exporter, run in its own process (PyTorch and llama.cpp each bring
an OpenMP runtime; sharing one process has crashed). Usage (internal):

  python -m mivl.export.llm_check quantize IN.gguf OUT.gguf TYPE
  python -m mivl.export.llm_check validate MODEL.gguf CASES.npz OUT.json [--flash-attn]
"""
from __future__ import annotations

import json
import sys

import numpy as np

from ..edge.chunks import Text, from_ids

# A step is decisive when the reference's top-1 leads its top-2 by at least this share of the
# logit range; near-ties flip under any quantisation and say nothing about a converter's quality.
DECISIVE_MARGIN = 0.02
FTYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "bf16": 32}


def quantize(src: str, dst: str, kind: str) -> None:
    import llama_cpp

    from ..runtimes.llm_llamacpp import _llama

    _llama()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed ({rc}) for {kind}")


def feed_prompt(llm, ids, feats, img_id) -> None:
    llm.reset()
    k = 0
    for c in from_ids(ids.tolist(), img_id):
        if isinstance(c, Text):
            llm.eval_tokens(list(c.ids))
        else:
            llm.eval_embeddings(feats[k:k + c.n_tokens])
            k += c.n_tokens


def compare(llm, data) -> list[dict]:
    """Run every case of `data` (reference_cases) through `llm` (any LLM backend): teacher-forced
    on the reference continuation for logits and top-1, then free-running greedy."""
    results = []
    img_id = int(data["img_context_id"])
    for c in range(int(data["n_cases"])):
        ids, feats = data[f"ids{c}"], data[f"feats{c}"]
        ref_tokens, ref_logits = data[f"tokens{c}"].tolist(), data[f"logits{c}"]
        feed_prompt(llm, ids, feats, img_id)
        agree, decisive, decisive_agree, rel_err = 0, 0, 0, 0.0
        for k, tok in enumerate(ref_tokens):
            logits = llm.logits()
            same = int(np.argmax(logits) == np.argmax(ref_logits[k]))
            agree += same
            top2 = np.sort(ref_logits[k])[-2:]
            if top2[1] - top2[0] >= DECISIVE_MARGIN * float(np.ptp(ref_logits[k])):
                decisive += 1
                decisive_agree += same
            scale = float(np.abs(ref_logits[k]).max()) or 1.0
            rel_err = max(rel_err, float(np.abs(logits - ref_logits[k]).max()) / scale)
            llm.eval_tokens([tok])
        feed_prompt(llm, ids, feats, img_id)
        greedy = []
        for _ in range(len(ref_tokens)):
            t = int(np.argmax(llm.logits()))
            greedy.append(t)
            llm.eval_tokens([t])
        results.append({"steps": len(ref_tokens), "top1_agree": agree, "max_rel_logit_error": rel_err,
                        "decisive_steps": decisive, "decisive_agree": decisive_agree,
                        "greedy_identical": greedy == ref_tokens, "image": bool(len(feats))})
    return results


def validate(model: str, cases_path: str, out_path: str, flash_attn: bool = False, kv_type: str = "f16") -> None:
    from ..runtimes.llm_llamacpp import LlamaCppLLM

    data = np.load(cases_path)
    llm = LlamaCppLLM(model, n_ctx=int(data["n_ctx"]), n_batch=512, flash_attn=flash_attn, kv_type=kv_type)
    results = {"cases": compare(llm, data), "tokenizer": compare_tokenizer(llm, data)}
    llm.close()
    with open(out_path, "w") as f:
        json.dump(results, f)


def compare_tokenizer(llm, data) -> list[dict]:
    """The strings whose llama.cpp ids differ from the checkpoint tokenizer's (markup parsed, and plain)."""
    cases = json.loads(str(data["tokenizer_strings"])) if "tokenizer_strings" in data else []
    out = []
    for c in cases:
        got = {"special": llm.tokenize(c["special_text"], add_bos=False, parse_special=True),
               "plain": llm.encode_plain(c["text"], first=True)}
        for mode in ("special", "plain"):
            if got[mode] != c[mode]:
                out.append({"text": c["text"], "mode": mode, "expected": c[mode], "got": got[mode]})
    return out


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["quantize"]:
        quantize(*argv[1:4])
    elif argv[:1] == ["validate"]:
        validate(argv[1], argv[2], argv[3], "--flash-attn" in argv, "f32" if "--kv-f32" in argv else "f16")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
