"""A lease and a transaction in one ``with`` block: committed on success, rolled back on error.

```python
from syncpool.transactions import transaction

with transaction(pool) as conn:
    conn.execute("INSERT INTO jobs (id) VALUES (%s)", (42,))
# committed here; had the block raised, rolled back, and the exception would propagate unchanged
```

The pool core knows nothing of transactions: this module asks the leased client for one. A psycopg 3 connection
(or anything with a ``transaction()`` context manager) uses it, so a transaction is started even on an autocommit
connection, and inside an outer ``conn.transaction()`` block it becomes a savepoint. A ``sqlite3.Connection`` uses
its own context manager (commit on success, rollback on error).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .monitoring import unwrap
from .protocols import PoolLike

__all__ = ["transaction"]

T = TypeVar("T")


@contextmanager
def transaction(pool: PoolLike[T], timeout: float | None = None) -> Iterator[T]:
    """Lease a client from ``pool`` and run the ``with`` block in a transaction on it.

    The transaction commits when the block ends normally and rolls back when it raises; either way the client goes
    back to the pool (a connection the rollback could not clean is discarded by the connector's return checks).

    Args:
        pool: The pool to lease from (a [`Pool`][], or any [`PoolLike`][]).
        timeout: Seconds to wait for a client; defaults to the pool's ``timeout``.

    Raises:
        TypeError: The pool's clients have no notion of a transaction.
        PoolTimeout, PoolClosed, TooManyWaiters: As [`Pool.getconn`][].
    """
    with pool.connection(timeout) as client:
        raw: Any = unwrap(client)
        if isinstance(raw, sqlite3.Connection):
            with raw:  # sqlite3's context manager: commit on success, rollback on error
                yield client
        elif callable(getattr(raw, "transaction", None)):
            with client.transaction():  # type: ignore[attr-defined]
                yield client
        else:
            raise TypeError(f"pool {pool.name!r}: a {type(raw).__name__} has no transaction() to run a block in")
