"""The Pythonic device API.

    with Session("bundle/") as s:
        answer = s.ask("What is in front of the car?", cameras={...})
        for piece in s.ask("Describe it.", images=["x.jpg"], stream=True):
            print(piece, end="")
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from . import args, native
from .bundle import open_bundle
from .chunks import place_images
from .engine import Engine, Timings
from .errors import InputError, MivlError
from .request import Request
from ..runtimes.backends import open_llm, open_vision


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    objects: list = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    stopped: bool = True                      # ended on a stop token (False: hit max_new_tokens)

    def to_dict(self) -> dict:
        return {"text": self.text, "token_ids": self.token_ids, "stopped": self.stopped,
                "objects": [o.to_dict() for o in self.objects], "timings": self.timings.to_dict()}


@dataclass
class Tick:
    """One frame set of Session.watch: its answers and what was reused."""
    index: int
    answers: list[Answer]
    tiles_encoded: int                        # tiles the vision encoder ran on, all questions together
    tiles_cached: int                         # tiles served by the feature cache
    reused_tokens: int                        # prompt positions kept from the KV cache
    prompt_tokens: int
    seconds: float


MIN_CTX = 64
MAX_CTX = 1 << 20


def open_engine(bundle, device: str = "auto", threads: int | None = None, n_ctx: int | None = None,
                n_batch: int = 512, flash_attn: bool = False, verify: bool = True,
                feature_cache_mb: int = 256, trusted_keys=None) -> Engine:
    """Check every option, then open the bundle's backends (nothing native runs before the checks)."""
    bundle = args.path_like("bundle", bundle)
    device = args.choice("device", device, ("auto", "cpu", "cuda"))
    threads = args.threads(threads)
    n_ctx = args.optional_integer("n_ctx", n_ctx, MIN_CTX, MAX_CTX, "at least the chat template and a "
                                  "question; at most what the model was trained for")
    n_batch = args.integer("n_batch", n_batch, 1, 8192)
    flash_attn = args.flag("flash_attn", flash_attn)
    verify = args.flag("verify", verify)
    feature_cache_mb = args.integer("feature_cache_mb", feature_cache_mb, 0, 1 << 20)
    if trusted_keys is not None:
        if isinstance(trusted_keys, (str, os.PathLike)):
            trusted_keys = [trusted_keys]
        trusted_keys = [args.path_like(f"trusted_keys[{i}]", k) for i, k in enumerate(trusted_keys)]
    b = open_bundle(bundle, check_hashes=verify, trusted_keys=trusted_keys)
    # a signed session runs only signed files: TensorRT engines are built after signing
    vision = open_vision(b.path, b.vision, b.manifest["files"][b.vision["file"]], device, threads,
                         use_engines=trusted_keys is None)
    try:
        llm, llm_backend = open_llm(b.path, b.llm, b.prompt, device, threads, n_ctx or int(b.llm["n_ctx"]),
                                    n_batch, flash_attn)
    except BaseException:
        vision.close()
        raise
    if llm.n_embd != int(b.llm["n_embd"]):
        llm.close()
        vision.close()
        raise MivlError(f"the LLM file has n_embd {llm.n_embd} but the manifest says {b.llm['n_embd']}")
    try:
        engine = Engine(b, vision, llm, feature_cache_mb << 20)
    except BaseException:
        llm.close()
        vision.close()
        raise
    engine.backends = {"vision": vision.backend, "llm": llm_backend, "preprocess": native.describe()}
    if device != "cpu" and vision.on_gpu:
        engine.backends["preprocess"] = engine.enable_gpu_preprocessing()
    return engine


