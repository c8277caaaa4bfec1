"""The checkpoint's tokenizer written into GGUF metadata, the way llama.cpp reads it.

Byte-level BPE (Qwen2) -> tokenizer model "gpt2" with pre-tokenizer "qwen2", tokens in their
byte-level spelling, merges. SentencePiece (InternLM2, Phi-3) -> model "llama": pieces, scores
and types straight from the model proto. Tokens added on top (chat specials, InternVL's `<img>`,
`<IMG_CONTEXT>`, `<ref>`, `<box>` ...) are CONTROL tokens, so `parse_special` finds them.
"""
from __future__ import annotations

import json

import gguf

from ..edge.tokenizer import TextTokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Chat templates (Jinja, as llama.cpp / llama-cpp-python expect) matching mivl.edge.prompt.
CHATML_NO_NEWLINE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
PHI3 = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
CHAT_TEMPLATES = {"Hermes-2": CHATML_NO_NEWLINE, "internlm2-chat": CHATML_NO_NEWLINE,
                  "internvl2_5": CHATML, "phi3-chat": PHI3}


def _pad(tokens: list, scores: list, types: list, n_vocab: int) -> None:
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(UNUSED)


def write_bpe(w: gguf.GGUFWriter, tok: TextTokenizer, n_vocab: int) -> None:
    model = json.loads(tok._hf.to_str())["model"]
    by_id = {i: t for t, i in model["vocab"].items()}
    tokens, scores, types = [], [], []
    for i in range(tok.vocab_size):
        if i in tok.id_to_added:
            tokens.append(tok.id_to_added[i])
            types.append(CONTROL)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        scores.append(0.0)
    _pad(tokens, scores, types, n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w.add_token_merges(merges)


def write_spm(w: gguf.GGUFWriter, tok: TextTokenizer, n_vocab: int) -> None:
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString((tok.path / "tokenizer.model").read_bytes())
    tokens, scores, types = [], [], []
    for p in proto.pieces:
        tokens.append(p.piece)
        scores.append(p.score)
        types.append(int(p.type))
    for i in range(len(tokens), tok.vocab_size):
        tokens.append(tok.id_to_added.get(i, f"[PAD{i}]"))
        scores.append(-1000.0)
        types.append(CONTROL if i in tok.id_to_added else UNUSED)
    for i, t in tok.id_to_added.items():  # specials inside the SentencePiece vocab are control too
        if i < len(proto.pieces):
            types[i] = CONTROL
    _pad(tokens, scores, types, n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    # llama.cpp prefixes a space after every special token when add_space_prefix is on, which is
    # the "legacy" SentencePiece behaviour; non-legacy tokenizers never add one after a special,
    # and chat prompts always start with one, so the prefix is switched off for them.
    w.add_add_space_prefix(bool(proto.normalizer_spec.add_dummy_prefix) and tok.legacy)
    if proto.trainer_spec.unk_id >= 0:
        w.add_unk_token_id(proto.trainer_spec.unk_id)


def write_tokenizer(w: gguf.GGUFWriter, tok: TextTokenizer, n_vocab: int, template: str, stop: str) -> None:
    if tok.kind == "bpe":
        write_bpe(w, tok, n_vocab)
    else:
        write_spm(w, tok, n_vocab)
    if tok.bos_id is not None:
        w.add_bos_token_id(tok.bos_id)
    w.add_add_bos_token(bool(tok.add_bos and tok.bos_id is not None))
    w.add_eos_token_id(tok.token_to_id(stop))
    w.add_eot_token_id(tok.token_to_id(stop))
    w.add_add_eos_token(False)
    if template in CHAT_TEMPLATES:
        w.add_chat_template(CHAT_TEMPLATES[template])
