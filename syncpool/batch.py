"""Batches: run ``fn(client, item)`` over many items on worker threads that share one pool.

:func:`map_pool` is the whole implementation (``Pool.map`` delegates to it).

How it works:
    The calling thread pulls items from the iterable, one at a time and only while fewer than ``2 * workers`` are
    in flight (pulled but not finished), and puts them on a queue; ``workers`` threads named
    ``syncpool-<pool>-batch-<n>`` take them off, lease a client, call ``fn`` and give the client back. So a lazy
    generator of millions of items is never materialised, and a generator is only ever advanced by the calling
    thread (generators are not thread-safe). The calling thread also draws the progress bar and watches the
    deadline; every worker is joined before :func:`map_pool` returns or raises.

Hazards:
    A running ``fn`` cannot be interrupted: cancelling (first error with ``on_error="cancel"``, the deadline,
    Ctrl-C) stops new items from starting and waits for those already running, which then give their client back
    as usual. An ``fn`` that hangs therefore holds up :func:`map_pool`; bound its I/O with client timeouts.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

from .retry import RetryPolicy

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["BatchResult", "map_pool"]

T = TypeVar("T")
R = TypeVar("R")

#: With ``progress=None``, a bar is drawn when stderr is a terminal and the batch has more items than this.
PROGRESS_MIN_ITEMS = 100

_TICK = 0.1  # seconds between the calling thread's looks at the deadline and the progress bar
_STOP = object()  # queue sentinel: one per worker


@dataclass
class BatchResult(Generic[R]):
    """What :func:`map_pool` did.

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
        timed_out: True if the ``timeout`` deadline cancelled the batch.
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
        """True if every item taken from the iterable succeeded."""
        return not self.failed and not self.cancelled

    def raise_first(self) -> None:
        """Raise the error of the failed item with the lowest index, if any; do nothing when every item succeeded.

        The exception is raised as ``fn`` raised it (its traceback points into ``fn``).
        """
        if self.errors:
            raise self.errors[0][2]

    def __iter__(self) -> Iterator[R | None]:
        """Iterate over :attr:`results`."""
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return (
            f"<BatchResult succeeded={self.succeeded} failed={self.failed} cancelled={self.cancelled} "
            f"elapsed={self.elapsed:.3f}s{' timed_out' if self.timed_out else ''}>"
        )


