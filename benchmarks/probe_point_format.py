"""Probe: the default model's `where` and grounding answers: their format, whether they read the
image, what the image tokens allow, and a text-only warm-up of the format.

The tokenizer spells a DriveLM point digit by digit (`<c`, `1`, `,CAM`, `_BACK`, `,`, `4`, `8`, `4`,
`,`, ...), so after a digit the LLM must know how many digits of this number it has written: a head
that reads the last few tokens. `tokens` prints, teacher-forced on held-out `where` questions (six
cameras, 13 tiles), each answer token's probability and the model's top three: a model that reads
only the current token gives every digit after a digit about 4/6 / 10 and "," or ">" 1/6 each, so
greedy decoding closes the number after one digit. `positions` measures what a point needs from the
image side: how well the image tokens the LLM reads tell their own place; `ceiling`, what reading
a point off one token can reach at best: the hit rate when the answer is the centre of the token
that holds the object's centre, on the thumbnail (and at a half and a third of its token) and on
the grid tiles, scored by `mivl eval`'s rule (`judge`), and for grounding on one camera the IoU of
boxes whose edges are read off the thumbnail's or the grid tiles' tokens. `reads` compares each
answer token's teacher-forced loss with its own image and with another scene's (equal: the token
ignores the image); `holds`, how well a linear map reads a grounding answer's box off the decoder
state that is about to write it. `digits` counts, teacher-forced, the hundreds, tens and units of a
`where` point the model gets; `offsets`, whether the token holding an object's centre knows where in
it the centre lies (a linear read, and the point hit and tens digit it would give).

`warmup` runs `mivl.export.train.format_warmup` (the recipes' format warm-up stage): the LLM alone
on text-only `where` conversations (no image; a random camera and point as the answer, batch 8,
AdamW, lr 1e-3). It teaches the format and an answer that ignores the image; the stage after it
(with images) is what must teach the lookup. `--kind grounding`: the same for grounding answers
(`<ref>the red bus</ref><box>[[x1, y1, x2, y2]]</box>`, a random box). Writes an ordinary checkpoint.

    .venv/bin/python benchmarks/probe_point_format.py tokens out/default-model-work-six-camera/f6
    .venv/bin/python benchmarks/probe_point_format.py positions out/default-model-work-six-camera/f6
    .venv/bin/python benchmarks/probe_point_format.py positions out/default-model-work-six-camera/f7 --layer 2
    .venv/bin/python benchmarks/probe_point_format.py ceiling --questions 300 --max-objects 3
    .venv/bin/python benchmarks/probe_point_format.py digits out/default-model-work-m3/m3 --questions 200
    .venv/bin/python benchmarks/probe_point_format.py offsets out/default-model-work-m3/m3 --questions 800
    .venv/bin/python benchmarks/probe_point_format.py reads out/gr4 --questions 50
    .venv/bin/python benchmarks/probe_point_format.py holds out/gr4 --questions 600
    .venv/bin/python benchmarks/probe_point_format.py warmup out/default-model-work-six-camera/f6 out/t1 --steps 400
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from mivl.calib.evaluate import EVAL_SEED
from mivl.calib.labels import token_owner
from mivl.calib.questions import KINDS, SCENE_SIZE, box_text, draw_question, judge
from mivl.calib.synthetic import draw_scene
from mivl.edge.multiview import CANVAS_H, CANVAS_W, CELL_H, CELL_W, cell_of
from mivl.edge.parse import DRIVELM, parse_boxes
from mivl.export.reference import Reference
from mivl.export.train.format_warmup import CLASSES, answer_ids, warm_up_format
from mivl.export.train.tile_camera import tile_cameras

from bench_common import positive


def tokens(a) -> None:
    ref = Reference(a.checkpoint)
    for i in range(a.questions):
        q, frames = draw_question(EVAL_SEED, i, ("where",), max_objects=a.max_objects)
        tiles = ref.tiles(cameras=frames)
        ids, ans = ref.prompt_ids(q.prompt, tiles), answer_ids(ref, q.answer)
        lp = ref.model.prompt_logits(torch.tensor(ids + ans), ref.image_embeds(tiles), ref.img_context_id)
        lp = lp.log_softmax(-1)[len(ids) - 1:-1]
        row = [f"{ref.tok.decode([t])!r} {lp[j, t].exp():.2f} [" +
               " ".join(repr(ref.tok.decode([int(k)])) for k in lp[j].topk(3).indices) + "]"
               for j, t in enumerate(ans[:-1])]
        print(q.answer, "\n  " + "\n  ".join(row))


def point_digits(pieces: list[str]) -> dict[tuple[str, str], int]:
    """{(x or y, units / tens / hundreds): index} of the one-digit pieces of a DriveLM point's two
    numbers, given its answer's token pieces (the point's numbers are its last two runs of digits:
    `<c1` is a run too)."""
    runs, run = [], []
    for j, piece in enumerate(list(pieces) + [""]):
        if piece.isdigit() and len(piece) == 1:
            run.append(j)
        elif run:
            runs, run = runs + [run], []
    return {(name, place): j for name, run in zip(("x", "y"), runs[-2:])
            for place, j in zip(("units", "tens", "hundreds"), reversed(run))}


@torch.no_grad()
def digits(a) -> None:
    """Which digits of a `where` point the model gets: teacher-forced on `--questions` held-out
    questions, the share of the x and y numbers' hundreds, tens and units digits whose most likely
    token is the truth's (each given the truth before it), and the tens within one; 0.10 is
    chance. The hundreds (100 of 0..1000) are what the thumbnail's tokens (62.5) tell directly; a
    point inside an object 16-30 units wide needs the tens too."""
    ref = Reference(a.checkpoint)
    right = {(n, p): [] for n in ("x", "y") for p in ("hundreds", "tens", "units")}
    near = {"x": [], "y": []}
    for i in range(a.questions):
        q, frames = draw_question(EVAL_SEED, i, ("where",), max_objects=a.max_objects)
        tiles = ref.tiles(cameras=frames)
        ids, ans = ref.prompt_ids(q.prompt, tiles), answer_ids(ref, q.answer)
        lp = ref.model.prompt_logits(torch.tensor(ids + ans), ref.image_embeds(tiles), ref.img_context_id)
        best = lp[len(ids) - 1:-1].argmax(-1).tolist()
        text = [ref.tok.decode([t]) for t in ans]
        for (name, place), j in point_digits(text).items():
            right[name, place].append(best[j] == ans[j])
            if place == "tens":
                got = ref.tok.decode([best[j]])
                near[name].append(got.isdigit() and len(got) == 1 and abs(int(got) - int(text[j])) <= 1)
    print(f"where, {a.questions} questions, up to {a.max_objects} object(s) a camera: teacher-forced digits right")
    for (name, place), v in right.items():
        print(f"  {name} {place:<9} {np.mean(v):.3f} ({len(v)})")
    for name, v in near.items():
        print(f"  {name} tens within one {np.mean(v):.3f}")


def reads(a) -> None:
    """Does the answer read the image? Teacher-forced on held-out questions of `--kind`: each answer
    token's mean loss with the question's own image and with the image of the next question (same
    kind, another scene). Equal losses: that token is written from the prompt's words and the
    answer's priors alone."""
    ref = Reference(a.checkpoint)
    drawn = [draw_question(EVAL_SEED, i, (a.kind,), max_objects=a.max_objects) for i in range(a.questions + 1)]
    tiles = [ref.tiles(cameras=f) if q.camera is None else ref.tiles(images=[f[q.camera]]) for q, f in drawn]
    own, other, digits, names = [], [], [], None
    for i, (q, _) in enumerate(drawn[:-1]):
        ids, ans = ref.prompt_ids(q.prompt, tiles[i]), answer_ids(ref, q.answer)
        losses = []
        for t in (tiles[i], tiles[i + 1]):
            with torch.no_grad():
                lp = ref.model.prompt_logits(torch.tensor(ids + ans), ref.image_embeds(t), ref.img_context_id)
            lp = lp.float().log_softmax(-1)[len(ids) - 1:-1]
            losses.append([-lp[j, tok].item() for j, tok in enumerate(ans)])
        own.append(losses[0])
        other.append(losses[1])
        names = names or [ref.tok.decode([t]) for t in ans]
        digits.append([ref.tok.decode([t]).isdigit() for t in ans])
    pick = lambda rows: np.array([v for r, d in zip(rows, digits) for v, k in zip(r, d) if k])
    digit_own, digit_other = pick(own), pick(other)
    width = min(map(len, own))       # answers of one kind share their layout up to the first number's length
    own, other = np.array([o[:width] for o in own]), np.array([o[:width] for o in other])
    print(f"{a.kind}, {a.questions} questions: answer token (of the first), loss with its image / another")
    for j in range(width):
        print(f"  {j:>2} {names[j]!r:<12} {own[:, j].mean():.3f} / {other[:, j].mean():.3f}")
    print(f"  all {own.mean():.3f} / {other.mean():.3f}")
    if len(digit_own):
        print(f"  digits (every answer's, {len(digit_own)}) {digit_own.mean():.3f} / {digit_other.mean():.3f}; "
              f"uniform {np.log(10):.3f}")


