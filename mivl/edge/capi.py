"""A C-API-like layer: opaque integer handles, integer status codes, results through out
parameters, and no exception crossing it. It mirrors a C header one to one, so it can be bound
from C (e.g. through an embedded interpreter) or used as is. The Session and this layer share one
implementation (engine.py).

    st = mivl_session_create(b"bundle/", None, out := Out())      # st == MIVL_OK
    mivl_request_create(out.value, req := Out())
    mivl_request_add_image(req.value, b"front.jpg")
    mivl_request_set_question(req.value, "What is ahead?")
    while mivl_request_generate_next(req.value, tok := Out()) == MIVL_OK: ...
    mivl_request_get_text(req.value, text := Out())
    mivl_request_destroy(req.value); mivl_session_destroy(out.value)

Ownership and threads, per call:
  session_create/destroy   the caller owns the session; destroy is idempotent. Do not destroy a
                           session while another thread uses it.
  request_*                a request belongs to one session and one thread at a time; requests of
                           one session generate one after another (the second blocks in its first
                           generate_next until the first finishes or is destroyed).
  last_error_message       per thread: the message of this thread's last failed call.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from .errors import BundleError, ImageError, InputError, MivlError

MIVL_OK = 0
MIVL_DONE = 1                   # generate_next: the answer is complete (no token written)
MIVL_ERR_INVALID_HANDLE = -1
MIVL_ERR_INVALID_ARGUMENT = -2
MIVL_ERR_BUNDLE = -3
MIVL_ERR_IMAGE = -4
MIVL_ERR_CONTEXT = -5           # the prompt does not fit the context / tile budget
MIVL_ERR_STATE = -6             # call not valid in the object's state (e.g. option after start)
MIVL_ERR_RUNTIME = -7

STATUS_NAMES = {v: k for k, v in dict(globals()).items() if k.startswith("MIVL_") and isinstance(v, int)}


class Out:
    """An out parameter: the callee writes `.value`."""

    def __init__(self):
        self.value = None


_handles: dict[int, object] = {}
_lock = threading.Lock()
_ids = itertools.count(1)
_errors = threading.local()


def _new(obj) -> int:
    with _lock:
        h = next(_ids)
        _handles[h] = obj
        return h


def _get(h, kind):
    obj = _handles.get(h) if isinstance(h, int) else None
    if not isinstance(obj, kind):
        raise _Status(MIVL_ERR_INVALID_HANDLE, f"{h!r} is not a live {kind.__name__} handle")
    return obj


class _Status(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code


def _call(fn, *args) -> int:
    """Run fn; map every exception to a status code and remember its message."""
    try:
        fn(*args)
        _errors.message = ""
        return MIVL_OK
    except _Status as e:
        code, msg = e.code, str(e)
    except ImageError as e:
        code, msg = MIVL_ERR_IMAGE, str(e)
    except InputError as e:
        code = MIVL_ERR_CONTEXT if "context" in str(e) else MIVL_ERR_INVALID_ARGUMENT
        msg = str(e)
    except BundleError as e:
        code, msg = MIVL_ERR_BUNDLE, str(e)
    except MivlError as e:
        code, msg = MIVL_ERR_RUNTIME, str(e)
    except Exception as e:  # nothing crosses the boundary
        code, msg = MIVL_ERR_RUNTIME, f"{type(e).__name__}: {e}"
    _errors.message = msg
    return code


def _text(s) -> str:
    return s.decode("utf-8") if isinstance(s, (bytes, bytearray)) else str(s)


@dataclass
class _Session:
    engine: object


class _Request:
    def __init__(self, session: _Session):
        from .request import Request

        self.session = session
        self.req = Request(question="")
        self.gen = None
        self.finished = False


# ---- sessions ---------------------------------------------------------------------------------
def mivl_session_create(bundle_path, options: dict | None, out_session: Out) -> int:
    def run():
        from .session import open_engine

        opts = dict(options or {})
        unknown = set(opts) - {"device", "threads", "n_ctx", "flash_attn", "verify"}
        if unknown:
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"unknown session option(s) {sorted(unknown)}")
        out_session.value = _new(_Session(open_engine(_text(bundle_path), **opts)))
    return _call(run)


def mivl_session_destroy(session: int) -> int:
    def run():
        with _lock:
            obj = _handles.pop(session, None) if isinstance(session, int) else None
        if isinstance(obj, _Session):
            obj.engine.close()
        elif obj is not None:
            with _lock:
                _handles[session] = obj  # not a session: put it back
            raise _Status(MIVL_ERR_INVALID_HANDLE, f"{session} is not a session handle")
    return _call(run)


# ---- requests ---------------------------------------------------------------------------------
def mivl_request_create(session: int, out_request: Out) -> int:
    return _call(lambda: setattr(out_request, "value", _new(_Request(_get(session, _Session)))))


def _editable(request: int) -> _Request:
    r = _get(request, _Request)
    if r.gen is not None or r.finished:
        raise _Status(MIVL_ERR_STATE, "the request has started generating; create a new request")
    return r


def mivl_request_set_question(request: int, text) -> int:
    return _call(lambda: setattr(_editable(request).req, "question", _text(text)))


def _image(image, channels: str):
    """A path (str or UTF-8 bytes) or a uint8 array -> RGB array, decoded now (errors surface here)."""
    from .image_io import load_rgb

    return load_rgb(_text(image) if isinstance(image, (bytes, bytearray)) else image, channels=channels)


def mivl_request_add_image(request: int, image) -> int:
    """Append an image: a file path, or an (H, W, 3) uint8 array in the request's channel order."""
    def run():
        r = _editable(request)
        r.req.images.append(_image(image, r.req.channels))
    return _call(run)


