"""The recipes of the embedded default model: a tiny InternVL trained from scratch by the SDK's own
trainer on synthetic driving scenes, so that the demo gets real answers.

    mivl-export make-default                       # the shipped model: six-camera-where (~173 min, resumable)
    mivl-export make-default --recipe six-camera-long   # the model shipped before it (~100 min)
    mivl-export make-default --recipe six-camera   # the six-camera model shipped before that (~184 min)
    mivl-export make-default --recipe one-tile     # the earlier one-tile model (~75 min)

Architecture (both): InternViT at the real 448px / patch-14 geometry (1025 tokens per tile) but 64
wide and 3 layers deep, pixel unshuffle v2 + MLP projector, a 4-layer 128-wide Qwen2 LLM with the
Hermes-2 template and a byte-level BPE tokenizer.

one-tile (shipped before the six-camera model): one tile per image (a camera frame or the stitched
six-camera canvas), no thumbnail, scenes with at most one object per camera. Stages:
  1. dense   the vision encoder and projector learn, per vision token, the colour and class of
             the object under it (`mivl.export.train.dense`; labels from the scene generator);
  2. colour  the LLM (vision frozen) learns to read those tokens on colour questions;
  3. mc      all multiple-choice kinds: colour, class (one camera) and camera (six cameras);
  4. single  colour and class questions about one camera, the vision encoder training again
             (two runs: single, then single2 at a lower learning rate);
  5. class   class questions twice as often as colour ones, two questions per image, everything
             training (class1..class3 at falling learning rates; class1 starts from single2's
             weights rounded to bf16, which is how the model was published before these stages).

six-camera (shipped before six-camera-long): images as InternVL feeds them, dynamic tiling
up to 12 tiles plus the thumbnail (the six-camera canvas 2688x896 is 6x2 + 1 = 13 tiles, a 800x450
frame 2x1 + 1 = 3), scenes with up to three objects per camera, the one-word kinds of `ONE_WORD_KINDS` (camera, camera_colour,
camera_class, absent on six cameras; colour, class, absent_one on one). Its tokenizer keeps each
camera name in two or three pieces (CAM, _BACK, _RIGHT). Stages:
  1. dense, dense2, dense3  per-token targets on every tile (`mivl.calib.labels.tile_targets`):
            colour and class (the class term doubled, each class weighing alike); on the thumbnail
            also the camera under the token and the digits of its object's box and centre in
            0..1000 of the image. A grid tile cannot know where it lies (InternVL gives tiles no
            position), the thumbnail can: its tokens carry what "which camera" and "where" need.
            dense2 continues
            with dense's heads on new samples; dense3 too, the camera term weighing object tokens
            as the colour and class terms do (else the object tokens, which a lookup reads, lose
            their camera to colour and class);
  2. f1, f2  the LLM learns the one-word kinds, the vision side frozen (ViT and projector: QA
            training of the projector wipes the camera out of the object tokens, BENCHMARKS), with
            the attention targets of each answer's focus (`mivl.export.train.focus`: the answer
            position looks at the question's words naming the subject and at the subject's image
            tokens; head 1 at its tokens on the thumbnail alone, the tile that knows the camera),
            several questions per conversation about a pool of views (`SyntheticViews`),
            each view as one tile (the six-camera canvas as its thumbnail) with one object per
            camera; f2 continues on new views and questions; f3 on the model's own tiling (13
            tiles on six cameras, 3 on one), the targets on every tile and the thumbnail;
  3. f4     the model's own tiling on busy scenes: up to three objects per camera, new views;
     f5     the same on new views with more questions about something not there (`absent_share`
            0.4, not 0.25): absence was the weakest kind;
     f6     the same on new views with absence questions 0.3 of all (`reserve_absent`: in f1-f5
            the presence questions of a busy view took most turns, and absence got 8-14%);
  4. f7     the vision encoder trains with the LLM on the answers (f6's data on new views; the
            projector stays frozen), its tokens anchored to dense3's targets under dense3's heads,
            frozen (`train.dense.DenseObjective`, weight 0.1): the answers teach the tokens the class
            and colour they ask about, and the anchor keeps the camera in them.
six-camera-long (shipped before six-camera-where): six-camera's model, kinds and QA stages,
from another start: the ViT's patch
position embeddings start as a 2-D sine-cosine table (`sincos_positions`), not noise, and one dense
stage of 3,000 steps (dense's terms) takes the place of dense..dense3's 1,400; f7 anchors to it.
The class is clearer in its image tokens (0.65 a token against dense3's 0.50) and the camera is on
every thumbnail and object token (BENCHMARKS.md, "What the ViT lacks for class"). f2 (1,000 steps),
f4 (600), f5 and f6 (250 each) and f7 (200) are shorter than six-camera's.
six-camera-where (what mivl/assets/default_model holds): six-camera-long's stages, then `where`
(DriveLM's point on six cameras) taught on top:
  w0      the point's format on text alone, the LLM training (`mivl.export.train.format_warmup`:
          400 steps of 8 text-only questions, half a minute), which the image stages cannot teach;
  w1, w2  `where` alone on busy six-camera views (13 tiles), the LLM training with the attention
          targets on the subject (ViT and projector frozen, features cached), each on new views;
  w3      twice as long again on new views, three in ten of them one camera asked colour, class
          or absence (`where`-only steps cost class on one camera; these keep it);
  m1, m2  the one-word kinds back, `where` among them (twice, then once, in the kinds drawn), at
          falling learning rates: `where`-only steps take the one-word answers with them.
Grounding is not trained by these recipes yet (a probe: BENCHMARKS.md).
QA stages draw from streams apart from the held-out one (`mivl.calib.evaluate.EVAL_SEED`). What the
recipes reach is in BENCHMARKS.md ("Embedded default model").
"""
from __future__ import annotations