@torch.no_grad()
def holds(a) -> None:
    """What the answer holds of the box before it writes it: ridge maps from the decoder state at
    the position that predicts the box's first digit (after `[[`), at each layer's input, to the true
    box's four numbers (0..1000), fitted on 3/4 of `--questions` held-out grounding questions and
    scored (mean absolute error, R^2) on the rest; and, for comparison, from the mean of the
    subject's thumbnail tokens (what a head attending to them alone reads). High R^2 and digits at
    chance (`reads`): the answer knows where the object is but cannot spell it; low R^2 at the
    answer but high on the tokens: the position never reaches the answer."""
    ref = Reference(a.checkpoint)
    states, boxes, subject = {}, [], []
    for i in range(a.questions):
        q, frames = draw_question(EVAL_SEED, i, ("grounding",), max_objects=a.max_objects)
        tiles = ref.tiles(images=[frames[q.camera]])
        head = q.answer[:q.answer.index("[[") + 2]
        ids = torch.tensor(ref.prompt_ids(q.prompt, tiles) + list(ref.tok.encode(head)))
        x = ref.model.embed(ids, ref.image_embeds(tiles), ref.img_context_id)
        seen = {}
        last = ref.model.language_model(x, hidden_only=True, on_layer=lambda k, _l, h, _c, _s: seen.setdefault(k, h))
        seen[len(seen)] = last            # the last layer's output (normed), what the LM head reads
        for k, h in seen.items():
            states.setdefault(k, []).append(h[0, -1].float().numpy())
        slots = (ids == ref.img_context_id).nonzero().flatten()
        thumb = seen[0][0, slots[-SIDE * SIDE:]].float()    # the LLM's inputs on the thumbnail (the last tile)
        owner = token_owner([q.subject.box], frames[q.camera].shape[1::-1], SIDE).reshape(-1)
        subject.append(thumb[torch.from_numpy(owner == 0)].mean(0).numpy())
        boxes.append(parse_boxes(q.answer)[0].box)
    y = np.array(boxes, float)
    rows = [(f"layer {k}'s input" if k < len(states) - 1 else "the output", states[k]) for k in sorted(states)]
    for name, x in rows + [("the subject's thumbnail tokens (mean of the LLM's inputs)", subject)]:
        pred, n = ridge(np.array(x), y)
        err = pred - y[n:]
        r2 = 1 - (err ** 2).mean(0) / y[n:].var(0)
        print(f"{name:<16} mean abs error x1 y1 x2 y2 {np.abs(err).mean(0).round(0)}, R^2 {r2.round(2)}")
    print(f"(guessing the mean box: mean abs error {np.abs(y[n:] - y[:n].mean(0)).mean(0).round(0)})")


