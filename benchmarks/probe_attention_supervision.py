"""Probe: does supervising where the LLM looks teach the six-camera lookup?

The six-camera recipe's QA stages stay at the option priors: the LLM learns the answer formats, not
"the object named in the question -> its camera / colour / class". This probe trains the LLM and
projector (ViT frozen, its tokens cached per view) on the one-word kinds with each view as one tile
(the t1 setting of the recipe) and adds two attention targets to the answer loss, at every position
that predicts a piece of an answer about a named object:
  - word layers: the chosen heads put their attention on the question's words that name the
    subject (its colour, class, camera name): the answer position learns what is asked;
  - image layers: the chosen heads put their attention on the image tokens that show the subject:
    the lookup itself.
These are the trainer's targets (`mivl.export.train.focus`, from the records' focus), with weight
`--aux`; the recipe's stages use them through `TrainConfig.focus_weight`. (Runs a-h of BENCHMARKS
were made with this script's first form, commit be976c2, which matched one-word classes only.) The checkpoint it writes is an ordinary InternVL checkpoint; the targets only shape
training. Resumable (state every 100 steps in OUT/probe_state.pt); `--eval N` scores the result on N
held-out questions (stream `mivl.calib.evaluate.EVAL_SEED`, each view one tile, as trained). With
`--lr 0` it measures, without changing the weights, where a checkpoint's heads look.

    .venv/bin/python benchmarks/probe_attention_supervision.py out/default-model-work-six-camera/t1 \\
        out/probe/a1 --steps 600 --lr 1e-3 --seed 0 --eval 140
"""
import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mivl.calib.evaluate import score
from mivl.edge.multiview import CAMERAS, cell_of
from mivl.edge.prompt import IMG_CONTEXT, get_template
from mivl.edge.tokenizer import load_tokenizer
from mivl.export.checkpoint import load_checkpoint
from mivl.export.default_model import ONE_WORD_KINDS, QA_STREAM
from mivl.export.reference import Reference, preprocess_config
from mivl.export.train.data import IGNORE, encode_record
from mivl.export.train.focus import FocusConfig, decode as focus_decode
from mivl.export.train.synthetic import SyntheticViews
from mivl.export.train.trainer import write_checkpoint

STATE = "probe_state.pt"


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


class Probe:
    def __init__(self, a):
        self.a = a
        self.ck = load_checkpoint(a.src, torch.float32)
        self.model = self.ck.model.train()
        self.tok = load_tokenizer(self.ck.path)
        self.tpl, self.pre = get_template(self.ck.config.template), preprocess_config(self.ck)
        self.img_id = self.tok.token_to_id(IMG_CONTEXT)
        frozen = [self.model.vision_model]
        if a.projector_from:      # another checkpoint's projector, frozen with the ViT
            self.model.mlp1.load_state_dict(load_checkpoint(a.projector_from, torch.float32).model.mlp1.state_dict())
            frozen.append(self.model.mlp1)
        for module in frozen:
            for p in module.parameters():
                p.requires_grad = False
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.trainable, lr=a.lr, weight_decay=0.0)
        warm = 20
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1, (s + 1) / warm) * (
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1, s / a.steps)))))
        self.views = SyntheticViews(tuple(a.kinds.split(",")), QA_STREAM + a.seed, views=a.views, turns=8,
                                    six_share=a.six, max_objects=a.objects, max_tiles=1)   # each view one tile
        self.lm = self.model.language_model
        self.vit_tokens: dict[int, torch.Tensor] = {}     # view -> frozen ViT tokens (bf16)
        self.mass = defaultdict(list)                     # image / words -> attention mass on them
        self.focus = FocusConfig(a.aux, tuple(a.image_layers), tuple(a.word_layers), tuple(a.heads))

    def record(self, i: int):
        """Record i of the views, encoded (its answers' focus included)."""
        v, _, _, rec = self.views.draw(i)
        return v, encode_record(rec, self.tok, self.tpl, self.pre, self.ck.config.tokens_per_tile)

    def forward(self, v, s):
        """(summed answer loss, attention-target loss) of sample s of view v; the targets are the
        trainer's (`mivl.export.train.focus`)."""
        m = self.model
        ids, labels = torch.tensor(s.input_ids), torch.tensor(s.labels)
        if v not in self.vit_tokens:
            with torch.no_grad():
                self.vit_tokens[v] = m.vision_tokens(torch.from_numpy(s.pixels)).to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = self.lm.embed(ids[None]).clone()
            slots = (ids == self.img_id).nonzero().flatten()
            x[0, slots] = m.mlp1(self.vit_tokens[v].float()).reshape(-1, x.shape[-1]).to(x.dtype)
            h, aux, mass = focus_decode(self.lm, x, s.focus, slots, self.focus)
            for k, val in mass.items():
                self.mass[k].append(val)
            keep = labels[1:] != IGNORE
            logits = self.lm.lm_head(h[0, :-1][keep])
        return F.cross_entropy(logits.float(), labels[1:][keep], reduction="sum"), aux

    def run(self, out: Path) -> list[float]:
        a, start, losses = self.a, 0, []
        if (out / STATE).is_file():
            st = torch.load(out / STATE, weights_only=False)
            self.model.load_state_dict(st["model"]), self.opt.load_state_dict(st["opt"])
            self.sched.load_state_dict(st["sched"])
            start, losses = st["step"], st["losses"]
            print(f"resumed at step {start}", flush=True)
        t0 = time.perf_counter()
        for step in range(start, a.steps):
            self.opt.zero_grad()
            batch = [self.record(step * a.batch + b) for b in range(a.batch)]
            n = sum(s.n_targets for _, s in batch)
            total = 0.0
            for v, s in batch:
                ce, aux = self.forward(v, s)
                ((ce + aux) / n).backward()
                total += ce.item()
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            self.opt.step(), self.sched.step()
            losses.append(total / n)
            if (step + 1) % 10 == 0:
                mass = {k: round(float(np.mean(v[-200:])), 3) for k, v in sorted(self.mass.items())}
                print(f"step {step + 1} loss {np.mean(losses[-10:]):.3f} mass {mass} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
            if (step + 1) % 100 == 0 and step + 1 < a.steps:
                out.mkdir(parents=True, exist_ok=True)
                torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                            "sched": self.sched.state_dict(), "step": step + 1, "losses": losses}, out / STATE)
        mass = {k: round(float(np.mean(v)), 3) for k, v in sorted(self.mass.items())}
        print(f"attention mass on the targets, mean of this run: {mass}", flush=True)
        write_checkpoint(self.model, Path(a.src), out, torch.float32,
                         {"probe": "attention supervision", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                          "losses": losses, "seconds_this_run": time.perf_counter() - t0})
        (out / STATE).unlink(missing_ok=True)
        return losses


