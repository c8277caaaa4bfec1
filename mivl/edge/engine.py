"""The one implementation under both the Pythonic Session and the C-API-like handles.

An Engine owns a bundle's vision backend and LLM. `start(request)` preprocesses, runs the vision
encoder, builds the prompt exactly as the reference does, checks it against the context, and
prefills the LLM (text tokens and image embeddings interleaved, the shared prefix reused from the
KV cache); the returned Generation then yields one token per `step()`.

Thread safety: one Engine runs one generation at a time; `start` takes the engine's lock and the
Generation releases it when it finishes or is closed. A second thread blocks until then.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .bundle import Bundle
from .errors import InputError, MivlError
from .multiview import preprocess_cameras
from .parse import parse_objects
from .preprocess import TileBatch, preprocess_frames, preprocess_images
from .prompt import ANSWER_MARKUP, build_prompt, get_template, video_prefix
from .request import Request


@dataclass
class Timings:
    preprocess_s: float = 0.0
    vision_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    new_tokens: int = 0

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


def split_runs(ids: list[int], img_id: int) -> list[tuple[str, object]]:
    """Prompt ids -> [('t', ids), ('e', n_image_tokens), ...] in order."""
    runs, i = [], 0
    while i < len(ids):
        j, is_img = i, ids[i] == img_id
        while j < len(ids) and (ids[j] == img_id) == is_img:
            j += 1
        runs.append(("e", j - i) if is_img else ("t", ids[i:j]))
        i = j
    return runs


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
    def __init__(self, bundle: Bundle, vision, llm):
        self.bundle, self.vision, self.llm = bundle, vision, llm
        self.template = get_template(bundle.prompt["template"])
        self.img_id = int(bundle.prompt["img_context_id"])
        self.stop_ids = set(bundle.prompt["stop_ids"])
        specials = bundle.prompt.get("special_tokens", {})
        self.markup_ids = {specials[t] for t in ANSWER_MARKUP if t in specials}
        self.pre = bundle.preprocessing
        self.lock = threading.Lock()
        self.kv_ids: list[int] = []          # token ids whose KV is in the cache (text prefix only)
        self.closed = False
        self.gpu_pre = None                  # fused CUDA preprocessing, when a GPU runs the vision

    def enable_gpu_preprocessing(self) -> str:
        """Use the fused CUDA kernels for single images and six cameras; returns what was chosen."""
        try:
            from ..runtimes.kernels import gpu_backend
            from ..runtimes.kernels.preprocessor import Preprocessor

            self.gpu_pre = Preprocessor(gpu_backend(), self.pre)
            if hasattr(self.vision, "use_kernels"):      # split vision: unshuffle + LayerNorm on the GPU
                self.vision.use_kernels(self.gpu_pre)
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

    def prompt_ids(self, req: Request, tiles: TileBatch | None) -> list[int]:
        per_image = tiles.tiles_per_image if tiles is not None else []
        question = req.question
        if req.video is not None and tiles is not None and "<image>" not in question and not req.history:
            question = video_prefix(len(per_image)) + question
        text = build_prompt(self.template, question, per_image, req.history or None,
                            tokens_per_tile=int(self.bundle.prompt["tokens_per_tile"]))
        return self.llm.tokenize(text, add_bos=bool(self.bundle.prompt.get("add_bos")), parse_special=True)

    def check_fits(self, ids: list[int], req: Request, tiles: TileBatch | None) -> None:
        need = len(ids) + 1
        if need > self.llm.n_ctx:
            per_tile = int(self.bundle.prompt["tokens_per_tile"])
            n_tiles = tiles.n_tiles if tiles is not None else 0
            raise InputError(f"the prompt is {len(ids)} tokens ({n_tiles} tiles x {per_tile} image "
                             f"tokens + text) but the context holds {self.llm.n_ctx}: "
                             f"{need - self.llm.n_ctx} too many. Lower max_tiles, use fewer "
                             f"images/frames, or open the session with a larger n_ctx")

    # ---- prefill ----------------------------------------------------------------------------
    def prefill(self, ids: list[int], feats: np.ndarray | None) -> int:
        """Evaluate the prompt, reusing the cached text prefix; returns reused token count."""
        first_img = ids.index(self.img_id) if self.img_id in ids else len(ids)
        common = 0
        limit = min(len(self.kv_ids), first_img, len(ids) - 1)
        while common < limit and self.kv_ids[common] == ids[common]:
            common += 1
        self.llm.reset(keep=common)
        self.kv_ids = self.kv_ids[:common]
        k = 0
        try:
            for kind, v in split_runs(ids[common:], self.img_id):
                if kind == "t":
                    self.llm.eval_tokens(v)
                else:
                    self.llm.eval_embeddings(feats[k:k + v])
                    k += v
        except BaseException:
            self.llm.reset()
            self.kv_ids = []
            raise
        self.kv_ids = ids[:first_img]  # reusable by the next prompt: the text before any image
        return common

    def start(self, req: Request) -> "Generation":
        if self.closed:
            raise MivlError("the session is closed")
        req.validate()
        t = Timings()
        t0 = time.perf_counter()
        device_tiles = self.gpu_tiles(req)
        if device_tiles is not None:
            dev, grids, sizes = device_tiles
            tiles = TileBatch(np.empty((0, 3, 1, 1), np.float32), grids,
                              [sizes["image"]] if "image" in sizes else [(2688, 896)])
            cam_sizes = {} if "image" in sizes else sizes
        else:
            tiles, cam_sizes = self.tiles(req)
        ids = self.prompt_ids(req, tiles)
        self.check_fits(ids, req, tiles)
        t.preprocess_s = time.perf_counter() - t0
        feats = None
        if device_tiles is not None:
            t1 = time.perf_counter()
            feats = self.vision.run_device(device_tiles[0])
            feats = feats.reshape(-1, feats.shape[-1])
            t.vision_s = time.perf_counter() - t1
        elif tiles is not None:
            t1 = time.perf_counter()
            feats = self.vision(tiles.pixels)
            feats = feats.reshape(-1, feats.shape[-1])
            t.vision_s = time.perf_counter() - t1
        n_img = ids.count(self.img_id)
        if (feats.shape[0] if feats is not None else 0) != n_img:
            raise MivlError(f"prompt has {n_img} image tokens but the vision encoder gave "
                            f"{0 if feats is None else feats.shape[0]} features")
        self.lock.acquire()
        try:
            if self.closed:
                raise MivlError("the session is closed")
            t2 = time.perf_counter()
            t.reused_tokens = self.prefill(ids, feats)
            t.prefill_s = time.perf_counter() - t2
        except BaseException:
            self.lock.release()
            raise
        t.prompt_tokens = len(ids)
        image_size = tiles.sizes[0] if tiles is not None and len(tiles.sizes) == 1 else None
        return Generation(self, req, ids, t, image_size, cam_sizes)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.llm.close()
            self.vision.close()


class Generation:
    """Token-by-token decoding of one request; holds the engine's lock until done or closed."""

    def __init__(self, engine: Engine, req: Request, prompt_ids, timings: Timings, image_size, cam_sizes):
        self.engine, self.req, self.prompt_ids, self.timings = engine, req, prompt_ids, timings
        self.image_size, self.cam_sizes = image_size, cam_sizes
        self.tokens: list[int] = []
        self.text = ""
        self.done = False
        self.stopped = False
        self.rng = np.random.default_rng(req.seed)
        self.utf8 = Utf8Stream()

    def _pick(self, logits: np.ndarray) -> int:
        if self.req.temperature <= 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / self.req.temperature
        p = np.exp(z - z.max())
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
        """Decode one token; returns the new text (maybe ''), or None when finished."""
        if self.done:
            return None
        llm = self.engine.llm
        t0 = time.perf_counter()
        try:
            tok = self._pick(llm.logits())
            if tok in self.engine.stop_ids or llm.is_eog(tok):
                self.stopped = True
                return self._finish(t0)
            self.tokens.append(tok)
            delta = self.utf8.push(llm.piece(tok, special=tok in self.engine.markup_ids))
            self.text += delta  # _finish appends the flushed tail itself
            if len(self.tokens) >= self.req.max_new_tokens or llm.n_past + 1 > llm.n_ctx:
                return delta + self._finish(t0)
            llm.eval_tokens([tok])
            self.timings.decode_s += time.perf_counter() - t0
            self.timings.new_tokens = len(self.tokens)
            return delta
        except BaseException:
            self.close()
            raise

    def _finish(self, t0: float) -> str:
        self.timings.decode_s += time.perf_counter() - t0
        self.timings.new_tokens = len(self.tokens)
        tail = self.utf8.flush()
        self.text += tail
        self.close()
        return tail

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.engine.lock.release()

    @property
    def objects(self) -> list:
        return parse_objects(self.text, self.image_size, self.cam_sizes)
