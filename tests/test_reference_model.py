"""The reference model against independent computations: transformers' own classes where they
exist (Qwen2, Phi-3, the -hf InternVL), per-head arithmetic for InternLM2."""
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mivl.export.checkpoint import load_checkpoint
from mivl.export.model.config import InternVLConfig

transformers = pytest.importorskip("transformers")
FAMILIES = ["qwen2", "internlm2", "phi3"]


def raw_llm(path):
    sd = load_file(str(path / "model.safetensors"))
    return {k[len("language_model."):]: v.float() for k, v in sd.items() if k.startswith("language_model.")}


def our_logits(ckpt, ids):
    with torch.no_grad():
        return ckpt.model.language_model(ckpt.model.language_model.embed(ids[None]))[0]


def ids_for(ckpt, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, ckpt.config.llm.vocab_size, (n,), generator=g)


def test_qwen2_matches_transformers(tiny_dir):
    ckpt = load_checkpoint(tiny_dir("qwen2"))
    c = ckpt.config.raw["llm_config"]
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**c)).eval()
    missing, unexpected = hf.load_state_dict(raw_llm(ckpt.path), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    ids = ids_for(ckpt)
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    assert (our_logits(ckpt, ids) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("orig_max,n", [(4096, 40), (16, 40)])  # short and long LongRoPE factors
def test_phi3_matches_transformers(tiny_dir, orig_max, n):
    ckpt = load_checkpoint(tiny_dir("phi3"))
    c = dict(ckpt.config.raw["llm_config"], original_max_position_embeddings=orig_max,
             pad_token_id=None, bos_token_id=1, eos_token_id=2)
    ckpt.config.llm.original_max_position_embeddings = orig_max
    hf = transformers.Phi3ForCausalLM(transformers.Phi3Config(**c)).eval()
    missing, unexpected = hf.load_state_dict(raw_llm(ckpt.path), strict=False)  # packed qkv, gate_up
    assert not unexpected and all("rotary" in k for k in missing)
    ids = ids_for(ckpt, n)
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    assert (our_logits(ckpt, ids) - ref).abs().max() <= 1e-4


def internlm2_by_hand(w: dict, cfg, ids: torch.Tensor) -> torch.Tensor:
    """InternLM2 forward written per head straight from the packed checkpoint tensors."""
    H, KV, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.d_head
    G, T = H // KV, ids.numel()
    x = w["model.tok_embeddings.weight"][ids]                        # (T, D)

    def rms(v, weight):
        return weight * v / torch.sqrt((v * v).mean(-1, keepdim=True) + cfg.rms_norm_eps)

    def rope(v, pos):  # rotate pairs (i, i + d/2) by pos * theta^(-2i/d)
        out = v.clone()
        for i in range(d // 2):
            a = pos * cfg.rope_theta ** (-2 * i / d)
            c, s = math.cos(a), math.sin(a)
            out[i] = v[i] * c - v[i + d // 2] * s
            out[i + d // 2] = v[i + d // 2] * c + v[i] * s
        return out

    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = rms(x, w[p + "attention_norm.weight"])
        qkv = h @ w[p + "attention.wqkv.weight"].T                     # (T, KV*(G+2)*d)
        qkv = qkv.view(T, KV, G + 2, d)
        heads = []
        for qh in range(H):
            kv, g = divmod(qh, G)
            q = torch.stack([rope(qkv[t, kv, g], t) for t in range(T)])
            k = torch.stack([rope(qkv[t, kv, G], t) for t in range(T)])
            v = qkv[:, kv, G + 1]
            scores = q @ k.T / math.sqrt(d)
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            heads.append(scores.softmax(-1) @ v)
        x = x + torch.cat(heads, dim=-1) @ w[p + "attention.wo.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        gate, up = h @ w[p + "feed_forward.w1.weight"].T, h @ w[p + "feed_forward.w3.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "feed_forward.w2.weight"].T
    return rms(x, w["model.norm.weight"]) @ w["output.weight"].T


def test_internlm2_matches_per_head_arithmetic(tiny_dir):
    ckpt = load_checkpoint(tiny_dir("internlm2"))
    ids = ids_for(ckpt, 24)
    with torch.no_grad():
        ref = internlm2_by_hand(raw_llm(ckpt.path), ckpt.config.llm, ids)
    assert (our_logits(ckpt, ids) - ref).abs().max() <= 1e-4


@pytest.fixture(scope="module")
def hf_internvl(tmp_path_factory):
    """A tiny InternVL in the -hf layout, written by transformers itself."""
    cfg = transformers.InternVLConfig(
        vision_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, attention_bias=True, image_size=[448, 448],
                           patch_size=[14, 14], layer_norm_eps=1e-6, layer_scale_init_value=0.5),
        text_config=dict(model_type="qwen2", hidden_size=64, intermediate_size=160,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=300, rms_norm_eps=1e-6, tie_word_embeddings=False),
        image_token_id=299, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.InternVLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))  # no default-initialised (all-ones/zeros) tensors
    out = tmp_path_factory.mktemp("hf") / "tiny-internvl-hf"
    model.save_pretrained(out)
    return model, out


def test_hf_layout_loads_and_matches_transformers(hf_internvl):
    hf, path = hf_internvl
    ckpt = load_checkpoint(path)
    assert ckpt.config.llm.family == "qwen2" and ckpt.config.template == "internvl2_5"
    pixels = torch.randn(3, 3, 448, 448)
    with torch.no_grad():
        theirs = hf.model.get_image_features(pixels)
        theirs = getattr(theirs, "pooler_output", theirs)
        ours = ckpt.model.extract_feature(pixels)
    assert ours.shape == (3, 256, 64)
    assert (ours - theirs.reshape(ours.shape)).abs().max() <= 1e-4
    ids = torch.randint(0, 299, (30,))
    with torch.no_grad():
        ref = hf(input_ids=ids[None]).logits[0]
    assert (our_logits(ckpt, ids) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_cache_equals_full_recompute(reference, family):
    ref = reference(family)
    img = np.random.default_rng(3).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    ans = ref.ask("Describe.", images=[img], max_new_tokens=6, keep_logits=True)
    tiles = ref.tiles(images=[img])
    feats = ref.image_embeds(tiles)
    ids = list(ans.prompt_ids)
    for step, tok in enumerate(ans.token_ids):
        logits = ref.model.prompt_logits(torch.tensor(ids), feats, ref.img_context_id)[-1]
        assert int(logits.argmax()) == tok
        assert (logits - ans.generation.logits[step]).abs().max() <= 1e-4
        ids.append(tok)


def test_sampling_reproducible_for_a_seed(reference):
    ref = reference("qwen2")
    a = ref.ask("Hello", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=5)
    b = ref.ask("Hello", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=5)
    c = ref.ask("Hello", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=6)
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_image_features_land_on_img_context_positions(reference):
    ref = reference("internlm2")
    img = np.random.default_rng(4).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    tiles = ref.tiles(images=[img])
    ids = torch.tensor(ref.prompt_ids("What?", tiles))
    feats = ref.image_embeds(tiles)
    emb = ref.model.embed(ids, feats, ref.img_context_id)[0]
    slots = (ids == ref.img_context_id).nonzero().flatten()
    assert slots.numel() == 256 and torch.equal(emb[slots], feats[0])
    others = (ids != ref.img_context_id).nonzero().flatten()
    assert torch.equal(emb[others], ref.model.language_model.embed(ids[others]))


def test_unshuffle_v2_is_space_to_depth_and_v1_is_column_major():
    from mivl.export.model.projector import pixel_unshuffle

    x = torch.randn(2, 32, 32, 8)  # (N, rows, cols, C)
    v2 = pixel_unshuffle(x, 0.5, "v2").reshape(2, 256, 32)
    r, c = 3, 5
    expect = torch.cat([x[:, 2 * r, 2 * c], x[:, 2 * r, 2 * c + 1], x[:, 2 * r + 1, 2 * c],
                        x[:, 2 * r + 1, 2 * c + 1]], dim=-1)
    assert torch.equal(v2[:, r * 16 + c], expect)
    v1 = pixel_unshuffle(x, 0.5, "v1").reshape(2, 256, 32)
    assert torch.equal(v1[:, c * 16 + r], expect)
