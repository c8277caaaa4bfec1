"""The format warm-up (`mivl.export.train.format_warmup`): the LLM learns an answer's format on text
alone; the vision side is untouched, the run is reproducible, and a recipe runs it as a stage."""
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from mivl.edge.errors import InputError
from mivl.export.train.format_warmup import warm_up_format


def weights(path):
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("kind", ["where", "grounding"])
def test_warm_up_trains_the_llm_alone_and_reproducibly(tiny_dir, tmp_path, kind):
    src = tiny_dir("qwen2")
    a = warm_up_format(src, tmp_path / "a", kind, steps=3, batch=2, seed=5, quiet=True)
    b = warm_up_format(src, tmp_path / "b", kind, steps=3, batch=2, seed=5, quiet=True)
    before, wa, wb = weights(src), weights(a), weights(b)
    assert set(wa) == set(before)
    changed = {k for k in wa if not torch.equal(wa[k], before[k].to(wa[k].dtype))}
    assert changed and all(k.startswith("language_model.") for k in changed), sorted(changed)[:5]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)          # same seed, same weights
    c = warm_up_format(src, tmp_path / "c", kind, steps=3, batch=2, seed=6, quiet=True)
    wc = weights(c)
    assert any(not torch.equal(wa[k], wc[k]) for k in changed)
    log = json.loads((a / "train_log.json").read_text())
    assert len(log["losses"]) == 3 and log["kind"] == kind
    assert not (tmp_path / "a.partial").exists()


def test_warm_up_refuses_what_it_cannot_teach(tiny_dir, tmp_path):
    src = tiny_dir("qwen2")
    with pytest.raises(InputError, match="one of where, grounding"):
        warm_up_format(src, tmp_path / "x", "colour", steps=1)
    with pytest.raises(InputError, match="steps >= 1"):
        warm_up_format(src, tmp_path / "x", "where", steps=0)
    assert not (tmp_path / "x").exists()


def test_a_recipe_runs_the_warm_up_as_a_stage_and_skips_it_when_done(tmp_path):
    from mivl.export.default_model import SIX_CAMERA_WHERE, Recipe, train_default

    w0 = replace(SIX_CAMERA_WHERE.stage("w0"), steps=2, batch_size=1)
    recipe = replace(SIX_CAMERA_WHERE, name="t", stages=(w0,))
    assert isinstance(recipe, Recipe)
    out = train_default(tmp_path / "unused", work=tmp_path / "work", quiet=True, recipe=recipe)
    assert out == tmp_path / "work" / "w0"
    first = (out / "model.safetensors").stat().st_mtime_ns
    train_default(tmp_path / "unused", work=tmp_path / "work", quiet=True, recipe=recipe)
    assert (out / "model.safetensors").stat().st_mtime_ns == first


def test_a_warm_up_stage_names_one_format_when_it_is_written(tmp_path):
    from mivl.export.default_model import Stage

    for kinds in [("colour",), ("where", "grounding"), ()]:
        with pytest.raises(InputError, match="one kind of where, grounding"):
            Stage("w", 2, 1e-3, kinds, format_warmup=True)
    assert Stage("w", 2, 1e-3, ("grounding",), format_warmup=True).kinds == ("grounding",)


@pytest.mark.parametrize("kind", ["where", "grounding"])
def test_format_records_are_text_only_questions_of_their_format(kind):
    import re

    from mivl.export.train.format_warmup import FormatRecords

    recs = FormatRecords(kind, seed=4)
    a, b = recs[7], FormatRecords(kind, seed=4)[7]
    assert a == b and a != recs[8] and a != FormatRecords(kind, seed=5)[7]     # a pure function of (seed, i)
    assert set(a) == {"id", "conversations"}                                      # no image
    human, gpt = (t["value"] for t in a["conversations"])
    assert "<image>" not in human
    if kind == "grounding":
        ref = re.fullmatch(r".*(<ref>the \w+ \w+</ref>)", human).group(1)
        m = re.fullmatch(re.escape(ref) + r"<box>\[\[(\d+), (\d+), (\d+), (\d+)\]\]</box>", gpt)
        x1, y1, x2, y2 = map(int, m.groups())
        assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000
    else:
        assert re.fullmatch(r"Where is the \w+ \w+\?", human)
        assert re.fullmatch(r"<c1,CAM_[A-Z_]+,\d{1,4},\d{1,4}>", gpt)
    with pytest.raises(InputError, match="one of where, grounding"):
        FormatRecords("colour")


def test_a_stage_mixes_format_records_among_its_views_at_its_share():
    from mivl.export.default_model import SIX_CAMERA_WHERE, Stage, stage_records
    from mivl.export.train.synthetic import SyntheticViews

    m3 = SIX_CAMERA_WHERE.stage("m3")
    assert isinstance(stage_records(m3, 0, SIX_CAMERA_WHERE), SyntheticViews)
    mixed = replace(m3, format_records="grounding", format_share=0.2)
    recs = stage_records(mixed, 0, SIX_CAMERA_WHERE)
    text = [i for i in range(100) if recs.source(i)[0] == "general"]
    assert len(text) == 20
    assert all("image" not in recs[i] and "cameras" not in recs[i] for i in text[:3])
    views = [i for i in range(100) if i not in text][:2]
    assert all("image" in recs[i] or "cameras" in recs[i] for i in views)
    for bad in [dict(format_records="grounding"), dict(format_share=0.2), dict(format_records="colour", format_share=0.2),
                dict(format_records="where", format_share=1.0), dict(format_records="where", format_share=0.2, views=0)]:
        with pytest.raises(InputError, match="format records need"):
            replace(m3, **bad)
    with pytest.raises(InputError, match="format records need"):
        Stage("x", 2, 1e-3, ("where",), format_records="where", format_share=0.2)


def test_a_format_record_trains_on_its_answer_alone():
    from mivl.edge.preprocess import PreprocessConfig
    from mivl.edge.prompt import get_template
    from mivl.edge.tokenizer import load_tokenizer
    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.default_model import ASSET
    from mivl.export.train.data import IGNORE, encode_record
    from mivl.export.train.format_warmup import FormatRecords

    ck = load_checkpoint(ASSET)
    tok, tpl = load_tokenizer(ck.path), get_template(ck.config.template)
    rec = FormatRecords("grounding", seed=1)[3]
    s = encode_record(rec, tok, tpl, PreprocessConfig(max_tiles=12, use_thumbnail=True), 256)
    assert s.pixels is None and s.focus == []
    answer = tok.decode([t for t in s.labels if t != IGNORE])
    assert answer.startswith(rec["conversations"][1]["value"])        # the box, then the turn's end
    assert s.n_targets < len(s.input_ids) // 2                          # the question is not trained