class Session:
    """One bundle opened for asking questions; a context manager. close() is idempotent."""

    def __init__(self, bundle: str | os.PathLike, device: str = "auto", threads: int | None = None,
                 n_ctx: int | None = None, flash_attn: bool = False, verify: bool = True,
                 feature_cache_mb: int = 256, trusted_keys=None):
        """Open a bundle. `feature_cache_mb`: image features kept per tile (LRU) so that a frame set
        is encoded once and an unchanged camera not again; 0 turns the cache off. `trusted_keys`:
        public keys (PEM) one of which must verify the bundle's signature (mivl.edge.signing)."""
        self._engine = open_engine(bundle, device, threads, n_ctx, flash_attn=flash_attn, verify=verify,
                                   feature_cache_mb=feature_cache_mb, trusted_keys=trusted_keys)
        self.bundle = self._engine.bundle
        self.backends = self._engine.backends
        self.history: list[tuple[str, str]] = []

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise MivlError("the session is closed; open a new Session")
        return self._engine

    def ask(self, question, images=None, cameras=None, video=None, max_new_tokens: int = 128,
            temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, stream: bool = False,
            history=None, max_tiles: int | None = None, channels: str = "RGB", num_frames: int = 8,
            system: str | None = None):
        """Answer one question (or, with stream=True, yield the answer's text as it is decoded).

        `question` is plain text (markup in it is read as characters), or a list of str and
        `Ref` / `Region` parts for grounding (mivl.edge.chunks); `<image>` marks where images go.
        `system` replaces the bundle's system message (plain text too).
        """
        args.flag("stream", stream)
        gen = self.generate(question, images, cameras, video, max_new_tokens, temperature, top_p, seed, history,
                            max_tiles, channels, num_frames, system)
        if stream:
            return self._stream(gen)
        try:
            while gen.step() is not None:
                pass
        finally:
            gen.close()
        if gen.cancelled:
            raise MivlError("the answer was cancelled: the session was closed while it was generated")
        return Answer(gen.text, gen.tokens, gen.objects, gen.timings, gen.stopped)

    def generate(self, question, images=None, cameras=None, video=None, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, history=None,
                 max_tiles: int | None = None, channels: str = "RGB", num_frames: int = 8,
                 system: str | None = None):
        """The request prefilled, as a Generation to step through (`step()` -> new text or None,
        `close()`, `.text`, `.tokens`, `.objects`, `.timings`): for servers and event loops that
        drive decoding themselves. It holds the session until finished or closed."""
        req = Request(question, images, cameras, video, history, max_new_tokens, temperature, top_p, seed,
                      max_tiles, num_frames, channels, system)
        return self.engine.start(req)

    @staticmethod
    def _stream(gen):
        try:
            while True:
                piece = gen.step()
                if piece is None:
                    return
                if piece:
                    yield piece
        finally:
            gen.close()

    def watch(self, frame_sets, questions, **kwargs):
        """Ask every question of `questions` about each frame set in turn, yielding a Tick per set.

        A frame set is a dict of the six cameras (or a list of images). Tiles whose pixels did not
        change since an earlier set (an unchanged camera fills the same two of the twelve tiles)
        come from the feature cache, and the prompt is evaluated from the first position that
        differs from what the KV cache holds: a set in which k cameras changed encodes 2k tiles and
        the thumbnail, and every question after the first encodes none."""
        if isinstance(questions, str):
            questions = [questions]
        for index, frames in enumerate(frame_sets):
            t0 = time.perf_counter()
            visual = {"cameras": frames} if isinstance(frames, dict) else {"images": frames}
            answers = [self.ask(q, **visual, **kwargs) for q in questions]
            yield Tick(index, answers, sum(a.timings.tiles_encoded for a in answers),
                       sum(a.timings.tiles_cached for a in answers), sum(a.timings.reused_tokens for a in answers),
                       sum(a.timings.prompt_tokens for a in answers), time.perf_counter() - t0)

    def chat(self, question, **kwargs) -> Answer:
        """Multi-turn: like ask(), keeping this session's history (images of turn one are kept)."""
        if kwargs.get("stream"):
            raise InputError("chat() returns whole answers; use ask(..., history=..., stream=True) to stream")
        if not self.history:
            self._chat_visual = {k: kwargs[k] for k in ("images", "cameras", "video") if kwargs.get(k) is not None}
            if self._chat_visual:
                parts = place_images(question, _n_images(self._chat_visual, kwargs.get("num_frames", 8)),
                                     video="video" in self._chat_visual)
                question = "".join(parts) if all(isinstance(p, str) for p in parts) else parts
        kwargs.update(getattr(self, "_chat_visual", {}))
        answer = self.ask(question, history=self.history, **kwargs)
        self.history.append((question, answer.text))
        return answer

    def reset_chat(self) -> None:  # noqa: D401 - forget the conversation
        self.history = []
        self._chat_visual = {}


def _n_images(visual: dict, num_frames) -> int:
    """How many `<image>` places the first turn of a chat needs."""
    if "cameras" in visual:
        return 1
    if "video" in visual:
        v = visual["video"]
        return len(v) if isinstance(v, (list, tuple)) else num_frames
    im = visual.get("images")
    return len(im) if isinstance(im, (list, tuple)) else 1
