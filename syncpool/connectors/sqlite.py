"""SQLite through the standard library's sqlite3: the embedded default."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from typing import Any

from syncpool.connector import Connector

__all__ = ["SQLiteConnector"]

logger = logging.getLogger("syncpool")

# Messages of sqlite3.OperationalError that mean "another connection holds the lock and the busy timeout ran out":
# worth retrying, unlike a syntax error or a missing table (also OperationalError).
_TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "database is busy")


class SQLiteConnector(Connector[sqlite3.Connection]):
    """Opens ``sqlite3.connect(database, check_same_thread=False, **kwargs)``.

    ``check_same_thread=False`` because a pooled connection moves between threads; the pool guarantees that only one
    thread uses it at a time, which is what SQLite's serialized-per-connection use needs.

    ``":memory:"`` gives every connection its own private, empty database, so a pool of them is rarely what you
    want: for one in-memory database shared by the pool use ``"file::memory:?cache=shared"`` (or
    ``"file:name?mode=memory&cache=shared"``) with ``uri=True``; it lives as long as one connection to it is open.

    Args:
        database: A path, ``":memory:"`` or (with ``uri=True``) a ``file:`` URI.
        configure: Called once with each new connection (pragmas, functions, row factory).
        kwargs: Passed to ``sqlite3.connect`` (``timeout``, ``isolation_level``, ``uri``...).
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        configure: Callable[[sqlite3.Connection], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.database = database
        self._configure = configure
        self._kwargs = kwargs
        self.description = f"sqlite {os.fspath(database)}"

    def connect(self) -> sqlite3.Connection:
        """Open the database and run ``configure``; a transaction ``configure`` leaves open is committed."""
        conn: sqlite3.Connection = sqlite3.connect(self.database, check_same_thread=False, **self._kwargs)
        try:
            if self._configure is not None:
                self._configure(conn)
                if conn.in_transaction:
                    conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def check(self, client: sqlite3.Connection) -> None:
        """Run ``SELECT 1`` (no transaction is opened). Local, so it takes microseconds."""
        client.execute("SELECT 1").fetchone()

    def is_broken(self, client: sqlite3.Connection) -> bool:
        """True if the connection was closed (sqlite3 raises ProgrammingError on any use of a closed one)."""
        try:
            client.total_changes  # noqa: B018 - a local read that fails only when closed
        except sqlite3.ProgrammingError:
            return True
        return False

    def reset(self, client: sqlite3.Connection) -> None:
        """Roll back a transaction left open, with a warning; nothing to do otherwise."""
        if client.in_transaction:
            logger.warning("%s: connection returned with a transaction open, rolling back", self.description)
            client.rollback()

    def close(self, client: sqlite3.Connection) -> None:
        """Close the connection."""
        client.close()

    def is_transient(self, error: BaseException) -> bool:
        """True for "database is locked"/"busy" (the busy timeout ran out) and Python's timeouts."""
        if isinstance(error, TimeoutError):
            return True
        if isinstance(error, sqlite3.OperationalError):
            message = str(error).lower()
            return any(fragment in message for fragment in _TRANSIENT_MESSAGES)
        return False
