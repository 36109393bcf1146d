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

# sqlite3.LEGACY_TRANSACTION_CONTROL (Python 3.12+): the value of Connection.autocommit when transactions follow
# isolation_level, which is the only behaviour before 3.12 (where the attribute does not exist).
_LEGACY = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)


def _transaction_mode(conn: sqlite3.Connection) -> str:
    """How ``conn`` handles transactions: "autocommit" (the caller issues BEGIN itself: ``autocommit=True``, or
    ``isolation_level=None`` in legacy mode), "always" (PEP 249's ``autocommit=False``: a transaction is always
    open, a new one begins after each commit or rollback) or "implicit" (legacy mode: sqlite3 opens one before a
    data-modifying statement)."""
    autocommit = getattr(conn, "autocommit", _LEGACY)
    if autocommit is True:
        return "autocommit"
    if autocommit is False:
        return "always"
    return "autocommit" if conn.isolation_level is None else "implicit"


class SQLiteConnector(Connector[sqlite3.Connection]):
    """Opens ``sqlite3.connect(database, check_same_thread=False, **kwargs)``.

    ``check_same_thread=False`` because a pooled connection moves between threads; the pool guarantees that only one
    thread uses it at a time, which is what SQLite's serialized-per-connection use needs.

    ``":memory:"`` gives every connection its own private, empty database, so a pool of them is rarely what you
    want: for one in-memory database shared by the pool use ``"file::memory:?cache=shared"`` (or
    ``"file:name?mode=memory&cache=shared"``) with ``uri=True``; it lives as long as one connection to it is open.

    At the end of a ``with pool.connection()`` block the transaction is committed, or rolled back if the block
    raised (see [`release`][]); a connection returned with ``putconn()`` has an open transaction rolled back.

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
        """Roll back a transaction left open, with a warning; nothing to do otherwise.

        With ``autocommit=False`` (Python 3.12+) a transaction is always open, so it is rolled back without a
        warning: nothing tells forgotten changes from none. With ``autocommit=True`` ``rollback()`` does nothing,
        so a transaction the caller opened with ``BEGIN`` is rolled back with a ``ROLLBACK`` statement.
        """
        if not client.in_transaction:
            return
        mode = _transaction_mode(client)
        if mode == "always":
            client.rollback()
            return
        logger.warning("%s: connection returned with a transaction open, rolling back", self.description)
        if mode == "autocommit":
            client.execute("ROLLBACK")
        else:
            client.rollback()

    def release(self, client: sqlite3.Connection, error: BaseException | None) -> bool:
        """End the transaction of a ``with pool.connection()`` block: commit when it ended cleanly, roll back when it
        raised, as sqlite3's own ``with conn:`` does.

        An autocommit connection (``autocommit=True``, or ``isolation_level=None`` in legacy mode) is left alone:
        a transaction opened on it with ``BEGIN`` is the caller's, and [`reset`][] rolls it back with a warning
        (sqlite3's ``with conn:`` commits it under ``isolation_level=None``). A commit that fails (the database is
        locked past the busy ``timeout``, a deferred foreign key) raises, so the caller sees it and the pool
        discards the connection, which releases its locks. A rollback that fails after the block raised is logged
        instead, so that the block's own error is the one that propagates. Then [`is_broken`][] and [`reset`][]
        decide whether it goes back, as for [`Pool.putconn`][].
        """
        try:
            ending = client.in_transaction and _transaction_mode(client) != "autocommit"
        except sqlite3.ProgrammingError:  # closed inside the block: is_broken() discards it
            ending = False
        if ending and error is None:
            client.commit()
        elif ending:
            try:
                client.rollback()
            except sqlite3.Error as rollback_error:
                logger.warning(
                    "%s: rollback after an error in a with pool.connection() block failed: %s",
                    self.description, rollback_error,
                )
        return super().release(client, error)

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
