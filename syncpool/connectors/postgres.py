"""PostgreSQL through psycopg 3, imported on first connect."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from syncpool import forking
from syncpool._secrets import (
    conninfo_secrets,
    is_secret_key,
    mapping_secrets,
    mask_conninfo,
    redact,
    scrub_exception,
)
from syncpool.connector import Connector
from syncpool.errors import AuthError, ConnectRejected

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresConnector"]

logger = logging.getLogger("syncpool")

# Keyword arguments of psycopg.Connection.connect() that are Python objects, not libpq parameters: they are passed
# as they are, never called to resolve them (a row factory is a callable too).
_PSYCOPG_OPTIONS = frozenset({"autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory"})

# Connection failures that mean "the server refused who we are". At connect time libpq reports them as text only,
# so psycopg's OperationalError has no sqlstate to look at (checked with psycopg 3.3 / libpq 18): the server's
# English messages are matched, which holds for servers whose lc_messages is C or English (the default).
_AUTH_MESSAGES = re.compile(
    "|".join(
        (
            "password authentication failed",
            "authentication failed for user",  # ident, peer, ldap, radius, cert...
            r"no pg_hba\.conf entry",
            r"pg_hba\.conf rejects connection",
            "no password supplied",
            "is not permitted to log in",
            "permission denied for database",
            r'role "[^\n]*" does not exist',  # 28000, under trust, peer or cert authentication
        )
    ),
    re.IGNORECASE,
)
# PgBouncer checks SCRAM logins itself and says only this (PgBouncer 1.18); a refusal by the server behind it is
# passed on in PostgreSQL's words.
_PGBOUNCER_AUTH_MESSAGES = ("sasl authentication failed",)
_AUTH_SQLSTATES = frozenset({"28000", "28P01"})  # invalid_authorization_specification, invalid_password
# Connection failures that retrying cannot fix until someone changes the server or the conninfo.
_PERMANENT_MESSAGES = re.compile(
    r'database "[^\n]*" does not exist|is not currently accepting connections', re.IGNORECASE
)
_PERMANENT_SQLSTATES = frozenset({"3D000"})  # invalid_catalog_name: no such database
_SERIALIZATION_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected

# libpq's PGTransactionStatusType values (stable in libpq's ABI), so the return path needs no import or enum:
# IDLE, INTRANS and INERROR can go back to the pool (the last two after a rollback); ACTIVE and UNKNOWN cannot.
_IDLE = 0
_INERROR = 3
_REUSABLE = frozenset({0, 2, 3})

DEFAULT_CONNECT_TIMEOUT = 10
"""Default libpq ``connect_timeout`` (seconds, per host tried) when neither the conninfo nor the keywords set one."""


def _resolve(value: Any) -> Any:
    return value() if callable(value) else value


class PostgresConnector(Connector["psycopg.Connection[Any]"]):
    """Connects with ``psycopg.connect(conninfo, **connect_kwargs)``.

    Args:
        conninfo: A libpq connection string (``"host=db user=app"`` or ``"postgresql://..."``), or a zero-argument
            callable returning one, called at every connect so that a rotated password or token is picked up without
            restarting the pool. Multi-host strings (``host=a,b target_session_attrs=read-write``) work as libpq
            allows: each host is tried in turn, ``connect_timeout`` applying to each.
        configure: Called once with each new connection, before the pool hands it out (``SET`` commands,
            ``register_*`` adapters). If it leaves a transaction open (autocommit off), the transaction is committed
            so that its ``SET`` commands persist; if it leaves an error, the connection is discarded.
        check_timeout: How long [`check`][] may take, in seconds, before the connection is declared dead.
            Defaults to 5.
        retry_serialization: Whether [`is_transient`][] counts serialization failures (40001) and deadlocks
            (40P01) as transient, i.e. whether a retried unit of work is a whole transaction. Defaults to False.
        connection_class: A ``psycopg.Connection`` subclass whose ``connect()`` makes the connections. Defaults to
            ``psycopg.Connection``.
        pgbouncer: Whether the connections go through PgBouncer (or a pooler like it). In its transaction and
            statement pooling modes, consecutive transactions of one connection may run in different server
            sessions, so psycopg then prepares no statement on the server (``prepare_threshold=None``, unless given
            explicitly, for PgBouncer 1.22+ with ``max_prepared_statements`` and libpq 17+), [`check`][] never
            prepares its query, and PgBouncer's own login refusals raise [`AuthError`][]. Returns
            still only roll back (no ``DISCARD ALL``: PgBouncer resets server sessions itself). Session-level state
            (``SET``, advisory locks, ``LISTEN``, ``WITH HOLD`` cursors, temporary tables) does not outlive the
            transaction that made it, in ``configure`` too: see "Behind PgBouncer" in the PostgreSQL guide. In
            session pooling mode it is not needed, and costs only psycopg's prepared statements. Defaults to False.
        connect_kwargs: Passed to ``psycopg.connect``. libpq parameters (``password``, ``host``...) may be
            zero-argument callables, resolved at every connect; psycopg's own options (``autocommit``,
            ``row_factory``, ``prepare_threshold``...) are passed as they are. ``connect_timeout`` defaults to 10
            seconds when neither this nor the conninfo sets it, so that a connect cannot hang on a lost host.

    At the end of a ``with pool.connection()`` block the transaction is committed, or rolled back if the block
    raised (see [`release`][]; autocommit connections are left alone). Connections returned with ``putconn()``
    go back as they are when idle (no round trip); a transaction left open or failed is rolled back with a warning.
    A connection in the middle of a command (an unfinished ``COPY``), in an unknown state, closed or broken is
    discarded.

    Refused credentials and a missing database fail every waiting caller at once, as [`AuthError`][]
    and [`ConnectRejected`][] (see [`is_auth_error`][] and [`is_permanent`][]).
    """

    # Whether release() may pass an idle connection back on its own (one status read, no other call). Off in
    # subclasses that override is_broken or reset, so that their overrides are heard on every return.
    _idle_release_is_final = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "is_broken" in vars(cls) or "reset" in vars(cls):
            cls._idle_release_is_final = False

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        configure: Callable[[psycopg.Connection[Any]], Any] | None = None,
        check_timeout: float = 5.0,
        retry_serialization: bool = False,
        connection_class: type[psycopg.Connection[Any]] | None = None,
        pgbouncer: bool = False,
        **connect_kwargs: Any,
    ) -> None:
        if not (isinstance(conninfo, str) or callable(conninfo)):
            raise TypeError(
                f"conninfo must be a str or a callable returning one, not {type(conninfo).__name__}"
            )
        if check_timeout <= 0:
            raise ValueError(f"check_timeout must be positive, got {check_timeout!r}")
        if configure is not None and not callable(configure):
            raise TypeError("configure must be a callable taking the new connection")
        if not isinstance(pgbouncer, bool):
            raise TypeError(f"pgbouncer must be True or False, not {type(pgbouncer).__name__}")
        if pgbouncer:
            # A statement prepared in one transaction lives in that server session only: the next transaction may
            # run in another one (where the name is unknown) while another client's statement of the same name
            # lands in this one (DuplicatePreparedStatement). psycopg prepares a query after 5 executions.
            connect_kwargs.setdefault("prepare_threshold", None)
        self._conninfo = conninfo
        self._configure = configure
        self.check_timeout: float = check_timeout  # enforced by check() itself: the pool calls it directly
        self.retry_serialization = retry_serialization
        self._connect_kwargs = connect_kwargs
        self._connection_class = connection_class
        self.pgbouncer = pgbouncer
        # check()'s SELECT 1 runs every health pass: psycopg would prepare it like any query run often enough.
        self._check_prepare: bool | None = False if pgbouncer else None
        self.description = self._describe()

    def _describe(self) -> str:
        parts = ["postgresql"]
        if callable(self._conninfo):
            parts.append("<conninfo from callable>")
        elif self._conninfo:
            parts.append(mask_conninfo(self._conninfo))
        for key, value in self._connect_kwargs.items():
            if key in _PSYCOPG_OPTIONS:
                continue
            if is_secret_key(key):
                parts.append(f"{key}=***")
            elif callable(value):
                parts.append(f"{key}=<callable>")
            else:
                parts.append(f"{key}={mask_conninfo(str(value))}")
        return " ".join(parts)

    def _resolve_arguments(self) -> tuple[str, dict[str, Any]]:
        conninfo = _resolve(self._conninfo)
        kwargs = {
            key: value if key in _PSYCOPG_OPTIONS else _resolve(value)
            for key, value in self._connect_kwargs.items()
        }
        return conninfo, kwargs

    @staticmethod
    def _secrets_of(conninfo: str, kwargs: Mapping[str, Any]) -> list[str]:
        libpq_params = {key: value for key, value in kwargs.items() if key not in _PSYCOPG_OPTIONS}
        return conninfo_secrets(conninfo) + mapping_secrets(libpq_params)

    def connect(self) -> psycopg.Connection[Any]:
        """Open a connection, run ``configure`` on it, and return it idle.

        Raises [`AuthError`][] when the server refuses who we are (see [`is_auth_error`][]) and
        [`ConnectRejected`][] when it rejects the connection for another reason retrying cannot fix
        (see [`is_permanent`][]), both with the server's message and chaining psycopg's error. Any other psycopg
        error is re-raised as it is. Messages are cleared of the password either way.
        """
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        conninfo, kwargs = self._resolve_arguments()
        secrets = self._secrets_of(conninfo, kwargs)
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as error:
            raise scrub_exception(error, secrets) from None
        if "connect_timeout" not in params and "connect_timeout" not in kwargs:
            kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        connect = psycopg.connect if self._connection_class is None else self._connection_class.connect
        try:
            conn = connect(conninfo, **kwargs)
        except psycopg.Error as error:
            rejection: type[ConnectRejected] | None = None
            if self.is_auth_error(error):
                rejection, what = AuthError, "refused"
            elif isinstance(error, psycopg.OperationalError) and self.is_permanent(error):
                # The server's answer; a conninfo psycopg refuses (ProgrammingError) is left as it is, and the pool
                # reports it as ConnectRejected all the same.
                rejection, what = ConnectRejected, "rejected the connection of"
            if rejection is None:
                raise scrub_exception(error, secrets) from None
            where = self._where(error, params, kwargs)
            message = redact(str(error), secrets)
            scrub_exception(error, secrets)
            raise rejection(f"PostgreSQL {what} {where}: {message}") from error
        try:
            self._connected(conn)
            self._run_configure(conn)
        except BaseException as error:
            conn.close()
            if isinstance(error, Exception):
                scrub_exception(error, secrets)
            raise
        return conn

    def _connected(self, conn: psycopg.Connection[Any]) -> None:
        """Called with each new connection before ``configure``; a hook for subclasses (does nothing here)."""

    @staticmethod
    def _where(error: BaseException, params: Mapping[str, Any], kwargs: Mapping[str, Any]) -> str:
        """Describe user, host, port and database of a failed attempt, from libpq's record of it when there is one."""
        merged = {**params, **{k: v for k, v in kwargs.items() if k not in _PSYCOPG_OPTIONS}}
        pgconn = getattr(error, "pgconn", None)

        def field(name: str, key: str) -> str:
            value = getattr(pgconn, name, None) if pgconn is not None else None
            if isinstance(value, bytes) and value:
                return value.decode(errors="replace")
            return str(merged.get(key) or "?")

        return (
            f"user {field('user', 'user')!r} at {field('host', 'host')}:{field('port', 'port')}"
            f" (database {field('db', 'dbname')!r})"
        )

    def _run_configure(self, conn: psycopg.Connection[Any]) -> None:
        from psycopg.pq import TransactionStatus

        if self._configure is None:
            return
        self._configure(conn)
        status = conn.info.transaction_status
        if status == TransactionStatus.INTRANS:
            # configure ran SQL with autocommit off: commit, or its SET commands would be rolled back on return.
            conn.commit()
        elif status != TransactionStatus.IDLE:
            raise RuntimeError(f"configure left the connection in transaction state {status.name}")

    def check(self, client: psycopg.Connection[Any]) -> None:
        """Run ``SELECT 1``, giving up after ``check_timeout`` seconds.

        Called on idle connections only. The query runs in autocommit mode (switched locally, without a round
        trip) so that no transaction is opened and the connection is left idle; with ``pgbouncer=True`` it is never
        prepared, and it is a transaction of its own, so the bouncer lends it a server connection for that one
        statement (the wait for one counts against ``check_timeout``). When the server does not answer
        in time (a hung backend, a silently dropped network), the socket is shut down to unblock the wait, which
        leaves the connection broken, and ``TimeoutError`` is raised: the pool discards the connection.
        """
        from psycopg.pq import TransactionStatus

        status = client.info.transaction_status
        if client.closed or client.broken:
            raise ConnectionError("the connection is closed")
        if status != TransactionStatus.IDLE:
            raise RuntimeError(f"check called on a connection in transaction state {status.name}")
        fileno = client.fileno()
        outcome = _CheckDeadline(fileno)
        autocommit = client.autocommit
        timer = _deadlines.add(self.check_timeout, outcome.expire)
        try:
            if not autocommit:
                client.autocommit = True
            try:
                client.execute("SELECT 1", prepare=self._check_prepare).fetchone()
            finally:
                if not autocommit and not client.closed and not client.broken:
                    client.autocommit = False
        except Exception as error:
            if outcome.finish():
                raise
            raise TimeoutError(
                f"{self.description}: check got no answer within {self.check_timeout}s"
            ) from error
        finally:
            _deadlines.cancel(timer)
        if not outcome.finish():
            raise TimeoutError(f"{self.description}: check got no answer within {self.check_timeout}s")

    def is_broken(self, client: psycopg.Connection[Any]) -> bool:
        """True if the connection is closed, broken, mid-command (``ACTIVE``, e.g. an unfinished ``COPY``) or in
        an ``UNKNOWN`` state. Looks at local state only: no I/O.

        Called on every return, so it reads libpq's transaction status directly (about 70 ns): ``conn.info``
        would build a new object each time, and libpq reports ``UNKNOWN`` for a closed or broken connection, so
        one integer answers every question.
        """
        return client.pgconn.transaction_status not in _REUSABLE

    def reset(self, client: psycopg.Connection[Any]) -> None:
        """Roll back a transaction left open (``INTRANS``) or failed (``INERROR``), with a warning; an idle
        connection costs nothing. A failed rollback raises, so the pool discards the connection."""
        status = client.pgconn.transaction_status
        if status == _IDLE:
            return
        from psycopg.pq import TransactionStatus

        status = TransactionStatus(status)
        if status not in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            raise RuntimeError(f"cannot reset a connection in transaction state {status.name}")
        logger.warning(
            "%s: connection returned in transaction state %s, rolling back", self.description, status.name
        )
        client.rollback()
        status = TransactionStatus(client.pgconn.transaction_status)
        if status != TransactionStatus.IDLE:
            raise RuntimeError(f"connection still in transaction state {status.name} after rollback")

    def release(self, client: psycopg.Connection[Any], error: BaseException | None) -> bool:
        """End the transaction of a ``with pool.connection()`` block: commit when it ended cleanly, roll back when it
        raised, as psycopg's own ``with conn:`` (and psycopg_pool's ``connection()``) do.

        An idle connection (nothing run, or committed already) costs one local status read and no round trip. An
        autocommit connection is left alone: a transaction opened on it with an explicit ``BEGIN`` is the caller's,
        and [`reset`][] rolls it back with a warning. A transaction that failed inside the block (``INERROR``: an
        error was caught and the block went on) cannot commit: on a clean exit it is rolled back with a warning
        (psycopg's ``with conn:`` sends ``COMMIT``, which the server turns into a rollback without a word). A commit
        that fails (a deferred constraint, a serialization failure, a lost connection) raises here, so the caller
        sees it and the pool discards the connection. A rollback that fails after the block raised is logged
        instead, so that the block's own error is the one that propagates; the return path then rolls back again
        or discards the connection. A connection mid-command (an unfinished ``COPY``), closed or broken is
        discarded. Then, as for [`Pool.putconn`][], [`is_broken`][] and [`reset`][] decide whether it goes
        back.
        """
        status = client.pgconn.transaction_status
        if status == _IDLE and self._idle_release_is_final:
            return True  # nearly every lease: nothing to end, nothing to reset
        if status not in _REUSABLE or client.autocommit:
            return super().release(client, error)
        if error is not None:
            try:
                client.rollback()
            except Exception as rollback_error:  # noqa: BLE001 - the block's error matters more; reset() decides
                logger.warning(
                    "%s: rollback after an error in a with pool.connection() block failed: %s",
                    self.description, rollback_error,
                )
        elif status == _INERROR:
            logger.warning(
                "%s: a with pool.connection() block ended cleanly in a failed transaction (an error was caught in "
                "it); rolling back, its changes are lost",
                self.description,
            )
            client.rollback()
        else:
            client.commit()
        return super().release(client, error)

    def close(self, client: psycopg.Connection[Any]) -> None:
        """Close the connection (a Terminate message, then the socket)."""
        client.close()

    def after_fork(self, client: psycopg.Connection[Any]) -> None:
        """Point the inherited socket's file descriptor at ``/dev/null``.

        Closing the connection in the child would send libpq's Terminate message over the socket it shares with the
        parent, ending the parent's session. After this, whatever the child's copy writes (a ``close()``, libpq's
        finaliser) goes to ``/dev/null`` and closing it closes only the child's descriptor; the parent's socket is
        untouched. Nothing is sent to the server.
        """
        if client.closed:
            return
        try:
            fileno = client.fileno()
        except Exception:  # no socket to neutralise
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fileno)
        finally:
            os.close(devnull)

    def monitor_options(self) -> dict[str, Any]:
        """Record the round trips made through cursors too, in a ``monitor=True`` pool.

        ``conn.cursor()`` gives a monitored cursor whose ``execute`` and ``executemany`` are recorded as
        ``cursor.execute`` and ``cursor.executemany``, and whose ``copy()`` block, from the ``COPY`` statement to the
        server's final answer, as one ``cursor.copy``; making the cursor is no round trip and is not recorded, nor
        are fetches: the rows arrived with ``execute``. ``conn.execute(...)`` is recorded as ``execute``, round trip
        included; the cursor it returns is handed out as it is, for the same reason.
        """
        from syncpool.monitoring import WrapResult

        return {
            "results": {
                "cursor": WrapResult(methods=("execute", "executemany"), measure=None),
                "cursor.copy": WrapResult(measure="block"),
            }
        }

    def is_auth_error(self, error: BaseException) -> bool:
        """True when the server refused who we are: a wrong password, an unknown role, a role that may not log in,
        no ``pg_hba.conf`` entry for our address, user and database (or a ``reject`` one), no ``CONNECT`` privilege.

        Looks at SQLSTATE 28000/28P01, or, for connect failures (where libpq gives no SQLSTATE), at the server's
        English message (with ``pgbouncer=True``, PgBouncer's own as well).
        """
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg missing: the error cannot be one of its
            return False
        if not isinstance(error, psycopg.Error):
            return False
        if error.sqlstate in _AUTH_SQLSTATES:
            return True
        if isinstance(error, psycopg.OperationalError) and error.sqlstate is None:
            message = str(error)
            if _AUTH_MESSAGES.search(message) is not None:
                return True
            return self.pgbouncer and any(fragment in message.lower() for fragment in _PGBOUNCER_AUTH_MESSAGES)
        return False

    def is_permanent(self, error: BaseException) -> bool:
        """True for a connect failure no retry can fix until the server or the conninfo changes, other than refused
        credentials: an unknown database (3D000), a database not accepting connections (``ALLOW_CONNECTIONS
        false``), or a conninfo psycopg cannot use (a misspelt parameter, an invalid value).

        The pool reports such an error to every waiting caller at once as [`ConnectRejected`][]
        ([`connect`][] raises that class already, with the server's message).
        """
        if isinstance(error, ConnectRejected):
            return True
        try:
            import psycopg
        except ImportError:  # pragma: no cover
            return False
        if not isinstance(error, psycopg.Error) or self.is_auth_error(error):
            return False
        if error.sqlstate in _PERMANENT_SQLSTATES:
            return True
        if error.sqlstate is not None:
            return False
        if isinstance(error, psycopg.ProgrammingError):
            # Raised client-side, before any I/O, for a conninfo libpq refuses ("invalid connection option"). A
            # server-side error of the same class (from configure) has a SQLSTATE and is left to the retries.
            return True
        return isinstance(error, psycopg.OperationalError) and _PERMANENT_MESSAGES.search(str(error)) is not None

    def is_transient(self, error: BaseException) -> bool:
        """True if retrying on a fresh connection may succeed.

        Connection losses and timeouts (psycopg's ``OperationalError`` family, which includes admin shutdowns,
        cancelled statements and connect failures, and Python's own ``ConnectionError``/``TimeoutError``) are
        transient, except what [`is_auth_error`][] and [`is_permanent`][] recognise. Serialization failures
        (40001) and deadlocks (40P01) are transient only when the connector was built with
        ``retry_serialization=True``.
        """
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        try:
            import psycopg
        except ImportError:  # pragma: no cover
            return False
        if not isinstance(error, psycopg.Error):
            return False
        if error.sqlstate in _SERIALIZATION_SQLSTATES:
            return self.retry_serialization
        if self.is_auth_error(error) or self.is_permanent(error):
            return False
        return isinstance(error, psycopg.OperationalError)


