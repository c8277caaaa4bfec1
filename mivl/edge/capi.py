"""A C-API-like layer: opaque integer handles, integer status codes, results through out
parameters, and no exception crossing it. It mirrors a C header one to one (no dicts or other
Python objects in or out: options are set one by one, timings read one by one), so it can be bound
from C (e.g. through an embedded interpreter) or used as is. The Session and this layer share one
implementation (engine.py).

    mivl_options_create(o := Out()); mivl_options_set(o.value, b"device", b"cpu")
    st = mivl_session_create(b"bundle/", o.value, s := Out())   # st == MIVL_OK; options may be 0
    mivl_options_destroy(o.value)
    mivl_request_create(s.value, req := Out())
    mivl_request_add_image(req.value, b"front.jpg")
    mivl_request_set_question(req.value, "What is ahead?")
    while mivl_request_generate_next(req.value, tok := Out()) == MIVL_OK: ...
    mivl_request_get_text(req.value, text := Out())
    mivl_request_destroy(req.value); mivl_session_destroy(s.value)

Status codes are chosen by the error's type, and every failed call leaves a message written for
the caller (mivl_last_error_message, per thread), never empty and never a raw Python exception.

Ownership and threads, per call:
  options_*                the caller owns an options object; it may be destroyed after create.
  session_create/destroy   the caller owns the session; destroy is idempotent, may be called from
                           any thread at any time: it cancels the generation in progress (waiting
                           at most for the token being decoded), frees the model, and makes the
                           session's requests invalid handles.
  request_*                a request belongs to one session; requests of one session generate one
                           after another (the second waits in its first generate_next until the
                           first finishes or is destroyed). request_destroy may be called from any
                           thread, also while another generates on it: that generation stops and
                           further calls on the handle answer MIVL_ERR_INVALID_HANDLE.
  last_error_message       per thread: the message of this thread's last failed call.
"""
from __future__ import annotations

import itertools
import threading

from . import args
from .engine import Cancelled
from .errors import BundleError, CheckpointError, ContextError, ImageError, InputError, MivlError

MIVL_OK = 0
MIVL_DONE = 1                   # generate_next: the answer is complete (no token written)
MIVL_ERR_INVALID_HANDLE = -1
MIVL_ERR_INVALID_ARGUMENT = -2
MIVL_ERR_BUNDLE = -3
MIVL_ERR_IMAGE = -4
MIVL_ERR_CONTEXT = -5           # the prompt does not fit the context / tile budget
MIVL_ERR_STATE = -6             # call not valid in the object's state (e.g. option after start)
MIVL_ERR_RUNTIME = -7           # the backend failed (out of memory, a native error)
MIVL_ERR_CANCELLED = -8         # the generation was stopped: its session was destroyed or closed

STATUS_NAMES = {v: k for k, v in dict(globals()).items() if k.startswith("MIVL_") and isinstance(v, int)}

# Exception type -> status, most specific first.
_STATUS_OF = ((Cancelled, MIVL_ERR_CANCELLED), (ContextError, MIVL_ERR_CONTEXT), (ImageError, MIVL_ERR_IMAGE),
              (InputError, MIVL_ERR_INVALID_ARGUMENT), (BundleError, MIVL_ERR_BUNDLE),
              (CheckpointError, MIVL_ERR_BUNDLE), (MivlError, MIVL_ERR_RUNTIME))


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
    with _lock:
        obj = _handles.get(h) if isinstance(h, int) and not isinstance(h, bool) else None
    if not isinstance(obj, kind):
        raise _Status(MIVL_ERR_INVALID_HANDLE, f"{h!r} is not a live {kind.__name__.strip('_').lower()} handle")
    return obj


def _out(out) -> Out:
    if not isinstance(out, Out):
        raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"the out parameter must be an Out(), got {type(out).__name__}")
    return out


class _Status(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code


def _call(fn, *a) -> int:
    """Run fn; map every exception to a status code by its type and remember its message."""
    name = getattr(fn, "__qualname__", "mivl call").split(".")[0]
    try:
        fn(*a)
        _errors.message = ""
        return MIVL_OK
    except _Status as e:
        code, msg = e.code, str(e)
    except MemoryError:
        code, msg = MIVL_ERR_RUNTIME, f"{name}: out of memory"
    except Exception as e:  # nothing crosses the boundary
        code = next((c for t, c in _STATUS_OF if isinstance(e, t)), None)
        if code is not None and str(e):
            msg = str(e)
        else:
            code = MIVL_ERR_RUNTIME
            msg = (f"{name} failed inside the SDK ({type(e).__name__}); the session is unaffected "
                   f"if it was open. This is a bug in mivl: please report it")
    _errors.message = msg or f"{name} failed ({STATUS_NAMES.get(code)})"
    return code


def _text(name: str, s, allow_empty: bool = False) -> str:
    if isinstance(s, (bytes, bytearray)):
        try:
            s = bytes(s).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"{name} is not UTF-8 (byte {e.start})") from None
    return args.text(name, s, allow_empty=allow_empty)


