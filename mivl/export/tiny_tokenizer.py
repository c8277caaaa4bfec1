"""Real tokenizers for tiny test checkpoints, trained on the fly (nothing is downloaded).

qwen2: byte-level BPE with Qwen2's pre-tokenizer, its three chat specials, then InternVL's
tokens. internlm2 and phi3: SentencePiece BPE with byte fallback (like theirs) and each family's
chat specials, then InternVL's tokens. Deterministic for a seed.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

from ..edge.prompt import INTERNVL2_5_SYSTEM, INTERNVL_SPECIAL_TOKENS, INTERNVL_SYSTEM

def family_specials(name: str) -> list[str]:
    """The family's own chat special tokens (from its class in mivl.export.families)."""
    from .families import family

    return list(family(name).chat_specials)
_WORDS = ("car truck bus pedestrian cyclist motorcycle traffic cone barrier sign light red green "
          "blue yellow white black grey orange left right front back ahead behind near far lane road "
          "intersection crossing parked moving stopped turning the a an is are what which where how "
          "many there in on of to and or with colour color object objects camera image picture "
          "please provide bounding box coordinate region this sentence describes answer question "
          "yes no one two three four five six zero").split()
_CAMS = ("CAM_FRONT_LEFT CAM_FRONT CAM_FRONT_RIGHT CAM_BACK_LEFT CAM_BACK CAM_BACK_RIGHT").split()
_EXTRA = [INTERNVL_SYSTEM, INTERNVL2_5_SYSTEM, "你好，世界！这是一个测试。图像中有几辆车？", "自动驾驶场景",
          "def f(x):\n    return x * 2  # double\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
          "😀 🚗 🚦 ✅ 👍🏽", "tabs\tand  double  spaces   and\n\nnewlines", "A. B. C. D.",
          "[[12, 345, 678, 999]]", "<c1,CAM_FRONT,512.3,480.0>", "Image-1: Frame1: Frame2:"]


def corpus(seed: int, n: int = 3000, cased: bool = False) -> list[str]:
    """Lines of driving-question words. `cased`: the camera names keep their case (else a line is
    capitalised, which lowercases them, and a tokenizer trained on it spells CAM_BACK in ~7 pieces)."""
    rng = random.Random(seed)
    lines = list(_EXTRA)
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(_CAMS))
        if rng.random() < 0.3:
            words.append(str(rng.randint(0, 1000)))
        line = " ".join(words)
        line = line[:1].upper() + line[1:] if cased else line.capitalize()
        lines.append(line + rng.choice([".", "?", "!", ""]))
    return lines


def write_bpe_tokenizer(out: Path, seed: int, vocab_size: int = 1024, cased: bool = False) -> None:
    """Byte-level BPE like Qwen2's: tokenizer.json, vocab.json, merges.txt, tokenizer_config.json."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from ..edge.tokenizer import QWEN2_PATTERN

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed, cased=cased), trainer=trainer)
    specials = family_specials("qwen2") + list(INTERNVL_SPECIAL_TOKENS)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.save(str(out / "tokenizer.json"))
    model = json.loads(tok.to_str())["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = {str(tok.token_to_id(t)): _added(t) for t in specials}
    _write_config(out, added, bos=None, eos="<|im_end|>", add_bos=False, cls="Qwen2Tokenizer")


def write_spm_tokenizer(out: Path, family: str, seed: int, vocab_size: int = 1024,
                        normalization: str = "identity", cased: bool = False) -> None:
    """SentencePiece BPE with byte fallback: tokenizer.model + tokenizer_config.json."""
    import sentencepiece as spm

    user_defined = family_specials("internlm2") if family == "internlm2" else []
    buf = io.BytesIO()
    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus(seed, cased=cased)), model_writer=buf, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
        user_defined_symbols=user_defined, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=(family == "phi3"), remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, normalization_rule_name=normalization,
        num_threads=1, minloglevel=2)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    n = sp.get_piece_size()
    added_list = ([] if family == "internlm2" else family_specials(family)) + list(INTERNVL_SPECIAL_TOKENS)
    added = {str(n + i): _added(t) for i, t in enumerate(added_list)}
    for t in user_defined:
        added[str(sp.piece_to_id(t))] = _added(t)
    eos = "<|im_end|>" if family == "internlm2" else "<|end|>"
    _write_config(out, added, bos="<s>", eos=eos, add_bos=True,
                  cls="InternLM2Tokenizer" if family == "internlm2" else "LlamaTokenizer",
                  legacy=(family == "internlm2"))


def _added(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}


def _write_config(out: Path, added: dict, bos, eos, add_bos: bool, cls: str, legacy=None) -> None:
    cfg = {"added_tokens_decoder": dict(sorted(added.items(), key=lambda kv: int(kv[0]))),
           "bos_token": bos, "eos_token": eos, "add_bos_token": add_bos, "add_eos_token": False,
           "tokenizer_class": cls, "model_max_length": 8192, "clean_up_tokenization_spaces": False}
    if legacy is not None:
        cfg["legacy"] = legacy
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False),
                                               encoding="utf-8")
