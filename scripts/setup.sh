#!/usr/bin/env bash
# Set up everything the SDK needs on a fresh Linux machine (x86_64 or aarch64, Python 3.11):
# a virtual environment in .venv with torch (CPU), the pinned export/runtime stack and
# llama-cpp-python built from source for this CPU (without AMX: see README, "CPU notes").
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
STAMP="$VENV/.mivl-setup"
# setup.py and the C sources too: the compiled resampler is rebuilt when they change.
WANT="$(sha256sum pyproject.toml setup.py scripts/setup.sh mivl/edge/csrc/* | sha256sum | cut -c1-16)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade "pip>=24" wheel
# The CPU build of torch (a bare `torch` would pull a multi-GB CUDA build).
$PIP install --quiet "torch==2.13.0"
# llama.cpp: built once per set of flags and kept in a wheel cache outside the checkout.
# AMX is left out on purpose: quantised models crash in llama.cpp's AMX/repack path on such Xeons.
# A wheel built elsewhere with other instruction sets dies with "Illegal instruction".
LLAMA_VERSION=0.3.36
# The CPU flags are read from this machine (GGML_NATIVE would do the same, but a wheel cached by
# flags is then safe to reuse on any machine with the same instruction sets).
# OpenMP is off: llama.cpp then uses its own thread pool, and never shares a process with a
# second OpenMP runtime (PyTorch's), which has crashed prefill in processes that ran both.
LLAMA_CMAKE="-DGGML_OPENMP=OFF"
if [[ "$(uname -m)" == "x86_64" ]]; then
  FLAGS=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has() { [[ "$FLAGS" == *" $1 "* ]] && echo ON || echo OFF; }
  LLAMA_CMAKE+=" -DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma)"
  LLAMA_CMAKE+=" -DGGML_F16C=$(has f16c) -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512vbmi)"
  LLAMA_CMAKE+=" -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16)"
  LLAMA_CMAKE+=" -DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
if [[ -n "${MIVL_LLAMA_CMAKE_ARGS:-}" ]]; then LLAMA_CMAKE="$MIVL_LLAMA_CMAKE_ARGS"; fi
KEY="$(echo "$LLAMA_VERSION $LLAMA_CMAKE $(uname -m)" | sha256sum | cut -c1-12)"
WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/mivl/wheels/llama-$KEY"
# The commands (mivl, mivl-export) on PATH for every new shell: links in /usr/local/bin where this
# user may write there, else in ~/.local/bin (on PATH in Debian/Ubuntu login shells); always also in
# .venv/bin. MIVL_NO_PATH_LINKS=1 leaves PATH alone.
link_commands() {
  [[ -n "${MIVL_NO_PATH_LINKS:-}" ]] && return 0
  local dir=/usr/local/bin
  if [[ ! -w "$dir" ]]; then dir="$HOME/.local/bin"; mkdir -p "$dir"; fi
  for c in mivl mivl-export; do ln -sfn "$PWD/$VENV/bin/$c" "$dir/$c"; done
  case ":$PATH:" in *":$dir:"*) ;; *) echo "note: $dir is not on this shell's PATH; run the commands as $VENV/bin/mivl";; esac
}
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && "$(cat "$VENV/.mivl-llama" 2>/dev/null)" == "$KEY" ]]; then
  link_commands
  exit 0
fi
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION from source (about 4 minutes, once)..."
  mkdir -p "$WHEELS"
  CMAKE_ARGS="$LLAMA_CMAKE" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    $PIP wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
      -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi
$PIP install --quiet --no-deps --force-reinstall "$WHEELS"/llama_cpp_python-*.whl
$PIP install --quiet "$WHEELS"/llama_cpp_python-*.whl
# (setuptools' "Editable installation" notice is for package authors; nothing to act on here)
PYTHONWARNINGS=ignore $PIP install --quiet -e ".[edge,export,train,serve,sign,bags,dev]"
echo "$WANT" > "$STAMP"
echo "$KEY" > "$VENV/.mivl-llama"
link_commands
echo "set-up done: $VENV (commands: mivl, mivl-export)"