import json
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import torch

from ..calib.evaluate import EVAL_SEED, asker, score
from ..calib.questions import MC_KINDS
from ..edge.feature_cache import FeatureCache
from ..edge.errors import InputError
from .tiny import TINY_VISION, make_tiny
from .train.format_warmup import FORMATS, FormatRecords, warm_up_format
from .train.mixing import Mixture
from .train.synthetic import SyntheticTasks, SyntheticViews
from .train.trainer import TrainConfig, train

ASSET = Path(__file__).resolve().parents[1] / "assets" / "default_model"
VISION = dict(TINY_VISION, hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4)
LLM = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
           num_key_value_heads=2)
TRAIN_SEED = 0
QA_STREAM = 5000            # question stream of the QA stages (held-out: calib.evaluate.EVAL_SEED)
HEADS = "dense_heads.pt"    # a dense stage's temporary heads, beside its checkpoint
MADE_FROM = "made_from.json"  # a stage folder's stage definition and the digest of its start's weights

SINGLE_KINDS = ("colour", "class", "absent_one", "grounding")
SIX_KINDS = ("camera", "camera_colour", "camera_class", "absent", "where")
KINDS = SIX_KINDS + SINGLE_KINDS
ONE_WORD_KINDS = tuple(k for k in KINDS if k not in ("where", "grounding"))


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float
    kinds: tuple[str, ...] = ()      # question kinds (QA stages); empty: dense pretraining
    freeze: tuple[str, ...] = ("vit",)
    batch_size: int = 8              # images (dense) or conversations (QA) per step
    turns: int = 1                   # questions per image (QA stages)
    from_bf16: bool = False          # start from the previous stage's weights rounded to bf16 (as published)
    views: int = 0                   # QA: > 0, a fixed pool of views asked again and again (SyntheticViews,
                                     # ViT tokens cached; autocast "auto": bf16 where the CPU has
                                     # it in hardware); 0, a new scene per record
    six_share: float = 0.3           # share of six-camera views
    stream: int = 0                  # dense: sample stream (seed + stream); a later dense stage
                                     # continues with the previous one's heads on new samples.
                                     # QA with views: question stream QA_STREAM + seed + 100 * stream
                                     # (a stage continuing another on new views and questions)
    camera_weight: float = 0.0       # dense: weights of the camera and digit terms of the loss
    digit_weight: float = 0.0
    class_weight: float = 1.0        # dense: weight of the class term against the colour term
    balance: bool = False            # dense: each class present weighs alike in the class term
    camera_objects: bool = False     # dense: the camera term weighs object tokens as the others do
    grid_cameras: bool = False       # dense: the camera term on six-camera grid tiles too (read off the names)
    max_tiles: int = 0               # QA with views: each record's tile budget (1: a view as one tile,
                                     # 256 image tokens); 0: the model's dynamic tiling
    max_objects: int = 0             # objects per camera in its scenes; 0: the recipe's
    focus: float = 0.0               # QA: weight of the attention targets (`mivl.export.train.focus`)
    whole_heads: tuple[int, ...] = ()  # QA: heads whose target is the subject on the thumbnail alone
    tile_camera: float = 0.0         # QA: weight of the tile-camera targets (`mivl.export.train.tile_camera`)
    anchor: float = 0.0              # QA with the ViT training: weight of the dense stage `anchor_stage`'s
    anchor_stage: str = ""           # targets, its heads frozen (`train.dense.DenseObjective`)
    absent_share: float = 0.25       # QA with views: absence questions per presence question asked,
    reserve_absent: bool = False     # as a share; reserve_absent: that share of the turns kept for them
                                     # (`mivl.calib.questions.ask_view`)
    format_warmup: bool = False      # the answer format of its one kind ("where" or "grounding") on text
                                     # alone, the LLM training (`mivl.export.train.format_warmup`; seed + stream)
    format_records: str = ""         # QA with views: text-only examples of this answer format ("where" or
    format_share: float = 0.0        # "grounding": `format_warmup.FormatRecords`) as this share of the records

    def __post_init__(self):
        if self.format_warmup and (len(self.kinds) != 1 or self.kinds[0] not in FORMATS):
            raise InputError(f"stage {self.name}: a format warm-up teaches one kind of {', '.join(FORMATS)}, "
                             f"got kinds {self.kinds}")
        if (self.format_records or self.format_share) and (
                self.format_records not in FORMATS or not 0 < self.format_share < 1 or not self.views):
            raise InputError(f"stage {self.name}: format records need a QA stage with views, a format of "
                             f"{', '.join(FORMATS)} and a share in (0, 1); got format_records="
                             f"{self.format_records!r}, format_share={self.format_share}, views={self.views}")


