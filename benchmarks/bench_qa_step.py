"""The default model's QA training steps before and after two data-side changes, in one run.

Before: the tokenizer splits a text at its added tokens one at a time (a six-camera conversation's
3,328 <IMG_CONTEXT> are 3,328 parts, and a record of 8 turns is tokenised ~30 times as its pieces
grow), and the feature cache keys each tile by BLAKE2b. After: a run of one added token is one
part (`TextTokenizer.encode`, same ids), and the key is SHA-256 (`edge.feature_cache.tile_key`).

Rows: one encode of a 13-tile conversation's first turn; the digests of 13 tiles; and for each
stage, `--steps` steps of that stage of the shipped recipe (its data, focus targets, freezing,
feature cache, anchor) from the embedded default model, or with `--work` from the checkpoint
before it in the recipe's work folder (an anchored stage needs that: its dense heads live there);
seconds per step from the trainer's own log (the first step, cold cache and all, in both).

    .venv/bin/python benchmarks/bench_qa_step.py [--stages f1,f4,w1,m2] [--steps 8] [--threads 2]
        [--work out/default-model-work-six-camera-where]
"""
import argparse
import contextlib
import hashlib
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench_common import best


def blake2b_key(tile: np.ndarray) -> bytes:
    """The tile digest before: BLAKE2b, 16 bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tile.shape}{tile.dtype}".encode())
    h.update(np.ascontiguousarray(tile).data)
    return h.digest()


@contextlib.contextmanager
def before():
    """The two changes undone: added tokens split one at a time, tiles keyed by BLAKE2b."""
    from mivl.runtimes.tokenizer import TextTokenizer

    runs_encode = TextTokenizer.encode

    def one_at_a_time(self, text, add_bos=None):
        runs, self._runs = self._runs, self._split
        try:
            return runs_encode(self, text, add_bos)
        finally:
            self._runs = runs

    with mock.patch.object(TextTokenizer, "encode", one_at_a_time), \
            mock.patch("mivl.export.train.training_model.tile_key", blake2b_key):
        yield


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", default="f1,f4,w1,m2", help="QA stages of the shipped recipe")
    p.add_argument("--work", type=Path, help="the recipe's work folder: each stage starts from the one before it")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from mivl.edge.feature_cache import tile_key
    from mivl.edge.tokenizer import load_tokenizer
    from mivl.export.default_model import ASSET, DEFAULT, run_qa

    stages = [DEFAULT.stage(s) for s in a.stages.split(",")]
    bad = [s.name for s in stages if not s.kinds or s.format_warmup or (s.anchor and not a.work)]
    if bad or a.steps < 1:
        raise SystemExit(f"QA stages only, anchored ones with --work (not {bad}); --steps >= 1")
    names = [s.name for s in DEFAULT.stages]

    def start(stage):
        if a.work is None:
            return ASSET
        src = a.work / names[names.index(stage.name) - 1]
        if not (src / "config.json").is_file():
            raise SystemExit(f"{src} holds no checkpoint: run the recipe up to {stage.name} first")
        return src
    tok = load_tokenizer(ASSET)
    text = ("<|im_start|>user\nImage-1: <img>" + "<IMG_CONTEXT>" * 13 * 256 +
            "</img>\nWhich camera shows the green bus? Answer with the camera name.<|im_end|>\n<|im_start|>assistant\n")
    tiles = np.random.default_rng(0).standard_normal((13, 3, 448, 448), dtype=np.float32)
    rows = {}
    with before():
        enc_before = best(lambda: tok.encode(text), 5)
        ids_before = tok.encode(text)
    enc_after = best(lambda: tok.encode(text), 5)
    assert tok.encode(text) == ids_before
    rows["encode, 13-tile turn (ms)"] = {"before": round(enc_before * 1e3, 3), "after": round(enc_after * 1e3, 3),
                                         "speedup": round(enc_before / enc_after, 2)}
    key_before = best(lambda: [blake2b_key(t) for t in tiles], 5)
    key_after = best(lambda: [tile_key(t) for t in tiles], 5)
    rows["tile digests, 13 tiles (ms)"] = {"before": round(key_before * 1e3, 2), "after": round(key_after * 1e3, 2),
                                           "speedup": round(key_before / key_after, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in stages:
            per = {}
            for name in ("before", "after"):
                out = Path(tmp) / f"{stage.name}-{name}"
                short = replace(stage, steps=a.steps)
                with before() if name == "before" else contextlib.nullcontext():
                    run_qa(start(stage), out, short, 0, True, DEFAULT)
                per[name] = json.loads((out / "train_log.json").read_text())["seconds_this_run"] / a.steps
            rows[f"{stage.name} step (s)"] = {"before": round(per["before"], 3), "after": round(per["after"], 3),
                                              "speedup": round(per["before"] / per["after"], 3)}
    print(json.dumps({"threads": a.threads, "steps": a.steps, **rows}, indent=2))


if __name__ == "__main__":
    main()
