"""Probe: is the decoder's depth what the busy-scene lookups lack?

The default model answers the one-camera kinds of busy scenes far better than the lookups across
six cameras ("the object that is this colour or class and in that camera, among up to 18"), and the
camera is readable in its tokens (BENCHMARKS.md, the grid-camera probe). This probe gives the
decoder more layers (`mivl.export.train.deepen`: identity layers appended, the same answers at
the start) and trains it on f6's data (busy scenes, the model's own tiling, 30% absence, the
attention targets; the ViT and projector frozen, so each view's features are computed once) on new
views, beside the same stage on the model as it is (the control), in one process sharing the
feature cache. Both start from SRC (by default the shipped model).

    .venv/bin/python benchmarks/probe_deeper_decoder.py out/deep --layers 4 --steps 400
    .venv/bin/python -c "from mivl.export.default_model import ONE_WORD_KINDS, evaluate_reference as e; \\
        print(e('out/deep/d4', 600, kinds=ONE_WORD_KINDS, max_objects=3)['per_kind'])"    # d0: the control
"""
import argparse
from pathlib import Path

import torch

from mivl.edge.feature_cache import FeatureCache
from mivl.export.default_model import ASSET, ONE_WORD_KINDS, SIX_CAMERA, SIX_FOCUS, Stage, run_qa
from mivl.export.train.deepen import deepen

from bench_common import positive


def main() -> None:
    torch.set_num_threads(2)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="work folder: grown/, d<layers>/ and d0/ (the control) go there")
    p.add_argument("--src", default=str(ASSET), help="the checkpoint to start from (default: the shipped model)")
    p.add_argument("--layers", type=positive(int), default=4, help="decoder layers to add")
    p.add_argument("--steps", type=positive(int), default=400)
    p.add_argument("--lr", type=positive(float), default=5e-4)
    p.add_argument("--stream", type=int, default=7, help="question and view stream (f1..f7 used 0..6)")
    p.add_argument("--no-control", action="store_true", help="skip the control run")
    a = p.parse_args()
    out = Path(a.out)
    grown = out / "grown"
    if not (grown / "config.json").is_file():
        deepen(a.src, grown, a.layers)
    features = FeatureCache(8 << 30)
    runs = [(grown, out / f"d{a.layers}")] + ([] if a.no_control else [(Path(a.src), out / "d0")])
    for src, dst in runs:
        if (dst / "config.json").is_file() and not (dst / "train_state").exists():
            continue       # finished
        stage = Stage(dst.name, a.steps, a.lr, ONE_WORD_KINDS, **dict(
            SIX_FOCUS, max_tiles=0, max_objects=3, stream=a.stream, absent_share=0.3, reserve_absent=True))
        run_qa(src, dst, stage, 0, False, SIX_CAMERA, features)


if __name__ == "__main__":
    main()
