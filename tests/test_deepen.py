"""Deepening a decoder: identity layers appended keep every answer, then learn."""
import json

import pytest
import torch

from mivl.edge.errors import InputError
from mivl.export.checkpoint import load_checkpoint
from mivl.export.train.deepen import add_identity_layers, deepen
from mivl.export.train.trainer import TrainConfig, train

from test_train import _records


def logits(model, ids):
    with torch.no_grad():
        return model.language_model(model.language_model.embed(ids[None]))


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_deepened_checkpoint_computes_what_its_source_did(tiny_dir, tmp_path, family):
    src = tiny_dir(family)
    out = deepen(src, tmp_path / "deep", layers=2, seed=3)
    before, after = load_checkpoint(src), load_checkpoint(out)
    n = before.config.llm.num_hidden_layers
    assert after.config.llm.num_hidden_layers == n + 2
    assert json.loads((out / "config.json").read_text())["llm_config"]["num_hidden_layers"] == n + 2
    ids = torch.arange(1, 40) % before.config.llm.vocab_size
    a, b = logits(before.model, ids), logits(after.model, ids)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # the new layers are not zero throughout: they can learn
    new = after.model.language_model.model.layers[n]
    assert new.self_attn.q_proj.weight.abs().max() > 0 and new.mlp.up_proj.weight.abs().max() > 0
    assert new.self_attn.o_proj.weight.abs().max() == 0 and new.mlp.down_proj.weight.abs().max() == 0


def test_deepened_layers_learn(tiny_dir, tmp_path):
    src = deepen(tiny_dir("qwen2"), tmp_path / "deep", layers=1)
    cfg = TrainConfig(str(src), str(tmp_path / "out"), mode="full", steps=4, batch_size=2, lr=5e-3, dtype="fp32",
                      warmup_ratio=0.0, quiet=True)
    train(cfg, _records(2))
    trained = load_checkpoint(tmp_path / "out").model.language_model.model.layers[-1]
    assert trained.self_attn.o_proj.weight.abs().max() > 0 and trained.mlp.down_proj.weight.abs().max() > 0


@pytest.mark.parametrize("layers", [0, -1, 1.5, True, "2", 65])
def test_bad_layer_counts_are_refused_and_the_model_is_untouched(tiny_dir, layers):
    ck = load_checkpoint(tiny_dir("qwen2"))
    n = len(ck.model.language_model.model.layers)
    with pytest.raises(InputError, match="layers must be an integer"):
        add_identity_layers(ck.model, layers)
    assert len(ck.model.language_model.model.layers) == n == ck.model.config.llm.num_hidden_layers
