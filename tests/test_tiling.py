from fractions import Fraction

import numpy as np
import pytest
from rasterio.windows import Window

from rssr_cli.errors import UsageError
from rssr_cli.tiling import plan_axis, plan_tiles, ramp_weights

S = Fraction(25, 2)


@pytest.mark.parametrize("length", [1, 2, 7, 63, 64, 65, 121, 200, 377])
def test_cores_cover_the_window_with_even_starts(length):
    axis = plan_axis(length, 64, 8, 2)
    assert axis.starts[0] == 0
    assert axis.starts[-1] + axis.size >= length
    assert all(s % 2 == 0 for s in axis.starts) and axis.size % 2 == 0
    for a, b in zip(axis.starts, axis.starts[1:]):
        assert a + axis.size - b >= 8  # neighbours overlap by at least the overlap
        assert b > a


def test_small_window_gets_one_small_tile():
    axis = plan_axis(10, 64, 8, 2)
    assert axis.starts == (0,) and axis.size == 10


def test_weights_sum_to_one_everywhere():
    plan = plan_tiles(Window(0, 0, 150, 130), S, tile_size=64, overlap=8, context=4)
    h, w = plan.hr_shape
    total = np.zeros((plan.hr(plan.rows.starts[-1] + plan.rows.size), plan.hr(plan.cols.starts[-1] + plan.cols.size)))
    for i in range(len(plan.rows.starts)):
        for j in range(len(plan.cols.starts)):
            t = plan.tile(i, j)
            r0, r1, c0, c1 = t.hr_core
            total[r0:r1, c0:c1] += plan.weights(i, j)
    np.testing.assert_allclose(total[:h, :w], 1.0, atol=1e-6)


def test_tile_geometry_is_whole_hr_pixels():
    plan = plan_tiles(Window(4, 6, 100, 90), S, tile_size=32, overlap=4, context=3)
    assert plan.context == 4  # rounded up to the step
    t = plan.tile(1, 2)
    assert t.read.col_off == 4 + plan.cols.starts[2] - 4
    assert t.hr_origin == (int((plan.rows.starts[1] - 4) * S), int((plan.cols.starts[2] - 4) * S))
    assert t.read.width == plan.cols.size + 8


def test_ramp_is_positive_and_complementary():
    up, down = ramp_weights(100, 100, 0), ramp_weights(100, 0, 100)
    assert (up > 0).all() and (down > 0).all()
    np.testing.assert_allclose(up + down, 1.0, atol=1e-6)


@pytest.mark.parametrize("tile,overlap", [(63, 8), (64, 7), (64, 40)])
def test_bad_sizes_are_refused(tile, overlap):
    with pytest.raises(UsageError):
        plan_tiles(Window(0, 0, 100, 100), S, tile_size=tile, overlap=overlap)


def test_column_chunks_partition_the_output():
    plan = plan_tiles(Window(0, 0, 400, 64), S, tile_size=64, overlap=8)
    chunks = list(plan.column_chunks(max_width_hr=1500))
    assert len(chunks) > 1
    assert chunks[0].write[0] == 0 and chunks[-1].write[1] == plan.hr_shape[1]
    for a, b in zip(chunks, chunks[1:]):
        assert a.write[1] == b.write[0]
    for c in chunks:  # every tile touching the written columns is computed
        for j, start in enumerate(plan.cols.starts):
            lo, hi = plan.hr(start), plan.hr(start + plan.cols.size)
            if lo < c.write[1] and hi > c.write[0]:
                assert j in c.cols