def image_states(ref: Reference, tiles, layer: int) -> torch.Tensor:
    """(tiles, 256, D): the image tokens as LLM layer `layer` reads them (0: the LLM's inputs, the
    projector's output; k: after k decoder layers). Causal: what follows the image cannot change them."""
    if layer == 0:
        return ref.image_embeds(tiles).float().reshape(-1, 256, ref.model.language_model.config.hidden_size)
    ids = torch.tensor(ref.prompt_ids("Which camera shows the red car?", tiles))
    x = ref.model.embed(ids, ref.image_embeds(tiles), ref.img_context_id)
    seen = {}
    ref.model.language_model(x, hidden_only=True, on_layer=lambda i, _l, h, _c, _s: seen.setdefault(i, h))
    slots = (ids == ref.img_context_id).nonzero().flatten()
    return seen[layer][0, slots].float().reshape(-1, 256, x.shape[-1])


def ridge(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """A ridge map fitted on the first 3/4 of the rows of (x, y); its predictions on the rest and n."""
    x = np.c_[x, np.ones(len(x))]
    n = len(x) * 3 // 4
    w = np.linalg.solve(x[:n].T @ x[:n] + 1e-2 * np.eye(x.shape[1]), x[:n].T @ y[:n])
    return x[n:] @ w, n


@torch.no_grad()
def positions(a) -> None:
    """How well a linear map reads each image token's own place (row, column in its tile's 16x16
    grid; the tile's index among the grid tiles, and the camera a grid tile shows) from the image
    tokens as the LLM sees them at `--layer` (0: its inputs; k: after k decoder layers, which can
    read a token's place in the sequence): ridge regression fitted on 3/4 of the tokens of
    `--scenes` six-camera scenes, mean absolute error and R^2 (the camera: the share of tokens whose
    largest one-hot output is theirs) on the rest, the thumbnail and the grid tiles apart."""
    ref = Reference(a.checkpoint)
    if not 0 <= a.layer < len(ref.model.language_model.model.layers):
        raise SystemExit(f"--layer must be 0..{len(ref.model.language_model.model.layers) - 1}")
    thumb, grid, cams = ([], []), ([], []), []
    rc = np.array([(i // 16, i % 16) for i in range(256)], float)
    for s in range(a.scenes):
        scene = draw_scene(1000 + s, *SCENE_SIZE, max_objects=3)
        tiles = ref.tiles(cameras=dict(scene.cameras))
        e = image_states(ref, tiles, a.layer).numpy()
        thumb[0].append(e[-1])
        thumb[1].append(rc)
        for t, camera in enumerate(tile_cameras(tiles.grids[0])[:-1]):
            grid[0].append(e[t])
            grid[1].append(np.c_[rc, np.full(256, t)])
            cams.append(np.full(256, camera))
    for name, (xs, ys) in (("thumbnail", thumb), ("grid tiles", grid)):
        y = np.concatenate(ys)
        pred, n = ridge(np.concatenate(xs), y)
        err = pred - y[n:]
        for j, what in enumerate(("row", "column", "tile index")[:y.shape[1]]):
            r2 = 1 - (err[:, j] ** 2).mean() / y[n:, j].var()
            unit = "tiles" if what == "tile index" else "tokens"
            print(f"{name:<10} {what:<10} mean abs error {np.abs(err[:, j]).mean():.2f} {unit}, R^2 {r2:.3f}")
    cam = np.concatenate(cams)
    pred, n = ridge(np.concatenate(grid[0]), np.eye(6)[cam])
    print(f"grid tiles camera     right on {(pred.argmax(1) == cam[n:]).mean():.3f} of the tokens (chance 1/6)")


TILE, SIDE = 448, 16      # a tile's pixels, and its tokens along a side (after pixel unshuffle)


@torch.no_grad()
def offsets(a) -> None:
    """Whether the image tokens know where inside them the object lies: on `--questions` held-out
    `where` questions (six cameras), ridge maps from the LLM's inputs at the token holding the
    object's centre (alone, and with its four neighbours) to that centre's offset inside the token
    (0..1 across and down), on the thumbnail and on the grid tile that holds it; fitted on 3/4 of
    the questions, scored on the rest: mean absolute error in tokens (0.25: guessing the middle),
    R^2, and the point hit (`judge`) of the token's corner plus the predicted offset, beside that of
    the token's centre (what the `ceiling` table's rows assume)."""
    ref = Reference(a.checkpoint)
    feats = {"thumbnail": ([], []), "thumbnail with neighbours": ([], []), "grid tile": ([], []),
             "grid tile with neighbours": ([], [])}
    cells, questions = {"thumbnail": [], "grid tile": []}, []
    ncols, nrows = CANVAS_W // TILE, CANVAS_H // TILE

    def near(tokens, r, c):
        return np.concatenate([tokens[min(max(r + dr, 0), SIDE - 1) * SIDE + min(max(c + dc, 0), SIDE - 1)]
                               for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))])

    for i in range(a.questions):
        q, frames = draw_question(EVAL_SEED, i, ("where",), max_objects=a.max_objects)
        truth = DRIVELM.search(q.answer)
        x, y = int(truth.group("x")) / 1000, int(truth.group("y")) / 1000
        e = image_states(ref, ref.tiles(cameras=dict(frames)), 0).numpy()
        # the thumbnail: 16 x 16 tokens over the canvas; a grid tile: 16 x 16 over 1/ncols x 1/nrows of it
        tx, ty = x * SIDE, y * SIDE
        gx, gy = x * ncols, y * nrows
        tile = min(int(gy), nrows - 1) * ncols + min(int(gx), ncols - 1)
        for name, tokens, u, v in (("thumbnail", e[-1], tx, ty),
                                   ("grid tile", e[tile], (gx % 1) * SIDE, (gy % 1) * SIDE)):
            c, r = min(int(u), SIDE - 1), min(int(v), SIDE - 1)
            off = (u - c, v - r)
            feats[name][0].append(tokens[r * SIDE + c])
            feats[f"{name} with neighbours"][0].append(near(tokens, r, c))
            for key in (name, f"{name} with neighbours"):
                feats[key][1].append(off)
            cells[name].append((c, r, tile))
        questions.append((q, next(iter(frames.values())).shape[1::-1], truth.group("cam"),
                          (int(truth.group("x")), int(truth.group("y")))))

    def point(name, c, r, tile, fx, fy):
        if name.startswith("thumbnail"):
            return (c + fx) / SIDE * 1000, (r + fy) / SIDE * 1000
        return ((tile % ncols) + (c + fx) / SIDE) / ncols * 1000, ((tile // ncols) + (r + fy) / SIDE) / nrows * 1000

    def cells_of(name):
        return cells["thumbnail" if name.startswith("thumbnail") else "grid tile"]

    def hits(name, offs, n):
        got = 0
        for (q, size, camera, _), (c, r, tile), (fx, fy) in zip(questions[n:], cells_of(name)[n:], offs):
            px, py = point(name, c, r, tile, fx, fy)
            got += judge(q, f"<c1,{camera},{round(px)},{round(py)}>", size)["hit"]
        return got / (len(questions) - n)

    def tens(name, offs, n):
        """Share of the test questions whose x / y tens digit the point (token + offset) gets, and within one."""
        got = []
        for (_, _, _, xy), (c, r, tile), (fx, fy) in zip(questions[n:], cells_of(name)[n:], offs):
            for v, truth in zip(point(name, c, r, tile, fx, fy), xy):
                d = abs(int(round(v)) // 10 % 10 - truth // 10 % 10)
                got.append((d == 0, min(d, 10 - d) <= 1))
        got = np.array(got).reshape(-1, 2, 2)
        return got[:, 0, 0].mean(), got[:, 1, 0].mean(), got[:, 0, 1].mean(), got[:, 1, 1].mean()

    for name, (xs, ys) in feats.items():
        y = np.array(ys)
        pred, n = ridge(np.array(xs), y)
        err = np.abs(pred - y[n:])
        r2 = 1 - ((pred - y[n:]) ** 2).mean(0) / y[n:].var(0)
        offs = np.clip(pred, 0, 1)
        print(f"{name:<26} offset across / down: mean abs error {err[:, 0].mean():.3f} / {err[:, 1].mean():.3f} "
              f"tokens, R^2 {r2[0]:.2f} / {r2[1]:.2f}; point hit {hits(name, offs, n):.3f} "
              f"(the token's centre {hits(name, np.full_like(pred, 0.5), n):.3f}, the true offset "
              f"{hits(name, y[n:], n):.3f}); tens digit x / y right %.3f / %.3f, within one %.3f / %.3f"
              % tens(name, offs, n))


def ceiling(a) -> None:
    """Point hit of answers read off one token (a token grid of nx x ny over the 0..1000 canvas:
    the answer is the centre of the cell holding the object's centre), and of the centre of the
    object's camera; the same held-out questions and rule as `mivl eval`."""
    grids = {"thumbnail token": (SIDE, SIDE), "half a thumbnail token": (2 * SIDE, 2 * SIDE),
             "a third of a thumbnail token": (3 * SIDE, 3 * SIDE),
             "grid-tile token": (SIDE * CANVAS_W // TILE, SIDE * CANVAS_H // TILE)}
    hits = dict.fromkeys(list(grids) + ["camera centre"], 0)
    for i in range(a.questions):
        q, frames = draw_question(EVAL_SEED, i, ("where",), max_objects=a.max_objects)
        size = next(iter(frames.values())).shape[1::-1]
        truth = DRIVELM.search(q.answer)
        camera, x, y = truth.group("cam"), int(truth.group("x")), int(truth.group("y"))
        row, col = cell_of(camera)
        points = {"camera centre": ((col + 0.5) * CELL_W / CANVAS_W * 1000, (row + 0.5) * CELL_H / CANVAS_H * 1000)}
        for name, (nx, ny) in grids.items():
            points[name] = ((min(int(x * nx / 1000), nx - 1) + 0.5) * 1000 / nx,
                            (min(int(y * ny / 1000), ny - 1) + 0.5) * 1000 / ny)
        for name, (px, py) in points.items():
            hits[name] += judge(q, f"<c1,{camera},{round(px)},{round(py)}>", size)["hit"]
    for name, n in hits.items():
        print(f"{name:<30} point hit {n / a.questions:.3f}")
    grounding_ceiling(a)


def snap_box(box, nx: int, ny: int, cover: bool = False) -> list[int]:
    """A 0..1000 box with its edges on a grid of nx x ny tokens over the image: each edge to the
    nearest token edge, or (`cover`) outwards to the edges of the tokens the box touches."""
    lo, hi = (np.floor, np.ceil) if cover else (np.round, np.round)
    sx, sy = 1000 / nx, 1000 / ny
    x1, y1, x2, y2 = box
    return [round(float(lo(x1 / sx)) * sx), round(float(lo(y1 / sy)) * sy),
            round(float(hi(x2 / sx)) * sx), round(float(hi(y2 / sy)) * sy)]


def grounding_ceiling(a) -> None:
    """Grounding (one camera, 2x1 tiles + thumbnail at the scenes' 800x450): the share of held-out
    questions whose box, read off token edges, still has IoU >= 0.5 (`judge`): each edge of the
    true box moved to the nearest token edge ("nearest"), or outwards to the tokens the object
    touches ("cover"), on the thumbnail (16 x 16 tokens over the image) and on the grid tiles
    (32 x 16)."""
    grids = {"thumbnail token": (SIDE, SIDE), "grid-tile token": (2 * SIDE, SIDE)}
    rules = {"nearest": False, "cover": True}
    hits = {(g, r): 0 for g in grids for r in rules}
    sizes = []
    for i in range(a.questions):
        q, frames = draw_question(EVAL_SEED, i, ("grounding",), max_objects=a.max_objects)
        x1, y1, x2, y2 = parse_boxes(q.answer)[0].box
        sizes.append((x2 - x1, y2 - y1))
        for (g, (nx, ny)), (r, cover) in ((gi, ri) for gi in grids.items() for ri in rules.items()):
            answer = q.answer[:q.answer.index("<box>")] + box_text(snap_box((x1, y1, x2, y2), nx, ny, cover))
            hits[g, r] += judge(q, answer)["correct"]
    for (g, r), n in hits.items():
        print(f"grounding, {g}, {r:<8} IoU >= 0.5 {n / a.questions:.3f}")
    w, h = np.median(np.array(sizes), axis=0)
    print(f"grounding boxes: median {w:.0f} x {h:.0f} of 0..1000")


def warmup(a) -> None:
    warm_up_format(Path(a.src), Path(a.out), a.kind, a.steps, a.lr, a.batch, a.seed, a.classes.split(","))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokens", help="teacher-forced token probabilities of held-out where answers")
    t.add_argument("checkpoint")
    t.add_argument("--questions", type=int, default=3)
    t.add_argument("--max-objects", type=int, default=1)
    d = sub.add_parser("digits", help="which digits of held-out where points the model gets (teacher-forced)")
    d.add_argument("checkpoint")
    d.add_argument("--questions", type=positive(), default=200)
    d.add_argument("--max-objects", type=int, default=3)
    r = sub.add_parser("reads", help="each answer token's loss with its own image and with another")
    r.add_argument("checkpoint")
    r.add_argument("--kind", default="grounding", choices=KINDS)
    r.add_argument("--questions", type=positive(), default=50)
    r.add_argument("--max-objects", type=int, default=3)
    h = sub.add_parser("holds", help="how well the answer's state before the box predicts the box (linear probe)")
    h.add_argument("checkpoint")
    h.add_argument("--questions", type=positive(), default=200, help="at least 8: a quarter of them is scored")
    h.add_argument("--max-objects", type=int, default=3)
    s = sub.add_parser("positions", help="how well the image tokens tell their own place (linear probe)")
    s.add_argument("checkpoint")
    s.add_argument("--scenes", type=int, default=12)
    s.add_argument("--layer", type=int, default=0, help="0: the LLM's inputs; k: after k decoder layers")
    o = sub.add_parser("offsets", help="whether the token holding an object's centre knows where in it the centre lies")
    o.add_argument("checkpoint")
    o.add_argument("--questions", type=positive(), default=800, help="at least 8: a quarter of them is scored")
    o.add_argument("--max-objects", type=int, default=3)
    c = sub.add_parser("ceiling", help="point hit (where) and IoU >= 0.5 (grounding) of answers read off token edges, at best")
    c.add_argument("--questions", type=int, default=300)
    c.add_argument("--max-objects", type=int, default=3)
    w = sub.add_parser("warmup", help="text-only answer-format warm-up of the LLM (where or grounding)")
    w.add_argument("src")
    w.add_argument("out")
    w.add_argument("--steps", type=int, default=400)
    w.add_argument("--lr", type=float, default=1e-3)
    w.add_argument("--batch", type=int, default=8)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--classes", default=",".join(CLASSES), help="the classes questions name (comma list)")
    w.add_argument("--kind", choices=("where", "grounding"), default="where", help="the answer format taught")
    a = p.parse_args()
    if a.cmd in ("holds", "offsets") and a.questions < 8:
        p.error(f"{a.cmd}: --questions must be at least 8")
    torch.set_num_threads(2)
    {"tokens": tokens, "digits": digits, "reads": reads, "holds": holds, "positions": positions, "offsets": offsets,
     "ceiling": ceiling, "warmup": warmup}[a.cmd](a)


if __name__ == "__main__":
    main()
