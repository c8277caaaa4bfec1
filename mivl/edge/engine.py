"""The one implementation under both the Pythonic Session and the C-API-like handles.

An Engine owns a bundle's vision backend and LLM. `start(request)` checks the request, preprocesses,
runs the vision encoder, turns the request into chunks (mivl.edge.chunks: the prompt exactly as the
reference builds it, caller text plain), checks them against the context, and prefills the LLM
(text ids and image embeddings in order, the shared text prefix reused from the KV cache); the
returned Generation then yields one token per `step()`.

Lifetimes and threads. The engine owns its native resources and one "turn": at most one live
Generation at a time. All state changes go through the engine's own methods under its condition
variable (`_turn`); every native call runs under its mutex (`_native`), and checks that the engine
is open and the generation still live, so:
- a second thread's `start` waits until the live generation finishes or is closed;
- a `start` from the thread that owns the live generation cancels it (an abandoned stream cannot
  block its own thread);
- `close()` cancels the live generation, waits at most for the native step in progress (prefill
  stops between batches), frees the backends once, and returns; later calls say "closed".
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from . import chunks
from .bundle import Bundle
from .errors import ContextError, InputError, MivlError
from .feature_cache import FeatureCache, tile_key
from .multiview import preprocess_cameras
from .parse import parse_objects
from .preprocess import TileBatch, preprocess_frames, preprocess_images
from .prompt import ANSWER_MARKUP, get_template
from .request import Limits, Request


@dataclass
class Timings:
    preprocess_s: float = 0.0
    vision_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0                  # prompt positions kept from the KV cache
    new_tokens: int = 0
    tiles_encoded: int = 0                  # tiles the vision encoder ran on
    tiles_cached: int = 0                   # tiles whose features came from the feature cache

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def time_to_first_token_s(self) -> float:
        return self.preprocess_s + self.vision_s + self.prefill_s

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["decode_tokens_per_s"] = round(self.decode_tokens_per_s, 2)
        d["time_to_first_token_s"] = round(self.time_to_first_token_s, 4)
        return d


class Cancelled(MivlError):
    """The generation was closed (by its owner, a newer request of its thread, or the session)."""


class Utf8Stream:
    """Token byte pieces -> text, holding back an incomplete UTF-8 sequence, replacing invalid bytes."""

    def __init__(self):
        import codecs

        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, piece: bytes) -> str:
        return self.dec.decode(piece)

    def flush(self) -> str:
        return self.dec.decode(b"", final=True)


class Engine:
    def __init__(self, bundle: Bundle, vision, llm, feature_cache_bytes: int = 256 << 20):
        self.bundle, self.vision, self.llm = bundle, vision, llm
        self.features = FeatureCache(feature_cache_bytes)
        self.template = get_template(bundle.prompt["template"])
        self.img_id = int(bundle.prompt["img_context_id"])
        self.stop_ids = set(bundle.prompt["stop_ids"])
        specials = bundle.prompt.get("special_tokens", {})
        self.markup_ids = {specials[t] for t in ANSWER_MARKUP if t in specials}
        self.pre = bundle.preprocessing
        self.tokens_per_tile = int(bundle.prompt["tokens_per_tile"])
        self.limits = Limits(n_ctx=int(llm.n_ctx), tokens_per_tile=self.tokens_per_tile)
        self._native = threading.Lock()      # held around every native call
        self._turn = threading.Condition()   # guards _live and closed
        self._live: Generation | None = None
        self.kv_keys: list = []              # what each KV position holds: a token id, or (tile key, j)
        self.closed = False
        self.gpu_pre = None                  # fused CUDA preprocessing, when a GPU runs the vision
        need = chunks.n_tokens(self.chunks(Request("?"), None)) + 16
        if self.llm.n_ctx < need:
            raise InputError(f"n_ctx must be at least {need} for this bundle (its chat template and a short "
                             f"question take {need - 16} tokens); got {self.llm.n_ctx}")

    def enable_gpu_preprocessing(self) -> str:
        """Use the fused CUDA kernels for single images and six cameras; returns what was chosen."""
        try:
            from ..runtimes.kernels import gpu_backend
            from .gpu_preprocess import Preprocessor

            self.gpu_pre = Preprocessor(gpu_backend(), self.pre)
            self.vision.use_kernels(self.gpu_pre)   # split vision: unshuffle + LayerNorm on the GPU
            return "cuda kernels"
        except MivlError as e:
            return f"numpy (cuda kernels unavailable: {e})"

    # ---- inputs -----------------------------------------------------------------------------
    @staticmethod
    def camera_frames(req: Request) -> tuple[dict, dict]:
        """The six camera frames as RGB arrays, and each camera's (width, height)."""
        from .image_io import load_rgb
        from .multiview import check_cameras

        check_cameras(req.cameras)
        frames = {k: load_rgb(v, channels=req.channels) for k, v in req.cameras.items()}
        return frames, {k: (v.shape[1], v.shape[0]) for k, v in frames.items()}

    def gpu_tiles(self, req: Request):
        """The fused-kernel path: (device tiles, grid, sizes) or None when it does not apply."""
        from .image_io import load_rgb
        from .tiling import tiles_per_image

        if self.gpu_pre is None or req.video is not None:
            return None
        if req.cameras is not None:
            frames, sizes = self.camera_frames(req)
            if len(set(sizes.values())) != 1 or any(h > 100 * w for w, h in sizes.values()):
                return None
            tiles, grid = self.gpu_pre.cameras(frames, max_tiles=req.max_tiles)
            return tiles, [grid], sizes
        if len(req.images) == 1:
            rgb = load_rgb(req.images[0], channels=req.channels)  # RGB from here on
            if rgb.shape[0] > 100 * rgb.shape[1]:   # Pillow resizes these vertically first; the kernels do not
                return None
            budget = tiles_per_image(req.max_tiles or self.pre.max_tiles, 1)
            tiles, grid = self.gpu_pre.image(rgb, bgr=False, max_tiles=budget)
            return tiles, [grid], {"image": (rgb.shape[1], rgb.shape[0])}
        return None

    def tiles(self, req: Request) -> tuple[TileBatch | None, dict]:
        sizes: dict = {}
        if req.cameras is not None:
            frames, sizes = self.camera_frames(req)
            return preprocess_cameras(frames, self.pre, max_tiles=req.max_tiles), sizes
        if req.video is not None:
            frames = req.video
            if isinstance(frames, str):
                from .video import read_video
                frames = read_video(frames, req.num_frames)
            return preprocess_frames(list(frames), self.pre, channels=req.channels), sizes
        if req.images:
            return preprocess_images(list(req.images), self.pre, max_tiles=req.max_tiles,
                                     channels=req.channels), sizes
        return None, sizes

    def chunks(self, req: Request, tiles: TileBatch | None) -> list[chunks.Chunk]:
        """The request as the LLM is fed it (the one path: mivl.edge.chunks)."""
        per_image = tiles.tiles_per_image if tiles is not None else []
        return chunks.prompt_chunks(self.template, req.question, per_image, self.tokens_per_tile, self.llm,
                                    bool(self.bundle.prompt.get("add_bos")), req.history, system=req.system,
                                    video=req.video is not None)

    def prompt_ids(self, req: Request, tiles: TileBatch | None) -> list[int]:
        return chunks.flat_ids(self.chunks(req, tiles), self.img_id)

    def check_fits(self, n_prompt: int, tiles: TileBatch | None) -> None:
        need = n_prompt + 1
        if need > self.llm.n_ctx:
            n_tiles = tiles.n_tiles if tiles is not None else 0
            raise ContextError(f"the prompt is {n_prompt} tokens ({n_tiles} tiles x {self.tokens_per_tile} image "
                               f"tokens + text) but the context holds {self.llm.n_ctx}: "
                               f"{need - self.llm.n_ctx} too many. Lower max_tiles, use fewer "
                               f"images/frames, or open the session with a larger n_ctx")

    # ---- the turn: one live generation --------------------------------------------------------
    def _claim(self, gen: "Generation") -> None:
        with self._turn:
            while True:
                if self.closed:
                    raise MivlError("the session is closed; open a new Session")
                live = self._live
                if live is None:
                    break
                if live.thread == gen.thread:     # abandoned by this very thread: it cannot be iterating it
                    live.cancelled = True
                    self._live = None
                    break
                self._turn.wait()
            self._live = gen

    def release(self, gen: "Generation") -> None:
        """End gen's turn (idempotent); the next waiting request may start."""
        with self._turn:
            gen.cancelled = gen.cancelled or not gen.done
            gen.done = True
            if self._live is gen:
                self._live = None
                self._turn.notify_all()

    def is_live(self, gen: "Generation") -> bool:
        return self._live is gen and not self.closed

    # ---- prefill ----------------------------------------------------------------------------
    def position_keys(self, prompt: list[chunks.Chunk], tiles: TileBatch | None, keys: list | None) -> list:
        """What each prompt position will hold: a text token id, or (tile key, j) for the j-th token
        of a tile's features (a fresh object where a tile has no key: never equal to anything)."""
        per_image = tiles.tiles_per_image if tiles is not None else []
        first = np.cumsum([0, *per_image])
        out: list = []
        for c in prompt:
            if isinstance(c, chunks.Text):
                out.extend(c.ids)
                continue
            for t in range(first[c.index], first[c.index + 1]):
                key = keys[t] if keys is not None else object()
                out.extend((key, j) for j in range(self.tokens_per_tile))
        return out

    def prefill(self, gen: "Generation", prompt: list[chunks.Chunk], feats: np.ndarray | None,
                pos_keys: list) -> int:
        """Evaluate the prompt from the end of its longest common prefix with what the KV cache
        holds (text and image positions alike); returns that prefix's length. Runs batch by batch
        under the native mutex, stopping when gen is no longer live."""
        with self._native:
            self._check_live(gen)
            common = 0
            limit = min(len(self.kv_keys), len(pos_keys) - 1)   # the last position is evaluated for logits
            while common < limit and self.kv_keys[common] == pos_keys[common]:
                common += 1
            self.llm.reset(keep=common)
            self.kv_keys = self.kv_keys[:common]
        try:
            pos, k = 0, 0
            for c in prompt:
                n = len(c.ids) if isinstance(c, chunks.Text) else c.n_tokens
                lo = max(common - pos, 0)          # part of this chunk already in the cache
                for b in range(lo, n, self.llm.n_batch):
                    hi = min(b + self.llm.n_batch, n)
                    with self._native:
                        self._check_live(gen)
                        if isinstance(c, chunks.Text):
                            self.llm.eval_tokens(list(c.ids[b:hi]))
                        else:
                            self.llm.eval_embeddings(feats[k + b:k + hi])
                if isinstance(c, chunks.Image):
                    k += n
                pos += n
        except BaseException:
            with self._native:
                if not self.closed:
                    self.llm.reset()
                self.kv_keys = []
            raise
        self.kv_keys = list(pos_keys)
        return common

    def _check_live(self, gen: "Generation") -> None:
        """Under _native: the engine is open and gen still owns the turn."""
        if self.closed:
            raise Cancelled("the session was closed during this request")
        if not self.is_live(gen) or (gen.cancel_fn is not None and gen.cancel_fn()):
            raise Cancelled("the request was cancelled (closed, or replaced by a newer request of its thread)")

    def encode(self, gen: "Generation", device_tiles, tiles: TileBatch | None, keys: list | None
               ) -> np.ndarray | None:
        """Image features (n_tokens, n_embd) of the request's tiles: from the feature cache where a
        tile's key is there, else from the vision encoder (only the missing tiles), under the mutex."""
        with self._native:
            if self.closed:
                raise Cancelled("the session was closed during this request")
            if device_tiles is not None:
                feats = self.vision.run_device(device_tiles[0])
                gen.timings.tiles_encoded = int(feats.shape[0])
                return feats.reshape(-1, feats.shape[-1])
            if tiles is None:
                return None
            if keys is None:
                feats = self.vision(tiles.pixels)
                gen.timings.tiles_encoded = len(feats)
                return feats.reshape(-1, feats.shape[-1])
            per_tile = [self.features.get(k) for k in keys]
            missing = [i for i, f in enumerate(per_tile) if f is None]
            if missing:
                new = self.vision(tiles.pixels[missing] if len(missing) < len(keys) else tiles.pixels)
                for i, f in zip(missing, new):
                    per_tile[i] = np.ascontiguousarray(f, np.float32)
                    self.features.put(keys[i], per_tile[i])
            gen.timings.tiles_encoded, gen.timings.tiles_cached = len(missing), len(keys) - len(missing)
        return np.concatenate(per_tile).reshape(-1, per_tile[0].shape[-1])

    def start(self, req: Request, cancel=None) -> "Generation":
        """Check, preprocess, encode and prefill `req`; `cancel()` (optional) is polled between
        prefill batches and decode steps: when it returns true the generation stops."""
        if self.closed:
            raise MivlError("the session is closed; open a new Session")
        req = req.checked(self.limits)
        gen = Generation(self, req)
        gen.cancel_fn = cancel
        t = gen.timings
        t0 = time.perf_counter()
        device_tiles = self.gpu_tiles(req)
        if device_tiles is not None:
            dev, grids, sizes = device_tiles
            tiles = TileBatch(np.empty((0, 3, 1, 1), np.float32), grids,
                              [sizes["image"]] if "image" in sizes else [(2688, 896)])
            cam_sizes = {} if "image" in sizes else sizes
        else:
            tiles, cam_sizes = self.tiles(req)
        prompt = self.chunks(req, tiles)
        n_prompt = chunks.n_tokens(prompt)
        self.check_fits(n_prompt, tiles)
        keys = ([tile_key(p) for p in tiles.pixels] if tiles is not None and device_tiles is None
                and self.features.max_bytes > 0 else None)
        pos_keys = self.position_keys(prompt, tiles, keys)
        t.preprocess_s = time.perf_counter() - t0
        self._claim(gen)
        try:
            t1 = time.perf_counter()
            feats = self.encode(gen, device_tiles, tiles, keys)
            t.vision_s = time.perf_counter() - t1 if feats is not None else 0.0
            n_img = sum(c.n_tokens for c in prompt if isinstance(c, chunks.Image))
            if (feats.shape[0] if feats is not None else 0) != n_img:
                raise MivlError(f"prompt has {n_img} image tokens but the vision encoder gave "
                                f"{0 if feats is None else feats.shape[0]} features")
            t2 = time.perf_counter()
            t.reused_tokens = self.prefill(gen, prompt, feats, pos_keys)
            t.prefill_s = time.perf_counter() - t2
        except BaseException:
            self.release(gen)
            raise
        t.prompt_tokens = n_prompt
        gen.image_size = tiles.sizes[0] if tiles is not None and len(tiles.sizes) == 1 else None
        gen.cam_sizes = cam_sizes
        return gen

    def decode_step(self, gen: "Generation") -> tuple[bytes, bool] | None:
        """One token of gen under the native mutex: (its text bytes, whether the answer is full:
        max_new_tokens or the context reached), or None at a stop token."""
        with self._native:
            self._check_live(gen)
            llm = self.llm
            tok = gen.pick(llm.logits())
            if tok in self.stop_ids or llm.is_eog(tok):
                return None
            gen.tokens.append(tok)
            piece = llm.piece(tok, special=tok in self.markup_ids)
            full = len(gen.tokens) >= gen.req.max_new_tokens or llm.n_past + 1 > llm.n_ctx
            if not full:
                llm.eval_tokens([tok])
                self.kv_keys.append(tok)
            return piece, full

    def close(self) -> None:
        """Cancel the live generation, free the backends once (in order: LLM, vision), return."""
        with self._turn:
            if self.closed:
                return
            self.closed = True
            if self._live is not None:
                self._live.cancelled = True
                self._live = None
            self._turn.notify_all()
        with self._native:                 # waits at most for the native step in progress
            self.llm.close()
            self.vision.close()


