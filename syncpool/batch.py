"""Batches: run ``fn(client, item)`` over many items on worker threads that share one pool.

[`map_pool`][] is the whole implementation (``Pool.map`` delegates to it). Failures never pass silently: by
default a batch in which anything failed raises [`BatchError`][] once it has finished, carrying the
[`BatchResult`][] with every success and every failure.

How it works:
    The calling thread pulls items from the iterable, one at a time and only while fewer than ``2 * workers`` are
    in flight (pulled but not finished), and puts them on a queue; ``workers`` threads named
    ``syncpool-<pool>-batch-<n>`` take them off, lease a client, call ``fn`` and give the client back. So a lazy
    generator of millions of items is never materialised, and a generator is only ever advanced by the calling
    thread (generators are not thread-safe). The calling thread also draws the progress bar and watches the
    deadline; every worker is joined before [`map_pool`][] returns or raises.

    This module sits above the pool and never imports ``syncpool.pool``: it leases through
    [`PoolLike`][], and retries through [`syncpool.retry.run`][], which is what
    ``Pool.run`` calls.

Hazards:
    A running ``fn`` cannot be interrupted: cancelling (first error with ``on_error="cancel"``, the deadline,
    Ctrl-C) stops new items from starting and waits for those already running, which then give their client back
    as usual. An ``fn`` that hangs therefore holds up [`map_pool`][]; bound its I/O with client timeouts. The
    same goes for an iterable whose ``next()`` blocks: the calling thread looks at the deadline between items.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Generic, Literal, TypeVar

from ._secrets import describe_failure
from .protocols import PoolLike
from .retry import RetryPolicy
from .retry import run as retry_run

__all__ = ["BatchError", "BatchResult", "OnError", "map_pool"]

T = TypeVar("T")
R = TypeVar("R")

#: With ``progress=None``, a bar is drawn when stderr is a terminal and the batch has more items than this.
PROGRESS_MIN_ITEMS = 100

OnError = Literal["raise", "collect", "cancel"]
"""What [`map_pool`][] does when an item fails; see its ``on_error`` argument."""
_ON_ERROR = ("raise", "collect", "cancel")

_TICK = 0.1  # seconds between the calling thread's looks at the deadline and the progress bar
_STOP = object()  # queue sentinel: one per worker


@dataclass
class BatchResult(Generic[R]):
    """What [`map_pool`][] did.

    Attributes:
        results: With ``ordered=True``, one entry per item taken from the iterable, in input order: the value
            ``fn`` returned, or None for an item that failed or was cancelled. With ``ordered=False``, the values of
            the successful items in the order they finished.
        errors: ``(index, item, exception)`` for every failed item, sorted by index.
        succeeded: Items whose ``fn`` returned.
        failed: Items whose ``fn`` raised (after retries).
        cancelled: Items taken from the iterable but never run because the batch was cancelled (first error with
            ``on_error="cancel"``, or the deadline). Items never taken from the iterable are not counted.
        elapsed: Wall-clock seconds the batch took.
        timed_out: True if the ``timeout`` deadline passed while items were left to run: some were cancelled, or
            the iterable was not read to its end.
    """

    results: list[R | None] = field(default_factory=list)
    errors: list[tuple[int, Any, BaseException]] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    elapsed: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True if the batch ran to its end and every item succeeded: none failed, none cancelled, no timeout."""
        return not self.failed and not self.cancelled and not self.timed_out

    def raise_first(self) -> None:
        """Raise the error of the failed item with the lowest index, if any; do nothing when every item succeeded.

        The exception is raised as ``fn`` raised it (its traceback points into ``fn``).
        """
        if self.errors:
            raise self.errors[0][2]

    def __iter__(self) -> Iterator[R | None]:
        """Iterate over ``results``."""
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return (
            f"<BatchResult succeeded={self.succeeded} failed={self.failed} cancelled={self.cancelled} "
            f"elapsed={self.elapsed:.3f}s{' timed_out' if self.timed_out else ''}>"
        )


