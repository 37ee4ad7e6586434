"""Resumable upscales: the journal of finished rows of tiles, kept on disk beside the output with its scratch rasters.

A run writes, beside its output ``NAME``, hidden files that every run aimed at ``NAME`` agrees on
(:func:`rssr_cli.atomic.work_path`):

- ``.NAME.rssr-partial`` (and ``.NAME_std.tif.rssr-partial`` with several samples): the raw scratch rasters
  (:mod:`rssr_cli.scratch`);
- ``.NAME.rssr-journal``: JSON lines. The first holds the run's **fingerprint** (inputs with their size and time,
  window, tiling, method and weights, sampler, seed, encoding: every setting that changes pixels, see
  :func:`rssr_cli.pipeline.run_fingerprint`); each further line is one finished unit, a row of tiles of a column chunk
  (``{"chunk": k, "row": i, "valid": n}``), appended and fsync'd only after that row's pixels were synced to the
  scratch rasters (:meth:`rssr_cli.sink.CogSink.checkpoint`).

So at any moment (SIGKILL, power loss) what the journal lists is on disk, and a half-written last line is ignored.
``--resume`` (:func:`resumable_run`) reopens both when the fingerprint matches and the pipeline skips the units listed
(it recomputes, without writing, the finished rows whose overlap reaches the first row to do, to rebuild the blending
carry: :func:`rssr_cli.blend.carry_start`); a different fingerprint is refused naming what differs. The processes of a
sharded run (:mod:`rssr_cli.world`) append their own rows to rank 0's journal (:meth:`Journal.join`), so a run resumes
with any number of processes. Without ``--resume`` stale files are replaced. On success and on errors
the files are removed; an interruption (:class:`KeyboardInterrupt`) keeps them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from rssr_cli.atomic import atomic_write, fsync_folder, work_path
from rssr_cli.errors import OutputError, UsageError
from rssr_cli.sink import PartialFiles

__all__ = ["Journal", "RunFiles", "fingerprint_differences", "fingerprint_digest", "resumable_run"]

JOURNAL_FORMAT = 1


@dataclass(frozen=True)
class RunFiles:
    """The work files of one output (and of its ``_std`` companion, written when ``with_std``)."""

    output: Path
    companion: Path
    with_std: bool

    @property
    def journal(self) -> Path:
        return work_path(self.output, "journal")

    def partial(self, *, reuse: bool, owner: bool = True) -> PartialFiles:
        """The scratch rasters; ``owner=False``: another process (rank 0 of a sharded run) creates and removes them."""
        return PartialFiles(main=work_path(self.output, "partial"),
                            std=work_path(self.companion, "partial") if self.with_std else None, reuse=reuse,
                            owner=owner)

    def scratch_present(self) -> bool:
        partial = self.partial(reuse=True)
        return partial.main.exists() and (partial.std is None or partial.std.exists())

    def allocated_bytes(self) -> int:
        """Disk the scratch rasters take now (sparse: what was written)."""
        partial = self.partial(reuse=True)
        total = 0
        for path in (partial.main, partial.std):
            with suppress(OSError):
                total += os.stat(path).st_blocks * 512 if path is not None else 0
        return total

    def remove(self) -> None:
        """Remove the journal, the scratch rasters, and temporaries of dead runs of this output (the caller holds the
        output's lock, so no live run owns them)."""
        stale = [self.journal, work_path(self.output, "partial"), work_path(self.companion, "partial")]
        stale += [p.with_name(p.name + ".vrt") for p in stale[1:]]
        for target in (self.output, self.companion):
            for kind in ("tmp", "scratch"):
                stale += target.parent.glob(f".{target.stem}.rssr-{kind}-*{target.suffix}")
        for path in stale:
            with suppress(OSError):
                path.unlink(missing_ok=True)
        shutil.rmtree(work_path(self.output, "cog"), ignore_errors=True)  # a COG translation killed half-way
        fsync_folder(self.output.parent)


class Journal:
    """The finished units of one run; :meth:`record` makes one durable. Open from construction: :meth:`close`."""

    def __init__(self, path: Path, fingerprint: Mapping[str, str], units: int,
                 done: dict[tuple[int, int], int] | None = None) -> None:
        self.path = path
        self.fingerprint = dict(fingerprint)
        self.units = units
        self.done: dict[tuple[int, int], int] = dict(done or {})
        self._fd: int | None = None

    @classmethod
    def create(cls, path: Path, fingerprint: Mapping[str, str], units: int) -> "Journal":
        """A new journal (replacing any), durable before it is returned."""
        journal = cls(path, fingerprint, units)
        journal._rewrite()
        return journal

    @classmethod
    def load(cls, path: Path) -> "Journal | None":
        """The journal at ``path`` (rewritten without a torn last line, open for appending), or None if there is
        none or its header is unreadable."""
        read = _read_journal(path)
        if read is None:
            return None
        journal = cls(path, *read)
        journal._rewrite()
        return journal

    @classmethod
    def join(cls, path: Path, fingerprint: Mapping[str, str]) -> "Journal":
        """The journal another process of this run created at ``path`` (rank 0 of a sharded run), open for appending
        this process's units after its own; never created, rewritten or removed from here.

        Every process appends whole lines with ``O_APPEND``; where appends from several machines may land on one
        another (NFS), a line lost or torn only makes ``--resume`` redo rows, never skip one: a journal line is read up
        to the first that does not parse, and each line is written after its pixels are on disk.
        """
        read = _read_journal(path)
        if read is None or read[0] != dict(fingerprint):
            raise OutputError(f"cannot read the journal {path} that the first process created (with several machines "
                              "the output folder must be on a filesystem they share)")
        journal = cls(path, *read)
        try:
            journal._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None
        return journal

    def rows_done(self, chunk: int, first: int = 0) -> int:
        """How many rows of tiles of ``chunk`` are finished from row ``first`` on, without a gap (each process of a run
        journals the rows of its share in order)."""
        n = 0
        while (chunk, first + n) in self.done:
            n += 1
        return n

    def valid_on_disk(self) -> int:
        """Valid output pixels in the units every process of the run has journaled so far (read from the file)."""
        read = _read_journal(self.path)
        return sum(read[2].values()) if read is not None else self.valid_pixels

    @property
    def valid_pixels(self) -> int:
        """Valid output pixels in the finished units."""
        return sum(self.done.values())

    def record(self, chunk: int, row: int, valid: int) -> None:
        """Row ``row`` of chunk ``chunk`` (with ``valid`` valid pixels) is on disk: say so, durably."""
        line = json.dumps({"chunk": chunk, "row": row, "valid": int(valid)}) + "\n"
        try:
            assert self._fd is not None, "the journal is closed"
            os.write(self._fd, line.encode())
            os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None
        self.done[(chunk, row)] = int(valid)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _rewrite(self) -> None:
        """Write the whole journal under a temporary name, rename it into place, open it for appending."""
        header = {"rssr_journal": JOURNAL_FORMAT, "units": self.units, "fingerprint": self.fingerprint}
        lines = [json.dumps(header)] + [json.dumps({"chunk": k, "row": r, "valid": v})
                                        for (k, r), v in sorted(self.done.items())]
        try:
            with atomic_write(self.path) as tmp:
                tmp.write_text("\n".join(lines) + "\n")
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None


def _read_journal(path: Path) -> tuple[dict[str, str], int, dict[tuple[int, int], int]] | None:
    """(fingerprint, units, finished units) of the journal at ``path``; None if there is none or its header is
    unreadable. Reading stops at the first line that does not parse: a line torn by a kill did not happen, nor did any
    after it."""
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
        if header.get("rssr_journal") != JOURNAL_FORMAT:
            return None
        fingerprint, units = dict(header["fingerprint"]), int(header["units"])
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    done: dict[tuple[int, int], int] = {}
    for line in lines[1:]:
        try:
            unit = json.loads(line)
            done[(int(unit["chunk"]), int(unit["row"]))] = int(unit["valid"])
        except (ValueError, KeyError, TypeError):
            break
    return fingerprint, units, done


def fingerprint_digest(fingerprint: Mapping[str, str]) -> str:
    """A short digest of a fingerprint: the ``RSSR_FINGERPRINT`` tag of the outputs, which tells a finished output of
    the same run (``--resume`` skips it) from any other."""
    return hashlib.sha256(json.dumps(dict(fingerprint), sort_keys=True).encode()).hexdigest()[:32]


def fingerprint_differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """``key: old -> new`` for every setting that differs."""
    keys = list(new) + [k for k in old if k not in new]
    return [f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def _short(value: str | None, limit: int = 60) -> str:
    if value is None:
        return "(none)"
    return value if len(value) <= limit else value[:limit - 3] + "..."


@contextmanager
def resumable_run(files: RunFiles, fingerprint: Mapping[str, str], *, units: int,
                  resume: bool) -> Iterator[Journal]:
    """The journal of this run: the unfinished one when ``resume`` finds one with this fingerprint (and its scratch
    rasters), else a new one (stale files replaced). Leaving the block removes every work file, except after an
    interruption, which keeps them for ``--resume``. The caller holds the output's lock."""
    journal = _resumed(files, fingerprint) if resume else None
    if journal is None:
        files.remove()
        journal = Journal.create(files.journal, fingerprint, units)
    try:
        yield journal
    except KeyboardInterrupt:
        journal.close()
        raise
    except BaseException:
        journal.close()
        files.remove()
        raise
    journal.close()
    files.remove()


def _resumed(files: RunFiles, fingerprint: Mapping[str, str]) -> Journal | None:
    journal = Journal.load(files.journal)
    if journal is None:
        return None
    differ = fingerprint_differences(journal.fingerprint, fingerprint)
    if differ or not files.scratch_present():
        journal.close()
    if differ:
        raise UsageError(f"--resume: the unfinished run of {files.output} was made with other settings "
                         f"({'; '.join(differ)}); repeat its command, or leave out --resume to start over")
    return journal if files.scratch_present() else None
