"""A drop-in replacement for ``psycopg_pool.ConnectionPool``, built on :class:`syncpool.Pool`.

Switching is an import change::

    from syncpool.postgres import ConnectionPool   # was: from psycopg_pool import ConnectionPool

    with ConnectionPool("dbname=app", min_size=2, max_size=10, open=True) as pool:
        with pool.connection() as conn:             # commits on success, rolls back on error
            conn.execute("INSERT INTO t VALUES (1)")

The constructor arguments, methods, properties and exceptions mean what psycopg_pool's do; every difference that
remains is listed, with its reason, in ``docs/migrating-from-psycopg-pool.md``. The pool is also a
:class:`syncpool.Pool`, so ``stats()``, listeners and the metrics exporters work on it too.

Exceptions inherit from both syncpool's and psycopg_pool's classes (psycopg's ``OperationalError`` when
psycopg_pool is not installed), so ``except psycopg_pool.PoolTimeout``, ``except psycopg.OperationalError`` and
``except syncpool.PoolTimeout`` all catch a :class:`PoolTimeout` raised here::

    syncpool.PoolTimeout, psycopg_pool.PoolTimeout
    └── PoolTimeout
        ├── AuthError         (also syncpool.AuthError) the server refused the credentials: raised at once
        └── PoolUnavailable   (also syncpool.PoolUnavailable) the circuit breaker is open (opt-in)
    syncpool.PoolClosed, psycopg_pool.PoolClosed
    └── PoolClosed
    syncpool.TooManyWaiters, psycopg_pool.TooManyRequests
    └── TooManyRequests
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, cast

import psycopg
from psycopg.pq import TransactionStatus

from syncpool import errors as _errors
from syncpool.connectors.postgres import PostgresConnector
from syncpool.pool import Pool

try:  # psycopg_pool is optional: without it the exceptions derive from psycopg.OperationalError, as its own do.
    import psycopg_pool as _psycopg_pool

    _PgPoolTimeout: type[Exception] = _psycopg_pool.PoolTimeout
    _PgPoolClosed: type[Exception] = _psycopg_pool.PoolClosed
    _PgTooManyRequests: type[Exception] = _psycopg_pool.TooManyRequests
except ImportError:  # pragma: no cover - exercised only without psycopg_pool
    _PgPoolTimeout = _PgPoolClosed = _PgTooManyRequests = psycopg.OperationalError

__all__ = ["AuthError", "ConnectionPool", "PoolClosed", "PoolTimeout", "PoolUnavailable", "TooManyRequests"]

logger = logging.getLogger("syncpool")

ConnectionCB = Callable[[Any], object]


class PoolTimeout(_errors.PoolTimeout, _PgPoolTimeout):  # type: ignore[misc, valid-type]
    """No connection could be obtained in time; also a ``psycopg_pool.PoolTimeout`` and ``psycopg.OperationalError``."""

    __module__ = "syncpool.postgres"


class PoolClosed(_errors.PoolClosed, _PgPoolClosed):  # type: ignore[misc, valid-type]
    """The pool is closed or not open yet; also a ``psycopg_pool.PoolClosed``."""

    __module__ = "syncpool.postgres"


class TooManyRequests(_errors.TooManyWaiters, _PgTooManyRequests):  # type: ignore[misc, valid-type]
    """``max_waiting`` requests already wait; also a ``psycopg_pool.TooManyRequests`` and ``syncpool.TooManyWaiters``."""

    __module__ = "syncpool.postgres"


class AuthError(_errors.AuthError, PoolTimeout):
    """The server refused the credentials; raised at once instead of a :class:`PoolTimeout` at the deadline."""

    __module__ = "syncpool.postgres"


class PoolUnavailable(_errors.PoolUnavailable, PoolTimeout):
    """The circuit breaker is open (only with ``breaker_threshold`` set): the server keeps refusing connections."""

    __module__ = "syncpool.postgres"


# Most specific first: the first match decides.
_TRANSLATIONS: tuple[tuple[type[_errors.PoolError], type[_errors.PoolError]], ...] = (
    (_errors.AuthError, AuthError),
    (_errors.PoolUnavailable, PoolUnavailable),
    (_errors.PoolTimeout, PoolTimeout),
    (_errors.PoolClosed, PoolClosed),
    (_errors.TooManyWaiters, TooManyRequests),
)
_COMPAT = (AuthError, PoolUnavailable, PoolTimeout, PoolClosed, TooManyRequests)


def _translate(error: _errors.PoolError) -> BaseException:
    """Return the compatible exception for a core one (itself if it has none); raise it ``from error.__cause__``."""
    if isinstance(error, _COMPAT):
        return error
    for core_class, compat_class in _TRANSLATIONS:
        if isinstance(error, core_class):
            return compat_class(*error.args)
    return error


class _CompatConnector(PostgresConnector):
    """A :class:`PostgresConnector` taking psycopg_pool's ``connection_class``, ``kwargs``, ``check`` and ``reset``."""

    def __init__(
        self,
        conninfo: str | Callable[[], str],
        *,
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None,
        connection_class: type[psycopg.Connection[Any]],
        configure: ConnectionCB | None,
        check: ConnectionCB | None,
        reset: ConnectionCB | None,
    ) -> None:
        static_kwargs = dict(kwargs) if kwargs is not None and not callable(kwargs) else {}
        super().__init__(conninfo, configure=configure, connection_class=connection_class, **static_kwargs)
        self._kwargs_factory = kwargs if callable(kwargs) else None
        self._check_callback = check
        self._reset_callback = reset

    def _resolve_arguments(self) -> tuple[str, dict[str, Any]]:
        """As :class:`PostgresConnector` does, plus psycopg_pool's ``kwargs`` when it is a callable."""
        conninfo, kwargs = super()._resolve_arguments()
        if self._kwargs_factory is not None:
            kwargs = {**kwargs, **self._kwargs_factory()}
        return conninfo, kwargs

    def _connected(self, conn: psycopg.Connection[Any]) -> None:
        """Mark the connection as pooled (``_pool``), as psycopg_pool does: psycopg then neither warns when it is
        garbage collected open nor closes it at the end of a ``with conn:`` block while it is leased."""
        conn._pool = None

    def check(self, client: psycopg.Connection[Any]) -> None:
        """Run the pool's ``check`` callback if it has one, else ``SELECT 1`` bounded by ``check_timeout``."""
        if self._check_callback is not None:
            self._check_callback(client)
        else:
            super().check(client)

    def reset(self, client: psycopg.Connection[Any]) -> None:
        """Roll back a transaction left open (with a warning), then run the pool's ``reset`` callback, which must
        leave the connection idle: otherwise the connection is discarded."""
        super().reset(client)
        if self._reset_callback is None:
            return
        self._reset_callback(client)
        status = client.pgconn.transaction_status
        if status != TransactionStatus.IDLE:
            raise psycopg.ProgrammingError(
                f"connection left in status {TransactionStatus(status).name} by reset function "
                f"{self._reset_callback!r}: discarded"
            )

    def close(self, client: psycopg.Connection[Any]) -> None:
        """Close the connection for good (clearing ``_pool`` first, so ``close_returns`` cannot send it back)."""
        client._pool = None
        client.close()


