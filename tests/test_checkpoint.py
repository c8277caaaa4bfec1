import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mivl.edge.errors import CheckpointError, InputError
from mivl.export.checkpoint import load_checkpoint
from mivl.export.tiny import make_tiny


def copy(src, tmp_path, name="ck"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit_weights(path, fn):
    sd = load_file(str(path / "model.safetensors"))
    fn(sd)
    save_file(sd, str(path / "model.safetensors"))


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_tiny_loads_in_original_layout(tiny_dir, family):
    ck = load_checkpoint(tiny_dir(family))
    cfg = json.loads((ck.path / "config.json").read_text())
    assert ck.config.llm.family == family and ck.dtype == torch.bfloat16
    assert cfg["template"] == {"qwen2": "Hermes-2", "internlm2": "internlm2-chat", "phi3": "phi3-chat"}[family]
    assert ck.config.tokens_per_tile == 256
    names = set(load_file(str(ck.path / "model.safetensors")))
    packed = {"qwen2": "language_model.model.layers.0.self_attn.q_proj.weight",
              "internlm2": "language_model.model.layers.0.attention.wqkv.weight",
              "phi3": "language_model.model.layers.0.self_attn.qkv_proj.weight"}[family]
    assert packed in names and "mlp1.3.weight" in names
    assert "vision_model.encoder.layers.1.attn.qkv.weight" in names


def test_make_tiny_is_deterministic(tmp_path):
    for fam in ("qwen2", "internlm2"):
        a = make_tiny(fam, tmp_path / f"a-{fam}", seed=3)
        b = make_tiny(fam, tmp_path / f"b-{fam}", seed=3)
        for f in sorted(p.name for p in a.iterdir()):
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = make_tiny("qwen2", tmp_path / "c", seed=4)
    assert (c / "model.safetensors").read_bytes() != (tmp_path / "a-qwen2" / "model.safetensors").read_bytes()


def test_make_tiny_refuses_to_overwrite(tmp_path):
    make_tiny("qwen2", tmp_path / "x")
    with pytest.raises(InputError, match="already exists"):
        make_tiny("qwen2", tmp_path / "x")
    with pytest.raises(InputError, match="unknown LLM family"):
        make_tiny("llama9", tmp_path / "y")


def test_missing_tensor_named_with_expected_shape(tiny_dir, tmp_path):
    p = copy(tiny_dir("qwen2"), tmp_path)
    edit_weights(p, lambda sd: sd.pop("mlp1.1.weight"))
    with pytest.raises(CheckpointError, match=r"missing mlp1\.1\.weight \(expected shape \[64, 256\]\)"):
        load_checkpoint(p)


def test_misshaped_and_unexpected_tensors(tiny_dir, tmp_path):
    p = copy(tiny_dir("qwen2"), tmp_path)

    def fn(sd):
        sd["vision_model.embeddings.position_embedding"] = torch.zeros(1, 577, 64, dtype=torch.bfloat16)
        sd["extra.weight"] = torch.zeros(3)
    edit_weights(p, fn)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert "position_embedding has shape [1, 577, 64], expected [1, 1025, 64]" in msg
    assert "unexpected extra.weight" in msg


def test_internlm2_wqkv_wrong_rows(tiny_dir, tmp_path):
    p = copy(tiny_dir("internlm2"), tmp_path)
    key = "language_model.model.layers.0.attention.wqkv.weight"
    edit_weights(p, lambda sd: sd.__setitem__(key, sd[key][:-16]))
    with pytest.raises((CheckpointError, RuntimeError)):
        load_checkpoint(p)


def test_sharded_and_dtypes_load_the_same(tiny_dir, tmp_path):
    src = tiny_dir("internlm2")
    ref = load_checkpoint(src).model.state_dict()
    sd = load_file(str(src / "model.safetensors"))
    for dtype in (torch.float32, torch.float16):
        p = copy(src, tmp_path, f"d{dtype}")
        (p / "model.safetensors").unlink()
        keys = sorted(sd)
        half = len(keys) // 2
        shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
        for name, ks in shards.items():
            save_file({k: sd[k].to(dtype) for k in ks}, str(p / name))
        (p / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {k: n for n, ks in shards.items() for k in ks}}))
        got = load_checkpoint(p)
        assert got.dtype == dtype
        tol = 0 if dtype == torch.float32 else 1e-2
        for k, v in got.model.state_dict().items():
            assert torch.allclose(v, ref[k], atol=tol, rtol=tol), k


def test_missing_shard_reported(tiny_dir, tmp_path):
    p = copy(tiny_dir("qwen2"), tmp_path)
    (p / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00009.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-00009.safetensors"):
        load_checkpoint(p)


class Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_bin_weights_only_and_malicious_pickle_refused(tiny_dir, tmp_path, capsys):
    p = copy(tiny_dir("qwen2"), tmp_path)
    sd = load_file(str(p / "model.safetensors"))
    (p / "model.safetensors").unlink()
    torch.save(sd, p / "pytorch_model.bin")
    assert load_checkpoint(p).config.llm.family == "qwen2"
    with open(p / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Boom()}, f)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(p)
    assert "code ran" not in capsys.readouterr().out


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="vision_config"):
        load_checkpoint(tmp_path / "empty")


def test_unknown_llm_architecture(tiny_dir, tmp_path):
    p = copy(tiny_dir("qwen2"), tmp_path)
    cfg = json.loads((p / "config.json").read_text())
    cfg["llm_config"]["architectures"] = ["MambaForCausalLM"]
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown LLM architecture 'MambaForCausalLM'"):
        load_checkpoint(p)


def test_hub_id_without_network_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="OpenGVLab/InternVL2-1B"):
        load_checkpoint("OpenGVLab/InternVL2-1B")


def test_family_registry_one_class_per_family():
    from mivl.export import families
    from mivl.export.model.config import llm_config

    assert set(families.names()) == {"qwen2", "internlm2", "phi3", "llama"}
    assert set(families.names(with_tiny=True)) == {"qwen2", "internlm2", "phi3"}
    with pytest.raises(InputError, match="unknown LLM family 'gpt2'; known: internlm2, llama, phi3, qwen2"):
        families.family("gpt2")
    with pytest.raises(CheckpointError, match="unknown LLM architecture 'GPT2LMHeadModel'"):
        llm_config({"architectures": ["GPT2LMHeadModel"]})
    # each family's config defaults come from its class
    base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, vocab_size=10)
    assert llm_config({**base, "architectures": ["Qwen2ForCausalLM"]}).attention_bias is True
    assert llm_config({**base, "architectures": ["InternLM2ForCausalLM"], "bias": True}).attention_bias is True
    assert llm_config({**base, "architectures": ["Phi3ForCausalLM"]}).rms_norm_eps == 1e-5


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_family_tensor_maps_round_trip(tiny_dir, family):
    from mivl.export.families import from_canonical, to_canonical

    ckpt = load_checkpoint(tiny_dir(family))
    sd = {k[len("language_model."):]: v for k, v in ckpt.model.state_dict().items() if k.startswith("language_model.")}
    packed = from_canonical(sd, ckpt.config.llm)
    back = to_canonical(packed, ckpt.config.llm)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
