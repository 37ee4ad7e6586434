"""The sink stage: finished HR blocks in, the output COG (and its ``_std`` uncertainty companion) out.

Blocks are encoded (reflectance -> output pixels, nodata where invalid; :mod:`rssr_cli.encoding`) and written into
tiled BigTIFF scratch files beside the outputs on one worker thread, so that GDAL I/O overlaps the method's next
tiles. :meth:`CogSink.commit` describes the scratch files (band names, provenance tags, scale/offset) and has
rio-cogeo turn them into COGs (:mod:`rssr_cli.cog`). Leaving the ``with`` block without a commit (an error upstream)
removes the scratch files and writes nothing; a failed commit leaves neither output of a pair.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from rasterio.io import DatasetWriter
from rasterio.windows import Window

from rssr_cli.atomic import temporary_path
from rssr_cli.blend import FinishedRows
from rssr_cli.cog import CogOptions, describe, scratch_raster, translate_to_cog
from rssr_cli.encoding import OutputEncoding
from rssr_cli.scene import Grid

#: The band tag that tells the companion apart from the output.
STD_LAYER = "per-pixel standard deviation of the samples (reflectance)"


class CogSink:
    """Writes finished blocks of ``grid`` to ``output`` (and their spread to ``std_output`` when given).

    Like a file, it is open from construction: use it as a context manager so that its scratch files go away in any
    case. Call :meth:`write` for each block, then :meth:`commit` once::

        with CogSink(output, grid, encoding, bands=("B02", ...), tags=provenance, cog=CogOptions()) as sink:
            for block, valid in blocks:
                sink.write(block, valid)
            sink.commit()
    """

    def __init__(self, output: Path, grid: Grid, encoding: OutputEncoding, *, bands: Sequence[str],
                 tags: Mapping[str, str], cog: CogOptions, std_output: Path | None = None) -> None:
        self.encoding = encoding
        self.bands, self.tags, self.cog = tuple(bands), dict(tags), cog
        with ExitStack() as stack:  # on an error half-way, what was opened is closed and removed again
            self._main = _Layer.open(stack, output, grid, count=len(bands), dtype=encoding.dtype,
                                     nodata=encoding.nodata, blocksize=cog.blocksize)
            self._std = None if std_output is None else _Layer.open(
                stack, std_output, grid, count=len(bands), dtype="float32", nodata=float("nan"),
                blocksize=cog.blocksize)
            # Entered last, left first: the thread stops before the scratch files close.
            self._writer = stack.enter_context(_WriterThread(self._write_block))
            self._resources = stack.pop_all()

    @property
    def with_std(self) -> bool:
        """Whether blocks' ``std`` is written (to the companion)."""
        return self._std is not None

    def __enter__(self) -> "CogSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self._resources.close()

    def write(self, block: FinishedRows, valid: np.ndarray) -> None:
        """Queue a finished block (reflectance) with its validity (h, w); an earlier block's write error is raised
        here."""
        self._writer.put(block, valid)

    def commit(self) -> None:
        """Finish writing, describe the layers and translate them to COGs: both files of a pair, or neither."""
        self._writer.drain()
        self._main.describe_and_close(descriptions=self.bands, tags=self.tags, scales=self.encoding.scales,
                                      offsets=self.encoding.offsets)
        layers = [self._main]
        if self._std is not None:
            self._std.describe_and_close(descriptions=[f"{b} std" for b in self.bands],
                                         tags={**self.tags, "RSSR_LAYER": STD_LAYER})
            layers.insert(0, self._std)  # the output last: it appears with its pair complete
        _translate_all([(layer.scratch, layer.output) for layer in layers], self.cog)

    def _write_block(self, block: FinishedRows, valid: np.ndarray) -> None:
        """On the writer thread, the only one that touches the scratch files."""
        window = Window(block.col0, block.row0, block.data.shape[2], block.data.shape[1])
        self._main.dst.write(self.encoding.encode(block.data, valid), window=window)
        if self._std is not None and block.std is not None:
            block.std[:, ~valid] = np.nan
            self._std.dst.write(block.std, window=window)


@dataclass(frozen=True)
class _Layer:
    """One output file in the making: its tiled BigTIFF scratch file beside it, open for writing."""

    output: Path
    scratch: Path
    dst: DatasetWriter

    @staticmethod
    def open(stack: ExitStack, output: Path, grid: Grid, *, count: int, dtype: str, nodata: float,
             blocksize: int) -> "_Layer":
        """Create the scratch file; ``stack`` closes and removes it."""
        scratch = temporary_path(output, "scratch")
        dst = stack.enter_context(scratch_raster(scratch, grid, count=count, dtype=dtype, nodata=nodata,
                                                 blocksize=blocksize))
        return _Layer(output, scratch, dst)

    def describe_and_close(self, *, descriptions: Sequence[str], tags: Mapping[str, str],
                           scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None) -> None:
        """Band descriptions, tags and scale/offset (rio-cogeo carries them into the COG), then close the file."""
        describe(self.dst, descriptions=descriptions, tags=tags, scales=scales, offsets=offsets)
        self.dst.close()


def _translate_all(layers: Sequence[tuple[Path, Path]], cog: CogOptions) -> None:
    """Each (scratch, output) to a COG, in order; on any failure the outputs already written are removed again."""
    written: list[Path] = []
    try:
        for scratch, output in layers:
            translate_to_cog(scratch, output, cog)
            written.append(output)
    except BaseException:
        for output in written:
            output.unlink(missing_ok=True)
        raise


class _WriterThread:
    """Runs ``write(block, valid)`` on one worker thread, in order, with at most ``depth`` blocks waiting.

    An error on the worker is raised in the caller at the next ``put`` or ``drain``; leaving the ``with`` block
    cancels what still waits and waits for the block being written.
    """

    def __init__(self, write: Callable[[FinishedRows, np.ndarray], None], depth: int = 4) -> None:
        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rssr-writer")
        self._pending: deque[Future[None]] = deque()
        self._depth = depth

    def put(self, block: FinishedRows, valid: np.ndarray) -> None:
        self._pending.append(self._pool.submit(self._write, block, valid))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def drain(self) -> None:
        """Wait until every queued block is written."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "_WriterThread":
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
