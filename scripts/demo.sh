#!/usr/bin/env bash
# The main job on a fresh machine: set up, export the embedded default model to an INT8 bundle, and
# ask it about the bundled six-camera sample scene. Usage: bash scripts/demo.sh [QUESTION]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
Q="${1:-Which camera shows the yellow truck?
Options: CAM_FRONT_LEFT, CAM_FRONT, CAM_FRONT_RIGHT, CAM_BACK_LEFT, CAM_BACK, CAM_BACK_RIGHT.
Answer with one of the options.}"
OUT=out
rm -rf "$OUT/default-bundle"
.venv/bin/mivl-export mivl/assets/default_model -o "$OUT/default-bundle" --int8
S=examples/sample_scene
echo "Q: $Q"
.venv/bin/mivl ask "$OUT/default-bundle" --max-new-tokens 24 \
  --cam CAM_FRONT_LEFT=$S/CAM_FRONT_LEFT.jpg --cam CAM_FRONT=$S/CAM_FRONT.jpg \
  --cam CAM_FRONT_RIGHT=$S/CAM_FRONT_RIGHT.jpg --cam CAM_BACK_LEFT=$S/CAM_BACK_LEFT.jpg \
  --cam CAM_BACK=$S/CAM_BACK.jpg --cam CAM_BACK_RIGHT=$S/CAM_BACK_RIGHT.jpg "$Q"
Q2="Please provide the bounding box coordinate of the region this sentence describes: <ref>the yellow truck</ref>"
echo "Q: $Q2 (CAM_BACK_LEFT; truth in $S/objects.json: [186, 155, 393, 307])"
.venv/bin/mivl ask "$OUT/default-bundle" --max-new-tokens 40 --image $S/CAM_BACK_LEFT.jpg "$Q2"
