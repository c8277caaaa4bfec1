import random

import pytest

from mivl.edge.errors import InputError
from mivl.edge.tiling import candidate_grids, choose_grid, tiles_per_image

from official import official_grid


def random_cases(n=1200, seed=0):
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        max_num = rng.randint(1, 16)
        if rng.random() < 0.4:  # an exact tie: aspect equal to a grid's aspect, area near the rule
            c, r = rng.randint(1, 6), rng.randint(1, 6)
            k = rng.choice([1, 2, 3])
            w, h = c * k * rng.choice([50, 100, 150, 224, 300, 448, 700]), r * k
            h *= w // (c * k) if c * k else 1
        else:
            w, h = rng.randint(1, 5000), rng.randint(1, 5000)
        cases.append((w, h, max_num))
    return cases


@pytest.mark.parametrize("w,h,max_num", random_cases())
def test_grid_matches_official_rule(w, h, max_num):
    g = choose_grid(w, h, 1, max_num, use_thumbnail=True)
    assert (g.cols, g.rows) == official_grid(w, h, 1, max_num)


def test_ties_hit_the_area_rule():
    ties = 0
    for w, h, m in random_cases():
        aspect = w / h
        diffs = sorted(abs(aspect - c / r) for c, r in candidate_grids(1, m))
        ties += len(diffs) > 1 and diffs[0] == diffs[1]
    assert ties > 100  # the case set really exercises the tie-break


@pytest.mark.parametrize("size,max_num,grid", [
    ((640, 480), 12, (4, 3)), ((1920, 1080), 12, (4, 2)), ((1024, 1024), 12, (3, 3)),
    ((448, 448), 12, (1, 1)), ((640, 480), 6, (3, 2)), ((1920, 1080), 6, (2, 1)),
    ((1024, 1024), 6, (2, 2)), ((2688, 896), 12, (6, 2)),
])
def test_spec_examples(size, max_num, grid):
    g = choose_grid(*size, 1, max_num)
    assert (g.cols, g.rows) == grid


def test_thumbnail_only_with_more_than_one_tile():
    assert choose_grid(448, 448, 1, 12, True).n_tiles == 1
    assert choose_grid(2688, 896, 1, 12, True).n_tiles == 13
    assert choose_grid(2688, 896, 1, 12, False).n_tiles == 12


def test_tile_boxes_row_major():
    g = choose_grid(1920, 1080, 1, 12)
    assert [g.tile_box(k)[:2] for k in range(g.n_grid)] == [
        (x * 448, y * 448) for y in range(g.rows) for x in range(g.cols)]


def test_multi_image_budget():
    assert tiles_per_image(12, 1) == 12
    assert tiles_per_image(12, 5) == 2
    assert tiles_per_image(6, 8) == 1


@pytest.mark.parametrize("args,msg", [((0, 10), "zero size"), ((10, 0), "zero size")])
def test_zero_size_refused(args, msg):
    with pytest.raises(InputError, match=msg):
        choose_grid(*args)


def test_bad_tile_range():
    with pytest.raises(InputError, match="min_tiles <= max_tiles"):
        choose_grid(100, 100, 5, 2)


def test_matches_transformers_image_processor():
    """transformers' InternVL (GotOcr2) image processor picks the same grid."""
    gp = pytest.importorskip("transformers.models.got_ocr2.image_processing_pil_got_ocr2")
    fn = getattr(gp, "get_optimal_tiled_canvas", None)
    if fn is None:
        pytest.skip("this transformers has no get_optimal_tiled_canvas")
    for w, h, m in random_cases(1000, seed=1):
        ours = choose_grid(w, h, 1, m)
        theirs = fn((h, w), (448, 448), 1, m)  # (original h, w), tile size, min, max -> (cols, rows)
        assert (ours.cols, ours.rows) == tuple(theirs), (w, h, m)
