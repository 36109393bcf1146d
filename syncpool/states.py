"""The states a pool and its circuit breaker go through, as string enums.

Both compare equal to their values (``pool.state == "open"``) and are their values in ``stats()``, so code written
against strings keeps working.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["BreakerState", "PoolState"]


class PoolState(str, Enum):
    """Where a pool is in its life: ``NEW`` -> ``OPEN`` -> ``CLOSING`` -> ``CLOSED``, never back."""

    NEW = "new"
    """Built with ``open=False`` and not opened yet: leases fail with [`PoolClosed`][]."""
    OPEN = "open"
    """Leasing, growing and checking."""
    CLOSING = "closing"
    """[`Pool.close`][] has begun: new leases fail, leases in flight may still come back."""
    CLOSED = "closed"
    """Closed for good; a closed pool cannot be reopened."""

    def __str__(self) -> str:
        return self.value


class BreakerState(str, Enum):
    """The circuit breaker: ``CLOSED`` (connects flow), ``OPEN`` (failing fast), ``HALF_OPEN`` (one probe)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value
