"""Accuracy on held-out synthetic questions, for any answerer (the edge Session, the reference).

`score(ask, n, seed)` draws questions 0..n-1 of the stream `seed` (`draw_question`) and calls
`ask(question, frames)`; frames holds the one camera the question shows, or all six for a
multi-view question. Training draws from other streams, so these scenes are never trained on.
"""
from __future__ import annotations

import time

from .questions import MAX_OBJECTS, MC_KINDS, draw_question, judge

EVAL_SEED = 20260
# a kind's figures beyond accuracy: the mean of each of its verdicts' keys (`questions.judge`)
FIGURES = {"iou": "mean_iou", "hit": "point_hit", "formed": "well_formed", "camera": "camera_right",
           "phrase": "phrase_right"}


def score(ask, n: int = 200, seed: int = EVAL_SEED, kinds=MC_KINDS, keep: bool = False,
          max_objects: int = MAX_OBJECTS) -> dict:
    """Per kind: n, accuracy (grounding: IoU >= 0.5; where: the point inside the object), and
    mean_iou, well_formed, phrase_right for grounding, point_hit, well_formed, camera_right for
    where (`questions.judge`)."""
    per: dict[str, list[dict]] = {}
    rows = []
    t0 = time.perf_counter()
    for i in range(n):
        q, frames = draw_question(seed, i, kinds, max_objects=max_objects)
        got = ask(q, frames)
        size = next(iter(frames.values())).shape[1::-1]
        verdict = judge(q, got, size)
        per.setdefault(q.kind, []).append(verdict)
        if keep:
            rows.append({"i": i, "kind": q.kind, "question": q.text, "answer": q.answer, "got": got, **verdict})
    total = [v["correct"] for vs in per.values() for v in vs]
    out = {"n": len(total), "seed": seed, "kinds": list(kinds), "max_objects": max_objects,
           "accuracy": sum(total) / max(1, len(total)),
           "per_kind": {k: kind_figures(vs) for k, vs in sorted(per.items())},
           "seconds": time.perf_counter() - t0}
    if keep:
        out["answers"] = rows
    return out


def kind_figures(verdicts: list[dict]) -> dict:
    out = {"n": len(verdicts), "accuracy": sum(v["correct"] for v in verdicts) / len(verdicts)}
    for key, name in FIGURES.items():
        if key in verdicts[0]:
            out[name] = sum(v[key] for v in verdicts) / len(verdicts)
    return out


def asker(model, max_new_tokens: int = 24):
    """An `ask` for score() backed by anything with `.ask(text, images=, cameras=, max_new_tokens=)`:
    a mivl.edge Session or the PyTorch reference (mivl.export.reference.Reference); greedy."""
    def ask(q, frames):
        if q.camera is None:
            return model.ask(q.prompt, cameras=frames, max_new_tokens=max_new_tokens).text
        return model.ask(q.prompt, images=[frames[q.camera]], max_new_tokens=max_new_tokens).text
    return ask