# ---- options ----------------------------------------------------------------------------------
SESSION_OPTIONS = ("device", "threads", "n_ctx", "flash_attn", "verify", "feature_cache_mb")


def mivl_options_create(out_options: Out) -> int:
    def mivl_options_create():
        _out(out_options).value = _new(_Options())
    return _call(mivl_options_create)


class _Options:
    def __init__(self):
        self.values: dict[str, object] = {}


def mivl_options_set(options: int, name, value) -> int:
    """Set a session option: device (text), threads, n_ctx, feature_cache_mb (integers), flash_attn,
    verify (0/1)."""
    def mivl_options_set():
        o = _get(options, _Options)
        key = _text("option name", name)
        if key not in SESSION_OPTIONS:
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"unknown session option {key!r}; known: "
                          f"{', '.join(SESSION_OPTIONS)}")
        if key == "device":
            v = args.choice("device", _text("device", value), ("auto", "cpu", "cuda"))
        elif key in ("flash_attn", "verify"):
            v = bool(args.integer(key, value, 0, 1))
        elif key == "feature_cache_mb":
            v = args.integer(key, value, 0, None)
        else:
            v = args.integer(key, value, 1, None)
        o.values[key] = v
    return _call(mivl_options_set)


def mivl_options_destroy(options: int) -> int:
    return _destroy(options, _Options, "mivl_options_destroy")


def _destroy(h, kind, name, on_destroy=None) -> int:
    def run():
        with _lock:
            obj = _handles.get(h) if isinstance(h, int) and not isinstance(h, bool) else None
            if obj is not None and not isinstance(obj, kind):
                raise _Status(MIVL_ERR_INVALID_HANDLE, f"{h!r} is not a {kind.__name__.strip('_').lower()} handle")
            _handles.pop(h, None)
        if obj is not None and on_destroy is not None:
            on_destroy(obj)
    run.__qualname__ = name
    return _call(run)


# ---- sessions ---------------------------------------------------------------------------------
class _Session:
    def __init__(self, engine):
        self.engine = engine
        self.requests: set[int] = set()


def mivl_session_create(bundle_path, options, out_session: Out) -> int:
    """Open a bundle. options: an options handle, or 0 / None for the defaults."""
    def mivl_session_create():
        from .session import open_engine

        out = _out(out_session)
        opts = {} if options in (0, None) else dict(_get(options, _Options).values)
        path = _text("bundle_path", bundle_path)
        engine = open_engine(path, **opts)
        out.value = _new(_Session(engine))
    return _call(mivl_session_create)


def mivl_session_destroy(session: int) -> int:
    def close(s: _Session):
        with _lock:
            for h in s.requests:
                _handles.pop(h, None)
        s.engine.close()          # cancels the live generation; returns after the step in progress
    return _destroy(session, _Session, "mivl_session_destroy", close)


# ---- requests ---------------------------------------------------------------------------------
class _Request:
    def __init__(self, session: _Session):
        from .request import Request

        self.session = session
        self.req = Request(question="")
        self.gen = None
        self.finished = False
        self.destroyed = False
        self.busy = threading.Lock()      # one generate_next at a time on a request


def mivl_request_create(session: int, out_request: Out) -> int:
    def mivl_request_create():
        out = _out(out_request)
        s = _get(session, _Session)
        h = _new(_Request(s))
        with _lock:
            s.requests.add(h)
        out.value = h
    return _call(mivl_request_create)


def _editable(request: int) -> "_Request":
    r = _get(request, _Request)
    if r.gen is not None or r.finished:
        raise _Status(MIVL_ERR_STATE, "the request has started generating; create a new request")
    return r


def mivl_request_set_question(request: int, text) -> int:
    def mivl_request_set_question():
        r = _editable(request)
        r.req.question = _text("question", text)
    return _call(mivl_request_set_question)


def _image(image, channels: str):
    """A path (str or UTF-8 bytes) or a uint8 array -> RGB array, decoded now (errors surface here)."""
    from .image_io import load_rgb

    if isinstance(image, (bytes, bytearray, str)):
        return load_rgb(args.path_like("image path", image), channels=channels)
    return load_rgb(image, channels=channels)


def mivl_request_add_image(request: int, image) -> int:
    """Append an image: a file path, or an (H, W, 3) uint8 array in the request's channel order."""
    def mivl_request_add_image():
        r = _editable(request)
        r.req.images.append(_image(image, r.req.channels))
    return _call(mivl_request_add_image)