@dataclass(frozen=True)
class Recipe:
    name: str
    stages: tuple[Stage, ...]
    max_tiles: int                   # max_dynamic_patch of the model
    thumbnail: bool
    max_objects: int                 # objects per camera in its training and evaluation scenes
    kinds: tuple[str, ...]           # what it is trained to answer (and evaluated on)
    cased_tokenizer: bool = False    # camera names in 2-3 tokenizer pieces (CAM, _BACK, _RIGHT), not ~7
    positions: str = "noise"         # the ViT's patch position embeddings at the start: "noise" (std
                                     # 0.02, as every other weight) or "sincos" (`sincos_positions`)

    def stage(self, name: str) -> Stage:
        """The stage called `name` (what a probe varies, with dataclasses.replace)."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"recipe {self.name} has no stage {name!r}; its stages: "
                       f"{', '.join(s.name for s in self.stages)}")


CLASS_HEAVY = ("class", "class", "colour")
ONE_TILE = Recipe("one-tile", (
    Stage("dense", 400, 2e-3),
    Stage("colour", 200, 1e-3, ("colour",)),
    Stage("mc", 400, 1e-3, MC_KINDS),
    Stage("single", 300, 5e-4, ("colour", "class"), freeze=()),
    Stage("single2", 400, 3e-4, ("colour", "class"), freeze=()),
    # From the model published after single2 (bf16): class questions twice as often as colour
    # ones, two questions per image (one image encoding teaches both).
    Stage("class1", 400, 4e-4, CLASS_HEAVY, freeze=(), turns=2, from_bf16=True),
    Stage("class2", 400, 2.5e-4, CLASS_HEAVY, freeze=(), turns=2),
    Stage("class3", 600, 2e-4, CLASS_HEAVY, freeze=(), turns=2)),
    max_tiles=1, thumbnail=False, max_objects=1, kinds=("colour", "class"))

# the dense stages: the class term doubled and balanced over the classes present
SIX_DENSE = dict(batch_size=4, class_weight=2.0, balance=True)
# the QA stages: the LLM alone learns (ViT and projector frozen: each view's image features are
# computed once), with the attention targets of the answers' focus, each view as one tile
SIX_FOCUS = dict(batch_size=4, turns=8, views=2000, six_share=0.5, max_tiles=1, max_objects=1,
                 freeze=("vit", "projector"), focus=1.0, whole_heads=(1,))
SIX_CAMERA = Recipe("six-camera", (
    Stage("dense", 400, 2e-3, six_share=0.6, camera_weight=1.0, digit_weight=1.0, **SIX_DENSE),
    Stage("dense2", 600, 1e-3, six_share=0.7, stream=1, camera_weight=2.0, digit_weight=2.0, **SIX_DENSE),
    Stage("dense3", 400, 1e-3, six_share=0.7, stream=2, camera_weight=2.0, digit_weight=2.0, camera_objects=True,
          **SIX_DENSE),
    Stage("f1", 1000, 1.5e-3, ONE_WORD_KINDS, **SIX_FOCUS),
    Stage("f2", 1500, 1e-3, ONE_WORD_KINDS, **dict(SIX_FOCUS, stream=1)),
    Stage("f3", 400, 1e-3, ONE_WORD_KINDS, **dict(SIX_FOCUS, max_tiles=0, stream=2)),
    Stage("f4", 800, 7e-4, ONE_WORD_KINDS, **dict(SIX_FOCUS, max_tiles=0, max_objects=3, stream=3)),
    Stage("f5", 350, 5e-4, ONE_WORD_KINDS, **dict(SIX_FOCUS, max_tiles=0, max_objects=3, stream=4, absent_share=0.4)),
    Stage("f6", 350, 5e-4, ONE_WORD_KINDS, **dict(SIX_FOCUS, max_tiles=0, max_objects=3, stream=5, absent_share=0.3,
                                                  reserve_absent=True)),
    Stage("f7", 300, 3e-4, ONE_WORD_KINDS, **dict(SIX_FOCUS, max_tiles=0, max_objects=3, stream=6, absent_share=0.3,
                                                  reserve_absent=True, freeze=("projector",), anchor=0.1,
                                                  anchor_stage="dense3"))),
    max_tiles=12, thumbnail=True, max_objects=3, kinds=ONE_WORD_KINDS, cased_tokenizer=True)

# six-camera with the ViT's positions started as a sine-cosine table and one long dense stage (3,000
# steps of dense's terms for dense..dense3's 1,400): the class clearer in the image tokens, the camera
# on the thumbnail's and objects' tokens from the start (BENCHMARKS, "What the ViT lacks for class");
# f2 and f4..f7 shorter to keep the recipe near three hours on two cores
SIX_CAMERA_LONG = Recipe("six-camera-long", (
    replace(SIX_CAMERA.stage("dense"), steps=3000),
    SIX_CAMERA.stage("f1"),
    replace(SIX_CAMERA.stage("f2"), steps=1000),
    SIX_CAMERA.stage("f3"),
    replace(SIX_CAMERA.stage("f4"), steps=600),
    replace(SIX_CAMERA.stage("f5"), steps=250),
    replace(SIX_CAMERA.stage("f6"), steps=250),
    replace(SIX_CAMERA.stage("f7"), steps=200, anchor_stage="dense")),
    max_tiles=12, thumbnail=True, max_objects=3, kinds=ONE_WORD_KINDS, cased_tokenizer=True, positions="sincos")

# six-camera-long's model taught `where` after its last stage: the point's format on text alone (w0),
# then `where` alone on busy six-camera views (w1, w2: the LLM learns, the ViT and projector frozen,
# the attention targets on the subject), w3 longer on new views with one-camera views among them
# (colour, class and absence asked there), then the one-word kinds back with `where` among them (m1
# with `where` twice, m2 once, at falling learning rates; m3 as m2 on new views: the one-word kinds
# gain more than the point loses)
WHERE_FOCUS = dict(SIX_FOCUS, max_tiles=0, max_objects=3)
WHERE_MIX = dict(WHERE_FOCUS, absent_share=0.3, reserve_absent=True)
WHERE_M2 = Stage("m2", 300, 3e-4, ONE_WORD_KINDS + ("where",), **dict(WHERE_MIX, stream=10))
SIX_CAMERA_WHERE = Recipe("six-camera-where", SIX_CAMERA_LONG.stages + (
    Stage("w0", 400, 1e-3, ("where",), freeze=("vit", "projector"), format_warmup=True),
    Stage("w1", 400, 1e-3, ("where",), **dict(WHERE_FOCUS, stream=7, six_share=1.0)),
    Stage("w2", 400, 1e-3, ("where",), **dict(WHERE_FOCUS, stream=8, six_share=1.0)),
    Stage("w3", 800, 1e-3, ("where", "colour", "class", "absent_one"), **dict(WHERE_FOCUS, stream=12, six_share=0.7)),
    Stage("m1", 400, 5e-4, ONE_WORD_KINDS + ("where", "where"), **dict(WHERE_MIX, stream=9)),
    WHERE_M2, replace(WHERE_M2, name="m3", stream=14)),
    max_tiles=12, thumbnail=True, max_objects=3, kinds=ONE_WORD_KINDS + ("where",), cased_tokenizer=True,
    positions="sincos")

RECIPES = {r.name: r for r in (ONE_TILE, SIX_CAMERA, SIX_CAMERA_LONG, SIX_CAMERA_WHERE)}
DEFAULT = SIX_CAMERA_WHERE   # the recipe of the shipped model


@torch.no_grad()
def init_for_training(model, seed: int, positions: str = "noise") -> None:
    """Small normal init (std 0.02), unit norms, layer scale 0.1: a trainable starting point; with
    `positions` "sincos" the ViT's patch positions then start as `sincos_positions`."""
    if positions not in ("noise", "sincos"):
        raise ValueError(f"positions must be 'noise' or 'sincos', not {positions!r}")
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if name.endswith((".ls1", ".ls2")):
            p.fill_(0.1)
        elif name.endswith(("norm1.weight", "norm2.weight", "layernorm.weight", "norm.weight",
                            "mlp1.0.weight")):
            p.fill_(1.0)
        elif p.ndim == 1:
            p.zero_()
        else:
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
    if positions == "sincos":
        emb = model.vision_model.embeddings
        emb.position_embedding[0, 1:] = sincos_positions(emb.grid, emb.position_embedding.shape[-1])


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim): the 2-D sine-cosine table of a square patch grid (as MAE and ViT
    baselines start it): a patch's row then its column, each as sin and cos at dim / 4 frequencies
    1 / 10000^(i / (dim / 4)). Every patch starts distinct and its neighbours near it, which the
    thumbnail's camera and box digits need (noise starts them all alike)."""
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q) / q)
    ys, xs = torch.meshgrid(torch.arange(grid).float(), torch.arange(grid).float(), indexing="ij")

    def encode(p):
        a = p.reshape(-1, 1) * omega
        return torch.cat([a.sin(), a.cos()], 1)

    return torch.cat([encode(ys), encode(xs)], 1)


