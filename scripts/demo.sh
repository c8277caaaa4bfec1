#!/usr/bin/env bash
# The main job on a fresh machine: set up, export the default model to an INT8 bundle, and ask it
# about the bundled six-camera sample scene. Usage: bash scripts/demo.sh [QUESTION]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The default question is one the embedded model is trained for (class of an object in one camera;
# the sample scene's front camera shows a yellow pedestrian).
Q="${1:-$'What is the yellow object?\nOptions: car, truck, bus, pedestrian, cone, traffic light.\nAnswer with one of the options.'}"
OUT=out
# The embedded default model (mivl/assets/default_model, trained by `mivl-export make-default`);
# a tiny random model generated here if a checkout lacks it.
CKPT=mivl/assets/default_model
if [[ ! -f "$CKPT/config.json" ]]; then
  CKPT="$OUT/default-checkpoint"
  [[ -d "$CKPT" ]] || .venv/bin/mivl-export make-tiny --llm qwen2 -o "$CKPT" --seed 0
fi
rm -rf "$OUT/default-bundle"
# INT8 with the patch embedding and last ViT block left in float: the tiny default model's
# accuracy stays within 2 points of fp32 that way (BENCHMARKS.md, "Embedded default model")
.venv/bin/mivl-export "$CKPT" -o "$OUT/default-bundle" --int8 --keep-float projector,attention,patch_embed,last_block
S=examples/sample_scene
echo
echo "image:    $S/CAM_FRONT.jpg (the sample scene's front camera; truth in $S/objects.json)"
echo "question: ${Q//$'\n'/ / }"
printf "answer:   "
.venv/bin/mivl ask "$OUT/default-bundle" --max-new-tokens 24 --image $S/CAM_FRONT.jpg "$Q"
echo
# The six cameras together (stitched 2x3, as the paper's driving model sees them): which camera shows
# the bus, and where; each answer with the objects parsed from it and the truth from objects.json.
.venv/bin/python -m mivl.calib.sample_scene "$OUT/default-bundle" "$S"
