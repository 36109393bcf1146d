"""The connector behind [`syncpool.postgres.ConnectionPool`][]: psycopg_pool's callback rules and log lines.

psycopg_pool lets its users pass ``connection_class``, ``kwargs``, ``configure``, ``check`` and ``reset``, and logs
what happens to returned connections on its own logger; ``CompatConnector`` does the same on top of
[`PostgresConnector`][syncpool.connectors.PostgresConnector], so that the drop-in pool behaves as psycopg_pool's.
The pool itself lives in ``syncpool/postgres.py``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from syncpool.connectors.postgres import PostgresConnector
from syncpool.protocols import PoolLike

__all__ = ["LOGGER_NAME", "CompatConnector"]

LOGGER_NAME = "psycopg.pool"
"""psycopg_pool's logger: the drop-in pools log on it, at psycopg_pool's levels, so that logging set up for
psycopg_pool keeps working."""
logger = logging.getLogger(LOGGER_NAME)

_IDLE, _ACTIVE = TransactionStatus.IDLE, TransactionStatus.ACTIVE
_ROLLBACK = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
_REUSABLE = frozenset({TransactionStatus.IDLE, TransactionStatus.INTRANS, TransactionStatus.INERROR})


class CompatConnector(PostgresConnector):
    """A [`PostgresConnector`][syncpool.connectors.PostgresConnector] with psycopg_pool's ``connection_class``, ``kwargs``, ``configure``, ``check``
    and ``reset`` rules and its return-path log lines."""

    def __init__(
        self,
        conninfo: str | Callable[[], str],
        *,
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None,
        connection_class: type[psycopg.Connection[Any]],
        configure: Callable[[Any], object] | None,
        check: Callable[[Any], object] | None,
        reset: Callable[[Any], object] | None,
    ) -> None:
        static_kwargs = dict(kwargs) if kwargs is not None and not callable(kwargs) else {}
        # configure runs in _connected(), with psycopg_pool's rule, rather than in PostgresConnector's (which
        # commits a transaction configure left open).
        super().__init__(conninfo, connection_class=connection_class, **static_kwargs)
        self._kwargs_factory = kwargs if callable(kwargs) else None
        self._configure_callback = configure
        # Without a callback, check() is PostgresConnector's, bounded by check_timeout: the pool runs it in the
        # leasing thread. A callback may hang: the pool gives it a thread of its own and a deadline.
        self._check_callback = check
        if check is not None:
            self.check_timeout = None  # type: ignore[assignment]  # the callback does not bound its own time
        self._reset_callback = reset
        self._owner: Callable[[], PoolLike[Any] | None] = lambda: None
        self._pool_name = "?"

    def attach(self, pool: PoolLike[Any]) -> None:
        """Know the pool (weakly: it owns this connector) for ``_pool`` marks, log lines and its state."""
        self._owner = weakref.ref(pool)
        self._pool_name = pool.name

    def _returning_to_closed_pool(self) -> bool:
        pool = self._owner()
        return pool is None or pool.closed

    def _resolve_arguments(self) -> tuple[str, dict[str, Any]]:
        """As [`PostgresConnector`][syncpool.connectors.PostgresConnector] does, plus psycopg_pool's ``kwargs`` when
        it is a callable."""
        conninfo, kwargs = super()._resolve_arguments()
        if self._kwargs_factory is not None:
            kwargs = {**kwargs, **self._kwargs_factory()}
        return conninfo, kwargs

    def _connected(self, conn: psycopg.Connection[Any]) -> None:
        """Run ``configure`` with the connection marked as the pool's, as psycopg_pool does (a ``with conn:`` in it
        then does not close it), and refuse a connection it leaves in a transaction or an error."""
        configure = self._configure_callback
        conn._pool = self._owner()  # type: ignore[assignment]  # psycopg only reads it with getattr()
        try:
            if configure is None:
                return
            configure(conn)
            status = conn.pgconn.transaction_status
            if status != _IDLE:
                raise psycopg.ProgrammingError(
                    f"connection left in status {TransactionStatus(status).name} by configure function "
                    f"{configure}: discarded"
                )
        finally:
            # Marked as pooled but not leased: psycopg neither warns when it is collected open nor closes it at the
            # end of a ``with conn:`` block, and close_returns finds no pool to return it to.
            conn._pool = None

    def check(self, client: psycopg.Connection[Any]) -> None:
        """Run the pool's ``check`` callback if it has one, else ``SELECT 1`` bounded by ``check_timeout``."""
        if self._check_callback is None:
            super().check(client)
            return
        try:
            self._check_callback(client)
        except Exception as error:
            logger.info("connection failed check: %s (pool %r)", error, self._pool_name)
            raise

    def is_broken(self, client: psycopg.Connection[Any]) -> bool:
        """True for a connection returned mid-command (``ACTIVE``), closed or broken, with psycopg_pool's warning.

        A connection returned to a closed pool is closed whatever its state, without a word, as in psycopg_pool.
        """
        status = client.pgconn.transaction_status
        if status in _REUSABLE or self._returning_to_closed_pool():
            return False
        if status == _ACTIVE:
            logger.warning("closing returned connection: %s (pool %r)", client, self._pool_name)
        else:
            logger.warning("discarding closed connection: %s (pool %r)", client, self._pool_name)
        return True

    def reset(self, client: psycopg.Connection[Any]) -> None:
        """Roll back a transaction left open or failed (with psycopg_pool's warning), then run the ``reset``
        callback, which must leave the connection idle. Raising discards the connection."""
        rollback = client.pgconn.transaction_status in _ROLLBACK
        if not rollback and self._reset_callback is None:
            return  # nearly every return: idle, nothing to reset
        if self._returning_to_closed_pool():
            return  # it is closed next, as in psycopg_pool: nothing to roll back or reset
        if rollback:
            logger.warning("rolling back returned connection: %s (pool %r)", client, self._pool_name)
            try:
                client.rollback()
            except Exception as error:
                logger.warning(
                    "rollback failed: %s: %s. Discarding connection %s (pool %r)",
                    type(error).__name__, error, client, self._pool_name,
                )
                raise
        reset = self._reset_callback
        if reset is None:
            return
        try:
            reset(client)
            status = client.pgconn.transaction_status
            if status != _IDLE:
                raise psycopg.ProgrammingError(
                    f"connection left in status {TransactionStatus(status).name} by reset function {reset}: "
                    "discarded"
                )
        except Exception as error:
            logger.warning("error resetting connection: %s (pool %r)", error, self._pool_name)
            raise

    def close(self, client: psycopg.Connection[Any]) -> None:
        """Close the connection for good (clearing ``_pool`` first, so ``close_returns`` cannot send it back)."""
        client._pool = None
        client.close()
