"""Probe: can the default model's LLM learn to spell a position it is handed cleanly?

Teacher-forced, the default model writes a `where` point's hundreds (0.66-0.83) but its x tens
digit at chance (`probe_point_format.py digits`), though the thumbnail token holding the object
tells where in it the object lies (`offsets`). This separates spelling from finding: every
<IMG_CONTEXT> slot of a one-tile prompt ("Where is the <colour> <class>?") holds the same made-up
embedding of a random point (x, y) in 0..1000, and the LLM (from `--checkpoint`) learns to answer
`<c1,CAM_FRONT,x,y>` (format_warmup's optimiser: AdamW, batch 8, lr 1e-3). The point is encoded

  linear   x and y along two random directions (what a linear read of a token gives), or
  phase    cos and sin of 2 pi x / P and 2 pi y / P for P = 1000, 500, 250, 100, 50 through a
           random map (a phase at period 100 names the tens digit as a sector),

each scaled to the norm of the LLM's word embeddings. Scored on 200 new points, teacher-forced:
each digit of x and y right (0.10: chance), and the greedy point's median |dx|, |dy|.

    .venv/bin/python benchmarks/probe_spelling.py out/default-model-work-m3/m3 --encoding linear
    .venv/bin/python benchmarks/probe_spelling.py out/default-model-work-m3/m3 --encoding phase
"""
import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from mivl.edge.parse import DRIVELM
from mivl.export.reference import Reference
from mivl.export.train.format_warmup import answer_ids

from bench_common import positive
from probe_point_format import point_digits

PERIODS = (1000, 500, 250, 100, 50)


def encoder(kind: str, dim: int, norm: float, seed: int = 0):
    """(x, y) in 0..1000 -> a (dim,) embedding of norm about `norm`."""
    g = torch.Generator().manual_seed(seed)
    if kind == "linear":
        u = torch.randn(2, dim, generator=g)
        u = u / u.norm(dim=1, keepdim=True)
        return lambda x, y: norm * 1.7 * ((x / 1000 - 0.5) * u[0] + (y / 1000 - 0.5) * u[1])
    m = torch.randn(4 * len(PERIODS), dim, generator=g) / (4 * len(PERIODS)) ** 0.5

    def phase(x, y):
        a = torch.tensor([2 * np.pi * v / p for v in (x, y) for p in PERIODS])
        return norm * torch.cat([a.cos(), a.sin()]) @ m / (2 * len(PERIODS)) ** 0.5
    return phase


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--encoding", choices=("linear", "phase"), default="linear")
    p.add_argument("--steps", type=positive(), default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=positive(), default=8)
    a = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ref = Reference(a.checkpoint)
    lm = ref.model.language_model
    dim = lm.config.hidden_size
    norm = float(lm.embed(torch.arange(min(1000, lm.config.vocab_size))[None])[0].norm(dim=-1).mean())
    encode = encoder(a.encoding, dim, norm)
    ids = ref.prompt_ids("Where is the red car?", SimpleNamespace(tiles_per_image=[1]))
    n_slots = sum(i == ref.img_context_id for i in ids)
    rng = np.random.default_rng(0)

    def sample():
        x, y = (int(v) for v in rng.integers(0, 1001, 2))
        feats = encode(x, y).expand(n_slots, dim)
        return x, y, feats, answer_ids(ref, f"<c1,CAM_FRONT,{x},{y}>")

    opt = torch.optim.AdamW(lm.parameters(), lr=a.lr, weight_decay=0.0)
    lm.train()
    t0 = time.perf_counter()
    for step in range(a.steps):
        loss = 0.0
        for _ in range(a.batch):
            _, _, feats, ans = sample()
            x = ref.model.embed(torch.tensor(ids + ans), feats[None], ref.img_context_id)
            logits = lm(x)[0, len(ids) - 1:-1]
            loss = loss + F.cross_entropy(logits.float(), torch.tensor(ans)) / a.batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{a.steps} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    lm.eval()
    right = {(n, k): [] for n in ("x", "y") for k in ("hundreds", "tens", "units")}
    dx, dy = [], []
    with torch.no_grad():
        for _ in range(200):
            x, y, feats, ans = sample()
            lp = ref.model.prompt_logits(torch.tensor(ids + ans), feats[None], ref.img_context_id)
            best = lp[len(ids) - 1:-1].argmax(-1).tolist()
            for key, j in point_digits([ref.tok.decode([t]) for t in ans]).items():
                right[key].append(best[j] == ans[j])
            g = ref.model.generate(torch.tensor(ids), feats[None], ref.img_context_id, ref.stop_ids, 24)
            m = DRIVELM.search(ref.tok.decode(g.tokens))
            if m:
                dx.append(abs(int(float(m.group("x"))) - x))
                dy.append(abs(int(float(m.group("y"))) - y))
    print(f"{a.checkpoint} --encoding {a.encoding}, {a.steps} steps of {a.batch} ({time.perf_counter() - t0:.0f} s); "
          f"200 new points, teacher-forced digits right:")
    for (name, place), v in right.items():
        print(f"  {name} {place:<9} {np.mean(v):.3f}")
    print(f"  greedy: {len(dx)} parsed, median |dx| {np.median(dx):.0f}, |dy| {np.median(dy):.0f}")


if __name__ == "__main__":
    main()