class BatchError(Exception):
    """A batch finished with items that failed, were cancelled or ran out of time.

    Raised by [`map_pool`][] (and ``Pool.map``) after the batch has finished, every worker joined, unless
    ``on_error="collect"``. Its message gives the counts and the first failure's type and message (secrets
    masked); ``__cause__`` is that first failure (lowest index), None when only the deadline cancelled items.

    A plain ``Exception`` rather than an ``ExceptionGroup``: ``ExceptionGroup`` does not exist on Python 3.10, it
    cannot be empty (a batch cut short by its deadline may have no failure), and a traceback would print every
    member of a group that can hold thousands; ``result.errors`` holds them all instead. Not a
    [`PoolError`][] either: the pool did its job, the items' work failed.

    Attributes:
        result: The [`BatchResult`][], with every success and every failure.
    """

    def __init__(self, message: str, result: BatchResult[Any]) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call BatchError(message) on unpickling (e.g. across a Dask or multiprocessing
        # boundary) and lose the result.
        return (type(self), (str(self), self.result))


def map_pool(
    pool: PoolLike[T],
    fn: Callable[[T, Any], R],
    items: Iterable[Any],
    *,
    workers: int | None = None,
    ordered: bool = True,
    retry: Any = None,
    on_error: OnError = "raise",
    progress: bool | Callable[[int, int | None], object] | None = None,
    timeout: float | None = None,
) -> BatchResult[R]:
    """Call ``fn(client, item)`` for every item, on worker threads that each lease a client per item.

    Args:
        pool: The pool to lease from: a [`Pool`][], or any [`PoolLike`][].
        fn: Called as ``fn(client, item)`` with a leased client; the client goes back to the pool when it returns
            or raises.
        items: Any iterable, including a lazy generator: at most ``2 * workers`` items are pulled ahead of the
            ones finished, and only the calling thread advances it.
        workers: Worker threads. Defaults to the pool's ``max_size``, and is never more than that (a worker
            beyond ``max_size`` could only queue for a lease) nor more than the number of items when known.
        ordered: Whether ``BatchResult.results`` follows the input order (with None for failed items) or
            holds the successful values in the order they finished. Defaults to True.
        retry: None (the default) makes one attempt per item, since ``fn`` may not be idempotent (an insert).
            Otherwise a policy as for ``Pool.run`` ([`syncpool.retry.run`][]): True for its defaults, a
            [`RetryPolicy`][] or a ``tenacity.Retrying``; a failed attempt is then retried on
            a fresh lease while the connector's [`is_transient`][Connector.is_transient] (or the policy) says
            so, within the time the batch has left.
        on_error: What a failed item does to the batch. ``"raise"`` (the default) runs every item, then raises
            [`BatchError`][] if any failed. ``"collect"`` runs every item and returns the
            [`BatchResult`][] with the failures in it, never raising for them. ``"cancel"`` stops starting
            new items at the first failure (items already running finish), then raises [`BatchError`][].
            (``"continue"``, the old name of ``"collect"``, is refused with a ValueError that says so.)
        progress: True draws a progress bar on stderr (``\\r`` updates: count, percent, rate, ETA); False draws
            none; None (the default) draws one when stderr is a terminal and more than ``PROGRESS_MIN_ITEMS``
            (100) items are known to come. A callable is called as ``progress(done, total)`` from the calling
            thread about ten times a second while work progresses and once at the end (``total`` is None when
            the iterable has no ``len``).
        timeout: Seconds the whole batch may take. When they are up, items not yet started are cancelled
            (``BatchResult.timed_out``); leases and retries in flight are bounded by the time left. Items cut
            off this way raise [`BatchError`][] as failures do, unless ``on_error="collect"``. None (the
            default) for no bound.

    Returns:
        The [`BatchResult`][]: with ``"raise"`` and ``"cancel"``, one in which every item succeeded; with
        ``"collect"``, whatever happened.

    Raises:
        BatchError: Some items failed, were cancelled or ran out of time (not with ``on_error="collect"``).
            Raised after the batch has finished and every worker is joined; ``error.result`` is the
            [`BatchResult`][] and ``error.__cause__`` the first failure (lowest index).
        ValueError, TypeError: A bad argument.
        KeyboardInterrupt: Ctrl-C while the batch runs: items not started are dropped, running ones finish and
            return their clients, every worker is joined, then the interrupt propagates. The same happens for any
            exception raised by the iterable itself or by a ``progress`` callable, and for a ``BaseException``
            (not ``Exception``) raised by ``fn``: these propagate as they are, not as a [`BatchError`][].
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(client, item), not {type(fn).__name__}")
    if str(on_error) == "continue":  # str(): callers without a type checker pass any string
        # Refused rather than kept as an alias: "continue" could mean either "raise" or "collect" now (both run
        # every item), and a DeprecationWarning, hidden by default, would keep failures silent for exactly the
        # callers who spelled it out.
        raise ValueError(
            "on_error='continue' was renamed: pass on_error='collect' to get the BatchResult back with the failures "
            "in it, or leave the default 'raise' to get a BatchError when any item fails"
        )
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be 'raise', 'collect' or 'cancel', got {on_error!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
    ):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if retry is not None and not isinstance(retry, (bool, RetryPolicy)) and not hasattr(retry, "copy"):
        raise TypeError(
            "retry must be None, True/False, a syncpool.retry.RetryPolicy or a tenacity.Retrying, "
            f"not {type(retry).__name__}"
        )
    total = _length_of(items)
    workers = _reconcile_workers(pool, workers, total)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    bar = _make_progress(progress, total, pool.name)
    run = _Run(pool, fn, retry, on_error == "cancel", deadline, ordered)
    threads = [
        threading.Thread(target=run.work, name=f"syncpool-{pool.name}-batch-{n}", daemon=True)
        for n in range(1, workers + 1)
    ]
    for thread in threads:
        thread.start()
    try:
        run.feed(iter(items), 2 * workers, bar, total)
    except BaseException:
        run.cancel()
        raise
    finally:
        for _ in threads:
            run.queue.put(_STOP)
        for thread in threads:
            thread.join()
        if isinstance(bar, _ProgressBar):
            bar.close()
    run.reraise_fatal()
    result: BatchResult[R] = run.result(time.monotonic() - started, ordered)
    if on_error != "collect" and not result.ok:
        first = result.errors[0][2] if result.errors else None
        raise BatchError(_summary(pool.name, result, timeout), result) from first
    return result


def _summary(pool_name: str, result: BatchResult[Any], timeout: float | None) -> str:
    """The message of a [`BatchError`][]: counts, then the first failure, with no secret and no item."""
    taken = result.succeeded + result.failed + result.cancelled
    text = f"pool {pool_name!r}: {result.failed} of {taken} items failed"
    if result.cancelled:
        text += f", {result.cancelled} cancelled"
    text += f" ({result.succeeded} succeeded)"
    if result.timed_out:
        text += f"; the batch timeout of {timeout:g}s passed with items left to run"
    if result.errors:
        index, _, error = result.errors[0]
        text += f"; first failure at index {index}: {describe_failure(error)}"
    return text






def _length_of(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _reconcile_workers(pool: PoolLike[Any], workers: int | None, total: int | None) -> int:
    """At most one worker per client the pool may hold, and per item."""
    max_size = pool.max_size
    if workers is None:
        workers = max_size
    elif isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int, not {type(workers).__name__}")
    elif workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, max_size)
    if total is not None:
        workers = min(workers, max(1, total))
    return workers


class _Run:
    """The state one [`map_pool`][] call shares between its calling thread and its workers."""

    def __init__(
        self,
        pool: PoolLike[Any],
        fn: Callable[[Any, Any], Any],
        retry: Any,
        cancel_on_error: bool,
        deadline: float | None,
        ordered: bool,
    ) -> None:
        self.pool = pool
        self.fn = fn
        self.retry = retry
        self.cancel_on_error = cancel_on_error
        self.deadline = deadline
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.changed = threading.Condition()  # notified by workers each time an item finishes
        self.pulled = 0
        self.finished = 0  # succeeded + failed + skipped
        self.exhausted = False  # the iterable said StopIteration
        self.timed_out = False  # the deadline cancelled the batch (maybe after every item had run)
        self.ordered = ordered
        self.values: dict[int, Any] = {}  # index -> value, when ordered
        self.in_order: list[Any] = []  # values in finishing order, when not ordered
        self.errors: list[tuple[int, Any, BaseException]] = []
        self.skipped = 0
        self.fatal: BaseException | None = None  # a BaseException from fn, re-raised by the calling thread

    def cancel(self) -> None:
        self.cancelled.set()
        with self.changed:
            self.changed.notify_all()

    # -- the calling thread ------------------------------------------------------------------------------------

    def feed(
        self,
        iterator: Iterator[Any],
        in_flight_limit: int,
        bar: Callable[[int, int | None], object] | None,
        total: int | None,
    ) -> None:
        """Pull items while few enough are in flight, until the iterable ends or the batch is cancelled."""
        reported = -1
        next_report = 0.0
        while True:
            # Pulling stops at least once a tick: with a slow iterable and a quick fn there is always room for one
            # more item, and the deadline and the bar must still be looked at.
            look_again = time.monotonic() + _TICK
            while (
                not self.exhausted and not self.cancelled.is_set() and self.pulled - self.finished < in_flight_limit
            ):
                try:
                    item = next(iterator)
                except StopIteration:
                    self.exhausted = True
                    break
                self.queue.put((self.pulled, item))
                self.pulled += 1
                if time.monotonic() >= look_again:
                    break
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline and not self.cancelled.is_set():
                self.timed_out = True
                self.cancel()
            done = self.finished
            stopped = self.exhausted or self.cancelled.is_set()
            finished = stopped and done == self.pulled
            if bar is not None and (finished or (done != reported and now >= next_report)):
                bar(done, total)
                reported, next_report = done, now + _TICK
            if finished:
                return
            with self.changed:
                # Wait for a worker to finish an item (then there is room to pull more), or for the next tick.
                if self.finished == done and (stopped or self.pulled - done >= in_flight_limit):
                    self.changed.wait(_TICK)

    def reraise_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    def result(self, elapsed: float, ordered: bool) -> BatchResult[Any]:
        errors = sorted(self.errors, key=lambda entry: entry[0])
        if ordered:
            results = [self.values.get(index) for index in range(self.pulled)]
        else:
            results = self.in_order
        return BatchResult(
            results=results,
            errors=errors,
            succeeded=self.pulled - len(errors) - self.skipped,
            failed=len(errors),
            cancelled=self.skipped,
            elapsed=elapsed,
            # A deadline that passed once nothing was left to start cut nothing off. An iterable not read to its
            # end counts as cut off: whether it had more items cannot be known without advancing it.
            timed_out=self.timed_out and (self.skipped > 0 or not self.exhausted),
        )

    # -- the workers -------------------------------------------------------------------------------------------

    def work(self) -> None:
        while True:
            task = self.queue.get()
            if task is _STOP:
                return
            index, item = task
            if self.cancelled.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline):
                # Not started, so cancelled rather than failed, also before the calling thread saw the deadline.
                self._finish(index, item, skipped=True)
                continue
            try:
                value = self._call(item)
            except Exception as error:
                self._finish(index, item, error=error)
                if self.cancel_on_error:
                    self.cancel()
            except BaseException as error:  # KeyboardInterrupt, SystemExit raised inside fn: stop everything
                self.fatal = self.fatal or error
                self._finish(index, item, error=error)
                self.cancel()
            else:
                self._finish(index, item, value=value)

    def _finish(
        self, index: int, item: Any, *, value: Any = None, error: BaseException | None = None, skipped: bool = False
    ) -> None:
        with self.changed:
            if skipped:
                self.skipped += 1
            elif error is not None:
                self.errors.append((index, item, error))
            elif self.ordered:
                self.values[index] = value
            else:
                self.in_order.append(value)
            self.finished += 1
            self.changed.notify_all()

    def _call(self, item: Any) -> Any:
        pool, fn, retry = self.pool, self.fn, self.retry
        lease_timeout = None
        deadline_left = None
        if self.deadline is not None:
            deadline_left = self.deadline - time.monotonic()
            if deadline_left <= 0:
                raise TimeoutError(f"pool {pool.name!r}: the batch timeout passed before this item started")
            lease_timeout = min(pool.timeout, deadline_left)
        if retry is None or retry is False:
            with pool.connection(timeout=lease_timeout) as client:
                return fn(client, item)
        # What Pool.run does, called directly so that any PoolLike gets the same retries.
        return retry_run(pool, fn, (item,), {}, retry=retry, deadline=deadline_left)


# -- progress --------------------------------------------------------------------------------------------------------


def _make_progress(
    progress: bool | Callable[[int, int | None], object] | None, total: int | None, label: str
) -> Callable[[int, int | None], object] | None:
    if progress is None:
        stream = sys.stderr
        is_tty = stream is not None and hasattr(stream, "isatty") and stream.isatty()
        progress = bool(is_tty and total is not None and total > PROGRESS_MIN_ITEMS)
    if progress is True:
        return _ProgressBar(total, label)
    if progress is False:
        return None
    if callable(progress):
        return progress
    raise TypeError(f"progress must be None, a bool or a callable(done, total), not {type(progress).__name__}")


class _ProgressBar:
    """A one-line progress bar redrawn with ``\\r`` on stderr: ``label [####----] 45% 450/1000 812/s ETA 0:01``."""

    width = 24

    def __init__(self, total: int | None, label: str, stream: IO[str] | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self.drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        if self.total:
            fraction = min(1.0, done / self.total)
            filled = int(fraction * self.width)
            eta = (self.total - done) / rate if rate > 0 else math.inf
            line = (
                f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {int(fraction * 100):3d}% {done}/{self.total} "
                f"{rate:,.0f}/s ETA {_clock(eta)}"
            )
        else:
            line = f"{self.label} {done} done {rate:,.0f}/s {_clock(elapsed)}"
        try:
            self.stream.write("\r" + line + " \x1b[K")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not fail the batch
            return
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
