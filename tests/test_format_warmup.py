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
