"""A pool's options, validated once at construction.

``PoolOptions`` holds every keyword of [`Pool`][] except the connector, the name and ``open``.
Building one checks each value and raises a ``TypeError`` (wrong kind) or ``ValueError`` (out of range) that names
the parameter, so a typo in a configuration file fails at start-up with a message saying which option is wrong.
The pool reads its options from here; ``resize`` is the only thing that changes sizes later.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .monitoring import ClientStats
from .retry import Backoff

__all__ = ["PoolOptions", "check_int", "check_seconds"]


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``; else raise naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_seconds(name: str, value: object, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """Return ``value`` as float seconds if it is a valid duration; else raise naming ``name``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got NaN")
    if math.isinf(seconds) and not (allow_inf and seconds > 0):
        raise ValueError(f"{name} must be finite, got {value}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value}")
    return seconds


def check_sizes(min_size: object, max_size: object) -> tuple[int, int]:
    """Validate a (min_size, max_size) pair."""
    check_int("min_size", min_size, minimum=0)
    check_int("max_size", max_size, minimum=1)
    assert isinstance(min_size, int) and isinstance(max_size, int)
    if min_size > max_size:
        raise ValueError(f"min_size ({min_size}) must not be greater than max_size ({max_size})")
    return min_size, max_size


def _optional_seconds(name: str, value: object, **limits: bool) -> float | None:
    return None if value is None else check_seconds(name, value, **limits)


def _callable_or_none(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")


@dataclass(frozen=True)
class PoolOptions:
    """The validated options of one pool; see [`Pool`][] for what each one means.

    ``check_after_idle`` is None when disabled, as given; the pool compares against ``math.inf`` then.
    """

    min_size: int = 0
    max_size: int = 10
    timeout: float = 30.0
    max_waiting: int = 0
    max_lifetime: float = 60 * 60.0
    max_idle: float = 10 * 60.0
    leak_threshold: float | None = None
    num_workers: int = 3
    reconnect_backoff: Backoff | None = None
    reconnect_timeout: float = 5 * 60.0
    reconnect_failed: Callable[..., object] | None = None
    health_check_interval: float | None = 30.0
    health_check_timeout: float = 5.0
    check_after_idle: float | None = None
    breaker_threshold: int | None = 5
    breaker_probe_interval: float = 0.25
    monitor: bool | ClientStats = False
    idle_order: str = "lifo"

    def __post_init__(self) -> None:
        check_sizes(self.min_size, self.max_size)
        set_ = object.__setattr__  # frozen: normalise ints to floats in place once
        set_(self, "timeout", check_seconds("timeout", self.timeout, allow_zero=True))
        check_int("max_waiting", self.max_waiting, minimum=0)
        set_(self, "max_lifetime", check_seconds("max_lifetime", self.max_lifetime, allow_inf=True))
        set_(self, "max_idle", check_seconds("max_idle", self.max_idle, allow_inf=True))
        set_(self, "leak_threshold", _optional_seconds("leak_threshold", self.leak_threshold))
        check_int("num_workers", self.num_workers, minimum=1)
        if self.reconnect_backoff is not None and not isinstance(self.reconnect_backoff, Backoff):
            raise TypeError(
                f"reconnect_backoff must be a syncpool.retry.Backoff, not {type(self.reconnect_backoff).__name__}"
            )
        set_(self, "reconnect_timeout", check_seconds("reconnect_timeout", self.reconnect_timeout, allow_inf=True))
        _callable_or_none("reconnect_failed", self.reconnect_failed)
        set_(self, "health_check_interval", _optional_seconds("health_check_interval", self.health_check_interval))
        set_(self, "health_check_timeout", check_seconds("health_check_timeout", self.health_check_timeout))
        set_(self, "check_after_idle", _optional_seconds("check_after_idle", self.check_after_idle, allow_zero=True))
        if self.breaker_threshold is not None:
            check_int("breaker_threshold", self.breaker_threshold, minimum=1)
        set_(self, "breaker_probe_interval",
             check_seconds("breaker_probe_interval", self.breaker_probe_interval, allow_zero=True))
        if self.idle_order not in ("lifo", "fifo"):
            raise ValueError(f"idle_order must be 'lifo' or 'fifo', got {self.idle_order!r}")
        if not isinstance(self.monitor, (bool, ClientStats)):
            raise TypeError(
                f"monitor must be a bool or a syncpool.monitoring.ClientStats, not {type(self.monitor).__name__}"
            )

    @property
    def backoff(self) -> Backoff:
        """The reconnect backoff, defaulted."""
        return self.reconnect_backoff or _DEFAULT_BACKOFF

    def maintenance_interval(self) -> float:
        """How often maintenance runs: often enough to honour the shortest time limit closely, at most every 5 s."""
        limits = [5.0, self.max_idle / 4, self.max_lifetime / 20]
        if self.leak_threshold is not None:
            limits.append(self.leak_threshold / 4)
        return max(0.02, min(limits))


_DEFAULT_BACKOFF = Backoff()
