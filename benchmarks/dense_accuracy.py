"""Held-out accuracy of a dense stage's temporary heads (`mivl.export.train.dense.dense_accuracy`):
colour and class on object tokens, background, the camera on six-camera thumbnail tokens, and each
digit place of the object numbers on thumbnail tokens, on six-camera views and on one-camera views.

    .venv/bin/python benchmarks/dense_accuracy.py out/default-model-work-six-camera/dense2 [--views 30]
"""
import argparse
import json
from pathlib import Path

from mivl.export.checkpoint import load_checkpoint
from mivl.export.default_model import HEADS, saved_heads
from mivl.export.reference import preprocess_config
from mivl.export.train.dense import dense_accuracy, dense_sample

HELD_OUT = 99       # dense samples of this stream are never trained on (stages draw 0, 1, ...)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", help="a dense stage's folder (checkpoint + dense_heads.pt)")
    p.add_argument("--views", type=int, default=30)
    p.add_argument("--max-objects", type=int, default=3)
    a = p.parse_args()
    ck = load_checkpoint(a.stage)
    heads = saved_heads(Path(a.stage), ck)
    if heads is None:
        raise SystemExit(f"{a.stage}: no {HEADS} (not a dense stage's folder)")
    pre = preprocess_config(ck)
    for name, share in (("six cameras", 1.0), ("one camera", 0.0)):
        val = [dense_sample(HELD_OUT, i, pre, a.max_objects, share) for i in range(a.views)]
        print(name, json.dumps({k: round(v, 3) for k, v in dense_accuracy(ck.model, heads, val).items()}))


if __name__ == "__main__":
    main()
