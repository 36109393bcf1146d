"""Call statistics: counted, timed and classified without a lock on the call path; safe across ``os.fork()``.

A [`ClientStats`][] collects what [`MonitoredClient`][] wrappers (and the
[`monitored`][] decorator) record: per method name, the count of calls, their latency
histogram, the failed ones by exception class, and a per-second count for the recent rate. Many wrappers may share
one, as the members of a ``monitor=True`` pool do.

How a call is recorded
----------------------
Each method name has a recorder: a list of pending durations, a latency [`Histogram`][],
counters and a lock. A call reads ``time.perf_counter()`` before and after and appends the difference to the
pending list without taking any lock: ``list.append`` is atomic (under the GIL, and under the per-object lock of
free-threaded builds), so counts stay exact under any number of threads. Time is cut into 50 ms slots, and every
pending duration belongs to a call that ended in the current slot. Under the recorder's lock, the first call that
ends in a later slot, every failed call and [`ClientStats.stats`][] fold the pending durations into the histogram
in one batch and count them against the second their slot lies in. That gives the per-second counts behind
``ops_per_sec_recent`` without a timestamp per call, and bounds the pending list to one slot's calls. What this
costs per call is measured by ``benchmarks/bench_monitor.py``.

Hazards, and why each is harmless:

* A fold copies a prefix of the pending list, then deletes exactly that prefix, and only lock holders delete. An
  append that races with a fold lands after the prefix and is folded the next time: never lost, never counted twice.
* The slot boundary (``rollover``) is read without the lock. A stale read only sends one call through the locked
  path; a thread preempted between its clock reading and its append has its call counted in a later slot. The
  recent rate may move a call by a slot; the totals stay exact.
* ``os.fork()`` copies the forking thread only: a lock that another thread held stays held forever in the child.
  Each [`ClientStats`][] registers with ``syncpool.forking`` and, in a child, replaces its own lock and those
  of its recorders and their histograms. The child starts from the parent's figures; where a fold was under way
  at that instant, the calls it was moving may be lost or half counted (in the latency sums, in the recent rate),
  while the operation count stays the latency count, by construction.
* Call wrappers hold the bound ``append`` of their recorder's list, so [`ClientStats.reset`][] empties the lists
  in place and never replaces them.
* Statistics hold exception class names, never messages (which may quote a query, a key or a password).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from . import forking
from .histogram import Histogram

__all__ = ["ClientStats"]

_SLOTS_PER_SECOND = 20  # 50 ms fold slots


class _MethodStats:
    """Counters of one method name inside a [`ClientStats`][] (internal).

    Invariant: every duration in ``pending`` belongs to a call that ended before ``rollover``, i.e. inside the slot
    ``_slot`` (modulo a thread preempted between its clock read and its append, which can only push a call into a
    later slot). Only holders of ``_lock`` delete from ``pending``.
    """

    __slots__ = (
        "pending", "rollover", "clock", "_slot", "_lock", "_histogram", "_errors", "_window", "_keep",
    )  # fmt: skip

    def __init__(self, clock: Callable[[], float], window: int) -> None:
        self.clock = clock
        self.pending: list[float] = []
        self._lock = threading.Lock()
        self._histogram = Histogram()  # every operation, failed ones included: its count is the operation count
        self._errors: dict[str, int] = {}
        self._window: dict[int, int] = {}  # whole second -> calls that ended in it
        self._keep = window + 1
        self._slot = math.floor(clock() * _SLOTS_PER_SECOND)
        self.rollover = (self._slot + 1) / _SLOTS_PER_SECOND

    def _count_locked(self, second: int, calls: int) -> None:
        self._window[second] = self._window.get(second, 0) + calls

    def _fold_locked(self) -> None:
        # Appends that race with us land after the copied prefix; only lock holders delete.
        pending = self.pending
        batch = pending[:]
        if batch:
            del pending[: len(batch)]
            self._histogram.add_many(batch)
            self._count_locked(self._slot // _SLOTS_PER_SECOND, len(batch))

    def _record_locked(self, end: float, elapsed: float) -> None:
        # Decides which slot is current; pending calls belong to the old one, so fold them first.
        self._fold_locked()
        slot = math.floor(end * _SLOTS_PER_SECOND)
        if slot > self._slot:
            old_second = self._slot // _SLOTS_PER_SECOND
            self._slot = slot
            self.rollover = (slot + 1) / _SLOTS_PER_SECOND
            second = slot // _SLOTS_PER_SECOND
            if second != old_second:
                oldest = second - self._keep
                for stale in [s for s in self._window if s < oldest]:
                    del self._window[stale]
        self._histogram.add(elapsed if elapsed > 0.0 else 0.0)
        self._count_locked(math.floor(end), 1)

    def record(self, start: float, end: float) -> None:
        """Record a successful operation that ran from ``start`` to ``end`` (clock readings).

        ``syncpool.monitoring`` inlines the first branch in its call wrapper, holding the bound ``append`` of
        ``pending``: so ``reset`` empties the list in place and never replaces it.
        """
        if end < self.rollover:
            self.pending.append(end - start)
        else:
            with self._lock:
                self._record_locked(end, end - start)

    def record_error(self, start: float, error: BaseException) -> None:
        """Record an operation that started at ``start`` and has just raised ``error``."""
        end = self.clock()
        key = type(error).__name__
        with self._lock:
            self._record_locked(end, end - start)
            self._errors[key] = self._errors.get(key, 0) + 1

    def collect(self, now_second: int, window: int) -> tuple[Histogram, dict[str, int], int]:
        """Fold and return (latency copy, errors by type, calls in the recent window)."""
        with self._lock:
            self._fold_locked()
            recent = sum(n for second, n in self._window.items() if second > now_second - window)
            return self._histogram.copy(), dict(self._errors), recent

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            del self.pending[:]  # in place: call wrappers hold its bound append
            self._histogram = Histogram()
            self._errors = {}
            self._window = {}

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._histogram._after_fork_in_child()


def _summary(operations: int, errors: int, recent: int, uptime: float, window: int) -> dict[str, Any]:
    return {
        "operations": operations,
        "errors": errors,
        "ops_per_sec": operations / uptime if uptime > 0 else 0.0,
        "error_rate": errors / operations if operations else 0.0,
        "ops_per_sec_recent": recent / min(float(window), uptime) if uptime > 0 else 0.0,
    }


class ClientStatsMark:
    """A moment in the life of a [`ClientStats`][], for [`ClientStats.changes`][] (opaque)."""

    __slots__ = ("taken", "methods")

    def __init__(self, taken: float) -> None:
        self.taken = taken
        self.methods: dict[str, tuple[Histogram, dict[str, int]]] = {}


class ClientStats:
    """Call statistics shared by any number of [`MonitoredClient`][] wrappers.

    A pool with ``monitor=True`` owns one and passes it as ``sink=`` to the wrapper of every member, so its
    [`stats`][] aggregate the calls of all members, past and present. Recording is lock-free (see the module
    docstring); [`stats`][] folds each method's pending calls under that method's lock and builds the
    result from one pass, so within a method ``errors <= operations`` and the latency count equals
    ``operations``. Safe to use in a child process forked while other threads were recording.

    Args:
        name: Reported as ``name`` in [`stats`][] (a pool name, ``"s3"``...). Never put a secret in it.
        window: Length in whole seconds of the recent-rate window (``ops_per_sec_recent``). Defaults to 60.
        clock: Monotonic clock in seconds, injectable for tests. Defaults to ``time.perf_counter``.

    Raises:
        ValueError: If ``window`` is not a whole number of seconds >= 1.
    """

    def __init__(
        self,
        name: str = "client",
        *,
        window: int = 60,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a whole number of seconds >= 1, got {window!r}")
        self.name = name
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._methods: dict[str, _MethodStats] = {}
        self._started = clock()
        forking.register(self)

    def method_stats(self, method: str) -> _MethodStats:
        """Return the recorder of one method name, creating it on first use (called once per wrapper and name).

        Args:
            method: The qualified method name, e.g. ``"put_object"`` or ``"indices.create"``.

        Returns:
            The internal per-method recorder that call wrappers write to.
        """
        recorder = self._methods.get(method)
        if recorder is None:
            with self._lock:
                recorder = self._methods.get(method)
                if recorder is None:
                    recorder = self._methods[method] = _MethodStats(self._clock, self.window)
        return recorder

    def stats(self) -> dict[str, Any]:
        """Return a snapshot of the statistics since this object was created (or [`reset`][]).

        Returns:
            A dict with ``name``; ``operations``, ``errors``, ``ops_per_sec`` (since start or reset),
            ``error_rate`` (errors / operations) and ``ops_per_sec_recent`` (over the last ``window``
            seconds, at one-second resolution; over the uptime while that is shorter); ``window``;
            ``uptime`` (seconds); ``errors_by_type`` (exception class name -> count); ``latency`` (a
            [`Histogram.snapshot`][] of every call, failed ones included); and ``methods``, mapping each
            method name to a dict with the same keys except ``name``, ``window``, ``uptime`` and ``methods``.
        """
        return self.changes(None)[0]

    def changes(self, mark: ClientStatsMark | None) -> tuple[dict[str, Any], ClientStatsMark]:
        """Return [`stats`][] counting only what was recorded after ``mark``, and a mark of now.

        ``mark`` is what an earlier call returned, or None for everything. Nothing is reset, so several readers
        (a pool's ``pop_stats()``, an exporter) never disturb one another. ``uptime`` and the rates then cover the
        time since ``mark``; ``ops_per_sec_recent`` is the recent rate, as in [`stats`][].
        """
        with self._lock:
            recorders = sorted(self._methods.items())
            started = self._started if mark is None else max(mark.taken, self._started)
        now = self._clock()
        uptime = now - started
        now_second = math.floor(now)
        total = Histogram()
        errors_by_type: dict[str, int] = {}
        errors = recent_total = operations_total = 0
        methods: dict[str, Any] = {}
        new_mark = ClientStatsMark(now)
        for method, recorder in recorders:
            latency, method_errors, recent = recorder.collect(now_second, self.window)
            new_mark.methods[method] = (latency, method_errors)
            if mark is not None and method in mark.methods:
                earlier, earlier_errors = mark.methods[method]
                latency = latency.since(earlier)
                method_errors = {
                    key: n - earlier_errors.get(key, 0) for key, n in method_errors.items()
                    if n > earlier_errors.get(key, 0)
                }
            operations = latency.count
            count = sum(method_errors.values())
            operations_total += operations
            methods[method] = _summary(operations, count, recent, uptime, self.window)
            methods[method]["errors_by_type"] = method_errors
            methods[method]["latency"] = latency.snapshot()
            total.merge(latency)
            errors += count
            recent_total += recent
            for key, n in method_errors.items():
                errors_by_type[key] = errors_by_type.get(key, 0) + n
        result: dict[str, Any] = {"name": self.name}
        result.update(_summary(operations_total, errors, recent_total, uptime, self.window))
        result.update(
            window=self.window,
            uptime=uptime,
            errors_by_type=errors_by_type,
            latency=total.snapshot(),
            methods=methods,
        )
        return result, new_mark

    def histograms(self) -> dict[str, Histogram]:
        """Return a copy of each method's latency histogram (for bucket export), keyed by method name."""
        with self._lock:
            recorders = sorted(self._methods.items())
        now_second = math.floor(self._clock())
        return {method: recorder.collect(now_second, self.window)[0] for method, recorder in recorders}

    def reset(self) -> None:
        """Zero every counter and restart the rate clocks; calls in flight may land on either side."""
        with self._lock:
            recorders = list(self._methods.values())
            self._started = self._clock()
        for recorder in recorders:
            recorder.reset()

    def _after_fork_in_child(self) -> None:
        # Called by syncpool.forking in a forked child, where no other thread runs: any of these locks may have
        # been held by a thread of the parent at the fork, and would then never be released.
        self._lock = threading.Lock()
        for recorder in self._methods.values():
            recorder._after_fork_in_child()

    def __repr__(self) -> str:
        """Return the name and the method count."""
        return f"<ClientStats {self.name!r} methods={len(self._methods)}>"
