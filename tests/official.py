"""The reference preprocessing as InternVL's code does it (PIL + tensor ops), written from the
published algorithm (internvl-spec.md section 1-2). The tests hold the SDK's NumPy path to it."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff, best_ratio = float("inf"), (1, 1)
    area = width * height
    for ratio in target_ratios:
        diff = abs(aspect_ratio - ratio[0] / ratio[1])
        if diff < best_ratio_diff:
            best_ratio_diff, best_ratio = diff, ratio
        elif diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def target_ratios(min_num, max_num):
    ratios = set((i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1)
                 for j in range(1, n + 1) if min_num <= i * j <= max_num)
    return sorted(ratios, key=lambda x: x[0] * x[1])


def official_grid(width, height, min_num=1, max_num=12, image_size=448):
    return find_closest_aspect_ratio(width / height, target_ratios(min_num, max_num), width, height,
                                     image_size)


def dynamic_preprocess(image: Image.Image, min_num=1, max_num=12, image_size=448, use_thumbnail=True):
    w, h = image.size
    cols, rows = official_grid(w, h, min_num, max_num, image_size)
    resized = image.resize((image_size * cols, image_size * rows), Image.BICUBIC)
    tiles = []
    for i in range(cols * rows):
        box = ((i % cols) * image_size, (i // cols) * image_size,
               ((i % cols) + 1) * image_size, ((i // cols) + 1) * image_size)
        tiles.append(resized.crop(box))
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size), Image.BICUBIC))
    return tiles


def to_tensor_normalise(tile: Image.Image) -> torch.Tensor:
    """torchvision's ToTensor + Normalize, in plain torch."""
    x = torch.from_numpy(np.asarray(tile.convert("RGB")).copy()).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def load_image(image: Image.Image, max_num=12):
    tiles = dynamic_preprocess(image.convert("RGB"), max_num=max_num)
    return tiles, torch.stack([to_tensor_normalise(t) for t in tiles])


CAPTIONS = ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]


def stitch(images: dict[str, Image.Image], font_path: str = FONT) -> Image.Image:
    font = ImageFont.truetype(font_path, 50)
    out = Image.new("RGB", (896 * 3, 448 * 2))
    for i, cap in enumerate(CAPTIONS):
        img = images[cap].convert("RGB").resize((896, 448), Image.BICUBIC)
        ImageDraw.Draw(img).text((0, 0), cap, fill=(255, 0, 255), font=font)
        out.paste(img, ((i % 3) * 896, (i // 3) * 448))
    return out


def get_index(max_frame, fps, num_segments, bound=None, first_idx=0):
    start, end = bound if bound else (-100000, 100000)
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    return np.array([int(start_idx + (seg_size / 2) + np.round(seg_size * idx))
                     for idx in range(num_segments)])
