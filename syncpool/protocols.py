"""What the helpers above the pool need from it, as a small Protocol.

Batches ([`syncpool.batch`][]), retried operations ([`syncpool.retry`][]) and transactions
([`syncpool.transactions`][]) lease from a pool but must not import ``syncpool.pool``, which offers them as
methods: they are typed against [`PoolLike`][] instead, so the imports point one way.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

__all__ = ["PoolLike"]

T_co = TypeVar("T_co", covariant=True)


class PoolLike(Protocol[T_co]):
    """The part of [`syncpool.Pool`][] that the modules above it use."""

    @property
    def name(self) -> str:
        """The pool's name, for thread names, log lines and errors."""
        ...

    @property
    def max_size(self) -> int:
        """Most clients that may exist at once."""
        ...

    @property
    def timeout(self) -> float:
        """Default lease timeout in seconds."""
        ...

    @property
    def closed(self) -> bool:
        """True unless the pool is open."""
        ...

    @property
    def connector(self) -> Any:
        """The pool's [`Connector`][] (its ``is_transient`` judges errors for retries)."""
        ...

    def connection(self, timeout: float | None = None) -> AbstractContextManager[T_co]:
        """Lease a client for a ``with`` block."""
        ...

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early when the pool closes; return True if it is closed."""
        ...
