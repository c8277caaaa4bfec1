"""A frame set is encoded once and asked many times; unchanged cameras are not re-encoded; the KV
cache is kept over the whole common prefix, images included. Exactness: greedy tokens equal to a
cold session's for the same request."""
import numpy as np
import pytest

from mivl.edge import Session
from mivl.edge.feature_cache import FeatureCache, tile_key
from mivl.edge.multiview import CAMERAS

RNG = np.random.default_rng(5)
CAMS = {c: RNG.integers(0, 256, (90, 160, 3), dtype=np.uint8) for c in CAMERAS}
IMG = RNG.integers(0, 256, (120, 200, 3), dtype=np.uint8)
FRAMES = [RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(3)]


def cold(bundle, question, **kw):
    with Session(bundle, device="cpu", feature_cache_mb=0) as s:
        return s.ask(question, max_new_tokens=6, **kw)


def layout(s, question, **visual) -> tuple[int, int]:
    """(position where the first image run starts, tokens after the last one) of a request."""
    from mivl.edge import chunks
    from mivl.edge.request import Request

    req = Request(question, **visual).checked(s.engine.limits)
    tiles, _ = s.engine.tiles(req)
    prompt = s.engine.chunks(req, tiles)
    ks = [i for i, c in enumerate(prompt) if isinstance(c, chunks.Image)]
    return chunks.n_tokens(prompt[:ks[0]]), chunks.n_tokens(prompt[ks[-1] + 1:])


@pytest.mark.parametrize("family", ["qwen2", "internlm2", "phi3"])
def test_follow_up_questions_reuse_features_and_prompt_exactly(bundle_dir, family):
    bundle = bundle_dir(family, "fp32")
    inputs = [dict(cameras=CAMS), dict(images=[IMG]), dict(video=FRAMES)]
    with Session(bundle, device="cpu") as s:
        for visual in inputs:
            first = s.ask("Describe the scene.", max_new_tokens=6, **visual)
            assert first.timings.tiles_encoded > 0
            for q in ("What is in front?", "Describe the scene."):
                again = s.ask(q, max_new_tokens=6, **visual)
                t = again.timings
                assert t.tiles_encoded == 0 and t.tiles_cached == first.timings.tiles_encoded + first.timings.tiles_cached
                _, tail = layout(s, q, **visual)
                assert t.reused_tokens >= t.prompt_tokens - tail      # every image token is reused
                assert again.token_ids == cold(bundle, q, **visual).token_ids, (family, q, list(visual))


@pytest.mark.parametrize("changed", range(6))
def test_one_camera_changed_encodes_its_two_tiles_and_the_thumbnail(bundle_dir, changed):
    bundle = bundle_dir("qwen2", "fp32")
    new = dict(CAMS)
    new[CAMERAS[changed]] = np.ascontiguousarray(255 - CAMS[CAMERAS[changed]])
    q = "Which camera shows a car?"
    with Session(bundle, device="cpu") as s:
        base = s.ask(q, cameras=CAMS, max_new_tokens=6)
        assert base.timings.tiles_encoded == 13
        a = s.ask(q, cameras=new, max_new_tokens=6)
        img_start, _ = layout(s, q, cameras=new)
        per_tile = s.engine.tokens_per_tile
    t = a.timings
    assert (t.tiles_encoded, t.tiles_cached) == (3, 10)
    # prefill restarts at the first changed tile: camera i fills grid tiles 2i and 2i+1
    assert t.reused_tokens == img_start + 2 * changed * per_tile
    assert a.token_ids == cold(bundle, q, cameras=new).token_ids


def test_watch_reports_tiles_and_reuse_per_tick(bundle_dir):
    sets = [CAMS, CAMS, {**CAMS, "CAM_BACK": np.ascontiguousarray(CAMS["CAM_BACK"][::-1])}]
    with Session(bundle_dir("qwen2", "fp32"), device="cpu") as s:
        ticks = list(s.watch(sets, ["What is ahead?", "Which camera shows a bus?"], max_new_tokens=3))
    assert [t.tiles_encoded for t in ticks] == [13, 0, 3]
    assert [t.tiles_cached for t in ticks] == [13, 26, 23]
    assert all(len(t.answers) == 2 for t in ticks) and ticks[1].reused_tokens > ticks[0].reused_tokens


def test_cache_is_bounded_and_lru():
    c = FeatureCache(max_bytes=3 * 4000)
    feats = [np.full((10, 100), i, np.float32) for i in range(5)]            # 4,000 bytes each
    keys = [tile_key(np.full((3, 4, 4), i, np.float32)) for i in range(5)]
    for k, f in zip(keys[:3], feats[:3]):
        c.put(k, f)
    assert c.get(keys[0]) is feats[0]                                          # 0 is now the newest
    c.put(keys[3], feats[3])                                                   # evicts 1, the oldest
    assert c.get(keys[1]) is None and c.get(keys[2]) is feats[2] and len(c) == 3 and c.bytes <= c.max_bytes
    c.put(keys[4], np.zeros((100, 100), np.float32))                           # larger than the cache
    assert c.get(keys[4]) is None and c.bytes <= c.max_bytes
    assert tile_key(np.zeros((3, 4, 4), np.float32)) != tile_key(np.zeros((3, 4, 4), np.float64))


def test_session_cache_stays_within_its_bound(bundle_dir):
    with Session(bundle_dir("qwen2", "fp32"), device="cpu", feature_cache_mb=1) as s:
        for k in range(4):
            s.ask("Hi", cameras={c: np.roll(v, k, axis=1) for c, v in CAMS.items()}, max_new_tokens=1)
            assert s.engine.features.bytes <= 1 << 20
        assert 0 < len(s.engine.features) < 4 * 13


def test_cache_off_encodes_every_time(bundle_dir):
    with Session(bundle_dir("qwen2", "fp32"), device="cpu", feature_cache_mb=0) as s:
        for _ in range(2):
            t = s.ask("Hi", cameras=CAMS, max_new_tokens=1).timings
            assert (t.tiles_encoded, t.tiles_cached) == (13, 0)
