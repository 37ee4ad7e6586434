"""One process or many: this process's place in a ``torchrun`` launch, and the few collectives a sharded upscale needs.

Under ``torchrun`` (any ``--nproc-per-node``, several machines through its rendezvous) every process runs the same
command; :class:`World` says which one this is (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), which GPU it takes
(``cuda:LOCAL_RANK``) and which share of the work is its own. A single process never touches
:mod:`torch.distributed`.

The processes exchange only small control messages (the outcome of each phase of a run, fingerprints, batch sizes,
exit statuses), never tensors, so they talk over gloo (TCP) whatever their device: a CPU-only launch needs it anyway,
gloo raises at once when a peer process dies (its sockets close) where a collective on NCCL would wait, and no GPU
memory or stream is spent on bookkeeping.

What keeps every process in step is :meth:`World.agree`: each phase of a sharded run executes inside it on every rank,
and every rank leaves it together, with its result or with the same failure: the failing rank raises its own exception,
the others :class:`RankFailed` naming that rank and its message (or :class:`~rssr_cli.errors.Interrupted`, after a
signal). A long phase need not end before the others learn of a failure: the failing rank raises a flag in torchrun's
key-value store, and :meth:`World.check` (called after each row of tiles) stops the others within a row.

A collective waits at most ``RSSR_DIST_TIMEOUT`` seconds for the other processes (default 6 hours: a rank waits for the
others' share, and for rank 0 writing the COG); a process that dies is noticed at once, not after the timeout.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

from rssr_cli.errors import Interrupted, RssrError

__all__ = ["RankFailed", "StoppedByPeer", "World", "joined_world"]

T = TypeVar("T")

#: Environment variable: seconds a collective waits for the other processes.
TIMEOUT_ENV = "RSSR_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 6 * 3600

#: Phases agreed so far by this process (the same sequence on every rank): the key of each phase's stop flag.
_phases = 0


class RankFailed(RssrError):
    """Another process of the run failed: the message names its rank and says why; the exit code is that failure's."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StoppedByPeer(Exception):
    """Raised by :meth:`World.check` when another process of the run has failed: this one stops its share."""


