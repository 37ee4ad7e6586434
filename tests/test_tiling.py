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


def _hr_tiles(plan, row, cols, value):
    from rssr_cli.infer import HRTile

    for j in cols:
        t = plan.tile(row, j)
        r0, r1, c0, c1 = t.hr_core
        yield HRTile(t, np.full((2, r1 - r0, c1 - c0), value(row, j), np.float32), None)


@pytest.mark.parametrize("width", [1500, 10_000])
def test_blended_blocks_cover_the_output_once(width):
    """Every output pixel is finished exactly once, within the output (no row past its edge), and a constant field
    stays constant through the feathering."""
    from rssr_cli.blend import RowBlender, blend_row

    plan = plan_tiles(Window(0, 0, 150, 67), S, tile_size=32, overlap=8, context=4)
    h, w = plan.hr_shape
    seen = np.zeros((h, w), int)
    for chunk in plan.column_chunks(max_width_hr=width):
        blender = RowBlender(2, *chunk.write, height=h)
        for i in range(len(plan.rows.starts)):
            for block in blend_row(blender, plan, i, _hr_tiles(plan, i, chunk.cols, lambda r, c: 0.25)):
                bh, bw = block.data.shape[1:]
                assert block.std is None and block.row0 + bh <= h
                assert chunk.write[0] <= block.col0 and block.col0 + bw <= chunk.write[1]
                seen[block.row0:block.row0 + bh, block.col0:block.col0 + bw] += 1
                np.testing.assert_allclose(block.data, 0.25, rtol=1e-6)
    assert (seen == 1).all()


def test_blended_blocks_lie_in_the_core_of_the_row_that_finishes_them():
    """What lets the output mask use the current LR strip only: no block reaches outside its tile row's core."""
    from rssr_cli.blend import RowBlender, blend_row

    plan = plan_tiles(Window(0, 0, 80, 150), S, tile_size=32, overlap=8, context=4)
    blender = RowBlender(2, 0, plan.hr_shape[1], height=plan.hr_shape[0])
    for i in range(len(plan.rows.starts)):
        top, bottom = plan.hr(plan.rows.starts[i]), plan.hr(plan.rows.starts[i] + plan.rows.size)
        cols = range(len(plan.cols.starts))
        for block in blend_row(blender, plan, i, _hr_tiles(plan, i, cols, lambda r, c: float(r + c))):
            assert top <= block.row0 and block.row0 + block.data.shape[1] <= bottom
