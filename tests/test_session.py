"""The edge Session and C-API-like layer: behaviour, bad inputs (design.md section 8), threads."""
import threading

import numpy as np
import pytest

from mivl.edge.errors import BundleError, ImageError, InputError, MivlError
from mivl.edge.multiview import CAMERAS
from mivl.edge.session import Session

IMG = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def session(bundle_dir):
    with Session(bundle_dir("qwen2", "fp32"), device="cpu", threads=2) as s:
        yield s


def test_ask_stream_and_timings(session):
    a = session.ask("Describe.", images=[IMG], max_new_tokens=6)
    assert len(a.token_ids) == 6 and a.text and not a.stopped
    t = a.timings
    assert t.prompt_tokens > 256 and t.vision_s > 0 and t.prefill_s > 0 and t.new_tokens == 6
    pieces = list(session.ask("Describe.", images=[IMG], max_new_tokens=6, stream=True))
    assert "".join(pieces) == a.text
    assert session.backends["vision"].startswith("onnxruntime")


def test_prefix_reused_and_answer_unchanged(session, bundle_dir):
    session.ask("First question?", max_new_tokens=2)
    a = session.ask("Second question?", images=[IMG], max_new_tokens=5)
    assert a.timings.reused_tokens >= 15  # the system prompt was not evaluated again
    with Session(bundle_dir("qwen2", "fp32"), device="cpu") as fresh:
        b = fresh.ask("Second question?", images=[IMG], max_new_tokens=5)
    assert b.timings.reused_tokens == 0 and a.token_ids == b.token_ids


def test_sampling_reproducible(session):
    a = session.ask("Hi", max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    b = session.ask("Hi", max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    c = session.ask("Hi", max_new_tokens=8, temperature=1.0, top_p=0.9, seed=4)
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_chat_keeps_history(session):
    session.reset_chat()
    a1 = session.chat("What is this?", images=[IMG], max_new_tokens=4)
    a2 = session.chat("And the colour?", max_new_tokens=4)
    assert len(session.history) == 2 and session.history[0][0].startswith("<image>\n")
    assert a2.timings.prompt_tokens > a1.timings.prompt_tokens
    session.reset_chat()


BAD = [
    (dict(images=[b"garbage"]), ImageError, "not a readable image"),
    (dict(images=[np.zeros((0, 5, 3), np.uint8)]), ImageError, "zero size"),
    (dict(images=["/no/such/file.jpg"]), ImageError, "not found"),
    (dict(images=[np.zeros((10, 10, 3), np.float32)]), ImageError, "dtype float32"),
    (dict(cameras={"CAM_FRONT": IMG}), InputError, "missing CAM_FRONT_LEFT"),
    (dict(cameras={**{c: IMG for c in CAMERAS}, "CAM_TOP": IMG}), InputError, "unknown CAM_TOP"),
    (dict(images=[IMG], cameras={c: IMG for c in CAMERAS}), InputError, "one kind of visual input"),
    (dict(images=[IMG], max_new_tokens=0), InputError, "max_new_tokens"),
    (dict(images=[IMG], temperature=-1), InputError, "temperature"),
    (dict(images=[IMG], max_tiles=0), InputError, "max_tiles"),
    (dict(video="/no/such/video.mp4"), InputError, "video file not found"),
]


@pytest.mark.parametrize("kwargs,err,msg", BAD)
def test_bad_inputs_fail_clearly_and_session_survives(session, kwargs, err, msg):
    with pytest.raises(err, match=msg):
        session.ask("What is this?", **kwargs)
    assert len(session.ask("Still there?", max_new_tokens=2).token_ids) == 2


def test_prompt_longer_than_context(bundle_dir):
    with Session(bundle_dir("qwen2", "fp32"), device="cpu", n_ctx=1024) as s:
        with pytest.raises(InputError, match=r"13 tiles x 256 image tokens .* context holds 1024"):
            s.ask("What?", cameras={c: IMG for c in CAMERAS})
        assert s.ask("What?", cameras={c: IMG for c in CAMERAS}, max_tiles=2).token_ids  # budget fits
        with pytest.raises(InputError, match="too many"):
            s.ask("word " * 2000)
        assert s.ask("ok?", max_new_tokens=1).token_ids


def test_closed_session(bundle_dir):
    s = Session(bundle_dir("qwen2", "fp32"), device="cpu")
    s.close()
    s.close()  # idempotent
    with pytest.raises(MivlError, match="closed"):
        s.ask("hi")


def test_bad_bundle_and_device(tmp_path, bundle_dir):
    with pytest.raises(BundleError, match="not found"):
        Session(tmp_path / "missing")
    with pytest.raises(InputError, match="device must be"):
        Session(bundle_dir("qwen2", "fp32"), device="tpu")


def test_two_threads_share_a_session(session):
    q = ["Describe.", "What colour?"]
    expected = [session.ask(x, images=[IMG], max_new_tokens=6).token_ids for x in q]
    results, errors = {}, []

    def worker(i):
        try:
            for _ in range(2):
                results.setdefault(i, []).append(session.ask(q[i], images=[IMG], max_new_tokens=6).token_ids)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0] == [expected[0]] * 2 and results[1] == [expected[1]] * 2


def test_grounding_markup_survives_decoding(bundle_dir, reference):
    """Boxes are parsed from `<ref>..</ref><box>[[..]]</box>`: those special tokens stay in the
    answer text (in the runtime and the reference alike); other special tokens do not."""
    from mivl.edge.prompt import ANSWER_MARKUP

    tok = reference("qwen2").tok
    script = (tok.encode("<ref>", add_bos=False) + tok.encode("the bus", add_bos=False)
              + tok.encode("</ref><box>", add_bos=False) + tok.encode("[[100, 200, 500, 600]]", add_bos=False)
              + tok.encode("</box><img>", add_bos=False))
    assert tok.decode(script, skip_special=True, keep=ANSWER_MARKUP) == \
        "<ref>the bus</ref><box>[[100, 200, 500, 600]]</box>"

    with Session(bundle_dir("qwen2", "fp32"), device="cpu") as s:
        llm, stop = s._engine.llm, min(s._engine.stop_ids)
        real_logits, calls = llm.logits, [0]

        def scripted_logits(i=-1):   # the real LLM runs; the script overrides its choice
            real_logits(i)
            k, calls[0] = calls[0], calls[0] + 1
            out = np.zeros(llm.n_vocab, np.float32)
            out[script[k] if k < len(script) else stop] = 1.0
            return out

        llm.logits = scripted_logits
        a = s.ask("Where is the bus?", images=[IMG], max_new_tokens=len(script) + 2)
    assert a.stopped and a.token_ids == script
    assert a.text == "<ref>the bus</ref><box>[[100, 200, 500, 600]]</box>"
    assert [o.label for o in a.objects] == ["the bus"] and tuple(a.objects[0].box) == (100, 200, 500, 600)
