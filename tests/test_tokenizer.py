import pytest

from mivl.edge.prompt import INTERNVL_SPECIAL_TOKENS
from mivl.export.tiny_tokenizer import family_specials
from mivl.edge.tokenizer import load_tokenizer

CORPUS = ["Hello world", "你好，世界！自动驾驶", "😀🚗 emoji 👍🏽", "tabs\tand   runs    of spaces\n\n\nx",
          "def f(x):\n    return x ** 2\n", "<img><IMG_CONTEXT><IMG_CONTEXT></img>\nWhat is this?",
          "<ref>the red car</ref><box>[[12, 345, 678, 999]]</box>", "  leading and trailing  "]


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_specials_are_single_ids(tiny_dir, family):
    tok = load_tokenizer(tiny_dir(family))
    for t in list(INTERNVL_SPECIAL_TOKENS) + family_specials(family):
        ids = tok.encode(t, add_bos=False)
        assert ids == [tok.token_to_id(t)], t
    ids = tok.encode("<img>" + "<IMG_CONTEXT>" * 5 + "</img>", add_bos=False)
    assert ids == [tok.token_to_id("<img>")] + [tok.token_to_id("<IMG_CONTEXT>")] * 5 + [tok.token_to_id("</img>")]


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_round_trip(tiny_dir, family):
    tok = load_tokenizer(tiny_dir(family))
    for text in CORPUS:
        ids = tok.encode(text, add_bos=False)
        assert tok.decode(ids) == text or tok.decode(ids) == " " + text or family == "phi3"


def test_internvl_tokens_follow_the_base_vocab(tiny_dir):
    for fam in ("qwen2", "internlm2", "phi3"):
        tok = load_tokenizer(tiny_dir(fam))
        ids = [tok.token_to_id(t) for t in INTERNVL_SPECIAL_TOKENS]
        assert ids == list(range(ids[0], ids[0] + 9)) and ids[-1] == tok.vocab_size - 1


def test_bos_rules(tiny_dir):
    assert load_tokenizer(tiny_dir("qwen2")).encode("hi")[0] != 1
    sp = load_tokenizer(tiny_dir("internlm2"))
    assert sp.encode("hi")[0] == sp.bos_id == 1


def test_qwen2_vocab_merges_path_equals_tokenizer_json(tiny_dir, tmp_path):
    import shutil
    src = tiny_dir("qwen2")
    dst = tmp_path / "vm"
    shutil.copytree(src, dst)
    (dst / "tokenizer.json").unlink()
    a, b = load_tokenizer(src), load_tokenizer(dst)
    for text in CORPUS:
        assert a.encode(text) == b.encode(text), text


def test_matches_transformers_tokenizer(tiny_dir):
    """transformers' own tokenizer classes, fed the same files, give the same ids."""
    transformers = pytest.importorskip("transformers")
    for fam in ("qwen2", "phi3"):
        path = tiny_dir(fam)
        ours = load_tokenizer(path)
        theirs = transformers.AutoTokenizer.from_pretrained(str(path))
        for text in CORPUS:
            if fam == "phi3" and text[:1].isspace():
                # transformers 5 tokenises SentencePiece models with `tokenizers`' Metaspace, which
                # skips the dummy prefix when text starts with a space; InternVL loads the slow
                # sentencepiece tokenizer (use_fast=False), which keeps it, as we do.
                continue
            assert ours.encode(text) == theirs(text)["input_ids"], (fam, text)


def test_cased_tiny_tokenizer_keeps_camera_names_in_few_pieces(tmp_path):
    """The six-camera recipe's tokenizer: CAM_BACK_RIGHT in 3 pieces (the tests' tokenizer, trained
    on lowercased lines, needs ~13), the same corpus otherwise."""
    from tokenizers import Tokenizer

    from mivl.edge.multiview import CAMERAS
    from mivl.export.tiny_tokenizer import corpus, write_bpe_tokenizer

    pieces = {}
    for cased in (False, True):
        out = tmp_path / str(cased)
        out.mkdir()
        write_bpe_tokenizer(out, 0, cased=cased)
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        pieces[cased] = {c: len(tok.encode(c).tokens) for c in CAMERAS}
    assert all(n <= 3 for n in pieces[True].values()), pieces[True]
    assert pieces[False]["CAM_BACK_RIGHT"] > 6
    a, b = corpus(0), corpus(0, cased=True)
    assert len(a) == len(b) and [x.lower() for x in a] == [x.lower() for x in b]


def one_at_a_time(tok, text):
    """The split the encoder must reproduce: one added token at a time (longest first), the text
    between encoded on its own (the first piece as the text's start)."""
    import re
    split = re.compile("(" + "|".join(re.escape(t) for t in sorted(tok.added, key=len, reverse=True)) + ")")
    ids = []
    for i, part in enumerate(split.split(text)):
        ids += [tok.added[part]] if i % 2 else tok._encode_text(part, first=(i == 0))
    return ids


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_runs_of_added_tokens_split_as_one_at_a_time(tiny_dir, family):
    tok = load_tokenizer(tiny_dir(family))
    texts = CORPUS + ["<|im_start|>user\nImage-1: <img>" + "<IMG_CONTEXT>" * 300 + "</img>\nWhich camera?<|im_end|>\n",
                      "<IMG_CONTEXT><IMG_CONTEXT>x<IMG_CONTEXT></img></img><img>", "<IMG_CONTEXT" + "<IMG_CONTEXT>" * 3,
                      "<img><IMG_CONTEXT>" * 3 + "</img>", ""]
    for text in texts:
        assert tok.encode(text, add_bos=False) == one_at_a_time(tok, text), text[:60]


def test_added_tokens_sharing_a_prefix_split_longest_first(tiny_dir, tmp_path):
    """Added tokens where one begins another (`<ab>` and `<ab><cd>`) keep the one-at-a-time split,
    longest first, runs included."""
    import json
    import shutil

    dst = tmp_path / "tok"
    shutil.copytree(tiny_dir("qwen2"), dst)
    top = max(load_tokenizer(dst).added.values())
    (dst / "added_tokens.json").write_text(json.dumps({"<ab>": top + 1, "<ab><cd>": top + 2}))
    tok = load_tokenizer(dst)
    text = "<ab><ab><cd><ab>x<ab><ab><IMG_CONTEXT><IMG_CONTEXT>"
    ids = tok.encode(text, add_bos=False)
    assert ids == one_at_a_time(tok, text)
    assert ids[:3] == [top + 1, top + 2, top + 1] and ids.count(top + 2) == 1