def mivl_request_add_image_data(request: int, data) -> int:
    """Append an encoded image (JPEG, PNG, ... bytes)."""
    def run():
        from .image_io import load_rgb

        r = _editable(request)
        r.req.images.append(load_rgb(bytes(data)))
    return _call(run)


def mivl_request_add_camera(request: int, name, image) -> int:
    """Set one of the six cameras (CAM_FRONT, ...): a path or an array, like add_image."""
    def run():
        r = _editable(request)
        if r.req.cameras is None:
            r.req.cameras = {}
        r.req.cameras[_text(name)] = _image(image, r.req.channels)
    return _call(run)


def mivl_request_set_video(request: int, path) -> int:
    return _call(lambda: setattr(_editable(request).req, "video", _text(path)))


OPTIONS = {"max_new_tokens": int, "temperature": float, "top_p": float, "seed": int, "max_tiles": int,
           "num_frames": int, "channels": str}


def mivl_request_set_option(request: int, name, value) -> int:
    def run():
        key = _text(name)
        if key not in OPTIONS:
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"unknown option {key!r}; known: {', '.join(OPTIONS)}")
        try:
            v = OPTIONS[key](_text(value) if OPTIONS[key] is str else value)
        except (TypeError, ValueError):
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"option {key} takes {OPTIONS[key].__name__}, "
                          f"got {value!r}") from None
        setattr(_editable(request).req, key, v)
    return _call(run)


def mivl_request_generate_next(request: int, out_token: Out) -> int:
    """Decode one token into out_token: MIVL_OK, or MIVL_DONE when the answer is complete."""
    state = {}

    def run():
        r = _get(request, _Request)
        if r.finished:
            state["done"] = True
            return
        if r.gen is None:
            r.gen = r.session.engine.start(r.req)
        n = len(r.gen.tokens)
        if r.gen.step() is None or len(r.gen.tokens) == n:
            r.finished = True
            state["done"] = True
            return
        out_token.value = r.gen.tokens[-1]
    code = _call(run)
    return MIVL_DONE if code == MIVL_OK and state.get("done") else code


def mivl_request_get_text(request: int, out_text: Out) -> int:
    def run():
        r = _get(request, _Request)
        out_text.value = r.gen.text if r.gen is not None else ""
    return _call(run)


def mivl_request_get_timings(request: int, out_timings: Out) -> int:
    def run():
        r = _get(request, _Request)
        if r.gen is None:
            raise _Status(MIVL_ERR_STATE, "no timings before the first generate_next")
        out_timings.value = r.gen.timings.to_dict()
    return _call(run)


def mivl_request_destroy(request: int) -> int:
    def run():
        with _lock:
            obj = _handles.get(request) if isinstance(request, int) else None
            if isinstance(obj, _Request):
                del _handles[request]
        if isinstance(obj, _Request) and obj.gen is not None:
            obj.gen.close()  # releases the session for the next request
        elif obj is not None and not isinstance(obj, _Request):
            raise _Status(MIVL_ERR_INVALID_HANDLE, f"{request} is not a request handle")
    return _call(run)


def mivl_last_error_message() -> str:
    """The message of this thread's last failed call ('' after a success)."""
    return getattr(_errors, "message", "")


def mivl_status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"MIVL_STATUS_{code}")
