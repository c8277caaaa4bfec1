"""The C-API-like layer as a contract: every mivl_* function, status codes by error type, messages
written for the caller, lifetimes from any thread (risky orders in a subprocess)."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mivl.edge import capi
from mivl.edge.capi import Out
from mivl.edge.multiview import CAMERAS

IMG = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
HERE = Path(__file__).parent


def _ok(status):
    assert status == capi.MIVL_OK, (capi.mivl_status_name(status), capi.mivl_last_error_message())


def _session(bundle, **opts) -> int:
    o, s = Out(), Out()
    _ok(capi.mivl_options_create(o))
    for k, v in {"device": "cpu", **opts}.items():
        _ok(capi.mivl_options_set(o.value, k.encode(), v.encode() if isinstance(v, str) else v))
    _ok(capi.mivl_session_create(str(bundle).encode(), o.value, s))
    _ok(capi.mivl_options_destroy(o.value))
    return s.value


def _request(session, question=b"Describe.", **options) -> int:
    r = Out()
    _ok(capi.mivl_request_create(session, r))
    _ok(capi.mivl_request_set_question(r.value, question))
    for k, v in options.items():
        _ok(capi.mivl_request_set_option(r.value, k.encode(), v))
    return r.value


def _generate(request) -> list[int]:
    tok, out = Out(), []
    while (st := capi.mivl_request_generate_next(request, tok)) == capi.MIVL_OK:
        out.append(tok.value)
    assert st == capi.MIVL_DONE, (capi.mivl_status_name(st), capi.mivl_last_error_message())
    return out


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return bundle_dir("qwen2", "fp32")


@pytest.fixture(scope="module")
def session(bundle):
    from mivl.edge.session import Session

    with Session(bundle, device="cpu") as s:
        yield s


def test_full_flow_equals_session(session, bundle, tmp_path):
    from PIL import Image

    Image.fromarray(IMG).save(tmp_path / "x.png")
    expected = session.ask("Describe.", images=[IMG], max_new_tokens=5)
    s = _session(bundle, threads=2, n_ctx=4096, flash_attn=0, verify=1)
    r = _request(s, max_new_tokens=5, temperature=0.0, top_p=1.0, seed=np.int64(3))
    _ok(capi.mivl_request_add_image(r, str(tmp_path / "x.png").encode()))
    done = Out()
    _ok(capi.mivl_request_is_done(r, done))
    assert done.value == 0
    assert _generate(r) == expected.token_ids
    _ok(capi.mivl_request_is_done(r, done))
    assert done.value == 1
    assert capi.mivl_request_generate_next(r, Out()) == capi.MIVL_DONE
    text, t = Out(), Out()
    _ok(capi.mivl_request_get_text(r, text))
    assert text.value == expected.text
    for name in capi.TIMINGS:
        _ok(capi.mivl_request_get_timing(r, name.encode(), t))
        assert isinstance(t.value, (int, float)) and np.isfinite(t.value)
    _ok(capi.mivl_request_get_timing(r, b"new_tokens", t))
    assert t.value == 5
    assert capi.mivl_request_set_option(r, b"seed", 1) == capi.MIVL_ERR_STATE
    _ok(capi.mivl_request_destroy(r))
    _ok(capi.mivl_request_destroy(r))          # idempotent
    _ok(capi.mivl_session_destroy(s))
    _ok(capi.mivl_session_destroy(s))


def test_image_data_cameras_and_video(session, bundle, tmp_path):
    import io

    import cv2
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(IMG).save(buf, format="PNG")
    s = _session(bundle)
    r = _request(s, max_new_tokens=3)
    _ok(capi.mivl_request_add_image_data(r, buf.getvalue()))
    assert _generate(r) == session.ask("Describe.", images=[IMG], max_new_tokens=3).token_ids
    capi.mivl_request_destroy(r)

    r = _request(s, max_new_tokens=3)
    for c in CAMERAS:
        _ok(capi.mivl_request_add_camera(r, c.encode(), IMG))
    assert _generate(r) == session.ask("Describe.", cameras={c: IMG for c in CAMERAS}, max_new_tokens=3).token_ids
    capi.mivl_request_destroy(r)

    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for k in range(12):
        w.write(np.roll(IMG, k * 7, axis=1)[:, :, ::-1].copy())
    w.release()
    r = _request(s, max_new_tokens=3, num_frames=2)
    _ok(capi.mivl_request_set_video(r, str(video).encode()))
    assert _generate(r) == session.ask("Describe.", video=video, num_frames=2, max_new_tokens=3).token_ids
    capi.mivl_request_destroy(r)
    capi.mivl_session_destroy(s)


BAD_CALLS = [
    # (call, status, words in the message)
    (lambda s, r: capi.mivl_request_set_option(r, b"seed", -1), capi.MIVL_ERR_INVALID_ARGUMENT, "seed must be within"),
    (lambda s, r: capi.mivl_request_set_option(r, b"seed", 1.5), capi.MIVL_ERR_INVALID_ARGUMENT, "seed must be an integer"),
    (lambda s, r: capi.mivl_request_set_option(r, b"seed", "abc"), capi.MIVL_ERR_INVALID_ARGUMENT, "seed must be an integer"),
    (lambda s, r: capi.mivl_request_set_option(r, b"temperature", "0.5"), capi.MIVL_ERR_INVALID_ARGUMENT, "number"),
    (lambda s, r: capi.mivl_request_set_option(r, b"top_p", None), capi.MIVL_ERR_INVALID_ARGUMENT, "top_p"),
    (lambda s, r: capi.mivl_request_set_option(r, b"temperature", float("nan")), capi.MIVL_ERR_INVALID_ARGUMENT, "finite"),
    (lambda s, r: capi.mivl_request_set_option(r, b"warp", 9), capi.MIVL_ERR_INVALID_ARGUMENT, "unknown option"),
    (lambda s, r: capi.mivl_request_set_option(r, b"channels", b"RGBA"), capi.MIVL_ERR_INVALID_ARGUMENT, "channels"),
    (lambda s, r: capi.mivl_request_set_question(r, "a\ud800b"), capi.MIVL_ERR_INVALID_ARGUMENT, "surrogate"),
    (lambda s, r: capi.mivl_request_set_question(r, b"\xff\xfe"), capi.MIVL_ERR_INVALID_ARGUMENT, "UTF-8"),
    (lambda s, r: capi.mivl_request_set_question(r, None), capi.MIVL_ERR_INVALID_ARGUMENT, "question must be a string"),
    (lambda s, r: capi.mivl_request_add_image(r, b"/missing.png"), capi.MIVL_ERR_IMAGE, "not found"),
    (lambda s, r: capi.mivl_request_add_image(r, 42), capi.MIVL_ERR_IMAGE, "unsupported image type"),
    (lambda s, r: capi.mivl_request_add_image_data(r, b""), capi.MIVL_ERR_IMAGE, "empty"),
    (lambda s, r: capi.mivl_request_add_image_data(r, "not bytes"), capi.MIVL_ERR_INVALID_ARGUMENT, "bytes"),
    (lambda s, r: capi.mivl_request_add_image_data(r, b"\x89PNG\r\n\x1a\n" + b"\0" * 40), capi.MIVL_ERR_IMAGE, ""),
    (lambda s, r: capi.mivl_request_add_camera(r, b"CAM_TOP", IMG), capi.MIVL_ERR_INVALID_ARGUMENT, "unknown camera"),
    (lambda s, r: capi.mivl_request_set_video(r, None), capi.MIVL_ERR_INVALID_ARGUMENT, "video path"),
    (lambda s, r: capi.mivl_request_generate_next(r, None), capi.MIVL_ERR_INVALID_ARGUMENT, "out parameter"),
    (lambda s, r: capi.mivl_request_get_text(r, "x"), capi.MIVL_ERR_INVALID_ARGUMENT, "out parameter"),
    (lambda s, r: capi.mivl_request_is_done(r, None), capi.MIVL_ERR_INVALID_ARGUMENT, "out parameter"),
    (lambda s, r: capi.mivl_request_get_timing(r, b"vision_s", Out()), capi.MIVL_ERR_STATE, "before the first"),
    (lambda s, r: capi.mivl_request_get_timing(r, b"speed", Out()), capi.MIVL_ERR_INVALID_ARGUMENT, "unknown timing"),
    (lambda s, r: capi.mivl_request_create(s, None), capi.MIVL_ERR_INVALID_ARGUMENT, "out parameter"),
    (lambda s, r: capi.mivl_request_create(r, Out()), capi.MIVL_ERR_INVALID_HANDLE, "not a live session"),
    (lambda s, r: capi.mivl_request_set_question(s, b"x"), capi.MIVL_ERR_INVALID_HANDLE, "not a live request"),
    (lambda s, r: capi.mivl_request_destroy(s), capi.MIVL_ERR_INVALID_HANDLE, "not a request"),
    (lambda s, r: capi.mivl_session_destroy(r), capi.MIVL_ERR_INVALID_HANDLE, "not a session"),
    (lambda s, r: capi.mivl_request_create(True, Out()), capi.MIVL_ERR_INVALID_HANDLE, "not a live session"),
    (lambda s, r: capi.mivl_options_set(12345, b"device", b"cpu"), capi.MIVL_ERR_INVALID_HANDLE, "options"),
    (lambda s, r: capi.mivl_options_create(None), capi.MIVL_ERR_INVALID_ARGUMENT, "out parameter"),
    (lambda s, r: capi.mivl_session_create(b"/no/bundle", 0, Out()), capi.MIVL_ERR_BUNDLE, "not found"),
    (lambda s, r: capi.mivl_session_create(b"/no/bundle", 0, None), capi.MIVL_ERR_INVALID_ARGUMENT, "out parameter"),
    (lambda s, r: capi.mivl_session_create(b"/no/bundle", 999999, Out()), capi.MIVL_ERR_INVALID_HANDLE, "options"),
]


@pytest.mark.parametrize("k", range(len(BAD_CALLS)))
def test_bad_calls_get_a_status_and_a_message_and_the_session_answers(session, bundle, k):
    call, status, words = BAD_CALLS[k]
    s = _session(bundle)
    r = _request(s, max_new_tokens=2)
    got = call(s, r)
    msg = capi.mivl_last_error_message()
    assert got == status, (capi.mivl_status_name(got), msg)
    assert msg and words.lower() in msg.lower()
    assert "Traceback" not in msg and not msg.startswith(("TypeError", "ValueError", "AttributeError"))
    r2 = _request(s, b"Still there?", max_new_tokens=2)
    assert len(_generate(r2)) == 2
    capi.mivl_request_destroy(r)
    capi.mivl_request_destroy(r2)
    _ok(capi.mivl_session_destroy(s))


def test_session_options_are_checked(bundle):
    o = Out()
    _ok(capi.mivl_options_create(o))
    for name, value, words in [(b"n_ctx", 1, "n_ctx must be within"), (b"threads", 1000, "threads must be within"),
                               (b"threads", -1, "threads must be within"), (b"device", b"tpu", "device must be"),
                               (b"verify", 2, "verify"), (b"nonsense", 1, "unknown session option")]:
        st = capi.mivl_options_set(o.value, name, value)
        if st == capi.MIVL_OK:       # a value only the session can judge (range): refused at create
            st = capi.mivl_session_create(str(bundle), o.value, Out())
        msg = capi.mivl_last_error_message()
        assert st == capi.MIVL_ERR_INVALID_ARGUMENT and words in msg, (name, value, msg)
        capi.mivl_options_destroy(o.value)
        _ok(capi.mivl_options_create(o))
    capi.mivl_options_destroy(o.value)


def test_status_by_type_context_and_names(bundle):
    s = _session(bundle, n_ctx=512)
    r = _request(s)
    for c in CAMERAS:
        _ok(capi.mivl_request_add_camera(r, c.encode(), IMG))
    assert capi.mivl_request_generate_next(r, Out()) == capi.MIVL_ERR_CONTEXT
    assert "context holds" in capi.mivl_last_error_message()
    assert capi.mivl_status_name(capi.MIVL_ERR_IMAGE) == "MIVL_ERR_IMAGE"
    assert capi.mivl_status_name(capi.MIVL_ERR_CANCELLED) == "MIVL_ERR_CANCELLED"
    assert capi.mivl_status_name(99) == "MIVL_STATUS_99"
    capi.mivl_session_destroy(s)


def test_destroying_the_session_cancels_its_requests(bundle):
    s = _session(bundle)
    r = _request(s, max_new_tokens=50)
    _ok(capi.mivl_request_add_image(r, IMG))
    tok = Out()
    _ok(capi.mivl_request_generate_next(r, tok))
    t0 = time.perf_counter()
    _ok(capi.mivl_session_destroy(s))          # mid-generation: returns promptly
    assert time.perf_counter() - t0 < 5
    assert capi.mivl_request_generate_next(r, tok) == capi.MIVL_ERR_INVALID_HANDLE
    assert capi.mivl_request_get_text(r, Out()) == capi.MIVL_ERR_INVALID_HANDLE
    _ok(capi.mivl_request_destroy(r))          # already gone: nothing to do


def test_a_destroyed_request_frees_the_session_for_the_next(bundle):
    s = _session(bundle)
    r1 = _request(s, max_new_tokens=50)
    _ok(capi.mivl_request_generate_next(r1, Out()))     # r1 holds the session's turn
    _ok(capi.mivl_request_destroy(r1))
    r2 = _request(s, b"Next?", max_new_tokens=3)
    assert len(_generate(r2)) == 3
    capi.mivl_session_destroy(s)


RISKY = r'''
import sys, threading, time
import numpy as np
from mivl.edge import capi
from mivl.edge.capi import Out
bundle, order = sys.argv[1], sys.argv[2]
o, s, r = Out(), Out(), Out()
capi.mivl_options_create(o); capi.mivl_options_set(o.value, b"device", b"cpu")
assert capi.mivl_session_create(bundle, o.value, s) == 0, capi.mivl_last_error_message()
capi.mivl_request_create(s.value, r)
capi.mivl_request_set_question(r.value, b"Describe the picture in detail.")
capi.mivl_request_set_option(r.value, b"max_new_tokens", 400)
capi.mivl_request_add_image(r.value, np.zeros((64, 64, 3), np.uint8))
statuses = []
def gen():
    tok = Out()
    while True:
        st = capi.mivl_request_generate_next(r.value, tok)
        if st != 0:
            statuses.append(st); return
t = threading.Thread(target=gen); t.start()
time.sleep(0.3)
if order == "request":
    capi.mivl_request_destroy(r.value)
elif order == "request-then-session":
    capi.mivl_request_destroy(r.value); capi.mivl_session_destroy(s.value)
elif order == "session":
    capi.mivl_session_destroy(s.value)
t.join(20)
assert not t.is_alive(), "generation thread still running"
if order == "request":       # the session still answers
    r2 = Out(); capi.mivl_request_create(s.value, r2); capi.mivl_request_set_question(r2.value, b"Hi")
    capi.mivl_request_set_option(r2.value, b"max_new_tokens", 2)
    n = 0
    while capi.mivl_request_generate_next(r2.value, Out()) == 0: n += 1
    assert n == 2, n
    capi.mivl_session_destroy(s.value)
print("OK", statuses)
'''


@pytest.mark.parametrize("order", ["request", "request-then-session", "session"])
def test_destroy_from_another_thread_mid_generation_never_crashes(bundle, order):
    p = subprocess.run([sys.executable, "-c", RISKY, str(bundle), order], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("OK"), (p.returncode, p.stdout, p.stderr[-2000:])


def test_session_create_without_out_parameter_does_not_leak(bundle):
    code = ("import sys\nfrom mivl.edge import capi\n"
            "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
            "for _ in range(5): assert capi.mivl_session_create(sys.argv[1], 0, None) == capi.MIVL_ERR_INVALID_ARGUMENT\n"
            "before = rss()\n"
            "for _ in range(50): capi.mivl_session_create(sys.argv[1], 0, None)\n"
            "print(rss() - before)\n")
    p = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert int(p.stdout.strip()) < 20 * 2**20          # was ~150 MB for 50 calls
