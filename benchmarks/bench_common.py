"""What the benchmark scripts share: a step in its own process (so its peak memory is its own), the
real-size checkpoints with random weights, the real-size 1B INT8 bundle, and argument parsers."""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable


def positive(kind=int):
    """An argparse type: a number of `kind` above zero."""
    def parse(text: str):
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return v
    return parse


def best(fn, repeat: int) -> float:
    """The fastest of `repeat` timed calls of fn, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def child(code: str) -> dict:
    """Run code in a fresh process; it prints one JSON line; peak RSS is added."""
    wrapped = code + "\nimport resource, json as _j\nprint('RESULT', _j.dumps({**RESULT, 'peak_gib': " \
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))"
    r = subprocess.run([PY, "-c", wrapped], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def ensure_checkpoint(work: Path, size: str) -> Path:
    """1B / 2B: the real-size architecture with random weights; default: the embedded default model."""
    if size == "default":
        from mivl.export.default_model import ASSET
        return ASSET
    path = work / f"real-{size}"
    if not path.exists():
        t = time.time()
        child(f"from mivl.export.tiny import make_real_size\nmake_real_size({size!r}, {str(path)!r})\nRESULT={{}}")
        print(f"made random {size} checkpoint in {time.time() - t:.0f} s", file=sys.stderr)
    return path


def vision_file(bundle: Path) -> Path:
    """The vision encoder file a bundle's manifest names."""
    return bundle / json.loads((bundle / "manifest.json").read_text())["vision"]["file"]


def int8_bundle(work: Path) -> Path:
    """The real-size 1B bundle (INT8 vision, q8_0 LLM), exported once into the work folder."""
    ckpt = ensure_checkpoint(work, "1B")
    bundle = work / "bundle-1B-int8"
    if not bundle.exists():
        child(f"from mivl.export.api import export\nexport({str(ckpt)!r}, {str(bundle)!r}, precision='int8', "
              f"calib_size=4, quiet=True, force=True)\nRESULT={{}}")
    return bundle