class ConnectionPool(Pool["psycopg.Connection[Any]"]):
    """A pool of psycopg connections with the API of ``psycopg_pool.ConnectionPool``.

    It is a :class:`syncpool.Pool` whose connector is a :class:`~syncpool.connectors.PostgresConnector`; what the
    arguments below do is psycopg_pool's documented behaviour, and where syncpool does something else the
    migration guide says so.

    Args:
        conninfo: libpq connection string, or a callable returning one (called at every connect).
        connection_class: The class whose ``connect()`` makes connections. Defaults to ``psycopg.Connection``.
        kwargs: Extra ``connect()`` arguments, or a callable returning them (called at every connect).
        min_size: Connections kept open. Defaults to 4.
        max_size: Most connections at once; None means ``min_size``. Defaults to None.
        open: Open at construction. None (the default) opens too, but like psycopg_pool warns at the first
            ``getconn()``/``wait()`` that the default will become False; pass True or False, or use ``with``.
        configure: Called with each new connection before it is used.
        check: Called with a connection before each ``getconn()`` hands it out; if it raises, the connection is
            discarded and another one is tried. ``ConnectionPool.check_connection`` is a ready-made one.
        reset: Called with each returned connection, after a transaction left open was rolled back; it must leave
            the connection idle, else the connection is discarded.
        name: Name of the pool, in thread names and log lines. Defaults to ``pool-<n>``.
        close_returns: Make ``conn.close()`` return a leased connection to the pool instead of closing it.
        timeout: Default seconds ``getconn()`` waits. Defaults to 30.
        max_waiting: Most requests waiting at once (0: no bound); one more gets :class:`TooManyRequests`.
        max_lifetime: Seconds after which a connection is replaced. Defaults to 60 * 60.0.
        max_idle: Seconds an idle connection above ``min_size`` is kept. Defaults to 10 * 60.0.
        reconnect_timeout: Seconds of failing connects after which ``reconnect_failed`` is called. Defaults to
            5 * 60.0.
        reconnect_failed: Called as ``reconnect_failed(pool)`` when reconnecting failed for ``reconnect_timeout``.
        num_workers: Background worker threads. Defaults to 3.
        health_check_interval: syncpool only: seconds between background health passes over idle connections;
            None (the default, as psycopg_pool has none) disables them.
        breaker_threshold: syncpool only: consecutive connect failures after which leases fail fast with
            :class:`PoolUnavailable`; None (the default, psycopg_pool's behaviour: wait for the timeout) disables it.
        leak_threshold: syncpool only: seconds after which a lease still out is logged as a probable leak.
    """

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        connection_class: type[psycopg.Connection[Any]] = psycopg.Connection,
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        min_size: int = 4,
        max_size: int | None = None,
        open: bool | None = None,
        configure: ConnectionCB | None = None,
        check: ConnectionCB | None = None,
        reset: ConnectionCB | None = None,
        name: str | None = None,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[ConnectionPool], object] | None = None,
        num_workers: int = 3,
        health_check_interval: float | None = None,
        breaker_threshold: int | None = None,
        leak_threshold: float | None = None,
    ) -> None:
        min_size, max_size = _check_size(min_size, max_size)
        for label, callback in (("configure", configure), ("check", check), ("reset", reset)):
            if callback is not None and not callable(callback):
                raise TypeError(
                    f"{label} must be a callable taking a connection, not {type(callback).__name__}"
                )
        if reconnect_failed is not None and not callable(reconnect_failed):
            raise TypeError(
                f"reconnect_failed must be a callable taking the pool, not {type(reconnect_failed).__name__}"
            )
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._connection_class = connection_class
        self._user_reconnect_failed = reconnect_failed
        self._num_workers = num_workers
        self.close_returns = close_returns
        self._open_implicit = False
        connector = _CompatConnector(
            conninfo,
            kwargs=kwargs,
            connection_class=connection_class,
            configure=configure,
            check=check,
            reset=reset,
        )
        super().__init__(
            connector,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            leak_threshold=leak_threshold,
            name=name or None,
            open=False,
            num_workers=num_workers,
            reconnect_timeout=reconnect_timeout,
            # A plain function, not a bound method: the pool keeps no reference cycle through its own callback.
            reconnect_failed=_call_reconnect_failed,
            health_check_interval=health_check_interval,
            # psycopg_pool runs ``check`` on every getconn; without one, a lease is never checked.
            check_after_idle=0.0 if check is not None else None,
            breaker_threshold=breaker_threshold,
        )
        if open is None:
            open = self._open_implicit = True
        if open:
            self.open()

    # -- configuration, read-only (psycopg_pool's attributes) ------------------------------------------------------

    @property
    def conninfo(self) -> str | Callable[[], str]:
        """The connection string (or callable) given to the constructor."""
        return self._conninfo

    @property
    def kwargs(self) -> Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None:
        """The ``connect()`` keyword arguments (or callable) given to the constructor."""
        return self._kwargs

    @property
    def connection_class(self) -> type[psycopg.Connection[Any]]:
        """The class whose ``connect()`` makes the connections."""
        return self._connection_class

    @property
    def num_workers(self) -> int:
        """Background worker threads."""
        return self._num_workers

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool and start filling it; with ``wait``, block as :meth:`wait` does.

        Calling it on an open pool does nothing; a closed pool cannot be reopened (:class:`PoolClosed`).
        """
        try:
            super().open()
        except _errors.PoolError as error:
            raise _translate(error) from error.__cause__
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Block until ``min_size`` connections are ready.

        Raises:
            PoolTimeout: Not ready within ``timeout``; the pool is closed first, as psycopg_pool does.
            AuthError: The server refused the credentials (at once); the pool is closed first.
            PoolClosed: The pool is not open.
        """
        self._warn_if_open_implicit()
        try:
            super().wait(timeout)
        except _errors.PoolError as error:
            if isinstance(error, (_errors.PoolTimeout, _errors.AuthError)):
                self.close()
            raise _translate(error) from error.__cause__

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: waiting and future requests get :class:`PoolClosed`; leased connections are closed when
        returned. Waits up to ``timeout`` seconds for leases and background threads."""
        super().close(timeout)

    def __enter__(self) -> ConnectionPool:
        self._open_implicit = False
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _warn_if_open_implicit(self) -> None:
        if self._open_implicit:
            self._open_implicit = False
            warnings.warn(
                f"the default for the {type(self).__name__} 'open' parameter will become 'False' in a future "
                "release. Please use open={True|False} explicitly, or use the pool as context manager using: "
                f"`with {type(self).__name__}(...) as pool: ...`",
                DeprecationWarning,
                stacklevel=3,
            )

    # -- leasing ---------------------------------------------------------------------------------------------------

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:  # type: ignore[override]
        """Lease a connection for a ``with`` block: on exit commit (or roll back if the block raised), then return.

        A connection found broken on return is replaced.
        """
        conn = self.getconn(timeout)
        try:
            with conn:
                yield conn
        finally:
            self.putconn(conn)

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        """Lease a connection, waiting up to ``timeout`` (default: the pool's ``timeout``); return it with
        :meth:`putconn`.

        Raises:
            PoolTimeout: No connection in time (``__cause__`` is the last connect error, if any).
            TooManyRequests: ``max_waiting`` requests already wait.
            PoolClosed: The pool is closed or not open.
            AuthError: The server refused the credentials.
        """
        if self._open_implicit:
            self._warn_if_open_implicit()
        try:
            conn = super().getconn(timeout)
        except _errors.PoolError as error:
            raise _translate(error) from error.__cause__
        # Marks the lease for psycopg: ``with conn:`` then does not close it, and close_returns can find the pool.
        conn._pool = self  # type: ignore[assignment]  # psycopg only reads it with getattr()
        return conn

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Return a connection from :meth:`getconn`: a transaction left open is rolled back (with a warning), the
        ``reset`` callback runs, and a broken connection is replaced.

        Raises:
            ValueError: ``conn`` does not come from this pool (or was already returned).
        """
        if getattr(conn, "_pool", None) is self:
            conn._pool = None
        try:
            super().putconn(conn)
        except _errors.PoolError:
            owner = getattr(conn, "_pool", None)
            source = (
                f"it comes from pool {owner.name!r}" if owner is not None else "it doesn't come from any pool"
            )
            raise ValueError(f"can't return connection to pool {self.name!r}, {source}: {conn}") from None

    # -- maintenance -----------------------------------------------------------------------------------------------

    def resize(self, min_size: int, max_size: int | None = None) -> None:  # type: ignore[override]
        """Change the bounds; ``max_size=None`` means ``min_size``, as in the constructor."""
        min_size, max_size = _check_size(min_size, max_size)
        super().resize(min_size, max_size)

    def drain(self) -> None:
        """Replace every connection: idle ones now, leased ones when they are returned."""
        self.reload()

    @staticmethod
    def check_connection(conn: psycopg.Connection[Any]) -> None:
        """Run an empty query, in autocommit mode; raise if the connection does not work. Usable as ``check=``."""
        if conn.autocommit:
            conn.execute("")
        else:
            conn.autocommit = True
            try:
                conn.execute("")
            finally:
                with suppress(Exception):  # do not hide the error of a connection that has just died
                    conn.autocommit = False

    def reconnect_failed(self) -> None:
        """Called (on a worker thread) when reconnecting failed for ``reconnect_timeout`` seconds; runs the
        ``reconnect_failed`` callback. Subclasses may override it."""
        if self._user_reconnect_failed is not None:
            self._user_reconnect_failed(self)

    # -- statistics ------------------------------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        """Return psycopg_pool's statistics since the last :meth:`pop_stats` (see the migration guide for how each is
        counted). :meth:`syncpool.Pool.stats` keeps counting since the pool was created."""
        return _psycopg_stats(self._snapshot(since_pop=True, mark=False))

    def pop_stats(self) -> dict[str, int]:
        """Return :meth:`get_stats` and start its counters again from zero (the ``pool_*`` and ``requests_waiting``
        gauges are the state now). Only these views start again: :meth:`syncpool.Pool.stats` and the exporters
        never go backwards."""
        return _psycopg_stats(self._snapshot(since_pop=True, mark=True))


def _call_reconnect_failed(pool: Pool[Any]) -> None:
    cast(ConnectionPool, pool).reconnect_failed()


def _check_size(min_size: int, max_size: int | None) -> tuple[int, int]:
    """psycopg_pool's size rules: ``max_size`` None means ``min_size``; both 0 is refused."""
    if max_size is None:
        max_size = min_size
    if min_size < 0:
        raise ValueError("min_size cannot be negative")
    if max_size < min_size:
        raise ValueError("max_size must be greater or equal than min_size")
    if min_size == max_size == 0:
        raise ValueError("if min_size is 0 max_size must be greater than 0")
    return min_size, max_size


def _psycopg_stats(stats: Mapping[str, Any]) -> dict[str, int]:
    """Map :meth:`syncpool.Pool.stats` to psycopg_pool's keys. All keys are always present (psycopg_pool leaves
    out counters that are still zero)."""
    discards = stats["discards"]
    return {
        "pool_min": stats["min_size"],
        "pool_max": stats["max_size"],
        "pool_size": stats["size"],
        "pool_available": stats["idle"],
        "requests_waiting": stats["waiting"],
        "requests_num": stats["leases_total"] + stats["lease_timeouts"] + stats["too_many_waiters"],
        "requests_queued": stats["leases_waited"] + stats["lease_timeouts"],
        "requests_wait_ms": int(stats["wait_ms_total"]),
        "requests_errors": stats["lease_timeouts"] + stats["too_many_waiters"],
        "usage_ms": int(stats["use_ms_total"]),
        "returns_bad": discards["broken"] + discards["reset_failed"],
        "connections_num": stats["connections_created"] + stats["connect_errors"],
        "connections_ms": int(stats["connect_ms_total"]),
        "connections_errors": stats["connect_errors"],
        "connections_lost": discards["check_failed"],
    }