def make_initial(out: Path, seed: int = 0, recipe: Recipe = DEFAULT) -> Path:
    path = make_tiny("qwen2", out, seed, overwrite=True, vision=VISION, llm_dims=LLM, max_tiles=recipe.max_tiles,
                     init=lambda model, s: init_for_training(model, s, recipe.positions),
                     cased_tokenizer=recipe.cased_tokenizer)
    cfg = json.loads((path / "config.json").read_text())
    cfg["use_thumbnail"] = recipe.thumbnail
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path


def run_dense(src: Path, out: Path, stage: Stage, seed: int, quiet: bool, recipe: Recipe) -> Path:
    from .checkpoint import load_checkpoint
    from .reference import preprocess_config
    from .train.dense import pretrain_vision
    from .train.trainer import whole_run_seconds, write_checkpoint

    ck = load_checkpoint(src)
    t0 = time.perf_counter()
    losses, heads = pretrain_vision(ck.model, preprocess_config(ck), stage.steps, stage.batch_size, stage.lr,
                                    seed + stage.stream, max_objects=recipe.max_objects, six_share=stage.six_share,
                                    heads=saved_heads(src, ck), quiet=quiet, **dense_terms(stage))
    write_checkpoint(ck.model, src, out, torch.float32, {"stage": stage.name, "losses": losses,
                                                         **whole_run_seconds(t0)})
    torch.save(heads.state_dict(), out / HEADS)
    return out


