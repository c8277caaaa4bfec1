"""Teach the LLM an answer's format on text alone, before a stage that teaches it to read the image.

A DriveLM point (`<c1,CAM_BACK,484,731>`) or a grounding box is spelt digit by digit (`4`, `8`, `4`,
`,`), so after a digit the LLM must know how many digits of this number it has written: a head that
reads the last few tokens. A small LLM trained from scratch on one-word answers has no such head,
and in a prompt of 3,328 image tokens it does not learn one (every number closed after one digit:
BENCHMARKS.md, "Where: the point's format"). On text alone (the question without its image, a
random camera and point or a random box as the answer; contexts of a few dozen tokens) it learns
one in a few hundred steps of a few hundredths of a second. The answers then ignore the image; the
stage after the warm-up, with images, teaches the lookup.

Only the LLM trains (AdamW, constant learning rate, no weight decay); the ViT and projector are
untouched. Every 100 steps a new conversation of the same stream is drawn for a greedy look at the
answer (printed unless quiet), so a quiet run trains on the same samples.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...calib.questions import GROUNDING_PROMPT, Question, box_text
from ...calib.synthetic import COLOURS
from ...edge.chunks import Ref
from ...edge.errors import InputError
from ...edge.multiview import CAMERAS
from .synthetic import ENDLESS

FORMATS = ("where", "grounding")
# the classes the warm-up's questions name: the format is what it teaches, not the names (one word
# each, as the probes that measured it ran)
CLASSES = ("car", "truck", "bus", "pedestrian", "cone")
LOOK_EVERY = 100


def answer_ids(ref, text: str) -> list[int]:
    """An answer's token ids as a model of the reference `ref` is trained to write them: the text's,
    then the template's stop token."""
    return list(ref.tok.encode(text)) + [min(ref.stop_ids)]


def format_question(kind: str, rng: np.random.Generator, classes=CLASSES) -> Question:
    """One text-only question of `kind` with a random answer in its format ("where": "Where is the
    <colour> <class>?" -> a random camera and point in 0..1000; "grounding": the grounding prompt with
    `<ref>the <colour> <class></ref>` -> that phrase and a random box with its corners in order)."""
    colours = list(COLOURS)
    name = f"{colours[rng.integers(len(colours))]} {classes[rng.integers(len(classes))]}"
    if kind == "grounding":
        x1, x2 = sorted(rng.choice(1001, 2, replace=False))
        y1, y2 = sorted(rng.choice(1001, 2, replace=False))
        phrase = f"the {name}"
        ref = f"<ref>{phrase}</ref>"
        return Question(kind, GROUNDING_PROMPT + ref, ref + box_text([x1, y1, x2, y2]), None, (), None,
                        (GROUNDING_PROMPT, Ref(phrase)))
    point = f"<c1,{CAMERAS[rng.integers(6)]},{rng.integers(0, 1001)},{rng.integers(0, 1001)}>"
    return Question(kind, f"Where is the {name}?", point, None)


class FormatRecords:
    """An endless indexable source of text-only training records: record i is one `format_question`
    of `kind` drawn from stream (seed, i), no image. Mixed among a stage's image records
    (`train.mixing.Mixture`), it keeps an answer's format in front of the LLM while the images
    keep the other answers."""

    def __init__(self, kind: str, seed: int = 0, classes=CLASSES):
        if kind not in FORMATS:
            raise InputError(f"format records are of one of {', '.join(FORMATS)}, not {kind!r}")
        self.kind, self.seed, self.classes = kind, seed, tuple(classes)

    def __len__(self) -> int:
        return ENDLESS

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < ENDLESS:
            raise IndexError(i)
        q = format_question(self.kind, np.random.default_rng([self.seed, i]), self.classes)
        return {"id": f"format/{self.kind}/{self.seed}/{i}",
                "conversations": [{"from": "human", "value": q.text}, {"from": "gpt", "value": q.answer}]}


def warm_up_format(src: Path, out: Path, kind: str = "where", steps: int = 400, lr: float = 1e-3, batch: int = 8,
                   seed: int = 0, classes=CLASSES, quiet: bool = False) -> Path:
    """Train the LLM of checkpoint `src` on `steps` batches of text-only `kind` conversations
    ("where": "Where is the <colour> <class>?" -> a random camera and point in 0..1000; "grounding":
    the grounding prompt with `<ref>the <colour> <class></ref>` -> that phrase and a random box with
    its corners in order: `format_question`) and write it to `out` (fp32), its losses and wall time in
    train_log.json."""
    from ..reference import Reference
    from .trainer import whole_run_seconds, write_checkpoint

    if kind not in FORMATS:
        raise InputError(f"a format warm-up teaches one of {', '.join(FORMATS)}, not {kind!r}")
    if steps < 1 or batch < 1 or not lr > 0:
        raise InputError(f"a format warm-up needs steps >= 1, batch >= 1 and lr > 0 (got {steps}, {batch}, {lr})")
    ref = Reference(src)
    lm = ref.model.language_model.train()
    rng, classes = np.random.default_rng(seed), list(classes)

    def conversation() -> tuple[list[int], list[int]]:
        q = format_question(kind, rng, classes)
        return ref.prompt_ids(q.prompt, None), answer_ids(ref, q.answer)

    opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0)
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        loss = 0.0
        for _ in range(batch):
            ids, ans = conversation()
            logits = lm(lm.embed(torch.tensor([ids + ans])))[0, len(ids) - 1:-1]
            loss = loss + F.cross_entropy(logits.float(), torch.tensor(ans)) / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % LOOK_EVERY == 0 or step == steps - 1:
            look = conversation()[0]
            if not quiet:
                with torch.no_grad():
                    g = ref.model.generate(torch.tensor(look), None, ref.img_context_id, ref.stop_ids, 40)
                print(f"step {step} loss {losses[-1]:.3f} greedy {ref.tok.decode(g.tokens)!r} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out = Path(out)
    part = out.parent / (out.name + ".partial")      # a whole checkpoint or none, if interrupted
    shutil.rmtree(part, ignore_errors=True)
    write_checkpoint(ref.model, Path(src), part, torch.float32,
                     {"stage": f"{kind}-format warm-up", "kind": kind, "steps": steps, "lr": lr, "batch": batch,
                      "seed": seed, "classes": classes, "losses": losses,
                      **whole_run_seconds(t0)})
    shutil.rmtree(out, ignore_errors=True)
    part.rename(out)
    return out
