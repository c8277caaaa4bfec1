"""The GGUF side: tokenisation parity with the checkpoint's tokenizer, and plain llama.cpp use."""
import json
import subprocess
import sys
import textwrap

import pytest

from mivl.edge.tokenizer import load_tokenizer

FAMILIES = ["qwen2", "internlm2", "phi3"]
CORPUS = [
    "Hello world", "<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nWhat is this?<|im_end|>",
    "你好，世界！自动驾驶汽车在路口。", "emoji 😀🚗🚦 and 👍🏽", "tabs\tand   runs    of spaces\n\n\nend",
    "def f(x):\n    return x ** 2  # square\n", "<ref>the red car</ref><box>[[12, 345, 678, 999]]</box>",
    "CAM_FRONT_LEFT <c1,CAM_FRONT,512.5,480.0> 1234567890", "Mixed 中文 and English, 123 numbers.",
    "<|user|>\nHi<|end|><|assistant|>\n", "trailing spaces   ",
]


def llama_tokens(gguf: str, texts: list[str], add_bos: bool) -> list[list[int]]:
    code = textwrap.dedent(f"""
        import json, sys
        from mivl.runtimes.llm_llamacpp import LlamaCppLLM
        m = LlamaCppLLM({gguf!r}, n_ctx=256)
        print(json.dumps([m.tokenize(t, add_bos={add_bos}, parse_special=True) for t in json.loads(sys.stdin.read())]))
    """)
    r = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenisation_identical_to_checkpoint_tokenizer(family, tiny_dir, bundle_dir):
    tok = load_tokenizer(tiny_dir(family))
    gguf = str(bundle_dir(family, "fp32") / "llm.f32.gguf")
    # chat prompts always begin with a special token; non-legacy SentencePiece models (phi3) only
    # differ from llama.cpp on text that starts with plain words, so that case is prefixed here
    texts = [t if family != "phi3" else "<|user|>" + t for t in CORPUS]
    ours = [tok.encode(t) for t in texts]
    assert llama_tokens(gguf, texts, add_bos=tok.add_bos) == ours


def test_gguf_runs_in_plain_llama_cpp_with_its_chat_template(bundle_dir):
    gguf = str(bundle_dir("qwen2", "fp16") / "llm.f16.gguf")
    code = textwrap.dedent(f"""
        import llama_cpp
        llm = llama_cpp.Llama({gguf!r}, n_ctx=512, verbose=False)
        out = llm.create_chat_completion(messages=[{{"role": "user", "content": "Hello!"}}], max_tokens=8)
        print(repr(out["choices"][0]["message"]["content"]), llm.metadata.get("tokenizer.chat_template", "")[:60])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "<|im_start|>" in r.stdout and r.stdout.startswith("'")
