#!/usr/bin/env bash
# The main job on a fresh machine: set up, export the default model to an INT8 bundle, and ask it
# about the bundled six-camera sample scene. Usage: bash scripts/demo.sh [QUESTION]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
S=examples/sample_scene
# The default question: where the bus of the bundled six-camera sample scene is (which camera, and
# the point in it, as DriveLM's <c1,CAM_X,x,y>); its colour comes from the scene's objects.json.
BUS_COLOUR=$(.venv/bin/python -c "import json; print(next(o['colour'] for o in json.load(open('$S/objects.json')) if o['cls'] == 'bus'))")
Q="${1:-Where is the $BUS_COLOUR bus?}"
OUT=out
# The embedded default model (mivl/assets/default_model, trained by `mivl-export make-default`);
# a tiny random model generated here if a checkout lacks it.
CKPT=mivl/assets/default_model
if [[ ! -f "$CKPT/config.json" ]]; then
  CKPT="$OUT/default-checkpoint"
  [[ -d "$CKPT" ]] || .venv/bin/mivl-export make-tiny --llm qwen2 -o "$CKPT" --seed 0
fi
rm -rf "$OUT/default-bundle"
# INT8 with the patch embedding and last ViT block left in float (BENCHMARKS.md, "Embedded default
# model": the INT8 figures per question kind against fp32)
.venv/bin/mivl-export "$CKPT" -o "$OUT/default-bundle" --int8 --keep-float projector,attention,patch_embed,last_block
echo
echo "cameras:  $S/CAM_*.jpg (the sample scene's six cameras, stitched 2x3 and tiled 6x2 + thumbnail)"
echo "question: ${Q//$'\n'/ / }"
echo "answer (and the objects parsed from it, in camera pixels):"
CAMS=()
for c in CAM_FRONT_LEFT CAM_FRONT CAM_FRONT_RIGHT CAM_BACK_LEFT CAM_BACK CAM_BACK_RIGHT; do CAMS+=(--cam "$c=$S/$c.jpg"); done
.venv/bin/mivl ask "$OUT/default-bundle" --max-new-tokens 32 "${CAMS[@]}" "$Q"
echo "truth ($S/objects.json, camera pixels x1, y1, x2, y2):"
.venv/bin/python -c "
import json
for o in json.load(open('$S/objects.json')):
    print(f\"  {o['colour']} {o['cls']}: {o['camera']} {o['box']}\")"
