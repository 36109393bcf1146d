"""Exceptions raised by syncpool.

Every exception the pools raise on their own account derives from [`PoolError`][]:

```text
PoolError
├── PoolTimeout          no client could be leased in time
│   └── PoolUnavailable  the circuit breaker is open: the backend keeps refusing connections
├── PoolClosed           the pool is closed (or was closed while waiting)
├── TooManyWaiters       the wait queue is full (max_waiting)
├── ConnectRejected      the backend rejected connecting for a reason retrying cannot fix (unknown database)
│   └── AuthError        the backend refused our credentials
└── ConnectError         connecting failed (wraps the client's own error as __cause__)
```

Errors raised by a client inside a ``with pool.connection()`` block are never wrapped: they reach the caller as the
client raised them.
"""

from __future__ import annotations

__all__ = [
    "AuthError", "ConnectError", "ConnectRejected", "PoolClosed", "PoolError", "PoolTimeout", "PoolUnavailable",
    "TooManyWaiters",
]


class PoolError(Exception):
    """Base class of every error raised by a syncpool pool."""


class PoolTimeout(PoolError):
    """No client could be leased before the timeout expired."""


class PoolUnavailable(PoolTimeout):
    """The circuit breaker is open: leases fail fast until a probe connect succeeds."""


class PoolClosed(PoolError):
    """The pool is closed, or was closed while the caller was waiting."""


class TooManyWaiters(PoolError):
    """The wait queue already holds ``max_waiting`` callers."""


class ConnectRejected(PoolError):
    """The backend rejected connecting for a reason retrying cannot fix; every waiting caller gets it at once."""


class AuthError(ConnectRejected):
    """The backend refused the credentials (wrong user, password, key or token); retrying will not help."""


class ConnectError(PoolError):
    """A connection attempt failed; the client library's error is chained as ``__cause__``."""
