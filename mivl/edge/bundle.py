"""The bundle: a directory the exporter writes and the runtime reads (design.md section 3).

manifest.json describes everything (schema_version, preprocessing, prompt, vision and llm
files, sha256 of every file). `open_bundle` refuses a bundle whose schema is unknown, whose files
are missing or do not match their sha256, or whose parts disagree, naming the problem.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .errors import BundleError
from .manifest_schema import check_manifest
from .preprocess import PreprocessConfig

SCHEMA_VERSION = 1
MANIFEST, REPORT = "manifest.json", "report.json"
INTEGRITY = "manifest.sha256"         # the manifest's own sha256: an edited manifest is detected
SIGNATURE = "bundle.sig"              # written by mivl-export sign (mivl.edge.signing)
ENGINES = "engines"                   # TensorRT engines built on the device (mivl-export build-engine)
UNLISTED = (MANIFEST, INTEGRITY, SIGNATURE)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.manifest["preprocessing"])

    @property
    def prompt(self) -> dict:
        return self.manifest["prompt"]

    @property
    def vision(self) -> dict:
        return self.manifest["vision"]

    @property
    def llm(self) -> dict:
        return self.manifest["llm"]

    def file(self, name: str) -> Path:
        """A file of the bundle; the manifest's names are checked to stay inside it (schema)."""
        return self.path / name

    def report(self) -> dict:
        p = self.path / REPORT
        return json.loads(p.read_text()) if p.is_file() else {}


def read_manifest(path: Path) -> dict:
    mf = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    if not mf.is_file():
        raise BundleError(f"{path} has no {MANIFEST}: not a mivl bundle (make one with mivl-export)")
    raw = mf.read_bytes()
    record = path / INTEGRITY
    if record.is_file() and record.read_text().strip() != hashlib.sha256(raw).hexdigest():
        raise BundleError(f"{MANIFEST} of {path} does not match its sha256 in {INTEGRITY}: it was edited after "
                          "export; re-export the bundle")
    try:
        manifest = json.loads(raw.decode("utf-8"))       # NaN / Infinity parse; the schema refuses them
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{mf} is not valid JSON ({e}); the bundle is damaged") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(f"bundle schema_version {version!r} is not supported by mivl {__version__} "
                          f"(which reads {SCHEMA_VERSION}); re-export it with this SDK version")
    check_manifest(manifest)
    return manifest



def verify_files(path: Path, manifest: dict, check_hashes: bool = True) -> None:
    """Every listed file exists inside the bundle (and matches its sha256), and no file the runtime
    could open is unlisted (an ONNX graph's external data, say)."""
    root = path.resolve()
    listed = set(manifest["files"])
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_dir() or rel in listed or rel in UNLISTED or rel.split("/")[0] == ENGINES:
            continue
        raise BundleError(f"{rel} is in the bundle {path} but not listed in {MANIFEST}: a file the runtime "
                          "could read must be hashed; remove it or re-export the bundle")
    for name, digest in manifest["files"].items():
        f = path / name
        if f.is_symlink() or root not in f.resolve().parents:
            raise BundleError(f"bundle file {name} points outside {path}; refusing it")
        if not f.is_file():
            raise BundleError(f"bundle file {name} is missing from {path}")
        if check_hashes and sha256_file(f) != digest:
            raise BundleError(f"bundle file {name} does not match its sha256 in {MANIFEST}: it was "
                              "modified or corrupted after export; re-export the bundle")


def vision_files(vision: dict) -> list[str]:
    """The files of a manifest's vision section: its graph, and a split encoder's projector graph
    and LayerNorm weights."""
    split = vision.get("split", {})
    return [vision["file"], *(split[k] for k in ("projector_file", "norm_file") if k in split)]


def check_consistency(manifest: dict) -> None:
    v, llm = manifest["vision"], manifest["llm"]
    d_vision = v["output"]["shape"][-1]
    if d_vision != llm["n_embd"]:
        raise BundleError(f"vision output dim {d_vision} != LLM n_embd {llm['n_embd']}: the vision "
                          "and LLM files come from different models")
    if v["output"]["shape"][1] != manifest["prompt"]["tokens_per_tile"]:
        raise BundleError("vision tokens per tile disagree with the prompt's tokens_per_tile")
    for name in (*vision_files(v), llm["file"]):
        if name not in manifest["files"]:
            raise BundleError(f"{name} is referenced but has no sha256 in the manifest")


def restore_aside(path: Path) -> bool:
    """An export replacing `path` moves the old bundle to `.NAME.old-PID` first and the new one in
    after; killed between the two, it leaves no bundle at `path`. Put the old one back (the newest,
    if several) and say whether anything was restored."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return False
    aside = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    aside = [p for p in aside if (p / MANIFEST).is_file()]
    if not aside:
        return False
    aside[-1].rename(path)
    return True


def open_bundle(path: str | Path, check_hashes: bool = True, trusted_keys=None) -> Bundle:
    """Read and check a bundle. With `trusted_keys` (public keys, PEM) its signature must verify with
    one of them before anything else is read (mivl.edge.signing)."""
    path = Path(path)
    restore_aside(path)              # an export killed mid-replacement left the old bundle aside
    if trusted_keys is not None:
        from .signing import verify_bundle

        if not path.is_dir():
            raise BundleError(f"bundle directory not found: {path}")
        verify_bundle(path, trusted_keys)
    manifest = read_manifest(path)
    verify_files(path, manifest, check_hashes)
    check_consistency(manifest)
    return Bundle(path, manifest)
