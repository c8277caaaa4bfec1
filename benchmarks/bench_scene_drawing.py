"""What the recipe's training data costs to draw, and a dense step with it: milliseconds per dense
batch (the dense stage's 4 views, six cameras 0.6 of them), per QA record (m3's stage's views) and
seconds per dense step (`pretrain_vision`, the dense stage's settings, from the shipped model: data,
forward, backward, AdamW), with the losses the steps gave (the same losses before and after a
change that keeps the drawn bytes). `--threads` threads (default 2).

    .venv/bin/python benchmarks/bench_scene_drawing.py [--batches 40] [--records 60] [--steps 40]
"""
import argparse
import time

import torch

from bench_common import positive


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=positive(), default=40)
    p.add_argument("--records", type=positive(), default=60)
    p.add_argument("--steps", type=positive(), default=40)
    p.add_argument("--threads", type=positive(), default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.default_model import ASSET, DEFAULT, dense_terms, stage_views
    from mivl.export.reference import preprocess_config
    from mivl.export.train.dense import dense_batch, pretrain_vision

    ck = load_checkpoint(ASSET)
    pre, dense = preprocess_config(ck), DEFAULT.stage("dense")
    dense_batch(0, 0, dense.batch_size, pre, DEFAULT.max_objects, dense.six_share)     # warm
    t0 = time.perf_counter()
    for s in range(1, a.batches + 1):
        dense_batch(0, s, dense.batch_size, pre, DEFAULT.max_objects, dense.six_share)
    batch_ms = (time.perf_counter() - t0) / a.batches * 1000
    views = stage_views(DEFAULT.stage("m3"), 0, DEFAULT)
    views.draw(0)
    t0 = time.perf_counter()
    for i in range(1, a.records + 1):
        views.draw(i)
    record_ms = (time.perf_counter() - t0) / a.records * 1000
    t0 = time.perf_counter()
    losses, _ = pretrain_vision(ck.model, pre, a.steps, dense.batch_size, dense.lr, 0, max_objects=DEFAULT.max_objects,
                                six_share=dense.six_share, quiet=True, **dense_terms(dense))
    step_s = (time.perf_counter() - t0) / a.steps
    print(f"dense batch drawn {batch_ms:.1f} ms, QA record drawn {record_ms:.1f} ms, dense step {step_s:.3f} s "
          f"(losses: first {losses[0]:.6f}, last {losses[-1]:.6f}, sum {sum(losses):.6f})")


if __name__ == "__main__":
    main()