def evaluate(checkpoint: Path, n: int, max_objects: int) -> dict:
    """Held-out per-kind accuracy, each view one tile (as the probe trains)."""
    ref = Reference(checkpoint)

    def ask(q, frames):
        if q.camera is None:
            return ref.ask(q.prompt, cameras=frames, max_new_tokens=12, max_tiles=1).text
        return ref.ask(q.prompt, images=[frames[q.camera]], max_new_tokens=12, max_tiles=1).text

    r = score(ask, n, kinds=ONE_WORD_KINDS, max_objects=max_objects, keep=True)
    out = {k: {"n": v["n"], "accuracy": round(v["accuracy"], 3)} for k, v in r["per_kind"].items()}
    asked = [x for x in r["answers"] if x["kind"] == "camera"]
    if asked:   # which half of the camera's cell the answers get right: the row (FRONT/BACK), the column
        hits = [(cell(x["answer"]), cell(x["got"])) for x in asked]
        out["camera"].update(row=round(sum(t[0] == g[0] for t, g in hits) / len(hits), 3),
                             column=round(sum(t[1] == g[1] for t, g in hits) / len(hits), 3))
    return out


def cell(answer: str) -> tuple:
    """(row, column) of the named camera's cell in the canvas; (None, None): not a camera name."""
    name = answer.strip()
    return cell_of(name) if name in CAMERAS else (None, None)


def camera_readable(checkpoint: str, views: int = 60, train_views: int = 40) -> dict:
    """How well a linear classifier reads the camera from the image embeddings (the projector's
    output, what the LLM sees) of six-camera canvases as one tile: fit on `train_views` views of
    dense stream 99, scored on the rest, over all tokens and over the tokens showing an object."""
    from mivl.export.train.dense import dense_sample

    ck = load_checkpoint(checkpoint, torch.float32)
    pre = preprocess_config(ck)
    xs, ys, objs = [], [], []
    with torch.no_grad():
        for i in range(views):
            s = dense_sample(99, i, pre, 1, 1.0)        # the thumbnail last: the canvas as one tile
            xs.append(ck.model.image_features(torch.from_numpy(s.pixels[-1:]))[0])
            ys.append(torch.from_numpy(s.cameras[-1]) - 1)
            objs.append(torch.from_numpy(s.colours[-1]) > 0)
    x, y, obj = torch.cat(xs), torch.cat(ys), torch.cat(objs)
    n = train_views * x.shape[0] // views
    x = (x - x[:n].mean(0)) / (x[:n].std(0) + 1e-6)
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), 1e-2)
    w = torch.where(obj[:n], 20.0, 1.0)          # object tokens are a few percent of the tokens
    for _ in range(400):
        opt.zero_grad()
        (F.cross_entropy(lin(x[:n]), y[:n], reduction="none") * w).mean().backward()
        opt.step()
    with torch.no_grad():
        hit = lin(x[n:]).argmax(-1) == y[n:]
    o = obj[n:]
    return {"all_tokens": round(hit.float().mean().item(), 3), "object_tokens": round(hit[o].float().mean().item(), 3),
            "object_token_count": int(o.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint to start from (its ViT stays frozen)")
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=4, help="conversations (up to 8 questions each) a step")
    p.add_argument("--aux", type=float, default=1.0, help="weight of the attention targets")
    p.add_argument("--image-layers", type=ints, default=[1, 2])
    p.add_argument("--word-layers", type=ints, default=[0])
    p.add_argument("--heads", type=ints, default=[0])
    p.add_argument("--objects", type=int, default=1, help="objects per camera in the training views")
    p.add_argument("--six", type=float, default=0.5, help="share of six-camera views")
    p.add_argument("--views", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0, help="question stream QA_STREAM + seed")
    p.add_argument("--kinds", default=",".join(ONE_WORD_KINDS))
    p.add_argument("--projector-from", help="train with this checkpoint's projector, frozen")
    p.add_argument("--camera-probe", action="store_true",
                   help="only report how linearly the camera can be read from src's image embeddings")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval", type=int, default=0, help="held-out questions to score afterwards")
    p.add_argument("--eval-objects", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.camera_probe:
        print(json.dumps(camera_readable(a.src)))
        return
    if not (a.out / "config.json").is_file() or (a.out / STATE).is_file():
        Probe(a).run(a.out)
    if a.eval:
        print(json.dumps(evaluate(a.out, a.eval, a.eval_objects)))


if __name__ == "__main__":
    main()
