#!/usr/bin/env bash
# The main job on a fresh machine: set up, export the default model to an INT8 bundle, and ask it
# about the bundled six-camera sample scene. Usage: bash scripts/demo.sh [QUESTION]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
Q="${1:-What objects are in front of the car?}"
OUT=out
CKPT="$OUT/default-checkpoint"
# The embedded default: a tiny model generated here until a trained default ships in mivl/assets.
[[ -d "$CKPT" ]] || .venv/bin/mivl-export make-tiny --llm qwen2 -o "$CKPT" --seed 0
rm -rf "$OUT/default-bundle"
.venv/bin/mivl-export "$CKPT" -o "$OUT/default-bundle" --int8
S=examples/sample_scene
.venv/bin/mivl ask "$OUT/default-bundle" --max-new-tokens 24 \
  --cam CAM_FRONT_LEFT=$S/CAM_FRONT_LEFT.jpg --cam CAM_FRONT=$S/CAM_FRONT.jpg \
  --cam CAM_FRONT_RIGHT=$S/CAM_FRONT_RIGHT.jpg --cam CAM_BACK_LEFT=$S/CAM_BACK_LEFT.jpg \
  --cam CAM_BACK=$S/CAM_BACK.jpg --cam CAM_BACK_RIGHT=$S/CAM_BACK_RIGHT.jpg "$Q"
