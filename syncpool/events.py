"""Listeners: callbacks a pool calls when something happens to it (see [`syncpool.Pool.add_listener`][])."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["EVENTS", "Listeners"]

logger = logging.getLogger("syncpool")

EVENTS = {
    "connect": "duration (seconds the connect took)",
    "connect_failed": "error, attempt (consecutive failures), duration",
    "lease": "wait (seconds spent queued; 0.0 when served at once)",
    "return": "use (seconds the client was leased)",
    "discard": "reason (one of the discard reasons of stats())",
    "timeout": "waited (seconds)",
    "check_failed": "error (None when the check overran health_check_timeout)",
    "open": "(nothing)",
    "close": "(nothing)",
    "resize": "min_size, max_size",
    "reload": "(nothing)",
    "breaker": "state (closed, open or half_open)",
}
"""Events a listener can subscribe to with [`Pool.add_listener`][], and the keyword arguments each one gets."""


class Listeners:
    """The callbacks of one pool, by event.

    The table is replaced, never changed in place, so ``emit`` reads it without a lock from any thread.
    Callbacks get the pool (through a weak reference: listeners never keep a pool alive) and the event's info.
    """

    __slots__ = ("_pool", "_table", "leases_watched")

    def __init__(self, pool: Any) -> None:
        self._pool = weakref.ref(pool)
        self._table: dict[str, tuple[Callable[..., object], ...]] = {}
        #: True while a "lease" or "return" listener exists: the lease path checks this before building an event.
        self.leases_watched = False

    def add(self, event: str, callback: Callable[..., object]) -> None:
        """Subscribe ``callback`` to ``event``; raises ValueError/TypeError for an unknown event or a non-callable."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; choose from {', '.join(EVENTS)}")
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._replace({**self._table, event: (*self._table.get(event, ()), callback)})

    def remove(self, event: str, callback: Callable[..., object]) -> None:
        """Unsubscribe ``callback`` from ``event``; unknown pairs are ignored."""
        remaining = tuple(c for c in self._table.get(event, ()) if c != callback)
        self._replace({**self._table, event: remaining})

    def emit(self, event: str, **info: Any) -> None:
        """Call every listener of ``event``. Never with the pool lock held; a listener's exception is logged."""
        callbacks = self._table.get(event)
        if not callbacks:
            return
        pool = self._pool()
        if pool is None:
            return
        for callback in callbacks:
            try:
                callback(pool, **info)
            except Exception:
                logger.exception("pool %r: %s listener failed", pool.name, event)

    def _replace(self, table: dict[str, tuple[Callable[..., object], ...]]) -> None:
        self._table = table
        self.leases_watched = bool(table.get("lease") or table.get("return"))