def run_qa(src: Path, out: Path, stage: Stage, seed: int, quiet: bool, recipe: Recipe,
           features: FeatureCache | None = None) -> Path:
    common = dict(mode="partial" if stage.freeze else "full", freeze=stage.freeze, steps=stage.steps,
                  batch_size=stage.batch_size, lr=stage.lr, warmup_ratio=0.05, min_lr_ratio=0.1, weight_decay=0.0,
                  seed=seed, save_dtype="fp32", quiet=quiet, focus_weight=stage.focus,
                  focus_whole_heads=stage.whole_heads, tile_camera_weight=stage.tile_camera)
    if stage.views:
        data = stage_records(stage, seed, recipe)
        cfg = TrainConfig(str(src), str(out), dtype="auto", save_every=25, log_every=5,
                          feature_cache_gb=4.0 if "vit" in stage.freeze else 0.0, **common)
    else:
        data = SyntheticTasks(stage.kinds, QA_STREAM + seed, turns=stage.turns, max_objects=recipe.max_objects)
        cfg = TrainConfig(str(src), str(out), dtype="fp32", save_every=50, log_every=20, **common)
    train(cfg, data, feature_cache=features, anchor=dense_anchor(src, stage, seed, recipe) if stage.anchor else None)
    return out


def qa_stream(stage: Stage, seed: int) -> int:
    """The question and view stream of a QA stage with `views`: QA_STREAM + seed + 100 * its stream
    (a stage continuing another on new views and questions)."""
    return QA_STREAM + seed + 100 * stage.stream


