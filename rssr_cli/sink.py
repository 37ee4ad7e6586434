"""The sink stage: finished HR blocks in, the output COG (and its ``_std`` uncertainty companion) out.

Blocks are encoded (reflectance -> output pixels, nodata where invalid; :mod:`rssr_cli.encoding`) and written into raw
scratch rasters beside the outputs (:mod:`rssr_cli.scratch`) on one worker thread, so that disk I/O overlaps the
method's next tiles. :meth:`CogSink.checkpoint` queues a task behind the blocks written so far: the scratch files are
synced to disk, then the task runs (:mod:`rssr_cli.resume` journals the finished row of tiles there). :meth:`CogSink.
commit` describes the scratch rasters (band names, provenance tags, scale/offset) and has rio-cogeo turn them into COGs
(:mod:`rssr_cli.cog`).

Leaving the ``with`` block without a commit (an error upstream) removes the scratch files and writes nothing; a failed
commit leaves neither output of a pair. With ``partial`` (:class:`PartialFiles`: names a later run finds), an
interruption (:class:`KeyboardInterrupt`, which :class:`rssr_cli.errors.Interrupted` is) keeps the scratch files for
``--resume`` instead.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rssr_cli.atomic import temporary_path, work_path
from rssr_cli.blend import FinishedRows
from rssr_cli.cog import CogOptions, translate_to_cog
from rssr_cli.encoding import OutputEncoding
from rssr_cli.scene import Grid
from rssr_cli.scratch import RawScratch
from rssr_cli.workers import OrderedWorker

#: The band tag that tells the companion apart from the output.
STD_LAYER = "per-pixel standard deviation of the samples (reflectance)"


@dataclass(frozen=True)
class PartialFiles:
    """Where the scratch rasters of a resumable run live (``std`` for the companion), and whether to keep the pixels
    already there (``reuse``: a resumed run).

    ``owner``: this sink creates, removes and commits them. A sink that is not their owner (another rank of a sharded
    run, :mod:`rssr_cli.world`) writes its blocks into the files the owner created, never creates, removes or commits
    them, and leaves the COG's work folder alone.
    """

    main: Path
    std: Path | None = None
    reuse: bool = False
    owner: bool = True


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
                 tags: Mapping[str, str], cog: CogOptions, std_output: Path | None = None,
                 partial: PartialFiles | None = None) -> None:
        self.encoding = encoding
        self.bands, self.tags, self.cog = tuple(bands), dict(tags), cog
        self._partial = partial
        self._committed = False
        #: The COG translation's temporary files (rio-cogeo's intermediate too), in one hidden folder beside the
        #: output that the sink (or, after a kill, the next run: :class:`rssr_cli.resume.RunFiles`) removes whole.
        self._cogdir = work_path(output, "cog")
        reuse = partial is not None and partial.reuse
        self._owner = partial is None or partial.owner
        with ExitStack() as stack:  # on an error half-way, what was opened is closed and removed again
            stack.push(self._exit_layers)
            self._layers: list[_Layer] = []
            self._main = self._open(output, partial.main if partial else None, grid, len(bands), encoding.dtype,
                                    encoding.nodata, reuse)
            self._std = None if std_output is None else self._open(
                std_output, partial.std if partial else None, grid, len(bands), "float32", float("nan"), reuse)
            # Entered last, left first: the thread stops before the scratch files close.
            self._writer = stack.enter_context(OrderedWorker(name="rssr-writer"))
            self._resources = stack.pop_all()

    def _open(self, output: Path, scratch: Path | None, grid: Grid, count: int, dtype: str, nodata: float,
              reuse: bool) -> "_Layer":
        layer = _Layer(output, RawScratch(scratch or temporary_path(output, "scratch"), grid, count=count,
                                          dtype=dtype, nodata=nodata, reuse=reuse, create=self._owner))
        self._layers.append(layer)
        return layer

    @property
    def with_std(self) -> bool:
        """Whether blocks' ``std`` is written (to the companion)."""
        return self._std is not None

    @property
    def allocated_bytes(self) -> int:
        """Disk the scratch files take now (what a resumed run already has)."""
        return sum(layer.scratch.allocated_bytes() for layer in self._layers)

    def __enter__(self) -> "CogSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._resources.__exit__(*exc)

    def write(self, block: FinishedRows, valid: np.ndarray) -> None:
        """Queue a finished block (reflectance) with its validity (h, w); an earlier block's write error is raised
        here."""
        self._writer.put(self._write_block, block, valid)

    def checkpoint(self, task: Callable[[], None]) -> None:
        """Queue ``task`` to run (on the writer thread) once the blocks queued so far are on disk (synced)."""
        self._writer.put(self._sync_then, task)

    def flush(self) -> None:
        """Wait until every queued block and checkpoint is written (an error on the writer is raised here)."""
        self._writer.drain()

    def commit(self) -> None:
        """Finish writing, describe the layers and translate them to COGs: both files of a pair, or neither."""
        if not self._owner:
            raise RuntimeError("internal: only the owner of the scratch files commits them")
        self._writer.drain()
        enc = self.encoding
        self._main.describe(descriptions=self.bands, tags=self.tags, scales=enc.scales, offsets=enc.offsets)
        layers = [self._main]
        if self._std is not None:
            self._std.describe(descriptions=[f"{b} std" for b in self.bands],
                               tags={**self.tags, "RSSR_LAYER": STD_LAYER})
            layers.insert(0, self._std)  # the output last: it appears with its pair complete
        self._cogdir.mkdir(exist_ok=True)
        _translate_all([(layer.vrt, layer.output) for layer in layers], self.cog, self._cogdir)
        self._committed = True

    def _write_block(self, block: FinishedRows, valid: np.ndarray) -> None:
        """On the writer thread, the only one that touches the scratch files."""
        self._main.scratch.write(self.encoding.encode(block.data, valid), block.row0, block.col0)
        if self._std is not None and block.std is not None:
            block.std[:, ~valid] = np.nan
            self._std.scratch.write(block.std, block.row0, block.col0)

    def _sync_then(self, task: Callable[[], None]) -> None:
        for layer in self._layers:
            layer.scratch.sync()
        task()

    def _exit_layers(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Close the scratch files; remove them (their owner) unless an interruption left work that ``--resume`` can
        reuse."""
        keep = not self._owner or (self._partial is not None and not self._committed and exc_type is not None
                                   and issubclass(exc_type, KeyboardInterrupt))
        if self._owner:
            shutil.rmtree(self._cogdir, ignore_errors=True)
        for layer in self._layers:
            layer.scratch.close()
            for path in (layer.vrt if self._owner else None, None if keep else layer.scratch.path):
                with suppress(OSError):  # a folder turned read-only: report the first error, not this one
                    if path is not None:
                        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Layer:
    """One output file in the making: its raw scratch raster beside it, open for writing."""

    output: Path
    scratch: RawScratch

    @property
    def vrt(self) -> Path:
        return self.scratch.path.with_name(self.scratch.path.name + ".vrt")

    def describe(self, *, descriptions: Sequence[str], tags: Mapping[str, str],
                 scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None) -> None:
        """Band descriptions, tags and scale/offset in the VRT over the scratch file (rio-cogeo carries them into the
        COG)."""
        self.scratch.write_vrt(self.vrt, descriptions=descriptions, tags=tags, scales=scales, offsets=offsets)


def _translate_all(layers: Sequence[tuple[Path, Path]], cog: CogOptions, workdir: Path) -> None:
    """Each (scratch, output) to a COG, in order; on any failure the outputs already written are removed again."""
    written: list[Path] = []
    try:
        for scratch, output in layers:
            translate_to_cog(scratch, output, cog, workdir=workdir)
            written.append(output)
    except BaseException:
        for output in written:
            output.unlink(missing_ok=True)
        raise
