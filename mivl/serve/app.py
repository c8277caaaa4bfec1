"""The HTTP application: one loaded bundle, one generation at a time, a bounded queue.

    POST /v1/chat/completions    OpenAI chat completions (stream: server-sent events)
    GET  /v1/models              the bundle, as the one model
    GET  /health                 liveness and the queue

Every engine call runs on one worker thread (the session's generations never overlap, and a
generation is always driven from the thread that started it). Requests beyond the one generating
wait in a queue of `queue_size`; past that the answer is 429. A client that goes away mid-stream
has its generation closed at once, so the next request starts.
"""
from __future__ import annotations

import asyncio
import hmac
import json
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ..edge.errors import ContextError, ImageError, InputError, MivlError
from . import openai_api as oa

MAX_BODY = 64 << 20          # bytes of one request (six 1600x900 JPEGs are ~3 MB as base64)


class Server:
    def __init__(self, session, model_id: str, api_key: str | None = None, queue_size: int = 8,
                 max_body: int = MAX_BODY, allow_local_files: bool = False, max_image_pixels: int = 64 << 20):
        self.session, self.model_id, self.api_key = session, model_id, api_key
        self.queue_size, self.max_body, self.allow_local_files = queue_size, max_body, allow_local_files
        self.max_image_pixels = max_image_pixels
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mivl-engine")
        self.slot = asyncio.Lock()
        self.waiting = 0
        self.served = 0

    # ---- helpers ----------------------------------------------------------------------------
    async def run(self, fn, *a):
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *a)

    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise oa.ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error",
                              code="invalid_api_key")

    async def body(self, request: Request):
        n = request.headers.get("content-length")
        if n is not None and (not n.isdigit() or int(n) > self.max_body):
            raise oa.ApiError(413, f"the request body is larger than {self.max_body} bytes")
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > self.max_body:
                raise oa.ApiError(413, f"the request body is larger than {self.max_body} bytes")
        try:
            return json.loads(bytes(data))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise oa.ApiError(400, f"the request body is not valid JSON: {e}") from None

    def decode_images(self, chat: oa.ChatRequest) -> None:
        """Image bytes -> arrays here, so a bad picture is a 400 before the queue."""
        from ..edge.image_io import load_rgb

        try:
            chat.images = [load_rgb(b, max_pixels=self.max_image_pixels) for b in chat.images]
            if chat.cameras:
                chat.cameras = {k: load_rgb(v, max_pixels=self.max_image_pixels) for k, v in chat.cameras.items()}
        except ImageError as e:
            raise oa.ApiError(400, str(e), param="messages") from None

    def start(self, chat: oa.ChatRequest):
        return self.session.generate(chat.question, images=chat.images or None, cameras=chat.cameras,
                                     history=chat.history, system=chat.system, **chat.options)

    # ---- routes -----------------------------------------------------------------------------
    async def chat_completions(self, request: Request):
        self.check_key(request)
        chat = oa.parse_chat(await self.body(request), self.allow_local_files)
        self.decode_images(chat)
        if self.waiting >= self.queue_size:
            raise oa.ApiError(429, f"the server is busy: {self.waiting} requests are waiting (queue size "
                                   f"{self.queue_size}); retry later", "rate_limit_error", code="queue_full")
        self.waiting += 1
        try:
            await self.slot.acquire()
        finally:
            self.waiting -= 1
        try:
            gen = await self.run(self.start, chat)
        except BaseException:
            self.slot.release()
            raise
        job = Job(gen, self.slot)
        cid = oa.completion_id()
        if chat.stream:
            events = self.events(job, chat, cid)
            # started here, so that however the response ends (finished, client gone, never sent)
            # the generator's cleanup runs and the slot is released
            first = await events.__anext__()
            return StreamingResponse(_chain(first, events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            while await self.run(gen.step) is not None:
                pass
        finally:
            job.release()
        self.served += 1
        return JSONResponse(oa.completion(gen, self.model_id, cid))

    async def events(self, job: "Job", chat: oa.ChatRequest, cid: str):
        """Server-sent events of a streamed answer; the generation is closed however this ends."""
        def sse(obj) -> str:
            return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"
        gen = job.gen
        try:
            yield sse(oa.chunk(self.model_id, cid, {"role": "assistant", "content": ""}))
            while True:
                piece = await self.run(gen.step)
                if piece is None:
                    break
                if piece:
                    yield sse(oa.chunk(self.model_id, cid, {"content": piece}))
            yield sse(oa.chunk(self.model_id, cid, {}, oa.finish_reason(gen), mivl=oa.extension(gen)))
            if chat.include_usage:
                yield sse({**oa.chunk(self.model_id, cid, {}), "choices": [], "usage": oa.usage(gen)})
            yield "data: [DONE]\n\n"
            self.served += 1
        finally:
            job.release()

    async def models(self, request: Request):
        self.check_key(request)
        return JSONResponse({"object": "list", "data": [{"id": self.model_id, "object": "model", "created": 0,
                                                         "owned_by": "mivl"}]})

    async def health(self, request: Request):
        return JSONResponse({"status": "ok", "model": self.model_id, "busy": self.slot.locked(),
                             "waiting": self.waiting, "served": self.served})


class Job:
    """A generation and the slot it holds; release() closes the one and frees the other, once."""

    def __init__(self, gen, slot: asyncio.Lock):
        self.gen, self.slot, self.done = gen, slot, False

    def release(self) -> None:
        if not self.done:
            self.done = True
            self.gen.close()       # thread-safe: a step in flight ends, none follows
            self.slot.release()


async def _chain(first, rest):
    yield first
    async for item in rest:
        yield item


def error_response(e: Exception) -> JSONResponse:
    if isinstance(e, oa.ApiError):
        err = e
    elif isinstance(e, ContextError):
        err = oa.ApiError(400, str(e), code="context_length_exceeded")
    elif isinstance(e, InputError):
        err = oa.ApiError(400, str(e))
    elif isinstance(e, MivlError):
        err = oa.ApiError(500, str(e), "server_error")
    else:
        err = oa.ApiError(500, f"internal error ({type(e).__name__}); the server is still running", "server_error")
    return JSONResponse(err.body(), status_code=err.status)


def create_app(server: Server) -> Starlette:
    def guarded(handler):
        async def endpoint(request: Request):
            try:
                return await handler(request)
            except Exception as e:  # every failure is an OpenAI-style JSON error
                return error_response(e)
        return endpoint

    app = Starlette(routes=[
        Route("/v1/chat/completions", guarded(server.chat_completions), methods=["POST"]),
        Route("/v1/models", guarded(server.models), methods=["GET"]),
        Route("/health", guarded(server.health), methods=["GET"]),
    ])
    app.state.server = server
    return app


def serve(bundle, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None, queue_size: int = 8,
          allow_local_files: bool = False, max_body: int = MAX_BODY, log_level: str = "warning", **session_options):
    """Load `bundle` and serve it until interrupted (what `mivl serve` runs)."""
    from pathlib import Path

    import uvicorn

    from ..edge.session import Session

    with Session(bundle, **session_options) as s:
        server = Server(s, Path(str(bundle)).resolve().name, api_key, queue_size, max_body, allow_local_files)
        uvicorn.run(create_app(server), host=host, port=port, log_level=log_level)