def stage_views(stage: Stage, seed: int, recipe: Recipe) -> SyntheticViews:
    """The views and questions a QA stage with `views` trains on (stream `qa_stream`)."""
    return SyntheticViews(stage.kinds, qa_stream(stage, seed), views=stage.views, turns=stage.turns,
                          six_share=stage.six_share, max_objects=stage.max_objects or recipe.max_objects,
                          max_tiles=stage.max_tiles or None, absent_share=stage.absent_share,
                          reserve_absent=stage.reserve_absent)


def stage_records(stage: Stage, seed: int, recipe: Recipe):
    """What a QA stage with `views` trains on: its views' records (`stage_views`), with text-only
    records of its `format_records` format mixed in at `format_share` (same stream)."""
    views = stage_views(stage, seed, recipe)
    if not stage.format_share:
        return views
    stream = qa_stream(stage, seed)
    return Mixture(FormatRecords(stage.format_records, stream), views, stage.format_share, seed=stream)


def dense_terms(stage: Stage) -> dict:
    """A dense stage's loss terms (`train.dense.dense_loss`)."""
    return dict(camera_weight=stage.camera_weight, digit_weight=stage.digit_weight, class_weight=stage.class_weight,
                balance=stage.balance, camera_objects=stage.camera_objects, grid_cameras=stage.grid_cameras)


def saved_heads(folder: Path, ck):
    """The temporary heads a dense stage left in `folder` (for the model of checkpoint `ck`), or None."""
    from .train.dense import DenseHeads

    if not (folder / HEADS).is_file():
        return None
    heads = DenseHeads(ck.model.mlp1[-1].out_features)
    heads.load_state_dict(torch.load(folder / HEADS, weights_only=True))
    return heads


def dense_anchor(src: Path, stage: Stage, seed: int, recipe: Recipe):
    """The loss of the recipe's dense stage `stage.anchor_stage` under its heads, frozen (in the work
    folder beside `src`), with `stage.anchor`'s weight, on new views of that stage's kind (stream
    1000 + the stage's)."""
    from .checkpoint import load_checkpoint
    from .reference import preprocess_config
    from .train.dense import DenseObjective

    dense = next((s for s in recipe.stages if s.name == stage.anchor_stage and not s.kinds), None)
    ck = load_checkpoint(src)
    heads = saved_heads(src.parent / dense.name, ck) if dense is not None else None
    if heads is None:
        raise InputError(f"stage {stage.name}: anchor_stage {stage.anchor_stage!r} must name a dense stage of "
                         f"recipe {recipe.name} that has run (its heads beside {src})")
    heads.requires_grad_(False)
    return DenseObjective(heads, preprocess_config(ck), seed + 1000 + stage.stream, recipe.max_objects,
                          dense.six_share, dense.batch_size, weight=stage.anchor, **dense_terms(dense))


