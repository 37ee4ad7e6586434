"""The pieces a sharded or overlapped upscale is made of, in one process: the rows that rebuild a blender's carry, the
shares of rows and inputs among processes, the reading thread and the ordered worker, the scratch and journal joined by
a second process."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rssr_cli.blend import carry_start
from rssr_cli.errors import Interrupted, OutputError
from rssr_cli.methods import BicubicOptions, BicubicUpsampler, TileResult
from rssr_cli.pipeline import UpscaleOptions, upscale
from rssr_cli.resume import Journal
from rssr_cli.tiling import plan_tiles
from rssr_cli.workers import OrderedWorker, Prefetched
from rssr_cli.world import World


def test_the_carry_comes_from_every_row_that_reaches_into_the_row():
    # 28 LR px in tiles of 16 overlapping by 6: rows start at 0, 10 and 12 (the last shifted back to the edge), so rows
    # 0 and 1 both reach into row 2.
    plan = plan_tiles(Window(0, 0, 10, 28), Fraction(25, 2), tile_size=16, overlap=6)
    assert plan.rows.starts == (0, 10, 12)
    assert [carry_start(plan, i) for i in range(3)] == [0, 0, 0]
    plan = plan_tiles(Window(0, 0, 10, 64), Fraction(25, 2), tile_size=8, overlap=2)
    assert [carry_start(plan, i) for i in range(len(plan.rows.starts))] == [0] + list(range(len(plan.rows.starts) - 1))


class _PerRow(BicubicUpsampler):
    """Bicubic plus a small offset per tile row, so that overlapping rows disagree and a missing share of the carry
    shows; optionally stopped (as by a signal) at its ``stop_at``-th batch, once ``journal`` lists the rows before."""

    def __init__(self, stop_at: int | None = None, journal: Path | None = None) -> None:
        super().__init__()
        self.calls, self.stop_at, self.journal = 0, stop_at, journal

    def upscale_tiles(self, lr, origins):
        self.calls += 1
        if self.calls == self.stop_at:
            deadline = time.monotonic() + 30
            while self.journal is not None and time.monotonic() < deadline:  # rows written on other threads
                if len(self.journal.read_text().splitlines()) == self.stop_at:
                    break
                time.sleep(0.005)
            raise Interrupted(signal.SIGTERM)
        mean = super().upscale_tiles(lr, origins).mean
        return TileResult(mean=mean + np.float32(1e-4) * np.array([o[0] for o in origins], np.float32)[:, None, None,
                                                                                                      None])


def test_a_resumed_run_rebuilds_a_carry_that_two_rows_reach(utm_scene, tmp_path):
    options = UpscaleOptions(method=BicubicOptions(), bbox=(500000, 5199720, 500100, 5200000), bbox_crs="scene",
                             tile_size=16, overlap=6, dtype="float32")
    ref, out = tmp_path / "ref.tif", tmp_path / "o.tif"
    upscale(utm_scene, ref, options, upsampler=_PerRow())
    with pytest.raises(Interrupted):
        # One tile a row: stopped in row 2, once rows 0 and 1 are journaled (header + 2 lines).
        upscale(utm_scene, out, options, upsampler=_PerRow(stop_at=3, journal=out.with_name(".o.tif.rssr-journal")))
    assert len(out.with_name(".o.tif.rssr-journal").read_text().splitlines()) == 3
    result = upscale(utm_scene, out, dataclasses.replace(options, resume=True), upsampler=_PerRow())
    assert result.reused_tiles == 2
    with rasterio.open(ref) as a, rasterio.open(out) as b:
        assert np.array_equal(a.read(), b.read())


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shares_give_every_item_to_one_process(size):
    for count in (0, 1, 2, 5, 9, 11, 92):
        bands = [World(rank, size).band(count) for rank in range(size)]
        assert [i for band in bands for i in band] == list(range(count))  # contiguous, in rank order
        assert max(map(len, bands)) - min(map(len, bands)) <= 1
        shares = sorted(i for rank in range(size) for i in World(rank, size).share(count))
        assert shares == list(range(count))
        # Bands that recompute the row above them: the first band is longer, the work balanced.
        bands = [World(rank, size).band(count, carry=1) for rank in range(size)]
        assert [i for band in bands for i in band] == list(range(count))
        work = [len(b) + (1 if b and b.start > 0 else 0) for b in bands]
        assert max(work) == -(-(count + size - 1) // size) if count else work == [0] * size  # the least possible


def test_the_first_band_takes_the_rows_the_others_recompute():
    assert [World(rank, 2).band(9, carry=1) for rank in range(2)] == [range(0, 5), range(5, 9)]
    assert [len(World(rank, 8).band(92, carry=1)) for rank in range(8)] == [13, 12, 12, 11, 11, 11, 11, 11]


def test_one_process_needs_no_process_group():
    world = World.from_env()
    assert world == World() and world.main and not world.distributed
    assert world.agree(lambda: 7) == 7 and world.gather(3) == [3]
    assert world.device("auto") == "auto" and world.device("cuda:1") == "cuda:1"
    world.check()
    world.barrier()


def test_the_next_item_is_produced_while_this_one_is_used():
    produced: list[int] = []

    def items():
        for i in range(3):
            produced.append(i)
            yield i

    seen = []
    with Prefetched(items()) as ahead:
        for item in ahead:
            deadline = time.monotonic() + 10
            while len(produced) < min(item + 2, 3) and time.monotonic() < deadline:
                time.sleep(0.001)  # item + 1 is being produced on the other thread meanwhile
            seen.append((item, len(produced)))
    assert seen == [(0, 2), (1, 3), (2, 3)]


def test_a_failure_while_reading_ahead_is_raised_where_its_item_is_asked_for():
    closed = threading.Event()

    def items():
        try:
            yield 1
            raise OSError("disk gone")
        finally:
            closed.set()

    got = []
    with pytest.raises(OSError, match="disk gone"):
        with Prefetched(items()) as ahead:
            for item in ahead:
                got.append(item)
    assert got == [1] and closed.is_set()


def test_the_ordered_worker_keeps_order_and_stops_at_the_first_failure():
    done: list[int] = []

    def step(i: int) -> None:
        if i == 3:
            raise ValueError("three")
        done.append(i)

    with pytest.raises(ValueError, match="three"):
        with OrderedWorker(depth=2) as worker:
            for i in range(8):
                worker.put(step, i)
            worker.drain()
    assert done == [0, 1, 2]  # nothing after the failure ran


def test_a_second_process_joins_the_scratch_and_journal_and_never_creates_them(tmp_path):
    from affine import Affine
    from rasterio.crs import CRS

    from rssr_cli.scene import Grid
    from rssr_cli.scratch import RawScratch

    grid = Grid(4, 3, Affine(0.8, 0, 500000, 0, -0.8, 5200000), CRS.from_epsg(32632))
    path = tmp_path / ".o.tif.rssr-partial"
    with pytest.raises(OutputError, match="filesystem they share"):
        RawScratch(path, grid, count=1, dtype="uint16", nodata=0, create=False)
    assert not path.exists()
    first = RawScratch(path, grid, count=1, dtype="uint16", nodata=0)
    second = RawScratch(path, grid, count=1, dtype="uint16", nodata=0, create=False)
    first.write(np.full((1, 1, 4), 1, np.uint16), 0, 0)
    second.write(np.full((1, 2, 4), 2, np.uint16), 1, 0)  # its own rows, at their offsets
    first.close()
    second.close()
    assert np.frombuffer(path.read_bytes(), "<u2").tolist() == [1] * 4 + [2] * 8

    journal_path = tmp_path / ".o.tif.rssr-journal"
    fingerprint = {"rssr": "test"}
    with pytest.raises(OutputError, match="cannot read the journal"):
        Journal.join(journal_path, fingerprint)
    journal = Journal.create(journal_path, fingerprint, units=6)
    joined = Journal.join(journal_path, fingerprint)
    journal.record(0, 0, 10)
    joined.record(0, 3, 5)
    joined.record(0, 4, 5)
    assert journal.valid_on_disk() == 20 and journal.valid_pixels == 10
    assert joined.rows_done(0, first=3) == 2 and joined.rows_done(0) == 0
    journal.close()
    joined.close()
    assert Journal.load(journal_path).done == {(0, 0): 10, (0, 3): 5, (0, 4): 5}


def test_worker_threads_run_in_the_callers_gdal_environment() -> None:
    """rasterio's Env is per thread: the reading and blending threads must see the pipeline's GDAL options (cache
    size, the user's --config) and rasterio's warning handling, or libtiff's warnings reach stderr."""
    import rasterio

    from rssr_cli.workers import OrderedWorker, Prefetched

    def option() -> object:
        return rasterio.env.getenv().get("RSSR_TEST_OPTION") if rasterio.env.hasenv() else None

    seen: list[object] = []
    with rasterio.Env(RSSR_TEST_OPTION="yes"):
        with Prefetched(option() for _ in range(2)) as items:
            seen += list(items)
        with OrderedWorker() as worker:
            worker.put(lambda: seen.append(option()))
            worker.drain()
    assert seen == ["yes", "yes", "yes"]
