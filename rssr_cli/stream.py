"""The stage loop of one output: rows of tiles through read -> infer -> blend -> sink, the stages on their own threads.

For each column chunk, top to bottom over the rows of tiles asked for (all of them, or one process's band of a
sharded run, :mod:`rssr_cli.world`):

- read (:func:`rssr_cli.strips.read_strips`): the next LR strip is read on a thread
  (:class:`~rssr_cli.workers.Prefetched`) while this one is inferred;
- infer (:func:`rssr_cli.infer.infer_batches`), on the calling thread: the method's batches (on a GPU this thread
  launches the network and waits for its results, and nothing else);
- blend, mask and hand to the sink (:func:`rssr_cli.blend.add_tile`, :class:`rssr_cli.validity.OutputMask`) on one
  :class:`~rssr_cli.workers.OrderedWorker`, in order, while the method computes the next batch; the sink encodes and
  writes on its own thread.

Rows the journal lists as finished are skipped; the rows whose overlap reaches the first row to compute
(:func:`rssr_cli.blend.carry_start`) are computed again without being written, to rebuild the blender's carry. Each
row written is journaled once its pixels are on disk (:meth:`rssr_cli.sink.CogSink.checkpoint`). The arithmetic and
its order are one thread's, so the output depends neither on the threads, nor on where a run (re)started, nor on how
the rows are shared among processes.
"""

from __future__ import annotations

import functools
from typing import Callable, Protocol, Sequence

from rssr_cli.blend import FinishedRows, RowBlender, add_tile, carry_start, start_tile_row
from rssr_cli.infer import HRTile, infer_batches
from rssr_cli.methods import TileUpsampler
from rssr_cli.resume import Journal
from rssr_cli.scene import Scene
from rssr_cli.sink import CogSink
from rssr_cli.strips import LRStrip, read_strips
from rssr_cli.tiling import Chunk, TilePlan
from rssr_cli.validity import OutputMask
from rssr_cli.workers import OrderedWorker, Prefetched

__all__ = ["stream_rows"]

#: Calls queued for the blend thread at most (a batch of HR tiles each, or a row's start or end): enough to keep the
#: method busy while a batch is blended, few enough to bound memory (a batch of 8 default tiles is about 0.4 GB).
BLEND_DEPTH = 3


class Progress(Protocol):
    def reuse(self, tiles: int) -> None: ...

    def add(self, tiles: int) -> None: ...


def stream_rows(scene: Scene, tiles: TilePlan, upsampler: TileUpsampler, mask: OutputMask, sink: CogSink, *,
                chunks: Sequence[Chunk], journal: Journal, rows: range, progress: Progress,
                check: Callable[[], None] = lambda: None) -> None:
    """Compute, blend and write the rows of tiles ``rows`` of every chunk that the journal does not list as finished.

    ``progress`` counts tiles (reused from an interrupted run, then computed); ``check()`` runs after each row of
    tiles (a sharded run stops there when another process has failed). Returns when every block is queued in the sink
    (:meth:`CogSink.flush` waits for the disk).
    """
    hr_height = tiles.hr_shape[0]
    with OrderedWorker(depth=BLEND_DEPTH, name="rssr-blend") as blending:
        for k, chunk in enumerate(chunks):
            first = rows.start + journal.rows_done(k, rows.start)
            progress.reuse((first - rows.start) * len(chunk.cols))
            if first >= rows.stop:
                continue
            blender = RowBlender(len(upsampler.bands), *chunk.write, height=hr_height, with_std=sink.with_std)
            with Prefetched(read_strips(scene, tiles, chunk, carry_start(tiles, first), rows.stop)) as strips:
                for strip in strips:
                    record = functools.partial(journal.record, k, strip.row) if strip.row >= first else None
                    row = _Row(blender, tiles, strip, mask, sink, record)
                    blending.put(row.start)
                    for batch in infer_batches(upsampler, strip):
                        blending.put(row.add, batch)
                        if record is not None:
                            progress.add(len(batch))
                    blending.put(row.finish)
                    check()
        blending.drain()


class _Row:
    """One row of tiles on the blend thread: its HR tiles blended, the finished blocks masked and written, the row
    journaled once they are on disk (``record(valid)``); without ``record`` a carry row, blended and not written."""

    def __init__(self, blender: RowBlender, tiles: TilePlan, strip: LRStrip, mask: OutputMask, sink: CogSink,
                 record: Callable[[int], None] | None) -> None:
        self.blender, self.tiles, self.strip, self.mask, self.sink = blender, tiles, strip, mask, sink
        self.record = record
        self.valid = 0

    def start(self) -> None:
        start_tile_row(self.blender, self.tiles, self.strip.row)

    def add(self, batch: list[HRTile]) -> None:
        for hr in batch:
            self._write(add_tile(self.blender, self.tiles, hr))

    def finish(self) -> None:
        self._write(self.blender.finish_row())
        if self.record is not None:
            self.sink.checkpoint(functools.partial(self.record, self.valid))

    def _write(self, blocks: list[FinishedRows]) -> None:
        if self.record is None:
            return
        for block in blocks:
            valid = self.mask.valid(block, self.strip)
            self.valid += int(valid.sum())
            self.sink.write(block, valid)
