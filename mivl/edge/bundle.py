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
from .preprocess import PreprocessConfig

SCHEMA_VERSION = 1
MANIFEST, REPORT = "manifest.json", "report.json"


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
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mf} is not valid JSON ({e}); the bundle is damaged") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"bundle schema_version {version!r} is not supported by mivl {__version__} "
                          f"(which reads {SCHEMA_VERSION}); re-export it with this SDK version")
    for key in ("preprocessing", "prompt", "vision", "llm", "files"):
        if key not in manifest:
            raise BundleError(f"{mf} lacks the '{key}' section; the bundle is damaged")
    return manifest


def verify_files(path: Path, manifest: dict, check_hashes: bool = True) -> None:
    for name, digest in manifest["files"].items():
        f = path / name
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


def open_bundle(path: str | Path, check_hashes: bool = True) -> Bundle:
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest, check_hashes)
    check_consistency(manifest)
    return Bundle(path, manifest)
