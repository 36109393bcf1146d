"""syncpool: thread-safe, bounded, fair pools for blocking clients.

``import syncpool`` needs nothing but the core: client libraries (psycopg, boto3, elasticsearch) are imported only
by the connectors that use them.
"""

from __future__ import annotations

from .batch import BatchError, BatchResult
from .connector import CallableConnector, Connector, current_member_index
from .errors import (
    AuthError,
    ConnectError,
    ConnectRejected,
    PoolClosed,
    PoolError,
    PoolTimeout,
    PoolUnavailable,
    TooManyWaiters,
)
from .monitoring import ClientStats, MonitoredClient, monitored
from .pool import Lease, Pool
from .retry import Backoff, RetryPolicy
from .states import BreakerState, PoolState

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "Backoff",
    "BatchError",
    "BatchResult",
    "BreakerState",
    "CallableConnector",
    "ClientStats",
    "ConnectError",
    "ConnectRejected",
    "Connector",
    "Lease",
    "MonitoredClient",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolState",
    "PoolTimeout",
    "PoolUnavailable",
    "RetryPolicy",
    "TooManyWaiters",
    "current_member_index",
    "monitored",
]
