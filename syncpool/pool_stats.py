"""A pool's counters and latency histograms.

Counters only go up, for the life of the pool: the Prometheus and OpenTelemetry exporters publish them as monotonic
counters. ``PoolStats.since_pop`` gives what changed since the previous pop without resetting anything.

Counters change under the pool lock, as part of the decisions they count. Durations (wait, use, connect) are
appended to short pending lists under that lock too, and folded into histograms in batches outside it, under
``PoolStats``' own lock: the pool lock is never held while a histogram buckets values or a snapshot computes
percentiles.

Use times are folded with their count, sum and extremes exact, but only one in ``USE_SAMPLE`` of them is bucketed,
and the histogram is scaled to the exact count: a lease+return costs about 1.5 µs and bucketing a value about
0.1 µs, a share worth saving for percentiles that an even sample gives as well.
"""

from __future__ import annotations

import math
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

#: One use time in this many is bucketed: every USE_SAMPLE-th of each folded batch, starting with its first.
USE_SAMPLE = 8

Pending = dict[str, list[float]]


class PoolStats:
    """Counters and histograms of one pool. Methods marked "locked" are called with the pool lock held."""

    __slots__ = (
        "leases", "waited", "timeouts", "too_many_waiters", "breaker_rejections", "wait_seconds",
        "timeout_wait_seconds", "created",
        "connect_errors", "connect_seconds", "leaks", "health_ok", "health_failed", "discards",
        "uses", "use_seconds", "use_min", "use_max", "_since_pop_min", "_since_pop_max",
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
        # Every use time folded so far, exactly (under the fold lock): the histogram holds a sample of them.
        self.uses = 0
        self.use_seconds = 0.0
        self.use_min = math.inf
        self.use_max = 0.0
        self._since_pop_min = math.inf  # the extremes since the last pop, exact too
        self._since_pop_max = 0.0
        # Durations not folded yet (of use times, the sample). Emptied in place, never replaced.
        self.use_times: list[float] = []
        self.wait_times: list[float] = []
        self.connect_times: list[float] = []
        self._histograms = {name: Histogram() for name in _HISTOGRAMS}
        # The histograms and the exact use figures (count, sum) as the last pop saw them.
        self._popped_histograms: tuple[dict[str, Histogram], tuple[int, float]] | None = None
        self._popped: dict[str, Any] = {}  # the counters as the last pop() saw them
        self._fold_lock = threading.Lock()

    # -- recording (locked) -------------------------------------------------------------------------------------------

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
        pending: Pending = {}
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
        """Add swapped-out pending durations to the histograms (of use times, a sample; see the module docstring)."""
        with self._fold_lock:
            for name, values in pending.items():
                if not values:
                    continue
                if name == "use_time":
                    low, high = min(values), max(values)
                    self.uses += len(values)
                    self.use_seconds += sum(values)
                    self.use_min = min(self.use_min, low)
                    self.use_max = max(self.use_max, high)
                    self._since_pop_min = min(self._since_pop_min, low)
                    self._since_pop_max = max(self._since_pop_max, high)
                    values = values[::USE_SAMPLE]
                self._histograms[name].add_many(values)

    def histograms(self) -> dict[str, Histogram]:
        """Copies of the pool-lifetime histograms."""
        with self._fold_lock:
            copies = {name: histogram.copy() for name, histogram in self._histograms.items()}
            uses, total, low, high = self.uses, self.use_seconds, self.use_min, self.use_max
        copies["use_time"] = copies["use_time"].rescaled(uses, total, low, high)
        return copies

    def histograms_since_pop(self, *, mark: bool) -> dict[str, Histogram]:
        """The histograms of what was folded since the previous pop; with ``mark``, this is a pop.

        Use times: the sample's change, scaled to the exact change of count and sum, with the exact extremes.
        """
        with self._fold_lock:
            now = {name: histogram.copy() for name, histogram in self._histograms.items()}
            figures = (self.uses, self.use_seconds)
            low, high = self._since_pop_min, self._since_pop_max
            earlier, earlier_figures = self._popped_histograms or (None, (0, 0.0))
            if mark:
                self._popped_histograms = (now, figures)
                self._since_pop_min, self._since_pop_max = math.inf, 0.0
        changes = {name: histogram.since(earlier[name]) if earlier else histogram for name, histogram in now.items()}
        changes["use_time"] = changes["use_time"].rescaled(
            figures[0] - earlier_figures[0], figures[1] - earlier_figures[1], low, high
        )
        return changes

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