def train_default(out: str | Path, seed: int = TRAIN_SEED, work: str | Path | None = None,
                  stages=None, quiet: bool = False, recipe: Recipe = DEFAULT) -> Path:
    """Run the recipe's stages (or `stages`) in `work` (a finished stage is not run again, an
    interrupted one resumes from its saved state; a stage folder made by another definition of
    the stage or from other weights is refused: `check_made_from`) and return the last
    checkpoint."""
    work = Path(work) if work else Path("out") / f"default-model-work-{recipe.name}"
    init = work / "init"
    path = init if (init / "config.json").is_file() else make_initial(init, seed, recipe)
    features = FeatureCache(0)     # shared by the QA stages: those that freeze the same ViT reuse its tokens
    for stage in stages or recipe.stages:
        dst = work / stage.name
        if stage.from_bf16:
            start = work / f"{stage.name}-start"
            if not (start / "config.json").is_file():
                publish(path, start, recipe, stages)
            path = start
        record = made_from(stage, path)
        check_made_from(dst, record)
        if not (dst / "config.json").is_file() or (dst / "train_state").exists():
            dst.mkdir(parents=True, exist_ok=True)
            (dst / MADE_FROM).write_text(json.dumps(record, indent=2))
            if stage.format_warmup:     # half a minute: run again whole if interrupted
                warm_up_format(path, dst, stage.kinds[0], stage.steps, stage.lr, stage.batch_size,
                               seed + stage.stream, quiet=quiet)
            elif stage.kinds:
                run_qa(path, dst, stage, seed, quiet, recipe, features)
            else:
                run_dense(path, dst, stage, seed, quiet, recipe)
            (dst / MADE_FROM).write_text(json.dumps(record, indent=2))   # if the run cleared dst
        path = dst
    return path


def made_from(stage: Stage, start: Path) -> dict:
    """What a stage folder is made from: the stage's definition and the SHA-256 of its start's weights."""
    from .checkpoint import sha256_files

    return json.loads(json.dumps({"stage": asdict(stage), "start": str(start),
                                  "start_sha256": sha256_files(sorted(start.glob("*.safetensors")))}))


def check_made_from(dst: Path, now: dict) -> None:
    """A stage folder, finished or interrupted, is taken up only if it was made as `now` (`made_from`:
    this stage from these weights; a Stage field its record lacks, added since, as its default); a
    folder without the record, written before stages kept one, is taken as it is."""
    f = dst / MADE_FROM
    if not f.is_file():
        return
    was = json.loads(f.read_text())
    # a field added to Stage since the record was written reads as its default there
    defaults = json.loads(json.dumps({k.name: k.default for k in fields(Stage) if k.default is not MISSING}))
    why = ("another definition of the stage" if {**defaults, **was["stage"]} != now["stage"] else
           f"other weights than {now['start']}'s (from {was['start']})" if was["start_sha256"] != now["start_sha256"]
           else "")
    if why:
        raise InputError(f"{dst} was made by {why}: the recipe changed since; remove that folder (and the "
                         f"stages after it) to run it again, or use another --work folder")


def stage_log(path: Path) -> dict:
    """A finished stage's losses (first and last 20 steps' means) and wall time: of its steps over
    every run that made them (`seconds`), or, for a log older than that, of its last run."""
    f = path / "train_log.json"
    log = json.loads(f.read_text()) if f.is_file() else {}
    losses = log.get("losses") or [float("nan")]
    out = {"steps": len(log.get("losses") or []), "loss_start": sum(losses[:20]) / len(losses[:20]),
           "loss_end": sum(losses[-20:]) / len(losses[-20:])}
    if "seconds" in log:
        return {**out, "seconds": log["seconds"]}
    return {**out, "seconds_last_run": log.get("seconds_this_run")}


def publish(trained: Path, out: Path, recipe: Recipe = DEFAULT, stages=None) -> Path:
    """The trained checkpoint as the embedded default: bf16 weights, config, tokenizer, and the
    recipe (its name, how it starts the ViT's positions, its stages or `stages`) with each stage's
    logged losses and wall time (the stages' folders beside `trained`)."""
    from .checkpoint import load_checkpoint
    from .train.trainer import write_checkpoint

    stages = stages or recipe.stages
    ck = load_checkpoint(trained)
    write_checkpoint(ck.model, trained, out, torch.bfloat16,
                     {"recipe": "mivl.export.default_model", "name": recipe.name, "positions": recipe.positions,
                      "stages": [s.__dict__ for s in stages],
                      "logs": {s.name: stage_log(trained.parent / s.name) for s in stages}})
    return out


def evaluate_reference(checkpoint, n: int = 100, seed: int = EVAL_SEED, kinds=DEFAULT.kinds,
                       max_objects: int = DEFAULT.max_objects) -> dict:
    """Figures of the PyTorch reference on n held-out questions of `kinds` (`mivl.calib.evaluate`)."""
    from .reference import Reference

    return score(asker(Reference(checkpoint), max_new_tokens=40), n, seed, kinds, max_objects=max_objects)
