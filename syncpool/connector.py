"""The boundary between a pool and the client it pools.

A pool knows nothing of PostgreSQL, S3 or Elasticsearch: everything client-specific enters through a
[`Connector`][]. The pool promises never to call a connector method while holding its own lock, so every
method may block, but the ones called on the lease path ([`Connector.is_broken`][], [`Connector.reset`][])
are paid on every return and should be cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

__all__ = ["CallableConnector", "Connector", "as_connector", "current_member_index"]

T = TypeVar("T")

_member_index: ContextVar[int | None] = ContextVar("syncpool_member_index", default=None)


def current_member_index() -> int | None:
    """Inside [`Connector.connect`][], the index of the pool member being created; None anywhere else.

    Indexes are small integers, unique among a pool's live members and reused when a member is replaced, so they
    stay below ``max_size``: handy to give each connection its own name, e.g.
    ``PostgresConnector(dsn, application_name=lambda: f"jobs-{current_member_index()}")`` (callable keyword
    arguments are resolved at every connect).
    """
    return _member_index.get()


class Connector(Generic[T]):
    """Makes, checks, resets and closes one kind of client.

    Subclass it and override [`connect`][] (the only abstract method); the defaults of the others suit a client
    that has no notion of being broken and nothing to reset. Instances must be safe to call from several threads at
    once: the pool calls them from user threads and from its background workers.
    """

    description: str = "client"
    """Human-readable name of the backend, used in log lines and error messages. It must never contain a secret."""

    check_timeout: float | None = None
    """Seconds within which [`check`][] ends on its own (it enforces this deadline itself), or None if it may hang.
    With None the pool runs every check on a thread of its own and gives it up after ``health_check_timeout``; with a
    number it calls [`check`][] directly in the thread that needs it, which costs no thread.
    """

    def connect(self) -> T:
        """Create and return a new client.

        Called by a pool worker thread (or by [`Pool.open`][] with ``wait=True``), never with the pool lock held,
        whenever the pool grows, refills or replaces a client. It may block for as long as a connect takes; it should
        apply its own connect timeout so that it cannot block forever. Raise [`AuthError`][] when the
        backend refuses the credentials so that the pool reports it at once instead of retrying.
        """
        raise NotImplementedError

    def check(self, client: T) -> None:
        """Raise if ``client`` cannot be used any more.

        Called by the health-check pass on idle clients (taken out of the pool first) and, when configured, on lease
        for clients idle for a while. It may block (a round trip to the server). It is never called with the pool
        lock held. Unless [`check_timeout`][] says it bounds its own time, each call runs on a thread of its own
        that the pool gives up after ``health_check_timeout``.
        """

    def is_broken(self, client: T) -> bool:
        """Return True if ``client`` must be discarded instead of going back to the pool.

        Called on every return (by the default [`release`][] for ``with`` blocks), so it must be fast and must
        not do I/O: look at local state only (a closed flag, a transaction status).
        """
        return False

    def reset(self, client: T) -> None:
        """Bring a returned client back to a clean state (roll back, clear session state).

        Called on every return (by the default [`release`][] for ``with`` blocks) after [`is_broken`][] said
        the client is fine, so a cheap no-op is the ideal for a client that is already clean. If it raises, the
        client is discarded and replaced.
        """

    def release(self, client: T, error: BaseException | None) -> bool:
        """End a ``with pool.connection()`` block's work on ``client`` and say whether it may be reused.

        Called in the leasing thread when the block ends, instead of the [`is_broken`][] / [`reset`][] pair
        that [`Pool.putconn`][] calls: ``error`` is None for a clean exit, else the ``Exception`` the block
        raised (it propagates unchanged afterwards). This is where a database connector commits on a clean exit and
        rolls back otherwise. Return True to give the client back to the pool, False to discard it (it is closed
        and replaced). The default returns ``not is_broken(client)``, calling [`reset`][] first when it is
        reusable; an override usually ends with ``return super().release(client, error)``. It runs on every lease,
        so an idle client should cost no I/O.

        It is not called when the block ended by a ``BaseException`` that is not an ``Exception``
        (KeyboardInterrupt, SystemExit, an asynchronous timeout): such a client may have been cut off mid-exchange,
        so the pool discards it without talking to it. If this method raises, the client is discarded and the error
        propagates (chained to the block's own error, if any).
        """
        if self.is_broken(client):
            return False
        self.reset(client)
        return True

    def close(self, client: T) -> None:
        """Close ``client``, releasing its sockets. Errors are logged and ignored by the pool.

        Called when a client is discarded, expires or the pool closes; never while the client is leased.
        """
        close = getattr(client, "close", None)
        if callable(close):
            close()

    def after_fork(self, client: T) -> None:
        """Make ``client``, inherited from the parent process, harmless in a forked child.

        Called in the child right after ``os.fork()``, for each client the parent's pool held. It must not talk over
        the client's sockets, since they are shared with the parent: closing an inherited database connection would
        end the parent's session. The pool keeps a reference to the client afterwards so that no finaliser runs in the
        child. The default does nothing.
        """

    def is_auth_error(self, error: BaseException) -> bool:
        """Return True if ``error``, raised by [`connect`][], means the credentials were refused."""
        return False

    def is_permanent(self, error: BaseException) -> bool:
        """Return True if ``error``, raised by [`connect`][], means no retry can succeed until something changes.

        For example an unknown database. Like refused credentials ([`is_auth_error`][]), such an error reaches
        every waiting caller at once, as [`ConnectRejected`][], instead of each caller waiting out its
        timeout; the pool still retries in the background with its backoff. The default says False.
        """
        return False

    def monitor_options(self) -> dict[str, Any]:
        """Return keyword arguments for the [`MonitoredClient`][] a ``monitor=True`` pool wraps
        around each client (which results to wrap too, which attributes are namespaces...). Defaults to none."""
        return {}

    def is_transient(self, error: BaseException) -> bool:
        """Return True if an operation that raised ``error`` may succeed if retried on a fresh client.

        Called by [`Pool.run`][] on each failure; it must only look at the exception. Connection losses,
        timeouts, throttling and "unavailable" answers are transient; bad requests, missing objects and refused
        credentials are not. The default says False: nothing is retried unless the connector knows its client.
        """
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class CallableConnector(Connector[T]):
    """Wraps a zero-argument factory, e.g. ``lambda: sqlite3.connect(path)``.

    Clients are closed with their ``close()`` method when they have one.
    """

    def __init__(self, factory: Callable[[], T], *, close: Callable[[T], Any] | None = None) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be a zero-argument callable, not {type(factory).__name__}")
        self._factory = factory
        self._close = close
        self.description = getattr(factory, "__qualname__", None) or type(factory).__name__

    def connect(self) -> T:
        """Call the factory."""
        return self._factory()

    def close(self, client: T) -> None:
        """Close with the given ``close`` callable, else the client's own ``close()`` if it has one."""
        if self._close is not None:
            self._close(client)
        else:
            super().close(client)


def as_connector(connector_or_factory: Connector[T] | Callable[[], T]) -> Connector[T]:
    """Return ``connector_or_factory`` as a [`Connector`][], wrapping a plain callable."""
    if isinstance(connector_or_factory, Connector):
        return connector_or_factory
    if callable(connector_or_factory):
        return CallableConnector(connector_or_factory)
    raise TypeError(
        "connector must be a syncpool.Connector or a zero-argument callable returning a client, "
        f"not {type(connector_or_factory).__name__}"
    )
