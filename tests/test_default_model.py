"""The committed default model (mivl/assets/default_model): what it is configured for, that its
recipe says so, and what it answers on held-out questions (question stream 20260, never trained
on) through the PyTorch reference."""
import json

from mivl.export.default_model import ASSET, DEFAULT


def test_default_model_is_what_its_recipe_makes():
    cfg = json.loads((ASSET / "config.json").read_text())
    assert cfg["max_dynamic_patch"] == DEFAULT.max_tiles and cfg["use_thumbnail"] is DEFAULT.thumbnail
    size = sum(f.stat().st_size for f in ASSET.iterdir())
    assert size <= 20 * 2 ** 20, size
    log = json.loads((ASSET / "train_log.json").read_text())
    assert [s["name"] for s in log["stages"]] == [s.name for s in DEFAULT.stages]


def test_default_model_answers_held_out_questions():
    """Colour and class questions about one camera, 100 held-out ones: well above chance (~0.22)."""
    from mivl.export.default_model import evaluate_reference

    r = evaluate_reference(ASSET, n=100, kinds=("colour", "class"))
    assert r["accuracy"] >= 0.85, r["per_kind"]
