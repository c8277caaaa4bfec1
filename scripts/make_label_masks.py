"""Regenerate mivl/assets/camera_labels.npz: the six camera names rendered as coverage masks with
DejaVu Sans Bold at 50 px, drawn at (0, 0) like the multi-view training images were.
Usage: python scripts/make_label_masks.py [FONT_PATH]"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mivl.edge.multiview import CAMERAS, CELL_H, CELL_W

font_path = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
font = ImageFont.truetype(font_path, 50)
masks = {}
for name in CAMERAS:
    canvas = Image.new("L", (CELL_W, CELL_H), 0)
    ImageDraw.Draw(canvas).text((0, 0), name, fill=255, font=font)
    arr = np.asarray(canvas)
    ys, xs = np.nonzero(arr)
    masks[name] = arr[: ys.max() + 1, : xs.max() + 1].copy()
out = Path(__file__).resolve().parent.parent / "mivl" / "assets" / "camera_labels.npz"
np.savez_compressed(out, **masks)
print(f"wrote {out} ({out.stat().st_size} bytes)")
