"""The whole benchmark suite in one command; writes one Markdown table file.

  .venv/bin/python benchmarks/run_all.py                      # 1B: ~25 min on 2 CPU cores (first run)
  .venv/bin/python benchmarks/run_all.py --size default       # the embedded default model: ~3 min
  .venv/bin/python benchmarks/run_all.py --size 1B --size 2B  # both real-size architectures

Sections: preprocessing (NumPy path vs the official PIL pipeline; the CUDA kernels on a GPU),
vision encoder (PyTorch eager vs ONNX Runtime fp32 / fp16 / INT8; on a GPU also PyTorch on CUDA vs
ONNX Runtime's CUDA execution provider vs the TensorRT engine), LLM decode per GGUF type
(PyTorch vs raw llama-cpp-python vs the mivl backend), LLM conversion (1B/2B), end-to-end time to
first token and decode for one image and six cameras. Every figure is a ratio to the baseline
measured in the same run; each step runs in its own process (peak memory is the step's own).
Expensive artifacts (exports, GGUFs) are cached under --work and reused.
"""
import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def run(args: list[str]) -> str:
    t = time.time()
    r = subprocess.run([PY, *args], capture_output=True, text=True, cwd=HERE.parent)
    if r.returncode != 0:
        return f"(failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})\n"
    print(f"  {' '.join(args)}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    return r.stdout


def table(out: str) -> str:
    """The rows bench_models.py prints under its '### section' heading."""
    return out.split("###", 1)[-1].split("\n", 2)[-1]


def gpu_present() -> bool:
    try:
        import cupy  # noqa: F401
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", action="append", choices=["default", "1B", "2B"])
    ap.add_argument("--work", default="out/bench")
    ap.add_argument("--out", default=str(HERE / "results" / "latest.md"))
    a = ap.parse_args()
    sizes = a.size or ["1B"]
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    parts = [f"# mivl benchmark suite\n\nmachine: {cpu}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d %H:%M')}; "
             f"command: `{' '.join([Path(PY).name, 'benchmarks/run_all.py', *sys.argv[1:]])}`\n"]
    parts.append("## preprocessing (six 1600x900 cameras -> 13 tiles)\n\n```\n" + run(["benchmarks/bench_preprocess.py"]) + "```\n")
    if gpu_present():
        parts.append("## CUDA kernels\n\n```\n" + run(["benchmarks/bench_kernels.py"]) + "```\n")
    else:
        parts.append("## CUDA kernels\n\nnot measured: no GPU on this machine (`benchmarks/bench_kernels.py` on one)\n")
    for size in sizes:
        bm = ["benchmarks/bench_models.py", "--work", a.work, "--size", size]
        parts.append(f"## {size}: vision encoder\n\n" + table(run(bm + ["vision"])))
        if gpu_present():
            parts.append(f"## {size}: vision encoder on the GPU\n\n" + table(run(bm + ["vision-gpu"])))
        parts.append(f"## {size}: LLM decode per GGUF type\n\n" + table(run(bm + ["decode"])))
    if any(s in ("1B", "2B") for s in sizes):
        bm = ["benchmarks/bench_models.py", "--work", a.work]
        parts.append("## LLM conversion (1B and 2B)\n\n" + table(run(bm + ["llm"])))
        parts.append("## end to end (1B bundle, INT8 vision + q8_0)\n\n" + table(run(bm + ["runtime"])))
    text = "\n".join(parts)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
