"""Drop-in replacements for ``psycopg_pool.ConnectionPool`` and ``NullConnectionPool``, built on [`syncpool.Pool`][].

Switching is an import change:

```python
from syncpool.postgres import ConnectionPool   # was: from psycopg_pool import ConnectionPool

with ConnectionPool("dbname=app", min_size=2, max_size=10, open=True) as pool:
    with pool.connection() as conn:             # commits on success, rolls back on error
        conn.execute("INSERT INTO t VALUES (1)")
```

The constructor arguments, methods, properties, exceptions, error messages, statistics and log lines (on the
``psycopg.pool`` logger) mean what psycopg_pool's do, and the classes are generic in the connection class as
psycopg_pool's are (``ConnectionPool[MyConnection]``); every difference that remains is listed, with its reason, in
``docs/migrating-from-psycopg-pool.md``. A pool is also a [`syncpool.Pool`][], so ``stats()``, listeners and the
metrics exporters work on it too.

Exceptions inherit from both syncpool's and psycopg_pool's classes (psycopg's ``OperationalError`` when
psycopg_pool is not installed), so ``except psycopg_pool.PoolTimeout``, ``except psycopg.OperationalError`` and
``except syncpool.PoolTimeout`` all catch a [`PoolTimeout`][] raised here:

```text
syncpool.PoolTimeout, psycopg_pool.PoolTimeout
└── PoolTimeout
    ├── ConnectRejected   (also syncpool.ConnectRejected) the server rejected the connection: raised at once
    │   └── AuthError     (also syncpool.AuthError) the server refused the credentials: raised at once
    └── PoolUnavailable   (also syncpool.PoolUnavailable) the circuit breaker is open (opt-in)
syncpool.PoolClosed, psycopg_pool.PoolClosed
└── PoolClosed
syncpool.TooManyWaiters, psycopg_pool.TooManyRequests
└── TooManyRequests
```
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import psycopg

from syncpool import errors as _errors
from syncpool import forking
from syncpool.connector import Connector
from syncpool.connectors.postgres_compat import LOGGER_NAME, CompatConnector
from syncpool.pool import Pool
from syncpool.states import PoolState

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # a TypeVar with a default (PEP 696); psycopg requires typing_extensions before 3.13
    from typing_extensions import TypeVar

if TYPE_CHECKING:
    from psycopg.rows import TupleRow  # noqa: F401 - named by CT's default
    from typing_extensions import Self

    from syncpool.leasing import Lease
    from syncpool.members import Member

try:  # psycopg_pool is optional: without it the exceptions derive from psycopg.OperationalError, as its own do.
    import psycopg_pool as _psycopg_pool

    _PgPoolTimeout: type[Exception] = _psycopg_pool.PoolTimeout
    _PgPoolClosed: type[Exception] = _psycopg_pool.PoolClosed
    _PgTooManyRequests: type[Exception] = _psycopg_pool.TooManyRequests
except ImportError:  # pragma: no cover - exercised only without psycopg_pool
    _PgPoolTimeout = _PgPoolClosed = _PgTooManyRequests = psycopg.OperationalError

__all__ = [
    "AuthError", "ConnectRejected", "ConnectionPool", "NullConnectionPool", "PoolClosed", "PoolTimeout",
    "PoolUnavailable", "TooManyRequests",
]

logger = logging.getLogger(LOGGER_NAME)  # psycopg_pool's, as the connector's (see postgres_compat.py)

#: The connection class of a pool, as in psycopg_pool: ``ConnectionPool[MyConnection]``.
CT = TypeVar("CT", bound="psycopg.Connection[Any]", default="psycopg.Connection[TupleRow]")

ConnectionCB = Callable[[CT], object]

NEW, OPEN = PoolState.NEW, PoolState.OPEN

# The default connection_class (typed Any: it is the class of the default connection type, CT's default).
_DEFAULT_CONNECTION_CLASS: Any = psycopg.Connection

# max_size of a NullConnectionPool created with max_size=0 (no bound), in the core's terms.
_UNBOUNDED = 2**31 - 1


class PoolTimeout(_errors.PoolTimeout, _PgPoolTimeout):  # type: ignore[misc, valid-type]
    """No connection could be obtained in time; also a ``psycopg_pool.PoolTimeout`` and ``psycopg.OperationalError``."""

    __module__ = "syncpool.postgres"


class PoolClosed(_errors.PoolClosed, _PgPoolClosed):  # type: ignore[misc, valid-type]
    """The pool is closed or not open yet; also a ``psycopg_pool.PoolClosed``."""

    __module__ = "syncpool.postgres"


class TooManyRequests(_errors.TooManyWaiters, _PgTooManyRequests):  # type: ignore[misc, valid-type]
    """``max_waiting`` requests already wait; also a ``psycopg_pool.TooManyRequests`` and ``syncpool.TooManyWaiters``."""

    __module__ = "syncpool.postgres"


class ConnectRejected(_errors.ConnectRejected, PoolTimeout):
    """The server rejected the connection for a reason retrying cannot fix (an unknown database, a ``configure``
    that leaves a transaction open); raised at once where psycopg_pool would time out, so it is a PoolTimeout."""

    __module__ = "syncpool.postgres"


class AuthError(_errors.AuthError, ConnectRejected):
    """The server refused the credentials; raised at once instead of a [`PoolTimeout`][] at the deadline."""

    __module__ = "syncpool.postgres"


class PoolUnavailable(_errors.PoolUnavailable, PoolTimeout):
    """The circuit breaker is open (only with ``breaker_threshold`` set): the server keeps refusing connections."""

    __module__ = "syncpool.postgres"


_COMPAT = (AuthError, ConnectRejected, PoolUnavailable, PoolTimeout, PoolClosed, TooManyRequests)


class _Requests:
    """What ``getconn()`` did that the core's counters cannot tell: for psycopg_pool's ``requests_*`` statistics.

    Counted on the failure paths only (a served request costs nothing here), under a lock of their own, and read
    since the last pop like the core's counters.
    """

    __slots__ = ("_lock", "_counts", "_popped", "__weakref__")

    KEYS = (
        "failed",  # getconn() calls that raised, for any reason
        "errors",  # of those, the ones psycopg_pool counts as errors: all but a pool closed before the call
        "checks_failed",  # connections that failed the check callback on lease (each a lease the core counted)
        "internal",  # leases NullConnectionPool.wait() took to test the connection (not requests)
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.KEYS, 0)
        self._popped = dict.fromkeys(self.KEYS, 0)
        forking.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it at the fork

    def add(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._counts[key] += 1

    def since_pop(self, *, mark: bool) -> dict[str, int]:
        """The counts since the previous pop; with ``mark``, this is a pop."""
        with self._lock:
            counts = dict(self._counts)
            since = {key: counts[key] - self._popped[key] for key in self.KEYS}
            if mark:
                self._popped = counts
        return since


class ConnectionPool(Pool[CT]):
    """A pool of psycopg connections with the API and behaviour of ``psycopg_pool.ConnectionPool``.

    Generic in the connection class as psycopg_pool's is: ``ConnectionPool[MyConnection]`` is valid at run time,
    and type checkers infer it from ``connection_class``. It is a [`syncpool.Pool`][] whose connector is a
    [`PostgresConnector`][syncpool.connectors.PostgresConnector]; what the arguments below do is psycopg_pool's documented
    behaviour, and where syncpool does something else the migration guide says so.

    Args:
        conninfo: libpq connection string, or a callable returning one (called at every connect).
        connection_class: The class whose ``connect()`` makes connections. Defaults to ``psycopg.Connection``.
        kwargs: Extra ``connect()`` arguments, or a callable returning them (called at every connect).
        min_size: Connections kept open. Defaults to 4.
        max_size: Most connections at once; None means ``min_size``. Defaults to None.
        open: Open at construction. None (the default) opens too, but like psycopg_pool warns at the first
            ``getconn()``/``wait()`` that the default will become False; pass True or False, or use ``with``.
        configure: Called with each new connection before it is used; it must leave the connection idle (commit
            what it ran), else the connection is discarded and the pool reports [`ConnectRejected`][].
        check: Called with a connection before each ``getconn()`` hands it out (new, idle and handed-over ones
            alike); if it raises, the connection is discarded and another one is tried until the timeout.
            ``ConnectionPool.check_connection`` is a ready-made one.
        reset: Called with each returned connection, after a transaction left open was rolled back; it must leave
            the connection idle, else the connection is discarded.
        name: Name of the pool, in thread names and log lines. Defaults to ``pool-<n>``.
        close_returns: Make ``conn.close()`` return a leased connection to the pool instead of closing it.
        timeout: Default seconds ``getconn()`` waits. Defaults to 30.
        max_waiting: Most requests waiting at once (0: no bound); one more gets [`TooManyRequests`][].
        max_lifetime: Seconds after which a connection is replaced. Defaults to 60 * 60.0.
        max_idle: Seconds an idle connection above ``min_size`` is kept. Defaults to 10 * 60.0.
        reconnect_timeout: Seconds of failing connects after which ``reconnect_failed`` is called. Defaults to
            5 * 60.0.
        reconnect_failed: Called as ``reconnect_failed(pool)`` when reconnecting failed for ``reconnect_timeout``.
        num_workers: Background worker threads. Defaults to 3.
        health_check_interval: syncpool only: seconds between background health passes over idle connections;
            None (the default, as psycopg_pool has none) disables them.
        health_check_timeout: syncpool only: seconds a ``check`` (or a health check) may take before the connection
            is given up as failed. Defaults to 5.0.
        breaker_threshold: syncpool only: consecutive connect failures after which leases fail fast with
            [`PoolUnavailable`][]; None (the default, psycopg_pool's behaviour: wait for the timeout) disables it.
        leak_threshold: syncpool only: seconds after which a lease still out is logged as a probable leak.
    """

    _logger_name = LOGGER_NAME

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        connection_class: type[CT] = _DEFAULT_CONNECTION_CLASS,
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        min_size: int = 4,
        max_size: int | None = None,
        open: bool | None = None,
        configure: ConnectionCB[CT] | None = None,
        check: ConnectionCB[CT] | None = None,
        reset: ConnectionCB[CT] | None = None,
        name: str | None = None,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[ConnectionPool[Any]], object] | None = None,
        num_workers: int = 3,
        health_check_interval: float | None = None,
        health_check_timeout: float = 5.0,
        breaker_threshold: int | None = None,
        leak_threshold: float | None = None,
    ) -> None:
        min_size, max_size = self._check_size(min_size, max_size)
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
        self._requests = _Requests()
        connector = CompatConnector(
            conninfo,
            kwargs=kwargs,
            connection_class=connection_class,
            configure=configure,
            # check_connection is what PostgresConnector.check() does, bounded by its check_timeout.
            check=None if check is ConnectionPool.check_connection else check,
            reset=reset,
        )
        super().__init__(
            cast("Connector[CT]", connector),
            min_size=min_size,
            max_size=self._core_max_size(max_size),
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
            health_check_timeout=health_check_timeout,
            # psycopg_pool runs ``check`` before every hand-out: 0 checks every member leased, new and handed-over
            # ones included; without a check, a lease is never checked.
            check_after_idle=0.0 if check is not None else None,
            breaker_threshold=breaker_threshold,
            idle_order="fifo",  # psycopg_pool's: every connection in turn
        )
        connector.attach(self)
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
    def connection_class(self) -> type[CT]:
        """The class whose ``connect()`` makes the connections."""
        return self._connection_class

    @property
    def num_workers(self) -> int:
        """Background worker threads."""
        return self._num_workers

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool and start filling it; with ``wait``, block as [`wait`][] does.

        Calling it on an open pool does nothing; a pool that was open and closed cannot be reopened
        ([`PoolClosed`][]), but one closed before it was ever opened can be.
        """
        if self.state is not NEW and self.closed:
            raise PoolClosed(f"pool has already been opened/closed and cannot be reused (pool {self.name!r})")
        try:
            super().open()
        except _errors.PoolError as error:  # closed by another thread meanwhile
            raise self._compat_error(error) from error.__cause__
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Block until ``min_size`` connections are ready.

        Raises:
            PoolTimeout: Not ready within ``timeout``; the pool is closed first, as psycopg_pool does.
            AuthError, ConnectRejected: The server refused the credentials or the connection (at once); the pool
                is closed first.
            PoolClosed: The pool is not open.
        """
        self._check_open_getconn()
        self._log.info("waiting for pool %r initialization", self.name)
        try:
            super().wait(timeout)
        except _errors.PoolError as error:
            raise self._failed_wait(error, timeout) from error.__cause__
        self._log.info("pool %r is ready to use", self.name)

    def _failed_wait(self, error: _errors.PoolError, timeout: float) -> BaseException:
        """Close the pool after a failed [`wait`][], as psycopg_pool does, and return the error to raise."""
        if isinstance(error, (_errors.PoolTimeout, _errors.ConnectRejected)):
            self.close()
        if type(error) is _errors.PoolTimeout:
            return PoolTimeout(f"pool initialization incomplete after {timeout} sec; {error}")
        return self._compat_error(error)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: waiting and future requests get [`PoolClosed`][], idle connections are closed now and
        leased ones when they are returned; the call does not wait for them.

        Waits up to ``timeout`` seconds for the background threads. Closing a pool that is not open does nothing.
        Safe to call from a thread that holds a connection.
        """
        if self.closed:
            return  # as psycopg_pool: closed, or never opened (which can then still be opened)
        self._close(lease_timeout=0.0, thread_timeout=max(0.0, float(timeout)))

    def __enter__(self) -> Self:
        self._open_implicit = False
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open_getconn(self) -> None:
        """Raise [`PoolClosed`][] unless the pool is open; warn once if it was opened by the implicit default."""
        state = self.state
        if state is not OPEN:
            if state is NEW:
                raise PoolClosed(f"the pool {self.name!r} is not open yet")
            raise PoolClosed(f"the pool {self.name!r} is already closed")
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
    def connection(self, timeout: float | None = None) -> Iterator[CT]:  # type: ignore[override]
        """Lease a connection for a ``with`` block: on exit commit (or roll back if the block raised), then return.

        A connection found broken on return is replaced.
        """
        conn = self.getconn(timeout)
        try:
            with conn:
                yield conn
        finally:
            self.putconn(conn)

    def getconn(self, timeout: float | None = None) -> CT:
        """Lease a connection, waiting up to ``timeout`` (default: the pool's ``timeout``); return it with
        [`putconn`][]. With a ``check`` callback, the connection passed it just now.

        Raises:
            PoolTimeout: No connection in time (``__cause__`` is the last connect error, if any).
            TooManyRequests: ``max_waiting`` requests already wait.
            PoolClosed: The pool is closed or not open.
            AuthError, ConnectRejected: The server refused the credentials or the connection.
        """
        if self._open_implicit or self.closed:
            try:
                self._check_open_getconn()
            except PoolClosed:
                self._requests.add("failed")
                raise
        try:
            conn = super().getconn(timeout)
        except _errors.PoolError as error:
            self._requests.add("failed", "errors")
            raise self._compat_error(error, timeout) from error.__cause__
        except BaseException:
            self._requests.add("failed")
            raise
        # Marks the lease for psycopg: ``with conn:`` then does not close it, and close_returns can find the pool.
        conn._pool = self  # type: ignore[assignment]  # psycopg only reads it with getattr()
        return conn

    def putconn(self, conn: CT) -> None:
        """Return a connection from [`getconn`][]: a transaction left open is rolled back (with a warning), the
        ``reset`` callback runs, and a broken connection is replaced. After [`close`][], it is closed.

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

    def _discard_checked(self, lease: Lease[Any], member: Member, verdict: BaseException) -> None:
        """A connection failed the ``check`` callback on lease: as the core does, and count it, since the core counts
        the lease that brought it and psycopg_pool counts one request per ``getconn()``."""
        self._requests.add("checks_failed")
        super()._discard_checked(lease, member, verdict)

    def _compat_error(self, error: _errors.PoolError, timeout: float | None = None) -> BaseException:
        """The exception to raise, with psycopg_pool's class and phrase, for an error of the core."""
        if isinstance(error, _COMPAT):
            return error
        name = self.name
        if isinstance(error, _errors.AuthError):
            return AuthError(*error.args)
        if isinstance(error, _errors.ConnectRejected):
            return ConnectRejected(*error.args)
        if isinstance(error, _errors.PoolUnavailable):
            return PoolUnavailable(*error.args)
        if isinstance(error, _errors.PoolTimeout):
            seconds = self.timeout if timeout is None else timeout
            return PoolTimeout(f"couldn't get a connection after {seconds:.2f} sec; {error}")
        if isinstance(error, _errors.PoolClosed):
            return PoolClosed(f"the pool {name!r} is closed")
        if isinstance(error, _errors.TooManyWaiters):
            return TooManyRequests(
                f"the pool {name!r} has already {self.max_waiting} requests waiting"
            )
        return error

    # -- maintenance -----------------------------------------------------------------------------------------------

    def _check_size(self, min_size: int, max_size: int | None) -> tuple[int, int]:
        """psycopg_pool's size rules: ``max_size`` None means ``min_size``; both 0 is refused."""
        if max_size is None:
            max_size = min_size
        for label, value in (("min_size", min_size), ("max_size", max_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{label} must be an int, not {type(value).__name__}")
        if min_size < 0:
            raise ValueError("min_size cannot be negative")
        if max_size < min_size:
            raise ValueError("max_size must be greater or equal than min_size")
        if min_size == max_size == 0:
            raise ValueError("if min_size is 0 max_size must be greater than 0")
        return min_size, max_size

    def _core_max_size(self, max_size: int) -> int:
        """``max_size`` in the core's terms."""
        return max_size

    def resize(self, min_size: int, max_size: int | None = None) -> None:  # type: ignore[override]
        """Change the bounds; ``max_size=None`` means ``min_size``, as in the constructor."""
        min_size, max_size = self._check_size(min_size, max_size)
        super().resize(min_size, self._core_max_size(max_size))

    def drain(self) -> None:
        """Replace every connection: idle ones now, leased ones when they are returned. Nothing to do when the pool
        is not open."""
        if not self.closed:
            self.reload()

    @staticmethod
    def check_connection(conn: CT) -> None:
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
        """Return psycopg_pool's statistics since the last [`pop_stats`][] (see the migration guide for how each is
        counted). [`syncpool.Pool.stats`][] keeps counting since the pool was created."""
        return self._psycopg_stats(self._snapshot(since_pop=True, mark=False), self._requests.since_pop(mark=False))

    def pop_stats(self) -> dict[str, int]:
        """Return [`get_stats`][] and start its counters again from zero (the ``pool_*`` and ``requests_waiting``
        gauges are the state now). Only these views start again: [`syncpool.Pool.stats`][] and the exporters
        never go backwards."""
        return self._psycopg_stats(self._snapshot(since_pop=True, mark=True), self._requests.since_pop(mark=True))

    def _psycopg_stats(self, stats: Mapping[str, Any], requests: Mapping[str, int]) -> dict[str, int]:
        """psycopg_pool's keys, from the core's counters and the request outcomes counted here. Every key is always
        present (psycopg_pool leaves out counters that are still zero)."""
        discards = stats["discards"]
        served = stats["leases_total"] - requests["checks_failed"] - requests["internal"]
        return {
            "pool_min": stats["min_size"],
            "pool_max": self.max_size,
            "pool_size": stats["size"],
            "pool_available": stats["idle"],
            "requests_waiting": stats["waiting"],
            "requests_num": served + requests["failed"],
            "requests_queued": stats["leases_waited"] + stats["lease_timeouts"],
            "requests_wait_ms": int(stats["wait_ms_total"] + stats["timeout_wait_ms_total"]),
            "requests_errors": requests["errors"],
            "usage_ms": int(stats["use_ms_total"]),
            "returns_bad": discards["broken"] + discards["reset_failed"],
            "connections_num": stats["connections_created"] + stats["connect_errors"],
            "connections_ms": int(stats["connect_ms_total"]),
            "connections_errors": stats["connect_errors"],
            "connections_lost": discards["check_failed"],
        }


class NullConnectionPool(ConnectionPool[CT]):
    """A [`ConnectionPool`][] that keeps no idle connection, as ``psycopg_pool.NullConnectionPool``.

    Each request gets a new connection (or one another request is returning, if it is queued for one), and a
    returned connection nobody waits for is closed. ``min_size`` must be 0; ``max_size`` bounds the connections
    open at once, 0 (the default) meaning no bound; ``max_waiting`` bounds the requests queued. It takes the
    arguments of [`ConnectionPool`][] (``close_returns`` is always False, as in psycopg_pool) and has its
    methods; [`wait`][] opens one connection to test that the server can be reached, and closes it.
    """

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        connection_class: type[CT] = _DEFAULT_CONNECTION_CLASS,
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        min_size: int = 0,
        max_size: int | None = None,
        open: bool | None = None,
        configure: ConnectionCB[CT] | None = None,
        check: ConnectionCB[CT] | None = None,
        reset: ConnectionCB[CT] | None = None,
        name: str | None = None,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[ConnectionPool[Any]], object] | None = None,
        num_workers: int = 3,
        health_check_interval: float | None = None,
        health_check_timeout: float = 5.0,
        breaker_threshold: int | None = None,
        leak_threshold: float | None = None,
    ) -> None:
        super().__init__(
            conninfo, connection_class=connection_class, kwargs=kwargs, min_size=min_size, max_size=max_size,
            open=open, configure=configure, check=check, reset=reset, name=name,
            close_returns=False,  # as psycopg_pool: a connection closed by its user is not worth returning
            timeout=timeout, max_waiting=max_waiting, max_lifetime=max_lifetime, max_idle=max_idle,
            reconnect_timeout=reconnect_timeout, reconnect_failed=reconnect_failed, num_workers=num_workers,
            health_check_interval=health_check_interval, health_check_timeout=health_check_timeout,
            breaker_threshold=breaker_threshold, leak_threshold=leak_threshold,
        )

    @property
    def max_size(self) -> int:
        """Most connections open at once; 0 means no bound."""
        size = super().max_size
        return 0 if size == _UNBOUNDED else size

    def _check_size(self, min_size: int, max_size: int | None) -> tuple[int, int]:
        """psycopg_pool's null-pool rules: ``min_size`` must be 0; ``max_size`` None or 0 means no bound."""
        if max_size is None:
            max_size = min_size
        for label, value in (("min_size", min_size), ("max_size", max_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{label} must be an int, not {type(value).__name__}")
        if min_size != 0:
            raise ValueError("null pools must have min_size = 0")
        if max_size < min_size:
            raise ValueError("max_size must be greater or equal than min_size")
        return min_size, max_size

    def _core_max_size(self, max_size: int) -> int:
        return max_size or _UNBOUNDED

    def wait(self, timeout: float = 30.0) -> None:
        """Open one connection to test that the server can be reached (it is not kept); as psycopg_pool's.

        Raises:
            PoolTimeout: No connection within ``timeout``; the pool is closed first.
            AuthError, ConnectRejected: The server refused the credentials or the connection (at once); the pool
                is closed first.
            PoolClosed: The pool is not open.
        """
        self._check_open_getconn()
        self._log.info("waiting for pool %r initialization", self.name)
        try:
            conn = Pool.getconn(self, timeout)  # the core's lease: connects, retrying, until the timeout
        except _errors.PoolError as error:
            raise self._failed_wait(error, timeout) from error.__cause__
        self._requests.add("internal")  # the core counted a lease, not a request
        Pool.putconn(self, conn)
        self._close_idle()
        self._log.info("pool %r is ready to use", self.name)

    def putconn(self, conn: CT) -> None:
        """Return a connection from [`getconn`][ConnectionPool.getconn]: it goes to the oldest queued request if there
        is one (after the rollback and ``reset`` of [`ConnectionPool.putconn`][]), else it is closed.
        """
        super().putconn(conn)
        self._close_idle()

    def _close_idle(self) -> None:
        """Close every idle connection: a null pool keeps none (the core has no option for that, so this retires
        them from the inventory the way ``Pool.resize`` does)."""
        inventory = self._inv
        with inventory.lock:
            # Decide: every idle member goes; the one just returned was handed to a waiter already if one queued.
            idle, inventory.idle = inventory.idle, []
            for member in idle:
                inventory.retire(member, "idle")
        if idle:
            self._grower.close_retired()


def _call_reconnect_failed(pool: Pool[Any]) -> None:
    cast("ConnectionPool[Any]", pool).reconnect_failed()