class Generation:
    """Token-by-token decoding of one request; owns the engine's turn until done or closed."""

    def __init__(self, engine: Engine, req: Request):
        self.engine, self.req = engine, req
        self.thread = threading.get_ident()
        self.timings = Timings()
        self.image_size, self.cam_sizes = None, {}
        self.tokens: list[int] = []
        self.text = ""
        self.done = False
        self.cancelled = False
        self.stopped = False
        self.cancel_fn = None
        self.rng = np.random.default_rng(req.seed)
        self.utf8 = Utf8Stream()

    def pick(self, logits: np.ndarray) -> int:
        if self.req.temperature <= 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64)
        with np.errstate(over="ignore"):             # a tiny temperature sends the others to -inf: fine
            z = (z - z.max()) / self.req.temperature # max 0, others <= 0: never NaN, any temperature
        p = np.exp(z)
        p /= p.sum()
        if self.req.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            sp = p[order]
            keep = np.cumsum(sp) - sp < self.req.top_p
            q = np.zeros_like(p)
            q[order[keep]] = sp[keep]
            p = q / q.sum()
        return int(self.rng.choice(len(p), p=p))

    def step(self) -> str | None:
        """Decode one token; returns the new text (maybe ''), or None when finished or cancelled."""
        if self.done:
            return None
        t0 = time.perf_counter()
        try:
            step = self.engine.decode_step(self)
        except Cancelled:
            self.cancelled = True
            self.close()
            return None
        except BaseException:
            self.close()
            raise
        if step is None:
            self.stopped = True
            return self._finish(t0)
        piece, full = step
        delta = self.utf8.push(piece)
        self.text += delta
        if full:
            return delta + self._finish(t0)
        self.timings.decode_s += time.perf_counter() - t0
        self.timings.new_tokens = len(self.tokens)
        return delta

    def _finish(self, t0: float) -> str:
        self.timings.decode_s += time.perf_counter() - t0
        self.timings.new_tokens = len(self.tokens)
        tail = self.utf8.flush()
        self.text += tail
        self.done = True
        self.engine.release(self)
        return tail

    def close(self) -> None:
        """Stop generating (idempotent); the engine may then serve the next request."""
        self.engine.release(self)

    @property
    def objects(self) -> list:
        return parse_objects(self.text, self.image_size, self.cam_sizes)
