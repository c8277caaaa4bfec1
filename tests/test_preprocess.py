import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mivl.edge.errors import ImageError, InputError
from mivl.edge.image_io import load_rgb
from mivl.edge.multiview import CAMERAS, preprocess_cameras, stitch_cameras
from mivl.edge.preprocess import normalise, preprocess_frames, preprocess_image, preprocess_images
from mivl.edge.resize import resize_bicubic, resize_bicubic_numpy, resize_many
from mivl.edge.video import frame_indices

import official


def scene(w, h, seed=0):
    """A natural-ish test picture: smooth gradients plus sharp edges plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                    ((x // 37 + y // 23) % 2) * 200], axis=-1).astype(np.int32)
    img += rng.integers(-30, 30, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("src,dst", [((1600, 900), (896, 448)), ((640, 480), (1792, 1344)),
                                     ((2688, 896), (448, 448)), ((37, 1001), (448, 448)),
                                     ((448, 448), (448, 448)), ((1000, 10), (1344, 448)),
                                     ((3, 2), (448, 448)), ((1920, 1080), (1792, 896))])
def test_resize_is_bit_exact_with_pil(src, dst):
    """The NumPy spelling of PIL's fixed-point resampler gives PIL's very pixels."""
    img = scene(*src)
    pil = np.asarray(Image.fromarray(img).resize(dst, Image.BICUBIC))
    for ours in (resize_bicubic_numpy(img, *dst), resize_bicubic(img, *dst),
                 resize_many([img, img], *dst)[1]):
        assert ours.shape == pil.shape
        assert np.array_equal(ours, pil)


def test_numpy_resize_random_sizes_and_gray():
    rng = np.random.default_rng(5)
    for _ in range(25):
        w, h, W, H = (int(v) for v in rng.integers(1, 700, 4))
        img = scene(w, h, seed=w)
        assert np.array_equal(resize_bicubic_numpy(img, W, H),
                              np.asarray(Image.fromarray(img).resize((W, H), Image.BICUBIC))), (w, h, W, H)
    gray = scene(50, 40)[:, :, 0]
    assert np.array_equal(resize_bicubic_numpy(gray, 30, 70),
                          np.asarray(Image.fromarray(gray).resize((30, 70), Image.BICUBIC)))


@pytest.mark.parametrize("size,max_num", [((640, 480), 12), ((1920, 1080), 12), ((500, 2000), 12),
                                          ((448, 448), 12), ((1024, 1024), 6), ((3000, 200), 12),
                                          ((1600, 900), 6)])
def test_tiles_match_official_pipeline(size, max_num):
    img = scene(*size, seed=size[0])
    pil_tiles, ref = official.load_image(Image.fromarray(img), max_num=max_num)
    batch = preprocess_image(img, max_tiles=max_num)
    assert batch.n_tiles == len(pil_tiles)
    # before normalising: pixel error <= 1/255 on >= 99.9% of values (we are in fact exact)
    ours_u8 = np.round(batch.pixels * np.array(official.STD)[None, :, None, None] * 255
                       + np.array(official.MEAN)[None, :, None, None] * 255)
    theirs_u8 = np.stack([np.asarray(t).transpose(2, 0, 1) for t in pil_tiles]).astype(np.float64)
    err = np.abs(ours_u8 - theirs_u8)
    assert (err <= 1).mean() >= 0.999 and err.max() <= 2
    assert torch.allclose(torch.from_numpy(batch.pixels), ref, atol=1e-6)


def test_normalise_equals_to_tensor_normalize():
    tiles = np.random.default_rng(1).integers(0, 256, (2, 448, 448, 3), dtype=np.uint8)
    ref = torch.stack([official.to_tensor_normalise(Image.fromarray(t)) for t in tiles])
    assert torch.equal(torch.from_numpy(normalise(tiles)), ref)


def cameras(w=1600, h=900):
    return {name: scene(w, h, seed=i) for i, name in enumerate(CAMERAS)}


def test_six_camera_layout_matches_official_stitching():
    if not os.path.exists(official.FONT):
        pytest.skip(f"font {official.FONT} not installed: cannot draw the official labels")
    cams = cameras()
    ours = stitch_cameras(cams)
    ref = np.asarray(official.stitch({k: Image.fromarray(v) for k, v in cams.items()}))
    assert ours.shape == (896, 2688, 3)
    assert np.array_equal(ours, ref)
    batch = preprocess_image(ours, max_tiles=12)
    assert batch.n_tiles == 13 and (batch.grids[0].cols, batch.grids[0].rows) == (6, 2)
    pil_tiles, ref_t = official.load_image(Image.fromarray(ref), max_num=12)
    assert torch.allclose(torch.from_numpy(batch.pixels), ref_t, atol=1e-6)
    assert np.array_equal(preprocess_cameras(cams, max_tiles=12).pixels, batch.pixels)


@pytest.mark.parametrize("max_tiles", [12, 13, 6, 2, 1])
def test_camera_fast_path_equals_stitch_then_tile(max_tiles):
    """preprocess_cameras normalises each cell's tiles as it is drawn (when the grid is the
    canvas): bit for bit the stitched canvas's tiles, for every budget, sizes and channel order."""
    rng = np.random.default_rng(max_tiles)
    sizes = [(900, 1600), (720, 1280), (480, 640), (1080, 1920), (899, 1601), (600, 800)]
    cams = {c: rng.integers(0, 256, sizes[i] + (3,), dtype=np.uint8) for i, c in enumerate(CAMERAS)}
    for channels in ("RGB", "BGR"):
        fast = preprocess_cameras(cams, max_tiles=max_tiles, channels=channels)
        slow = preprocess_images([stitch_cameras(cams, channels=channels)], max_tiles=max_tiles)
        assert fast.grids == slow.grids and fast.sizes == slow.sizes
        assert np.array_equal(fast.pixels, slow.pixels)