class _Deadlines:
    """One daemon thread (``syncpool-postgres-deadlines``) that fires the expiry of every check under way in the
    process, so that a check costs a heap push and pop rather than a timer thread of its own. Started on first use,
    and again in a forked child (where the parent's thread does not exist)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._pending: set[int] = set()  # tokens in the heap, not fired nor cancelled
        self._cancelled: set[int] = set()  # tokens in the heap, cancelled: dropped when they reach its top
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        forking.register(self)

    def add(self, delay: float, callback: Callable[[], object]) -> int:
        """Call ``callback`` on the watcher thread in ``delay`` seconds unless ``cancel`` is called first."""
        token = next(self._tokens)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, token, callback))
            self._pending.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="syncpool-postgres-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def cancel(self, token: int) -> None:
        """Drop the callback of ``token`` if it has not fired yet."""
        with self._cond:
            if token in self._pending:
                self._pending.discard(token)
                self._cancelled.add(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] in self._cancelled:
                    self._cancelled.discard(heapq.heappop(self._heap)[1])
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                _, token, callback = heapq.heappop(self._heap)
                self._pending.discard(token)
            try:
                callback()
            except Exception:  # a callback must not stop the deadlines of the other checks
                logger.exception("a check's deadline callback failed")

    def _after_fork_in_child(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._pending = set()
        self._cancelled = set()
        self._thread = None


_deadlines = _Deadlines()


class _CheckDeadline:
    """Races a check against its timer: whichever comes first decides whether the check timed out."""

    def __init__(self, fileno: int) -> None:
        self._fileno = fileno
        self._lock = threading.Lock()
        self._state = "running"  # -> "done" or "expired"

    def expire(self) -> None:
        with self._lock:  # decides: the check is late, shut the socket down
            if self._state != "running":
                return
            self._state = "expired"
            # shutdown() acts on the socket itself, so it wakes the thread blocked reading it; the descriptor is
            # duplicated so that psycopg's own one stays valid (it closes it with the connection).
            try:
                with socket.socket(fileno=os.dup(self._fileno)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self) -> bool:
        """Mark the check done; return False if the timer expired first."""
        with self._lock:  # decides: finished in time or not
            if self._state == "running":
                self._state = "done"
            return self._state == "done"
