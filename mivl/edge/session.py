"""The Pythonic device API.

    with Session("bundle/") as s:
        answer = s.ask("What is in front of the car?", cameras={...})
        for piece in s.ask("Describe it.", images=["x.jpg"], stream=True):
            print(piece, end="")
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import native
from .bundle import open_bundle
from .engine import Engine, Timings
from .errors import BundleError, InputError, MivlError
from .request import Request


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


def open_llm(b, device: str, threads: int | None, n_ctx: int | None, n_batch: int, flash_attn: bool):
    """The bundle's LLM on its runtime: llama.cpp for GGUF, ONNX Runtime for an ONNX decoder."""
    n_ctx = n_ctx or int(b.llm["n_ctx"])
    fmt = b.llm.get("format", "gguf")
    if fmt == "onnx":
        from ..runtimes.llm_ort import OrtLLM

        llm = OrtLLM(str(b.file(b.llm["file"])), str(b.file(b.llm["tokenizer"])), n_ctx=n_ctx,
                     n_batch=n_batch, n_threads=threads, device=device, eog_ids=b.prompt.get("stop_ids", ()))
        return llm, llm.backend
    if fmt != "gguf":
        raise BundleError(f"the bundle's LLM format {fmt!r} is not one this runtime knows (gguf, onnx)")
    from ..runtimes.llm_llamacpp import LlamaCppLLM

    gpu_layers = 0 if device == "cpu" else -1 if _llama_has_gpu() else 0
    llm = LlamaCppLLM(str(b.file(b.llm["file"])), n_ctx=n_ctx, n_batch=n_batch, n_threads=threads,
                      n_gpu_layers=gpu_layers, flash_attn=flash_attn)
    return llm, "llama.cpp" + (" (GPU)" if gpu_layers else " (CPU)")


def tensorrt_vision(b):
    """The bundle's TensorRT engine for this GPU, if `mivl-export build-engine` made one; else None
    (TensorRT, CuPy or a GPU missing, or no engine built: ONNX Runtime runs the vision then)."""
    from ..runtimes.tensorrt_engine import TensorRTUnavailable, find_engine

    try:
        plan = find_engine(b)
        if plan is None:
            return None
        from ..runtimes.vision_trt import TrtVision

        return TrtVision(plan, b.vision["input"]["name"], int(b.vision["max_tiles"]))
    except TensorRTUnavailable:
        return None


def open_vision(b, device: str, threads: int | None):
    """The bundle's vision encoder: one graph, or a split ViT + projector (--split-vision)."""
    from ..runtimes.vision_ort import OrtVision

    v = b.vision
    vision = tensorrt_vision(b) if device != "cpu" else None
    if vision is None:
        vision = OrtVision(str(b.file(v["file"])), v["input"]["name"], int(v["max_tiles"]), device, threads)
    split = v.get("split")
    if not split:
        return vision
    from ..runtimes.vision_split import SplitVision, read_norm

    try:
        gamma, beta = read_norm(b.file(split["norm_file"]))
        return SplitVision(vision, str(b.file(split["projector_file"])), split["projector_input"], gamma, beta,
                           float(split["norm_eps"]), threads)
    except BaseException:
        vision.close()
        raise


def open_engine(bundle, device: str = "auto", threads: int | None = None, n_ctx: int | None = None,
                n_batch: int = 512, flash_attn: bool = False, verify: bool = True) -> Engine:
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    b = open_bundle(bundle, check_hashes=verify)
    vision = open_vision(b, device, threads)
    try:
        llm, llm_backend = open_llm(b, device, threads, n_ctx, n_batch, flash_attn)
    except BaseException:
        vision.close()
        raise
    if llm.n_embd != int(b.llm["n_embd"]):
        llm.close()
        vision.close()
        raise MivlError(f"the LLM file has n_embd {llm.n_embd} but the manifest says {b.llm['n_embd']}")
    engine = Engine(b, vision, llm)
    engine.backends = {"vision": vision.backend, "llm": llm_backend, "preprocess": native.describe()}
    if device != "cpu" and vision.on_gpu:
        engine.backends["preprocess"] = engine.enable_gpu_preprocessing()
    return engine


def _llama_has_gpu() -> bool:
    try:
        import llama_cpp
        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return False


class Session:
    """One bundle opened for asking questions; a context manager. close() is idempotent."""

    def __init__(self, bundle: str | os.PathLike, device: str = "auto", threads: int | None = None,
                 n_ctx: int | None = None, flash_attn: bool = False, verify: bool = True):
        self._engine = open_engine(bundle, device, threads, n_ctx, flash_attn=flash_attn, verify=verify)
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

    def ask(self, question: str, images=None, cameras=None, video=None, max_new_tokens: int = 128,
            temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, stream: bool = False,
            history=None, max_tiles: int | None = None, channels: str = "RGB", num_frames: int = 8):
        """Answer one question (or, with stream=True, yield the answer's text as it is decoded)."""
        if images is not None and not isinstance(images, (list, tuple)):
            images = [images]
        req = Request(question, list(images or []), cameras, video, list(history or []), max_new_tokens,
                      temperature, top_p, seed, max_tiles, num_frames, channels)
        gen = self.engine.start(req)
        if stream:
            return self._stream(gen)
        try:
            while gen.step() is not None:
                pass
        finally:
            gen.close()
        return Answer(gen.text, gen.tokens, gen.objects, gen.timings, gen.stopped)

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

    def chat(self, question: str, **kwargs) -> Answer:
        """Multi-turn: like ask(), keeping this session's history (images of turn one are kept)."""
        if not self.history:
            self._chat_visual = {k: kwargs[k] for k in ("images", "cameras", "video") if kwargs.get(k) is not None}
            if self._chat_visual and "<image>" not in question:
                question = _placeholders(self._chat_visual, kwargs.get("num_frames", 8)) + question
        kwargs.update(getattr(self, "_chat_visual", {}))
        answer = self.ask(question, history=self.history, **kwargs)
        self.history.append((question, answer.text))
        return answer

    def reset_chat(self) -> None:  # noqa: D401 - forget the conversation
        self.history = []
        self._chat_visual = {}


def _placeholders(visual: dict, num_frames: int) -> str:
    """The `<image>` lines InternVL's chat puts before the first question of a conversation."""
    from .prompt import multi_image_prefix, video_prefix

    if "video" in visual:
        v = visual["video"]
        return video_prefix(len(v) if isinstance(v, (list, tuple)) else num_frames)
    n = len(visual.get("images") or [None])
    return "<image>\n" if n == 1 else multi_image_prefix(n)