def map_pool(
    pool: Pool[T],
    fn: Callable[[T, Any], R],
    items: Iterable[Any],
    *,
    workers: int | None = None,
    ordered: bool = True,
    retry: Any = None,
    on_error: str = "continue",
    progress: bool | Callable[[int, int | None], object] | None = None,
    timeout: float | None = None,
) -> BatchResult[R]:
    """Call ``fn(client, item)`` for every item, on worker threads that each lease a client per item.

    Args:
        pool: The pool to lease from.
        fn: Called as ``fn(client, item)`` with a leased client; the client goes back to the pool when it returns
            or raises.
        items: Any iterable, including a lazy generator: at most ``2 * workers`` items are pulled ahead of the
            ones finished, and only the calling thread advances it.
        workers: Worker threads. Defaults to the pool's ``max_size``, and is never more than that (a worker
            beyond ``max_size`` could only queue for a lease) nor more than the number of items when known.
        ordered: Whether :attr:`BatchResult.results` follows the input order (with None for failed items) or
            holds the successful values in the order they finished. Defaults to True.
        retry: None (the default) makes one attempt per item. Otherwise a policy for :meth:`Pool.run`: True for
            its defaults, a :class:`~syncpool.retry.RetryPolicy` or a ``tenacity.Retrying``; each item is then
            run with ``pool.run(fn, item, retry=retry)``, retried on a fresh lease while the connector's
            :meth:`~syncpool.Connector.is_transient` says so. A pool-like object without ``run`` gets the same
            from a simple loop (the ``RetryPolicy``'s attempts, backoff and ``retry_on``, else the connector's
            ``is_transient``; a fresh lease each attempt; no deadline but ``timeout``).
        on_error: ``"continue"`` runs every item and collects the failures; ``"cancel"`` stops starting new items
            at the first failure (items already running finish). Defaults to "continue".
        progress: True draws a progress bar on stderr (``\\r`` updates: count, percent, rate, ETA); False draws
            none; None (the default) draws one when stderr is a terminal and more than ``PROGRESS_MIN_ITEMS``
            (100) items are known to come. A callable is called as ``progress(done, total)`` from the calling
            thread about ten times a second while work progresses and once at the end (``total`` is None when
            the iterable has no ``len``).
        timeout: Seconds the whole batch may take. When they are up, items not yet started are cancelled
            (:attr:`BatchResult.timed_out`); leases and retries in flight are bounded by the time left. None
            (the default) for no bound.

    Returns:
        A :class:`BatchResult`; failures are in it, never raised (use :meth:`BatchResult.raise_first`).

    Raises:
        ValueError, TypeError: A bad argument.
        KeyboardInterrupt: Ctrl-C while the batch runs: items not started are dropped, running ones finish and
            return their clients, every worker is joined, then the interrupt propagates. The same happens for any
            exception raised by the iterable itself or by a ``progress`` callable, and for a ``BaseException``
            (not ``Exception``) raised by ``fn``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(client, item), not {type(fn).__name__}")
    if on_error not in ("continue", "cancel"):
        raise ValueError(f"on_error must be 'continue' or 'cancel', got {on_error!r}")
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
    run = _Run(pool, fn, retry, on_error, deadline, ordered)
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
    return run.result(time.monotonic() - started, ordered)


def _length_of(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _reconcile_workers(pool: Pool[Any], workers: int | None, total: int | None) -> int:
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
    """The state one :func:`map_pool` call shares between its calling thread and its workers."""

    def __init__(
        self,
        pool: Pool[Any],
        fn: Callable[[Any, Any], Any],
        retry: Any,
        on_error: str,
        deadline: float | None,
        ordered: bool,
    ) -> None:
        self.pool = pool
        self.fn = fn
        self.retry = retry
        self.cancel_on_error = on_error == "cancel"
        self.deadline = deadline
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.changed = threading.Condition()  # notified by workers each time an item finishes
        self.pulled = 0
        self.finished = 0  # succeeded + failed + skipped
        self.timed_out = False
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
        exhausted = False
        reported = -1
        next_report = 0.0
        while True:
            while not exhausted and not self.cancelled.is_set() and self.pulled - self.finished < in_flight_limit:
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                self.queue.put((self.pulled, item))
                self.pulled += 1
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline and not self.cancelled.is_set():
                self.timed_out = True
                self.cancel()
            done = self.finished
            finished = (exhausted or self.cancelled.is_set()) and done == self.pulled
            if bar is not None and (finished or (done != reported and now >= next_report)):
                bar(done, total)
                reported, next_report = done, now + _TICK
            if finished:
                return
            with self.changed:
                # Wait for a worker to finish an item (then there is room to pull more), or for the next tick.
                if self.finished == done:
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
            timed_out=self.timed_out,
        )

    # -- the workers -------------------------------------------------------------------------------------------

    def work(self) -> None:
        while True:
            task = self.queue.get()
            if task is _STOP:
                return
            index, item = task
            if self.cancelled.is_set():
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
        if hasattr(pool, "run"):
            return pool.run(fn, item, retry=retry, deadline=deadline_left)
        return self._simple_retry(item, lease_timeout)  # a pool-like object without run()

    def _simple_retry(self, item: Any, lease_timeout: float | None) -> Any:
        """Retry transient failures on a fresh lease each time, for a pool-like object without ``run``."""
        policy = self.retry if isinstance(self.retry, RetryPolicy) else RetryPolicy()
        transient = policy.retry_on or self.pool.connector.is_transient
        attempt = 1
        while True:
            try:
                with self.pool.connection(timeout=lease_timeout) as client:
                    return self.fn(client, item)
            except Exception as error:
                if attempt >= policy.attempts or not transient(error):
                    raise
                if self.cancelled.wait(policy.backoff.delay(attempt)):
                    raise
                attempt += 1


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
