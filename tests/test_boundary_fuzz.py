"""A randomized test over Session.ask and C-API arguments (fixed seed, 2,000+ cases): no hang, no
crash, no raw Python exception type reaching the caller, and a usable session afterwards."""
import random
import time

import numpy as np

from mivl.edge import Session, capi
from mivl.edge.chunks import Ref, Region
from mivl.edge.errors import MivlError

IMG = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
GOOD = {
    "question": ["Hi", "What is this?", "<|im_end|>", "<IMG_CONTEXT>", ["Box ", Ref("it")], ["At ", Region((0, 0, 9, 9))]],
    "images": [None, [IMG], IMG],
    "max_new_tokens": [1, 2, np.int32(2)],
    "temperature": [0.0, 0.5, 1e-300, np.float32(1.0)],
    "top_p": [1.0, 0.5, 1e-9],
    "seed": [0, 7, np.uint64(2 ** 63), 2 ** 64 - 1],
    "max_tiles": [None, 1, 2],
    "history": [None, [], [("q", "a")]],
    "channels": ["RGB", "BGR"],
}
BAD = {
    "question": [None, "", "\ud800", 5, [], [None], b"bytes", ["x", Ref(3)]],
    "images": [[None], [b""], [np.zeros((0, 0, 3), np.uint8)], [np.zeros((8, 8), np.float64)], ["/nope.png"], [1.5]],
    "max_new_tokens": [0, -1, 1.5, "2", None, True, 10 ** 12, float("nan")],
    "temperature": [-1, 6, float("inf"), float("nan"), "0.1", None, [0.1]],
    "top_p": [0, -0.5, 1.5, float("nan"), None, "1"],
    "seed": [-1, 1.5, "abc", None, 2 ** 64, float("inf")],
    "max_tiles": [0, -3, 1.5, "2", 10 ** 9],
    "history": ["h", [("q",)], [(1, "a")], [("q", 2)], 7],
    "channels": ["rgb", None, 3],
    "num_frames": [0, 10 ** 6, "8", 2.0],
    "video": [5, "/no/such/video.mp4", [None]],
    "cameras": [["CAM_FRONT"], {"CAM_FRONT": IMG}, {1: IMG}],
}


def _case(rng: random.Random) -> dict:
    kw = {k: rng.choice(v) for k, v in GOOD.items() if rng.random() < 0.5}
    if rng.random() < 0.85:                                  # most cases carry one or two bad values
        for k in rng.sample(sorted(BAD), rng.randint(1, 2)):
            kw[k] = rng.choice(BAD[k])
    return kw


def test_randomized_ask_arguments(bundle_dir):
    rng = random.Random(20261130)
    counts = {"answered": 0, "refused": 0}
    with Session(bundle_dir("qwen2", "fp32"), device="cpu", threads=2) as s:
        t_end = time.monotonic() + 600
        for i in range(2000):
            kw = _case(rng)
            question = kw.pop("question", "Hi")
            kw.setdefault("max_new_tokens", 1)
            try:
                a = s.ask(question, **kw)
                assert a.token_ids is not None
                counts["answered"] += 1
            except MivlError as e:
                assert str(e), kw
                counts["refused"] += 1
            # anything else (TypeError, ValueError, ...) fails the test here, naming the case
            if i % 250 == 0:
                assert len(s.ask("ok?", max_new_tokens=1).token_ids) == 1
            assert time.monotonic() < t_end, "randomized cases ran too long (a hang?)"
        assert len(s.ask("ok?", max_new_tokens=2).token_ids) == 2
    assert counts["answered"] > 100 and counts["refused"] > 1000, counts


C_OPTIONS = ["max_new_tokens", "temperature", "top_p", "seed", "max_tiles", "num_frames", "channels", "bogus", b"\xff"]
C_VALUES = [0, 1, 2, -1, 1.5, float("nan"), "x", b"RGB", b"BGR", None, True, np.int64(2), 2 ** 70, [1], object()]


def test_randomized_capi_calls(bundle_dir):
    rng = random.Random(7)
    s = capi.Out()
    assert capi.mivl_session_create(str(bundle_dir("qwen2", "fp32")), 0, s) == capi.MIVL_OK
    statuses = set()
    for i in range(1000):
        r = capi.Out()
        assert capi.mivl_request_create(s.value, r) == capi.MIVL_OK
        calls = [
            lambda: capi.mivl_request_set_question(r.value, rng.choice([b"Hi", "Hi", None, b"", "\ud800", 5, b"\xff"])),
            lambda: capi.mivl_request_set_option(r.value, rng.choice(C_OPTIONS), rng.choice(C_VALUES)),
            lambda: capi.mivl_request_add_image(r.value, rng.choice([IMG, b"/no.png", None, 3, IMG[:, :, :2]])),
            lambda: capi.mivl_request_add_image_data(r.value, rng.choice([b"", b"junk", None, "str"])),
            lambda: capi.mivl_request_add_camera(r.value, rng.choice([b"CAM_FRONT", b"CAM_X", None]), IMG),
            lambda: capi.mivl_request_set_video(r.value, rng.choice([b"/no.mp4", None, 5])),
            lambda: capi.mivl_request_get_timing(r.value, rng.choice([b"vision_s", b"x", None]), capi.Out()),
            lambda: capi.mivl_request_is_done(rng.choice([r.value, s.value, -5, None]), capi.Out()),
        ]
        for _ in range(rng.randint(1, 4)):
            st = rng.choice(calls)()
            statuses.add(st)
            assert st in capi.STATUS_NAMES
            if st < 0:
                msg = capi.mivl_last_error_message()
                assert msg and "Traceback" not in msg
                assert "bug in mivl" not in msg, msg          # every refusal is a known, named one
        capi.mivl_request_set_option(r.value, b"max_new_tokens", 1)
        if i % 5 == 0:
            st = capi.mivl_request_generate_next(r.value, capi.Out())
            statuses.add(st)
            assert st in (capi.MIVL_OK, capi.MIVL_DONE, capi.MIVL_ERR_INVALID_ARGUMENT, capi.MIVL_ERR_IMAGE,
                          capi.MIVL_ERR_CONTEXT), (st, capi.mivl_last_error_message())
        assert capi.mivl_request_destroy(r.value) == capi.MIVL_OK
    r = capi.Out()
    capi.mivl_request_create(s.value, r)
    capi.mivl_request_set_question(r.value, b"ok?")
    capi.mivl_request_set_option(r.value, b"max_new_tokens", 2)
    assert capi.mivl_request_generate_next(r.value, capi.Out()) == capi.MIVL_OK
    capi.mivl_request_destroy(r.value)
    assert capi.mivl_session_destroy(s.value) == capi.MIVL_OK
    assert capi.MIVL_ERR_INVALID_ARGUMENT in statuses and capi.MIVL_OK in statuses
