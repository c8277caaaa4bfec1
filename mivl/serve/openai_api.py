"""OpenAI chat-completions requests -> Session arguments, and answers -> OpenAI responses.

Accepted: `messages` with text and `image_url` parts (data: URIs; local file paths only when the
server allows them), `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `seed`,
`stream` (+ `stream_options.include_usage`), `n` = 1. The extension field `mivl` carries what the
OpenAI schema has no place for: `{"cameras": {"CAM_FRONT": URL, ...}, "max_tiles": N}`. Answers
carry `mivl: {"objects": [...], "token_ids": [...], "timings": {...}}` beside the standard fields.
Anything else is refused by name: nothing is silently ignored.
"""
from __future__ import annotations

import base64
import binascii
import os
import time
import uuid
from dataclasses import dataclass, field

from ..edge.errors import InputError
from ..edge.multiview import CAMERAS

KNOWN = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stream",
         "stream_options", "n", "mivl", "user"}
NULL_OK = {"stop", "tools", "tool_choice", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
           "logit_bias", "response_format", "parallel_tool_calls"}   # accepted only when absent / null / default


class ApiError(Exception):
    """An error with its HTTP status and OpenAI error type."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    question: str
    history: list = field(default_factory=list)
    images: list = field(default_factory=list)
    cameras: dict | None = None
    system: str | None = None
    options: dict = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False


def image_bytes(url, allow_local_files: bool, where: str) -> bytes:
    """An image_url's bytes: a data: URI, or (allowed by the server) a local file path."""
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"{where} must be a data: URI or a file path string", param=where)
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or ";base64" not in head:
            raise ApiError(400, f"{where}: only base64 data: URIs are accepted (data:image/jpeg;base64,...)",
                           param=where)
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"{where}: the base64 data is malformed", param=where) from None
    if url.startswith(("http://", "https://")):
        raise ApiError(400, f"{where}: the server does not fetch URLs; send the image as a data: URI",
                       param=where)
    if not allow_local_files:
        raise ApiError(400, f"{where}: local file paths are off on this server (start it with "
                            "--allow-local-files to read them)", param=where)
    path = url[len("file://"):] if url.startswith("file://") else url
    if not os.path.isfile(path):
        raise ApiError(400, f"{where}: no such file {path!r}", param=where)
    with open(path, "rb") as f:
        return f.read()


def _content(content, where: str, allow_local_files: bool) -> tuple[str, list[bytes]]:
    """A message's content -> (text, image bytes in order)."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ApiError(400, f"{where} must be a string or a list of content parts", param=where)
    texts, images = [], []
    for i, part in enumerate(content):
        w = f"{where}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            images.append(image_bytes(url, allow_local_files, f"{w}.image_url.url"))
        else:
            raise ApiError(400, f"{w}: content parts are {{'type': 'text', 'text': ...}} or "
                                f"{{'type': 'image_url', 'image_url': {{'url': ...}}}}", param=w)
    return "\n".join(texts), images


def parse_chat(body, allow_local_files: bool = False, max_images: int = 16) -> ChatRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN - NULL_OK)
    if unknown:
        raise ApiError(400, f"unsupported field(s) {unknown}; supported: {sorted(KNOWN)}", param=unknown[0])
    set_null_ok = [k for k in NULL_OK if body.get(k) not in (None, [], {}, 0, False)]
    if set_null_ok:
        raise ApiError(400, f"{set_null_ok[0]} is not supported by this server", param=set_null_ok[0])
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1 (one answer per request)", param="n")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    system, turns, images = None, [], []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"{where}.role must be system, user or assistant", param=f"{where}.role")
        text, imgs = _content(m.get("content"), f"{where}.content", allow_local_files)
        if role in ("system", "developer"):
            if i != 0:
                raise ApiError(400, "a system message may only come first", param=where)
            system = text
            continue
        if imgs and (role != "user" or turns):
            raise ApiError(400, f"{where}: images go in the first user message (the conversation keeps them)",
                           param=where)
        images += imgs
        if role == "user":
            if turns and turns[-1][1] is None:
                raise ApiError(400, f"{where}: two user messages in a row; put them in one", param=where)
            turns.append([text, None])
        else:
            if not turns or turns[-1][1] is not None:
                raise ApiError(400, f"{where}: an assistant message must follow a user message", param=where)
            turns[-1][1] = text
    if not turns or turns[-1][1] is not None:
        raise ApiError(400, "the last message must be the user's", param="messages")
    if len(images) > max_images:
        raise ApiError(400, f"{len(images)} images; at most {max_images} per request", param="messages")
    ext = body.get("mivl") or {}
    if not isinstance(ext, dict) or set(ext) - {"cameras", "max_tiles"}:
        raise ApiError(400, "mivl takes {'cameras': {NAME: URL}, 'max_tiles': N}", param="mivl")
    cameras = None
    if ext.get("cameras") is not None:
        cams = ext["cameras"]
        if not isinstance(cams, dict) or set(cams) != set(CAMERAS):
            raise ApiError(400, f"mivl.cameras needs exactly the six cameras {', '.join(CAMERAS)}",
                           param="mivl.cameras")
        if images:
            raise ApiError(400, "give images or mivl.cameras, not both", param="mivl.cameras")
        cameras = {k: image_bytes(v, allow_local_files, f"mivl.cameras.{k}") for k, v in cams.items()}
    options = {}
    for ours, theirs in (("max_new_tokens", "max_completion_tokens"), ("max_new_tokens", "max_tokens"),
                         ("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed")):
        if body.get(theirs) is not None and ours not in options:
            options[ours] = body[theirs]
    if ext.get("max_tiles") is not None:
        options["max_tiles"] = ext["max_tiles"]
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", param="stream")
    so = body.get("stream_options") or {}
    if not isinstance(so, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    history = [(q, a) for q, a in turns[:-1]]
    return ChatRequest(turns[-1][0], history, images, cameras, system, options, stream,
                       bool(so.get("include_usage")))


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(gen) -> dict:
    p, c = int(gen.timings.prompt_tokens), len(gen.tokens)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def extension(gen) -> dict:
    return {"objects": [o.to_dict() for o in gen.objects], "token_ids": list(gen.tokens),
            "timings": gen.timings.to_dict()}


def finish_reason(gen) -> str:
    return "stop" if gen.stopped else "length"


def completion(gen, model: str, cid: str) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                         "finish_reason": finish_reason(gen)}],
            "usage": usage(gen), "mivl": extension(gen)}


def chunk(model: str, cid: str, delta: dict, finish: str | None = None, **extra) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def as_input_error(e: InputError) -> ApiError:
    return ApiError(400, str(e))
