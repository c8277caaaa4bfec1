"""The embedded default model: small enough to ship, and it answers held-out questions."""
import pytest

from mivl.calib.evaluate import EVAL_SEED, reference_ask, score, session_ask
from mivl.export.default_model import ASSET

N = 40
SEED = EVAL_SEED + 1          # another held-out stream than the README's figure


def test_the_default_model_is_embedded_and_small():
    files = [f for f in ASSET.iterdir() if f.is_file()]
    names = {f.name for f in files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_log.json"} <= names
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20


@pytest.fixture(scope="module")
def default_bundles(tmp_path_factory):
    from mivl.export.api import export
    d = tmp_path_factory.mktemp("default")
    return {p: export(ASSET, d / p, precision=p, quiet=True, calib_size=8).path for p in ("fp32", "int8")}


@pytest.fixture(scope="module")
def scores(default_bundles):
    from mivl.edge.session import Session
    out = {}
    for p, path in default_bundles.items():
        with Session(path, device="cpu") as s:
            out[p] = score(session_ask(s), N, SEED, keep=True)
    return out


def test_default_answers_held_out_questions(scores):
    fp32, int8 = scores["fp32"], scores["int8"]
    assert fp32["accuracy"] >= 0.85, fp32["per_kind"]
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.05, (fp32["per_kind"], int8["per_kind"])


def test_fp32_bundle_answers_as_the_pytorch_reference(scores):
    from mivl.export.reference import Reference
    ref = score(reference_ask(Reference(ASSET)), N, SEED, keep=True)
    assert [r["got"] for r in ref["answers"]] == [r["got"] for r in scores["fp32"]["answers"]]
