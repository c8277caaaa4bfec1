"""Dense vision pretraining on synthetic scenes: every vision token learns what it sees.

A warm-up stage before conversation training (like the paper's projector warm-up, but with a
denser signal): the vision encoder and projector are trained, with two temporary linear heads on
the projector's output tokens, to predict the colour and the class of the object under each token
(`mivl.calib.labels`; 0 = background). Question answering then starts from tokens that already
say "a red bus is here", and the language model only has to learn to look for them. The heads
are dropped afterwards; the checkpoint keeps the original layout.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...calib.labels import DIGITS, IGNORE, NUMBERS, canvas_boxes, tile_targets
from ...calib.questions import SCENE_SIZE, jpeg_roundtrip
from ...calib.synthetic import CLASSES, COLOURS, draw_scene
from ...edge.multiview import CAMERAS, stitch_cameras
from ...edge.preprocess import grid_for_size, preprocess_images


@dataclass
class DenseSample:
    pixels: np.ndarray      # (k, 3, 448, 448): some tiles of one image
    colours: np.ndarray     # (k, 256) int64
    classes: np.ndarray     # (k, 256)
    cameras: np.ndarray     # (k, 256)
    digits: np.ndarray      # (k, 256, 18)
    thumbnail: bool = True  # the last tile is the image's thumbnail


def scene_view(seed: int, i: int, max_objects: int, six_share: float, size: tuple[int, int] = SCENE_SIZE):
    """View i of stream `seed`: (image, objects, their boxes in the image, six cameras?) of a
    synthetic scene: the stitched six-camera canvas, or one camera frame (JPEG round-tripped)."""
    rng = np.random.default_rng([seed, i, 7])
    scene = draw_scene(int(rng.integers(2 ** 62)), *size, max_objects=max_objects)
    quality = int(rng.integers(75, 96))
    if rng.random() < six_share:
        frames = {k: jpeg_roundtrip(scene.cameras[k], quality) for k in CAMERAS}
        return stitch_cameras(frames), scene.objects, canvas_boxes(scene.objects, *size), True
    with_objects = sorted({o.camera for o in scene.objects}) or list(CAMERAS)
    cam = with_objects[int(rng.integers(len(with_objects)))]
    objs = scene.in_camera(cam)
    return jpeg_roundtrip(scene.cameras[cam], quality), objs, [o.box for o in objs], False


def dense_sample(seed: int, i: int, pre, max_objects: int, six_share: float, grid_tiles: int = 1,
                 size: tuple[int, int] = SCENE_SIZE, grid_cameras: bool = False) -> DenseSample:
    """Sample i of stream `seed`: the thumbnail (when the config has one) and `grid_tiles` random
    grid tiles of a view (`scene_view`), tiled as the model is fed it, with their token targets
    (`grid_cameras`: `tile_targets`')."""
    image, objects, boxes, six = scene_view(seed, i, max_objects, six_share, size)
    h, w = image.shape[:2]
    grid = grid_for_size(w, h, pre)
    tiles = preprocess_images([image], pre)
    t = tile_targets(objects, boxes, w, h, grid, six, pre.image_size, grid_cameras)
    rng = np.random.default_rng([seed, i, 8])
    pick = sorted(rng.choice(grid.n_grid, min(grid_tiles, grid.n_grid), replace=False).tolist())
    if grid.thumbnail:
        pick.append(grid.n_grid)
    return DenseSample(tiles.pixels[pick], t.colours[pick], t.classes[pick], t.cameras[pick], t.digits[pick],
                       grid.thumbnail)


class DenseHeads(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.colour = nn.Linear(dim, len(COLOURS) + 1)
        self.cls = nn.Linear(dim, len(CLASSES) + 1)
        self.camera = nn.Linear(dim, len(CAMERAS) + 1)
        self.digits = nn.Linear(dim, len(NUMBERS) * DIGITS * 10)


def balanced(classes, w, n_classes: int):
    """Token weights `w` spread anew over the object tokens (class > 0) so that each class present
    gets the same total, and all of them together the total they had; background keeps its own."""
    count = torch.bincount(classes, minlength=n_classes).float()
    on = classes > 0
    share = w[on].sum() / max(1, int((count[1:] > 0).sum()))
    return torch.where(on, share / count[classes].clamp(min=1), w)


def dense_loss(heads: DenseHeads, feats, colours, classes, object_weight: float, cameras=None, digits=None,
               camera_weight: float = 1.0, digit_weight: float = 1.0, class_weight: float = 1.0,
               balance: bool = False, camera_objects: bool = False):
    """Cross-entropy per token, object tokens weighted (they are a few percent of the tokens), the
    class term times `class_weight`; plus, when given, the camera under each token and the digits
    of its object's box and centre. `balance`: the class term weighs each class present alike
    (a bus covers ten times the tokens of a pedestrian; unbalanced, the head learns "bus").
    `camera_objects`: the camera term weighs object tokens as the others do (unweighted, the
    background's camera is learned and the object tokens', which a "which camera" lookup reads,
    gives way to colour and class)."""
    feats, colours, classes = feats.reshape(-1, feats.shape[-1]), colours.reshape(-1), classes.reshape(-1)
    w = torch.where(colours > 0, object_weight, 1.0)
    lc = F.cross_entropy(heads.colour(feats), colours, reduction="none")
    lk = F.cross_entropy(heads.cls(feats), classes, reduction="none")
    wk = balanced(classes, w, heads.cls.out_features) if balance else w
    loss = ((lc * w).sum() + class_weight * (lk * wk).sum()) / w.sum()
    if cameras is not None and camera_weight:
        lm = F.cross_entropy(heads.camera(feats), cameras.reshape(-1), reduction="none")
        loss = loss + camera_weight * ((lm * w).sum() / w.sum() if camera_objects else lm.mean())
    if digits is not None and digit_weight:
        d = digits.reshape(-1)
        if (d != IGNORE).any():
            loss = loss + digit_weight * F.cross_entropy(heads.digits(feats).reshape(-1, 10), d, ignore_index=IGNORE)
    return loss


@torch.no_grad()
def dense_accuracy(model, heads, samples) -> dict:
    """Accuracy of the heads: colour and class on object tokens, the class per object class
    ("class car": of the car tokens, the share called car), the class on thumbnail and on grid
    tokens ("class on thumbnail", "class on grid"), background, the camera on
    six-camera thumbnail tokens (all, and "camera objects": those showing an object) and, where the
    samples have grid-tile camera targets, on those ("camera grid"), and each digit place of the
    object numbers on thumbnail tokens."""
    hit_c = hit_k = n_obj = hit_bg = n_bg = hit_cam = n_cam = hit_cam_obj = n_cam_obj = hit_grid = n_grid = 0
    hit_d, n_d = np.zeros(DIGITS), 0
    hit_per, n_per = np.zeros(len(CLASSES) + 1), np.zeros(len(CLASSES) + 1)
    hit_tile, n_tile = {"thumbnail": 0, "grid": 0}, {"thumbnail": 0, "grid": 0}
    for s in samples:
        f = model.image_features(torch.from_numpy(s.pixels)).reshape(-1, heads.colour.in_features)
        pc, pk = heads.colour(f).argmax(-1).numpy(), heads.cls(f).argmax(-1).numpy()
        colours, classes = s.colours.reshape(-1), s.classes.reshape(-1)
        obj = colours > 0
        hit_c += int((pc[obj] == colours[obj]).sum())
        hit_k += int((pk[obj] == classes[obj]).sum())
        n_obj += int(obj.sum())
        np.add.at(n_per, classes[obj], 1)
        np.add.at(hit_per, classes[obj], pk[obj] == classes[obj])
        thumb = np.arange(classes.size) >= classes.size - s.classes.shape[-1] * s.thumbnail   # the last tile's tokens
        for where, on in (("thumbnail", thumb), ("grid", ~thumb)):
            hit_tile[where] += int((pk[obj & on] == classes[obj & on]).sum())
            n_tile[where] += int((obj & on).sum())
        hit_bg += int(((pc == 0) & (pk == 0))[~obj].sum())
        n_bg += int((~obj).sum())
        cams = s.cameras.reshape(-1)
        grid = (cams > 0) & ~thumb
        six = (cams > 0) & thumb
        cam_ok = heads.camera(f).argmax(-1).numpy() == cams
        hit_grid += int(cam_ok[grid].sum())
        n_grid += int(grid.sum())
        hit_cam += int(cam_ok[six].sum())
        n_cam += int(six.sum())
        hit_cam_obj += int(cam_ok[six & obj].sum())
        n_cam_obj += int((six & obj).sum())
        d = s.digits.reshape(-1, len(NUMBERS), DIGITS)
        pd = heads.digits(f).reshape(-1, len(NUMBERS), DIGITS, 10).argmax(-1).numpy()
        ok = d[:, 0, 0] != IGNORE
        hit_d += (pd[ok] == d[ok]).sum(axis=(0, 1))
        n_d += int(ok.sum()) * len(NUMBERS)
    out = {"colour": hit_c / max(1, n_obj), "class": hit_k / max(1, n_obj), "background": hit_bg / max(1, n_bg)}
    out.update({f"class {c}": hit_per[k + 1] / n_per[k + 1] for k, c in enumerate(CLASSES) if n_per[k + 1]})
    out.update({f"class on {t}": hit_tile[t] / n_tile[t] for t in n_tile if n_tile[t]})
    if n_cam:
        out["camera"] = hit_cam / n_cam
    if n_cam_obj:
        out["camera objects"] = hit_cam_obj / n_cam_obj
    if n_grid:
        out["camera grid"] = hit_grid / n_grid
    if n_d:
        out.update({f"digit{p}": float(hit_d[p]) / n_d for p in range(DIGITS)})
    return out


def dense_batch(seed: int, step: int, batch_size: int, pre, max_objects: int, six_share: float,
                grid_tiles: int = 1, grid_cameras: bool = False) -> dict[str, torch.Tensor]:
    """The samples of step `step` of stream `seed` (`dense_sample`), concatenated."""
    batch = [dense_sample(seed, step * batch_size + k, pre, max_objects, six_share, grid_tiles,
                          grid_cameras=grid_cameras)
             for k in range(batch_size)]
    return {f: torch.from_numpy(np.concatenate([getattr(b, f) for b in batch]))
            for f in ("pixels", "colours", "classes", "cameras", "digits")}


@dataclass
class DenseObjective:
    """The dense loss of step `step` of stream `seed`: `batch_size` views (`dense_batch`) under
    `heads`, times `weight` (the terms: `dense_loss`). `pretrain_vision` minimises it with its
    heads. With the heads frozen it is the anchor of a stage that trains the vision encoder on
    answers (`train(anchor=)`): answers train colour and class far more often than the camera, and
    without an anchor the object tokens lose their camera (BENCHMARKS.md); with a dense stage's
    heads fixed, the tokens must stay readable as that stage left them while they learn what the
    answers need."""
    heads: DenseHeads
    pre: object
    seed: int
    max_objects: int
    six_share: float
    batch_size: int = 4
    grid_tiles: int = 1
    weight: float = 1.0
    object_weight: float = 10.0
    camera_weight: float = 1.0
    digit_weight: float = 1.0
    class_weight: float = 1.0
    balance: bool = False
    camera_objects: bool = False
    grid_cameras: bool = False       # the camera term on six-camera grid tiles too (`tile_targets`)

    def __call__(self, model, step: int) -> torch.Tensor:
        return self.loss(model, dense_batch(self.seed, step, self.batch_size, self.pre, self.max_objects,
                                            self.six_share, self.grid_tiles, self.grid_cameras))

    def loss(self, model, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of a batch already drawn (`dense_batch`)."""
        feats = model.image_features(b["pixels"])
        return self.weight * dense_loss(self.heads, feats, b["colours"], b["classes"], self.object_weight,
                                        b["cameras"], b["digits"], self.camera_weight, self.digit_weight,
                                        self.class_weight, self.balance, self.camera_objects)


def descend(loss: torch.Tensor, params, opt, sched) -> float:
    """One optimiser step on `loss`: its gradients, clipped to norm 1.0 over `params`, the step and
    the schedule's, the gradients dropped; returns the loss's value."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def pretrain_vision(model, pre, steps: int, batch_size: int = 8, lr: float = 2e-3, seed: int = 0,
                    max_objects: int = 1, six_share: float = 0.3, object_weight: float = 10.0,
                    grid_tiles: int = 1, camera_weight: float = 1.0, digit_weight: float = 1.0,
                    class_weight: float = 1.0, balance: bool = False, camera_objects: bool = False,
                    grid_cameras: bool = False, heads: DenseHeads | None = None, log_every: int = 20,
                    quiet: bool = False) -> tuple[list[float], DenseHeads]:
    """Train model.vision_model and model.mlp1 in place on dense token labels (samples of stream
    `seed`); returns the losses and the temporary heads (for dense_accuracy, or to continue with
    them in a later run; they are not part of the checkpoint)."""
    torch.manual_seed(seed)
    heads = heads if heads is not None else DenseHeads(model.mlp1[-1].out_features)
    params = list(model.vision_model.parameters()) + list(model.mlp1.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps)))))
    objective = DenseObjective(heads, pre, seed, max_objects, six_share, batch_size, grid_tiles, 1.0, object_weight,
                               camera_weight, digit_weight, class_weight, balance, camera_objects, grid_cameras)
    model.train()
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        losses.append(descend(objective(model, step), params, opt, sched))
        if not quiet and ((step + 1) % log_every == 0 or step == 0):
            print(f"dense step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    return losses, heads