@dataclass(frozen=True)
class _Report:
    """What went wrong on one rank, small enough to send: ``kind`` is ``error`` (an :class:`RssrError`),
    ``interrupted`` (a signal), ``crash`` (any other exception) or ``stopped`` (told to stop by another rank)."""

    kind: str
    message: str
    exit_code: int = 1
    signum: int = 0

    @classmethod
    def of(cls, exc: BaseException) -> "_Report":
        if isinstance(exc, StoppedByPeer):
            return cls("stopped", "")
        if isinstance(exc, Interrupted):
            return cls("interrupted", str(exc), exc.exit_code, exc.signum)
        if isinstance(exc, RssrError):
            return cls("error", str(exc), exc.exit_code)
        if isinstance(exc, KeyboardInterrupt):
            return cls("interrupted", "interrupted", 130, 2)
        return cls("crash", f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else type(exc).__name__)

    def exception(self, rank: int) -> BaseException:
        """The exception the other ranks raise for this report."""
        if self.kind == "interrupted":
            return Interrupted(self.signum)
        if self.kind == "error":
            return RankFailed(f"rank {rank}: {self.message}", self.exit_code)
        return RankFailed(f"rank {rank} failed: {self.message}", self.exit_code)


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes (one by default: no collectives at all)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        """From torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without it."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        """Rank 0: the process that locks, creates, commits and removes the output's files and reports the run."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def band(self, count: int, carry: int = 0) -> range:
        """This rank's contiguous share of ``count`` items (rows of tiles), in rank order, balanced so that the work of
        the shares differs by one item at most when every share but the first also recomputes ``carry`` items before
        it (the rows that rebuild a blender's carry); with more ranks than work the last ranks get none."""
        if count <= 0:
            return range(0)
        q, r = divmod(count + carry * (self.size - 1), self.size)
        lengths = [max(q + (1 if i < r else 0) - (carry if i else 0), 0) for i in range(self.size)]
        start = min(sum(lengths[:self.rank]), count)
        return range(start, min(start + lengths[self.rank], count))

    def share(self, count: int) -> range:
        """This rank's round-robin share of ``count`` items (the inputs of a batch): items rank, rank + size, ..."""
        return range(self.rank, count, self.size)

    def device(self, requested: str) -> str:
        """The device this process runs on: under torchrun ``auto`` and ``cuda`` mean this rank's GPU
        (``cuda:LOCAL_RANK``, shared round-robin when a machine runs more processes than it has GPUs), made the
        current one so that nothing lands on GPU 0 by default; one process keeps ``requested``."""
        name = str(requested).strip().lower()
        if self.size == 1 or name not in ("auto", "cuda"):
            return requested
        import torch

        if not torch.cuda.is_available():
            return "cpu" if name == "auto" else requested  # "cuda" without CUDA: the method warns and falls back
        index = self.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return f"cuda:{index}"

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (small, picklable), in rank order."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        try:
            dist.all_gather_object(out, value)
        except Exception as exc:  # noqa: BLE001 - gloo's errors have no common public type
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RankFailed(f"rank {self.rank} lost another process of the run, which ended without reporting "
                             f"(killed, or out of memory?): {reason}") from None
        return out

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, phase: Callable[[], T]) -> T:
        """Run ``phase`` here while the other ranks run theirs, then leave together: this rank's result when every
        rank succeeded; else, on every rank, the failure (see the module's docstring)."""
        if self.size == 1:
            return phase()
        global _phases
        key = f"rssr/stop/{_phases}"
        try:
            value, failure = phase(), None
        except BaseException as exc:  # noqa: BLE001 - every failure, signals included, must reach the other ranks
            value, failure = None, exc
            _raise_flag(key)
        try:
            reports = self.gather(None if failure is None else _Report.of(failure))
        except RankFailed:
            if failure is not None and not isinstance(failure, StoppedByPeer):
                raise failure from None
            raise
        _phases += 1
        failed = [(rank, r) for rank, r in enumerate(reports) if r is not None]
        if not failed:
            return value  # type: ignore[return-value]
        if failure is not None and not isinstance(failure, StoppedByPeer):
            raise failure
        rank, report = next(((k, r) for k, r in failed if r.kind != "stopped"), failed[0])
        raise report.exception(rank)

    def check(self) -> None:
        """Raise :class:`StoppedByPeer` when another rank has failed in the current phase (a no-op alone)."""
        if self.size == 1:
            return
        store = _store()
        if store is not None and store.check([f"rssr/stop/{_phases}"]):
            raise StoppedByPeer()


def _store() -> Any:
    """The key-value store of the process group (torchrun's), or None where this torch does not expose it."""
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except (ImportError, AttributeError, RuntimeError, ValueError):
        return None


def _raise_flag(key: str) -> None:
    store = _store()
    if store is not None:
        with suppress(Exception):  # the store gone too: the others learn of the failure at the end of the phase
            store.set(key, "1")


def _timeout() -> timedelta:
    try:
        return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except ValueError:
        raise RssrError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r} is not a number of seconds") from None


@contextmanager
def joined_world() -> Iterator[World]:
    """This process's :class:`World` for the block. Under torchrun (``WORLD_SIZE`` above 1) the process group is
    joined (gloo) and, at the end, left once every rank has got there: no process ends (and has torchrun stop the
    others) while another is still reporting or cleaning up."""
    world = World.from_env()
    if world.size == 1:
        yield world
        return
    import torch.distributed as dist

    if dist.is_initialized():  # the caller's own group
        yield world
        return
    timeout = _timeout()
    dist.init_process_group("gloo", timeout=timeout)
    try:
        yield world
    finally:
        with suppress(Exception):  # a rank that died: nothing to wait for
            dist.barrier()
        dist.destroy_process_group()
