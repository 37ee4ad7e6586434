"""Threads that overlap the stages of an upscale: the next strip read while this one runs, work handed to a worker.

An upscale is a chain of stages (read -> infer -> blend -> sink). With one thread each waits for the others; here the
method keeps the main thread (on a GPU: launching its kernels and waiting for its results) while

- :class:`Prefetched` reads the next item of an iterator (the next LR strip) on its own thread, and
- :class:`OrderedWorker` runs queued calls (blending a batch of tiles, writing a block) on another, in order.

Both keep the order of the work and its arithmetic exactly as one thread would, so outputs do not change; both hold a
bounded amount of work (one item ahead; ``depth`` queued calls), so memory does not grow with the scene; and both
raise a failure of their thread in the caller and wait for what is running on it before they are left, so nothing
touches a file or dataset after its owner has closed it. Their threads run in the GDAL environment of the code that
created them (rasterio's ``Env`` is per thread): the pipeline's cache size, the user's ``--config`` options, and
rasterio's handling of GDAL's warnings (without it libtiff's warnings would reach stderr).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import rasterio

__all__ = ["OrderedWorker", "Prefetched"]

T = TypeVar("T")

_END = object()


def _callers_env() -> dict[str, Any]:
    """The GDAL configuration of the calling thread's rasterio environment (empty when it has none)."""
    return dict(rasterio.env.getenv()) if rasterio.env.hasenv() else {}


class OrderedWorker:
    """Runs queued calls on one worker thread, in order, with at most ``depth`` of them waiting.

    An error on the worker is raised in the caller at the next :meth:`put` or :meth:`drain` and no later call runs (a
    checkpoint must never follow a block that was not written); leaving the ``with`` block cancels what still waits and
    waits for the call in progress.
    """

    def __init__(self, depth: int = 4, name: str = "rssr-worker") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._gdal = _callers_env()
        self._pending: deque[Future[None]] = deque()
        self._depth = depth
        self._failed = False

    def put(self, fn: Callable[..., None], *args: Any) -> None:
        self._pending.append(self._pool.submit(self._run, fn, *args))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        if self._failed:
            return
        try:
            with rasterio.Env(**self._gdal):
                fn(*args)
        except BaseException:
            self._failed = True
            raise

    def drain(self) -> None:
        """Wait until every queued call has run (raising the first error among them)."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "OrderedWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


class Prefetched(Generic[T]):
    """Iterates ``items`` with the next item produced on a thread while the caller works on the current one.

    Use it as a context manager: leaving the block waits for the item being produced (a read in flight on a dataset
    about to be closed) and closes ``items``. An error while producing an item is raised where that item is asked for.
    """

    def __init__(self, items: Iterable[T], name: str = "rssr-prefetch") -> None:
        self._items = iter(items)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._gdal = _callers_env()
        self._next: Future[Any] | None = None

    def _produce(self) -> Any:
        with rasterio.Env(**self._gdal):
            return next(self._items, _END)

    def __iter__(self) -> Iterator[T]:
        self._next = self._pool.submit(self._produce)
        while True:
            item = self._next.result()
            if item is _END:
                self._next = None
                return
            self._next = self._pool.submit(self._produce)  # the next one is read while the caller uses this one
            yield item

    def __enter__(self) -> "Prefetched[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._next is not None:
            self._next.cancel()
        self._pool.shutdown(wait=True)
        close = getattr(self._items, "close", None)
        if close is not None:
            close()
