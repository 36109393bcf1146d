"""A pool's counters and latency histograms.

Counters only go up, for the life of the pool: the Prometheus and OpenTelemetry exporters publish them as monotonic
counters. ``PoolStats.pop`` gives what changed since the previous pop without resetting anything.

Counters change under the pool lock, as part of the decisions they count. Durations (wait, use, connect) are
appended to short pending lists under that lock too, and folded into histograms in batches outside it, under
``PoolStats``' own lock: the pool lock is never held while a histogram buckets values or a snapshot computes
percentiles.
"""

from __future__ import annotations

import threading
from typing import Any

from .histogram import Histogram

__all__ = ["DISCARD_REASONS", "PoolStats"]

#: Why the pool closed a member: the keys of ``stats()["discards"]``, and the ``reason`` of ``discard`` events.
DISCARD_REASONS = (
    "broken", "reset_failed", "interrupted", "lifetime", "idle", "check_failed", "resize", "reload", "closed",
)

_HISTOGRAMS = ("wait_time", "use_time", "connect_time")

#: Pending durations are folded once a list holds this many, so a pending list stays small.
FOLD_EVERY = 1024

Pending = dict[str, list[float]]


class PoolStats:
    """Counters and histograms of one pool. Methods marked "locked" are called with the pool lock held."""

    __slots__ = (
        "leases", "waited", "timeouts", "too_many_waiters", "breaker_rejections", "wait_seconds",
        "timeout_wait_seconds", "created",
        "connect_errors", "connect_seconds", "leaks", "health_ok", "health_failed", "discards",
        "use_times", "wait_times", "connect_times", "_histograms", "_popped_histograms", "_popped", "_fold_lock",
    )

    def __init__(self) -> None:
        self.leases = 0  # successful leases
        self.waited = 0  # of those, how many were queued first
        self.timeouts = 0
        self.too_many_waiters = 0
        self.breaker_rejections = 0
        self.wait_seconds = 0.0  # queued time of the leases that got a member
        self.timeout_wait_seconds = 0.0  # queued time of the leases that timed out
        self.created = 0
        self.connect_errors = 0
        self.connect_seconds = 0.0  # time spent in successful connects
        self.leaks = 0
        self.health_ok = 0
        self.health_failed = 0
        self.discards = dict.fromkeys(DISCARD_REASONS, 0)
        # Durations not folded yet. The lists are emptied in place, never replaced: the lease path appends to them.
        self.use_times: list[float] = []
        self.wait_times: list[float] = []
        self.connect_times: list[float] = []
        self._histograms = {name: Histogram() for name in _HISTOGRAMS}
        self._popped_histograms: dict[str, Histogram] = {}  # copies of the histograms as the last pop saw them
        self._popped: dict[str, Any] = {}  # the counters as the last pop() saw them
        self._fold_lock = threading.Lock()

    # -- recording (locked) -------------------------------------------------------------------------------------------

    def served_waiter(self, waited: float) -> None:
        """Count a lease handed to a caller that queued ``waited`` seconds. Locked."""
        self.leases += 1
        self.waited += 1
        self.wait_seconds += waited
        self.wait_times.append(waited)

    def timed_out(self, waited: float) -> None:
        """Count a lease that gave up after waiting ``waited`` seconds. Locked."""
        self.timeouts += 1
        self.timeout_wait_seconds += waited

    def connected(self, seconds: float) -> None:
        """Count a successful connect that took ``seconds``. Locked."""
        self.created += 1
        self.connect_seconds += seconds
        self.connect_times.append(seconds)

    def discarded(self, reason: str) -> None:
        """Count a member closed by the pool for ``reason``. Locked."""
        self.discards[reason] += 1

    def take_pending(self) -> Pending:
        """Move every pending duration out, for ``fold`` outside the lock. Locked."""
        pending = {}
        for name, values in (
            ("use_time", self.use_times), ("wait_time", self.wait_times), ("connect_time", self.connect_times)
        ):
            pending[name] = values[:]
            del values[:]
        return pending

    def counters(self) -> dict[str, Any]:
        """Copy the counters. Locked."""
        return {
            "leases_total": self.leases,
            "leases_waited": self.waited,
            "lease_timeouts": self.timeouts,
            "too_many_waiters": self.too_many_waiters,
            "breaker_rejections": self.breaker_rejections,
            "wait_ms_total": self.wait_seconds * 1000.0,
            "timeout_wait_ms_total": self.timeout_wait_seconds * 1000.0,
            "connections_created": self.created,
            "connections_discarded": sum(self.discards.values()),
            "discards": dict(self.discards),
            "connect_errors": self.connect_errors,
            "connect_ms_total": self.connect_seconds * 1000.0,
            "leaks_detected": self.leaks,
            "health_checks": {"ok": self.health_ok, "failed": self.health_failed},
        }

    def since_pop(self, counters: dict[str, Any], *, mark: bool) -> dict[str, Any]:
        """Return ``counters`` minus those of the previous pop; with ``mark``, this is a pop: remember these for the
        next one. Locked."""
        previous = self._popped
        if mark:
            self._popped = counters
        return _minus(counters, previous) if previous else counters

    # -- folding and reading (without the pool lock) ----------------------------------------------------------------

    def fold(self, pending: Pending) -> None:
        """Add swapped-out pending durations to the histograms."""
        with self._fold_lock:
            for name, values in pending.items():
                if values:
                    self._histograms[name].add_many(values)

    def histograms(self) -> dict[str, Histogram]:
        """Copies of the pool-lifetime histograms."""
        with self._fold_lock:
            return {name: histogram.copy() for name, histogram in self._histograms.items()}

    def histograms_since_pop(self, *, mark: bool) -> dict[str, Histogram]:
        """The histograms of what was folded since the previous pop; with ``mark``, this is a pop."""
        with self._fold_lock:
            now = {name: histogram.copy() for name, histogram in self._histograms.items()}
            earlier = self._popped_histograms
            if mark:
                self._popped_histograms = now
        return {name: histogram.since(earlier[name]) if earlier else histogram for name, histogram in now.items()}

    def after_fork_in_child(self) -> None:
        """Re-create the lock, which another thread of the parent may have held at the fork."""
        self._fold_lock = threading.Lock()
        for histogram in self._histograms.values():
            histogram._after_fork_in_child()


def _minus(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Subtract two counter dicts of ``PoolStats.counters``, nested dicts too."""
    result: dict[str, Any] = {}
    for key, value in now.items():
        if isinstance(value, dict):
            result[key] = _minus(value, before.get(key, {}))
        else:
            result[key] = value - before.get(key, 0)
    return result
