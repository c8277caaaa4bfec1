"""Regenerate examples/sample_scene: six 800x450 camera JPEGs of a synthetic driving scene (at most
one object per camera, as the embedded default model was trained on) and objects.json."""
import json
import sys
from dataclasses import asdict
from pathlib import Path

import cv2

from mivl.calib.synthetic import draw_scene

SEED = int(sys.argv[1]) if len(sys.argv) > 1 else 37
out = Path(__file__).resolve().parents[1] / "examples" / "sample_scene"
out.mkdir(parents=True, exist_ok=True)
scene = draw_scene(SEED, 800, 450, max_objects=1)
for name, img in scene.cameras.items():
    cv2.imwrite(str(out / f"{name}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
(out / "objects.json").write_text(json.dumps([asdict(o) for o in scene.objects], indent=1))
print(f"seed {SEED}: " + "; ".join(f"{o.camera} {o.colour} {o.cls} {list(o.box)}" for o in scene.objects))
