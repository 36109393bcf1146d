"""The circuit breaker: fail leases fast while connects keep failing, and probe the backend one connect at a time.

States ([`BreakerState`][]):

- ``closed``: connects flow as the pool needs them.
- ``open``: ``threshold`` connects in a row failed. A lease that cannot be served by an idle member fails at once
  with [`PoolUnavailable`][] instead of waiting out its timeout; background retries go on at the
  reconnect backoff.
- ``half_open``: one probe connect is under way, started by a lease (at most once per ``probe_interval``) or by the
  background retry. Its success closes the breaker; its failure opens it again.

Every method is called with the pool lock held. State changes are queued and handed to ``take_changes``, so
that they are logged and reported to listeners outside the lock, in order.
"""

from __future__ import annotations

from collections import deque

from .states import BreakerState

__all__ = ["CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class CircuitBreaker:
    """One pool's breaker; ``threshold=None`` disables it (it then stays closed)."""

    __slots__ = ("threshold", "probe_interval", "state", "next_probe_at", "_changes")

    def __init__(self, threshold: int | None, probe_interval: float) -> None:
        self.threshold = threshold
        self.probe_interval = probe_interval
        self.state = CLOSED
        self.next_probe_at = 0.0
        self._changes: deque[BreakerState] = deque()

    @property
    def closed(self) -> bool:
        """True while connects flow freely."""
        return self.state is CLOSED

    def connect_succeeded(self) -> None:
        """A connect succeeded: close."""
        self._set(CLOSED)

    def connect_failed(self, failures: int, now: float) -> bool:
        """A connect failed, the ``failures``-th in a row; return True if the breaker is open now."""
        if self.state is HALF_OPEN or (self.threshold is not None and failures >= self.threshold):
            self._set(OPEN)
            self.next_probe_at = now + self.probe_interval
        return self.state is OPEN

    def probe_failed(self, now: float) -> None:
        """A connect failed for a reason that does not count towards opening (refused credentials): if it was the
        probe, open again."""
        if self.state is HALF_OPEN:
            self._set(OPEN)
            self.next_probe_at = now + self.probe_interval

    def try_probe(self, now: float) -> bool:
        """A lease found the breaker open: return True if it may start a probe (the breaker is then half-open)."""
        if self.state is not OPEN or now < self.next_probe_at:
            return False
        self._set(HALF_OPEN)
        self.next_probe_at = now + self.probe_interval
        return True

    def retry_starting(self) -> None:
        """A background retry starts while the breaker is open: it is the probe."""
        if self.state is OPEN:
            self._set(HALF_OPEN)

    def probe_dropped(self) -> None:
        """The probe did not run (its caller left, the pool no longer needed it): open again, so another may."""
        if self.state is HALF_OPEN:
            self._set(OPEN)

    def reset(self) -> None:
        """Back to closed with no history (a forked child)."""
        self.state = CLOSED
        self.next_probe_at = 0.0
        self._changes.clear()

    def take_changes(self) -> list[BreakerState]:
        """The state changes since the last call, oldest first, to report outside the lock."""
        changes = list(self._changes)
        self._changes.clear()
        return changes

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            self._changes.append(state)
