import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
DEMO_DIR = Path(__file__).resolve().parents[1] / "examples" / "jetson_demo"


@pytest.fixture(scope="session")
def demo_app():
    """The Jetson demo app's module (examples/jetson_demo/demo.py), its folder put on sys.path once
    (its own modules, e.g. `sources`, import from there too)."""
    if str(DEMO_DIR) not in sys.path:
        sys.path.insert(0, str(DEMO_DIR))
    import demo
    return demo


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """tiny_dir(family) -> path of a tiny random checkpoint of that family (made once per run)."""
    from mivl.export.tiny import make_tiny

    made = {}

    def get(family: str, seed: int = 0):
        key = (family, seed)
        if key not in made:
            made[key] = make_tiny(family, tmp_path_factory.mktemp("ckpt") / f"{family}-{seed}", seed)
        return made[key]

    return get


@pytest.fixture(scope="session")
def reference(tiny_dir):
    from mivl.export.reference import Reference

    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = Reference(tiny_dir(family))
        return cache[family]

    return get


@pytest.fixture(scope="session")
def bundle_dir(tiny_dir, tmp_path_factory):
    """bundle_dir(family, precision="fp32") -> an exported bundle (made once per run)."""
    from mivl.export.api import export

    made = {}

    def get(family: str, precision: str = "fp32"):
        key = (family, precision)
        if key not in made:
            out = tmp_path_factory.mktemp("bundle") / f"{family}-{precision}"
            made[key] = export(tiny_dir(family), out, precision=precision, quiet=True, calib_size=8).path
        return made[key]

    return get