def mivl_request_add_image_data(request: int, data) -> int:
    """Append an encoded image (JPEG, PNG, ... bytes)."""
    def mivl_request_add_image_data():
        from .image_io import load_rgb

        r = _editable(request)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"image data must be bytes, got {type(data).__name__}")
        r.req.images.append(load_rgb(bytes(data)))
    return _call(mivl_request_add_image_data)


def mivl_request_add_camera(request: int, name, image) -> int:
    """Set one of the six cameras (CAM_FRONT, ...): a path or an array, like add_image."""
    def mivl_request_add_camera():
        from .multiview import CAMERAS

        r = _editable(request)
        cam = _text("camera name", name)
        if cam not in CAMERAS:
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"unknown camera {cam!r}; the six are {', '.join(CAMERAS)}")
        frame = _image(image, r.req.channels)
        if r.req.cameras is None:
            r.req.cameras = {}
        r.req.cameras[cam] = frame
    return _call(mivl_request_add_camera)


def mivl_request_set_video(request: int, path) -> int:
    def mivl_request_set_video():
        r = _editable(request)
        r.req.video = args.path_like("video path", path)
    return _call(mivl_request_set_video)


def mivl_request_set_option(request: int, name, value) -> int:
    """Set a decoding option (integers and numbers as such; channels as text). Checked here as
    Session.ask checks it (request.check_option); bounds from the context when it generates."""
    def mivl_request_set_option():
        from .request import OPTIONS, check_option

        r = _editable(request)
        key = _text("option name", name)
        if key not in OPTIONS:
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"unknown option {key!r}; known: {', '.join(OPTIONS)}")
        v = _text("channels", value) if key == "channels" else value
        if key == "max_tiles":            # None means "the bundle's budget" in Python, not over the C-API
            args.integer(key, v, 1)
        setattr(r.req, key, check_option(key, v))
    return _call(mivl_request_set_option)


def mivl_request_generate_next(request: int, out_token: Out) -> int:
    """Decode one token into out_token: MIVL_OK, MIVL_DONE when the answer is complete, or
    MIVL_ERR_CANCELLED when its session was destroyed meanwhile."""
    state = {}

    def mivl_request_generate_next():
        out = _out(out_token)
        r = _get(request, _Request)
        with r.busy:
            if r.finished:
                state["done"] = True
                return
            if r.gen is None:
                r.gen = r.session.engine.start(r.req, cancel=lambda: r.destroyed)
                if r.destroyed:            # destroyed while it started: hand the turn back
                    r.gen.close()
            n = len(r.gen.tokens)
            r.gen.step()
            if r.gen.cancelled:
                r.finished = True
                raise Cancelled("the generation was cancelled: its session or request was destroyed")
            if len(r.gen.tokens) == n:
                r.finished = True
                state["done"] = True
                return
            out.value = r.gen.tokens[-1]
    code = _call(mivl_request_generate_next)
    return MIVL_DONE if code == MIVL_OK and state.get("done") else code


def mivl_request_is_done(request: int, out_done: Out) -> int:
    """out_done: 1 when the answer is complete (or was cancelled), else 0."""
    def mivl_request_is_done():
        out = _out(out_done)
        out.value = int(_get(request, _Request).finished)
    return _call(mivl_request_is_done)


def mivl_request_get_text(request: int, out_text: Out) -> int:
    def mivl_request_get_text():
        out = _out(out_text)
        r = _get(request, _Request)
        out.value = r.gen.text if r.gen is not None else ""
    return _call(mivl_request_get_text)


TIMINGS = ("preprocess_s", "vision_s", "prefill_s", "decode_s", "prompt_tokens", "reused_tokens", "new_tokens",
           "tiles_encoded", "tiles_cached", "decode_tokens_per_s", "time_to_first_token_s")


def mivl_request_get_timing(request: int, name, out_value: Out) -> int:
    """One timing figure by name (seconds, counts, tokens/s): see TIMINGS."""
    def mivl_request_get_timing():
        out = _out(out_value)
        r = _get(request, _Request)
        key = _text("timing name", name)
        if key not in TIMINGS:
            raise _Status(MIVL_ERR_INVALID_ARGUMENT, f"unknown timing {key!r}; known: {', '.join(TIMINGS)}")
        if r.gen is None:
            raise _Status(MIVL_ERR_STATE, "no timings before the first generate_next")
        out.value = getattr(r.gen.timings, key)
    return _call(mivl_request_get_timing)


def mivl_request_destroy(request: int) -> int:
    def stop(r: _Request):
        with _lock:
            r.session.requests.discard(request)
        r.destroyed = True
        if r.gen is not None:
            r.gen.close()             # hands the session's turn to the next request
    return _destroy(request, _Request, "mivl_request_destroy", stop)


def mivl_last_error_message() -> str:
    """The message of this thread's last failed call ('' after a success)."""
    return getattr(_errors, "message", "")


def mivl_status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"MIVL_STATUS_{code}")
