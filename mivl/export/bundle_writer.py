"""Writing a bundle atomically: everything goes into a temporary sibling directory that is
renamed into place only when complete, so an interrupted export leaves no half bundle."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..edge.bundle import INTEGRITY, MANIFEST, REPORT, restore_aside, sha256_file
from ..edge.errors import InputError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(out: Path) -> None:
    """Finish what a killed export left: an old bundle moved aside but no new one in its place is
    put back (restore_aside), and `.partial` folders of exports that are no longer running go."""
    restore_aside(out)
    for p in out.parent.glob(f".{out.name}.partial-*"):
        pid = p.name[len(f".{out.name}.partial-"):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


@contextmanager
def staging(out: Path, force: bool):
    """Yield a temporary directory next to `out`; on success it becomes `out`."""
    out = Path(out)
    if out.parent.is_dir():
        recover(out)
    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force (force=True) to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        _ordinary_permissions(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _ordinary_permissions(folder: Path) -> None:
    """mkdtemp makes its folder 0700; a bundle gets what any exporter's output gets (the umask),
    so a service account on the device can read it."""
    umask = os.umask(0)
    os.umask(umask)
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        d.chmod(0o777 & ~umask)


def finish(tmp: Path, manifest: dict, report: dict) -> None:
    """Hash every artifact into the manifest, then write manifest.json and report.json."""
    (tmp / REPORT).write_text(json.dumps(report, indent=2))
    files = {}
    for f in sorted(tmp.rglob("*")):
        if f.is_file() and f.name != MANIFEST:
            files[str(f.relative_to(tmp))] = sha256_file(f)
    manifest["files"] = files
    text = json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")
    (tmp / MANIFEST).write_bytes(text)
    (tmp / INTEGRITY).write_text(hashlib.sha256(text).hexdigest() + "\n")
