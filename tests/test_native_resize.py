"""The compiled resampler (mivl.edge.native) gives PIL's very pixels, on both instruction-set paths."""
import numpy as np
import pytest
from PIL import Image

from mivl.edge import native
from mivl.edge.preprocess import _normalise_lut, normalise
from mivl.edge.resize import resize_bicubic_numpy

pytestmark = pytest.mark.skipif(not native.available(), reason="the compiled resampler is not built "
                                "(bash scripts/setup.sh builds it with the package)")


def pil_resize(img, w, h):
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


@pytest.fixture(params=[False, True], ids=["fastest", "portable"])
def isa(request):
    yield native.use_portable(request.param)
    native.use_portable(False)


def test_is_built_where_the_set_up_ran():
    """scripts/setup.sh compiles it; a silent fallback to PIL would hide a broken build."""
    assert native.available()


@pytest.mark.parametrize("src,dst", [((1600, 900), (896, 448)), ((2688, 896), (448, 448)),
                                     ((640, 480), (1792, 1344)), ((1, 1), (448, 448)), ((3, 2), (5, 700)),
                                     ((1920, 1080), (1792, 896)), ((448, 448), (448, 200)),
                                     ((900, 17), (900, 448))])
def test_exact_on_camera_and_tile_sizes(isa, src, dst):
    img = np.random.default_rng(src[0]).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    for threads in (1, 2, 3):
        assert np.array_equal(native.resize(img, *dst, threads=threads), pil_resize(img, *dst)), threads


def test_exact_on_random_sizes_rgb_and_gray(isa):
    rng = np.random.default_rng(11)
    for t in range(120):
        w, h, W, H = (int(v) for v in rng.integers(1, 700, 4))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if t % 3 == 0:
            img = np.ascontiguousarray(img[:, :, 0])
        assert np.array_equal(native.resize(img, W, H, threads=1 + t % 2), pil_resize(img, W, H)), (w, h, W, H)


@pytest.mark.parametrize("src,dst", [((6, 862), (184, 469)), ((2, 886), (614, 24)), ((3, 900), (3, 10))])
def test_tall_pictures_go_vertical_first_like_pillow(isa, src, dst):
    """Pillow resizes a picture over 100 times taller than wide that loses height vertically first."""
    img = np.random.default_rng(3).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    assert np.array_equal(native.resize(img, *dst), pil_resize(img, *dst))
    assert np.array_equal(resize_bicubic_numpy(img, *dst), pil_resize(img, *dst))


def test_views_with_row_strides(isa):
    """A cell of a canvas (rows apart by the canvas's stride) resizes like a copy of it."""
    canvas = np.random.default_rng(4).integers(0, 256, (896, 2688, 3), dtype=np.uint8)
    cell = canvas[448:, 896:1792]
    assert not cell.flags.c_contiguous
    assert np.array_equal(native.resize(cell, 448, 224), pil_resize(np.ascontiguousarray(cell), 448, 224))
    out = np.zeros((10, 60, 3), np.uint8)
    native.resize_rows(cell, 40, 10, out[:, 10:50], 0, 10)   # into a view: only its pixels written
    assert np.array_equal(out[:, 10:50], pil_resize(np.ascontiguousarray(cell), 40, 10))
    assert not out[:, :10].any() and not out[:, 50:].any()


def test_normalise_equals_the_lookup_table():
    tiles = np.random.default_rng(2).integers(0, 256, (3, 448, 448, 3), dtype=np.uint8)
    lut = _normalise_lut((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    expected = np.stack([np.stack([lut[c][t[..., c]] for c in range(3)]) for t in tiles])
    assert np.array_equal(normalise(tiles), expected)
    got = np.empty((3, 448, 448), np.float32)
    native.normalise_tile(tiles[1], lut, got)
    assert np.array_equal(got, expected[1])


def test_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="1 to 4 channels"):
        native.resize(np.zeros((4, 4, 5), np.uint8), 2, 2)
    with pytest.raises(ValueError, match="contiguous"):
        native.resize_rows(np.zeros((4, 8, 3), np.uint8)[:, ::2], 2, 2, np.zeros((2, 2, 3), np.uint8), 0, 2)