def test_six_cameras_order_and_labels():
    cams = {name: np.full((900, 1600, 3), 10 * (i + 1), np.uint8) for i, name in enumerate(CAMERAS)}
    canvas = stitch_cameras(cams)
    for i in range(6):
        r, c = divmod(i, 3)
        cell = canvas[r * 448:(r + 1) * 448, c * 896:(c + 1) * 896]
        assert cell[-1, -1, 0] == 10 * (i + 1)       # bottom-right: the camera's own pixels
        assert (cell[:40, :300] == (255, 0, 255)).all(axis=-1).any()  # a magenta label top-left


@pytest.mark.parametrize("bad,msg", [
    ({k: None for k in CAMERAS[:5]}, "missing CAM_BACK_RIGHT"),
    ({**{k: None for k in CAMERAS}, "CAM_ROOF": None}, "unknown CAM_ROOF"),
])
def test_wrong_camera_set(bad, msg):
    with pytest.raises(InputError, match=msg):
        stitch_cameras(bad)


def test_several_images_share_the_budget():
    imgs = [scene(1920, 1080), scene(640, 480), scene(300, 900)]
    batch = preprocess_images(imgs, max_tiles=12)
    assert [g.n_grid for g in batch.grids] == [(official.official_grid(*im.shape[1::-1], 1, 4)[0]
                                                * official.official_grid(*im.shape[1::-1], 1, 4)[1])
                                               for im in imgs]
    assert all(g.n_grid <= 4 for g in batch.grids)


def test_video_frames_one_tile_each():
    frames = [scene(640, 360, seed=i) for i in range(4)]
    batch = preprocess_frames(frames)
    assert batch.n_tiles == 4 and batch.tiles_per_image == [1, 1, 1, 1]


@pytest.mark.parametrize("n,segs,fps", [(100, 8, 30.0), (1000, 32, 25.0), (7, 8, 30.0), (33, 32, 10)])
def test_video_sampling_matches_official(n, segs, fps):
    assert frame_indices(n, segs, fps) == list(official.get_index(n - 1, fps, segs))


# ---- image inputs ----------------------------------------------------------------------------

def encoded(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_inputs_agree_path_bytes_array_pil(tmp_path):
    rgb = scene(320, 200)
    p = tmp_path / "x.png"
    Image.fromarray(rgb).save(p)
    for x in (str(p), p, p.read_bytes(), rgb, Image.fromarray(rgb)):
        assert np.array_equal(load_rgb(x), rgb)
    assert np.array_equal(load_rgb(rgb[:, :, ::-1], channels="BGR"), rgb)


def test_conversions():
    gray = Image.fromarray(scene(64, 48)[:, :, 0])
    assert load_rgb(encoded(gray)).shape == (48, 64, 3)
    rgba = Image.fromarray(np.dstack([scene(64, 48), np.full((48, 64), 7, np.uint8)]))
    assert np.array_equal(load_rgb(encoded(rgba)), scene(64, 48))
    pal = Image.fromarray(scene(64, 48)).convert("P")
    assert load_rgb(encoded(pal)).shape == (48, 64, 3)
    deep = Image.fromarray(scene(64, 48)[:, :, 0].astype(np.uint16) * 257)
    assert np.array_equal(load_rgb(encoded(deep))[:, :, 0], scene(64, 48)[:, :, 0])
    arr16 = scene(64, 48).astype(np.uint16) * 257
    assert np.array_equal(load_rgb(arr16), scene(64, 48))


@pytest.mark.parametrize("make,msg", [
    (lambda p: b"", "empty"),
    (lambda p: b"not an image at all", "not a readable image"),
    (lambda p: encoded(Image.fromarray(scene(200, 200)), "JPEG")[:300], "corrupt or truncated"),
    (lambda p: encoded(Image.fromarray(scene(200, 200)), "PNG")[:-20], "the PNG does not end with its IEND"),
    (lambda p: encoded(Image.fromarray(scene(200, 200)), "PNG")[:-1], "the PNG does not end with its IEND"),
    (lambda p: str(p / "nope.jpg"), "not found"),
    (lambda p: np.zeros((0, 10, 3), np.uint8), "zero size"),
    (lambda p: np.zeros((10, 10, 3), np.float32), "dtype float32"),
    (lambda p: np.zeros((10, 10, 2), np.uint8), "shape"),
    (lambda p: 42, "unsupported image type"),
])
def test_bad_images(tmp_path, make, msg):
    with pytest.raises(ImageError, match=msg):
        load_rgb(make(tmp_path))


def test_decompression_bomb_refused():
    big = encoded(Image.new("L", (10000, 9000)))
    with pytest.raises(ImageError, match="90 Mpixel, over the limit of 50 Mpixel"):
        load_rgb(big, max_pixels=50_000_000)
    huge = encoded(Image.new("1", (20000, 10000)))
    with pytest.raises(ImageError, match="decompression-bomb"):
        load_rgb(huge)


def test_cell_of_names_each_cameras_place_in_the_canvas():
    from mivl.edge.multiview import CELL_H, CELL_W, canvas_to_camera, cell_of

    assert [cell_of(c) for c in CAMERAS] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    for cam in CAMERAS:     # the centre of its cell maps back to it
        r, c = cell_of(cam)
        x, y = (c + 0.5) * CELL_W / (3 * CELL_W) * 1000, (r + 0.5) * CELL_H / (2 * CELL_H) * 1000
        assert canvas_to_camera(x, y)[0] == cam
