"""Where a dense step's time goes, and two ways to shorten it: bf16 autocast and drawing the next
batch while this one trains.

The recipe's dense stage (its settings, from the embedded default model; `--steps` steps each):

- `profile`: the step's compute (forward, backward; batches drawn beforehand) by operator, as the
  PyTorch profiler counts it; the share of the ViT's attention (`scaled_dot_product_attention`, both
  directions) is what any speed-up of the compute has to win on.
- `precision`: the same pre-drawn batches through forward and backward in fp32 and under bf16
  autocast, alternated, the median step of each (`trainer.cpu_has_bf16` says whether this CPU has
  bf16 in hardware; without it bf16 runs slower, not faster).
- `prefetch`: whole `pretrain_vision` steps (data, forward, backward, AdamW) with each batch drawn
  in the step that uses it (`inline`), drawn one step ahead in a thread, or in a spawned process;
  the losses must be the same to the last digit in all three (the same bytes, only drawn earlier).

    .venv/bin/python benchmarks/bench_dense_step.py [--steps 30] [--threads 2] [--parts profile,precision,prefetch]
"""
import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import nullcontext
from unittest import mock

import torch

from bench_common import positive
from mivl.export.train.dense import dense_batch

PARTS = ("profile", "precision", "prefetch")


def drawn(*args):
    """One dense batch, by the function as defined (the recipe's own calls to it are replaced)."""
    return dense_batch(*args)


class Ahead:
    """`dense_batch` with the next step's batch submitted to `pool` as this one is handed out; a
    batch drawn ahead is used only if it is asked for with the same arguments, else dropped."""

    def __init__(self, pool):
        self.pool, self.next = pool, None        # next: (the arguments drawn ahead, their job)

    def __call__(self, seed, step, *args):
        asked = (seed, step, *args)
        if self.next is not None and self.next[0] == asked:
            job = self.next[1]
        else:
            if self.next is not None:
                self.next[1].cancel()
            job = self.pool.submit(drawn, *asked)
        ahead = (seed, step + 1, *args)
        self.next = (ahead, self.pool.submit(drawn, *ahead))
        return job.result()


def setup():
    from mivl.export.checkpoint import load_checkpoint
    from mivl.export.default_model import ASSET, DEFAULT, dense_terms
    from mivl.export.reference import preprocess_config
    ck = load_checkpoint(ASSET)
    dense = DEFAULT.stage("dense")
    return ck.model, preprocess_config(ck), dense, dense_terms(dense), DEFAULT.max_objects


def compute_step(model, objective, batch, dtype):
    """Forward and backward of one pre-drawn batch under the stage's objective (gradients dropped),
    under autocast `dtype`."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    with ctx:
        loss = objective.loss(model, batch)
    loss.backward()
    model.zero_grad(set_to_none=True)
    objective.heads.zero_grad(set_to_none=True)
    return float(loss.detach())


def attention_kernel(model, tiles: int, repeat: int = 5) -> dict:
    """One ViT layer's attention alone (scaled_dot_product_attention, forward and backward) at the
    step's shapes, fp32 and bf16: the median seconds of `repeat`, and fp32's rate by a count of its
    multiply-adds (forward 2 x 2 n^2 d a head; the backward counted as 2.5 forwards)."""
    import torch.nn.functional as F
    cfg = model.vision_model.config
    n = (cfg.image_size // cfg.patch_size) ** 2 + 1
    heads, dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        q, k, v = (torch.randn(tiles, heads, n, dim, dtype=dtype, requires_grad=True) for _ in range(3))
        times = []
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v).sum().backward()
            times.append(time.perf_counter() - t0)
        out[f"attention_{name}_s"] = round(statistics.median(times[1:]), 4)
    flops = 3.5 * 4 * n * n * dim * heads * tiles
    out["attention_fp32_gflops"] = round(flops / out["attention_fp32_s"] / 1e9, 1)
    return out


def compute_parts(steps: int, parts) -> dict:
    from mivl.export.train.dense import DenseHeads, DenseObjective
    from mivl.export.train.trainer import cpu_has_bf16
    model, pre, dense, terms, max_objects = setup()
    objective = DenseObjective(DenseHeads(model.mlp1[-1].out_features), pre, 0, max_objects, dense.six_share,
                               dense.batch_size, **terms)
    model.train()
    batches = [dense_batch(0, s, dense.batch_size, pre, max_objects, dense.six_share, 1, terms["grid_cameras"])
               for s in range(steps)]
    compute_step(model, objective, batches[0], "fp32")      # warm
    out = {}
    if "profile" in parts:
        from torch.profiler import profile
        with profile() as prof:
            for b in batches:
                compute_step(model, objective, b, "fp32")
        ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        total = sum(ops.values())
        attention = sum(v for k, v in ops.items() if "scaled_dot_product" in k)
        top = sorted(ops.items(), key=lambda kv: -kv[1])[:6]
        out["profile"] = {"step_s": round(total / 1e6 / steps, 3), "attention_share": round(attention / total, 3),
                          "top_ops_share": {k: round(v / total, 3) for k, v in top}}
    if "precision" in parts:
        times = {"fp32": [], "bf16": []}
        losses = {"fp32": [], "bf16": []}
        for b in batches:
            for dtype in ("fp32", "bf16"):
                t0 = time.perf_counter()
                losses[dtype].append(compute_step(model, objective, b, dtype))
                times[dtype].append(time.perf_counter() - t0)
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        out["precision"] = {"cpu_has_bf16": cpu_has_bf16(), **attention_kernel(model, batches[0]["pixels"].shape[0]),
                            "fp32_step_s": round(fp32, 3),
                            "bf16_step_s": round(bf16, 3), "bf16_speedup": round(fp32 / bf16, 3),
                            "loss_abs_diff_max": round(max(abs(a - b) for a, b in zip(losses["fp32"], losses["bf16"])), 5)}
    return out


def prefetch_part(steps: int, threads: int) -> dict:
    import mivl.export.train.dense as dense_module
    rows = {}
    for way in ("inline", "thread", "process"):
        model, pre, dense, terms, max_objects = setup()
        pool = (None if way == "inline" else ThreadPoolExecutor(1) if way == "thread" else
                ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), torch.set_num_threads, (1,)))
        patch = nullcontext() if pool is None else mock.patch.object(dense_module, "dense_batch", Ahead(pool))
        torch.set_num_threads(threads)
        with patch:
            t0 = time.perf_counter()
            losses, _ = dense_module.pretrain_vision(model, pre, steps, dense.batch_size, dense.lr, 0,
                                                     max_objects=max_objects, six_share=dense.six_share, quiet=True,
                                                     **terms)
            rows[way] = {"step_s": round((time.perf_counter() - t0) / steps, 3), "loss_sum": round(sum(losses), 6)}
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if len({r["loss_sum"] for r in rows.values()}) != 1:
        raise SystemExit(f"the losses differ between the ways of drawing: {rows}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=positive(), default=30)
    p.add_argument("--threads", type=positive(), default=2)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    a = p.parse_args()
    parts = a.parts.split(",")
    if not parts or set(parts) - set(PARTS):
        raise SystemExit(f"--parts: comma-separated names of {', '.join(PARTS)}, not {a.parts!r}")
    torch.set_num_threads(a.threads)
    out = {"steps": a.steps, "threads": a.threads}
    if {"profile", "precision"} & set(parts):
        out.update(compute_parts(a.steps, parts))
    if "prefetch" in parts:
        out["prefetch"] = prefetch_part(a.steps, a.threads)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
