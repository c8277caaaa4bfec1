"""Where a checkpoint's answers look, per question kind: the attention mass the recipe's target
heads put on the subject's image tokens, for answers right and wrong.

The recipe's attention targets (`mivl.export.train.focus`, SIX_FOCUS: head 0 of decoder layers 1
and 2 on the subject's tokens on every tile, head 1 on those of the thumbnail; head 0 of layer 0 on
the question's words naming it) are what a lookup has to do. Measured without them in the loss, on
single-question records of new views drawn as the busy-scene QA stages draw theirs (`stage_views`,
one turn, up to three objects a camera), this tells an answer that looked at the wrong object from
one that looked at the right one and read it wrong. A record is right when every answer token is
the model's top token (teacher-forced: the greedy answer, for one-word answers).

    .venv/bin/python benchmarks/focus_by_kind.py out/deep/d0 --records 300
"""
import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from mivl.edge.prompt import IMG_CONTEXT, get_template
from mivl.edge.tokenizer import load_tokenizer
from mivl.export.checkpoint import load_checkpoint
from mivl.export.default_model import SIX_CAMERA, stage_views
from mivl.export.reference import preprocess_config
from mivl.export.train.data import IGNORE, encode_record
from mivl.export.train.focus import FocusConfig, decode

from bench_common import positive

TARGETS = ("image", "whole", "words")


@torch.no_grad()
def measure(checkpoint: str, records: int, stream: int) -> dict[str, list[tuple]]:
    """kind -> [(right, mass on the image / whole / words targets), ...]"""
    ck = load_checkpoint(checkpoint)
    model, tok = ck.model, load_tokenizer(ck.path)
    tpl, pre, lm = get_template(ck.config.template), preprocess_config(ck), ck.model.language_model
    img = tok.token_to_id(IMG_CONTEXT)
    f6 = SIX_CAMERA.stage("f6")    # the busy-scene stage whose records these are drawn as, one turn each
    cfg = FocusConfig(1.0, whole_heads=f6.whole_heads)
    data = stage_views(replace(f6, turns=1, stream=stream), 0, SIX_CAMERA)
    out: dict[str, list[tuple]] = {}
    for i in range(records):
        _, qs, _, rec = data.draw(i)
        s = encode_record(rec, tok, tpl, pre, ck.config.tokens_per_tile)
        ids, labels = torch.tensor(s.input_ids), torch.tensor(s.labels)
        x = model.embed(ids, model.image_features(torch.from_numpy(s.pixels)), img)
        slots = (ids == img).nonzero().flatten()
        h, _, mass = decode(lm, x, s.focus, slots, cfg)
        keep = labels[1:] != IGNORE
        right = bool((lm.lm_head(h[0, :-1][keep]).argmax(-1) == labels[1:][keep]).all())
        out.setdefault(qs[0].kind, []).append((right, *(mass.get(t, np.nan) for t in TARGETS)))
    return out


def main() -> None:
    torch.set_num_threads(2)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--records", type=positive(int), default=300)
    p.add_argument("--stream", type=int, default=84, help="view and question stream (no stage trains on 84)")
    a = p.parse_args()
    t0 = time.perf_counter()
    rows = measure(a.checkpoint, a.records, a.stream)
    print(f"{a.checkpoint}: {a.records} records, {time.perf_counter() - t0:.0f} s")
    print("| kind | n | right | mass image / whole / words, right | wrong |\n|---|---|---|---|---|")
    for kind, r in sorted(rows.items()):
        v = np.array(r, float)

        def masses(sel):
            if not sel.any():
                return "-"
            return " / ".join("-" if np.isnan(v[sel, j]).all() else f"{np.nanmean(v[sel, j]):.2f}" for j in (1, 2, 3))
        print(f"| {kind} | {len(v)} | {v[:, 0].mean():.2f} | {masses(v[:, 0] == 1)} | {masses(v[:, 0] == 0)} |")


if __name__ == "__main__":
    main()
