"""Probe: is the decoder's depth what the busy-scene lookups lack?

The default model answers the one-camera kinds of busy scenes far better than the lookups across
six cameras ("the object that is this colour or class and in that camera, among up to 18"), and the
camera is readable in its tokens (BENCHMARKS.md, the grid-camera probe). This probe gives the
decoder more layers (`mivl.export.train.deepen`: identity layers appended, the same answers at
the start) and trains it on f6's data (busy scenes, the model's own tiling, 30% absence, the
attention targets; the ViT and projector frozen, so each view's features are computed once) on new
views, beside the same stage on the model as it is (the control), in one process sharing the
feature cache. Both start from SRC (by default the shipped model). `--lr` and `--focus` (the weight
of the attention targets) vary the stage; `--layers 0` runs the control alone.

`fit CHECKPOINT` asks a trained run the first question of its own training records (the views and
questions it learnt from) and of new views drawn alike: a model that memorises scores far better
on the first; one that cannot fit the lookups scores alike on both.

    .venv/bin/python benchmarks/probe_deeper_decoder.py out/deep --layers 4 --steps 400
    .venv/bin/python benchmarks/probe_deeper_decoder.py fit out/deep/d0 --questions 300
    .venv/bin/python -c "from mivl.export.default_model import ONE_WORD_KINDS, evaluate_reference as e; \\
        print(e('out/deep/d4', 600, kinds=ONE_WORD_KINDS, max_objects=3)['per_kind'])"    # d0: the control
"""
import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from mivl.calib.evaluate import asker
from mivl.calib.questions import jpeg_roundtrip, judge
from mivl.edge.feature_cache import FeatureCache
from mivl.edge.multiview import CAMERAS
from mivl.export.default_model import ASSET, SIX_CAMERA, Stage, run_qa, stage_views
from mivl.export.train.deepen import deepen

from bench_common import positive


F6 = SIX_CAMERA.stage("f6")     # the LLM learning on busy scenes, the vision side frozen


def stage(name: str, steps: int, lr: float, stream: int, focus: float = F6.focus) -> Stage:
    """f6's stage on question and view stream `stream`, the attention targets weighing `focus`."""
    return replace(F6, name=name, steps=steps, lr=lr, stream=stream, focus=focus)


def fit(a) -> None:
    from mivl.export.reference import Reference

    ask = asker(Reference(a.checkpoint), max_new_tokens=16)
    for tag, stream in (("its training records", a.stream), ("new views", a.stream + 77)):
        data = stage_views(replace(F6, stream=stream), 0, SIX_CAMERA)
        per: dict[str, list[bool]] = {}
        t0 = time.perf_counter()
        for i in range(a.questions):
            v, qs, camera, _ = data.draw(i)
            scene, _, quality = data.view(v)
            frames = {c: jpeg_roundtrip(scene.cameras[c], quality) for c in (CAMERAS if camera is None else (camera,))}
            per.setdefault(qs[0].kind, []).append(judge(qs[0], ask(qs[0], frames))["correct"])
        right = [x for xs in per.values() for x in xs]
        print(f"{tag}: all {sum(right) / len(right):.3f}", {k: f"{sum(xs) / len(xs):.2f} ({len(xs)})"
                                                             for k, xs in sorted(per.items())},
              f"{time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    torch.set_num_threads(2)
    if sys.argv[1:2] == ["fit"]:
        p = argparse.ArgumentParser(description="a run on its own training records and on new views")
        p.add_argument("cmd")
        p.add_argument("checkpoint")
        p.add_argument("--questions", type=positive(int), default=300)
        p.add_argument("--stream", type=int, default=7, help="the stream the run trained on")
        return fit(p.parse_args())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="also: fit CHECKPOINT [--questions N] [--stream S] (a run on its own "
                                       "training records and on new views)")
    p.add_argument("out", help="work folder: grown/, d<layers>/ and d0/ (the control) go there")
    p.add_argument("--src", default=str(ASSET), help="the checkpoint to start from (default: the shipped model)")
    p.add_argument("--layers", type=int, choices=range(0, 65), default=4, metavar="0..64",
                   help="decoder layers to add (0: the control alone)")
    p.add_argument("--steps", type=positive(int), default=400)
    p.add_argument("--lr", type=positive(float), default=5e-4)
    p.add_argument("--stream", type=int, default=7, help="question and view stream (f1..f7 used 0..6)")
    p.add_argument("--focus", type=positive(float), default=F6.focus,
                   help="weight of the attention targets (the recipe's: %(default)s)")
    p.add_argument("--no-control", action="store_true", help="skip the control run")
    a = p.parse_args()
    out = Path(a.out)
    grown = out / "grown"
    features = FeatureCache(8 << 30)
    runs = ([(grown, out / f"d{a.layers}")] if a.layers else []) + ([] if a.no_control else [(Path(a.src), out / "d0")])
    if not runs:
        p.error("--layers 0 with --no-control leaves nothing to run")
    if a.layers and not (grown / "config.json").is_file():
        deepen(a.src, grown, a.layers)
    for src, dst in runs:
        if (dst / "config.json").is_file() and not (dst / "train_state").exists():
            continue       # finished
        run_qa(src, dst, stage(dst.name, a.steps, a.lr, a.stream, a.focus), 0, False, SIX_CAMERA, features)


if __name__ == "__main__":
    main()
