"""The pool: a thread-safe, bounded, fair pool of blocking clients.

[`Pool`][] is the public face. It owns the lease path (lease, wait, give back) and the life cycle, and composes
the parts that do the rest: the ``Inventory`` and its lock, the ``Grower`` (connects, the circuit breaker,
closes), the ``Maintenance`` tasks, ``PoolStats`` and the listeners.
``docs/design.md`` describes how they fit, what the lock guards, and the invariants.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import forking
from .clientstats import ClientStatsMark
from .connector import Connector, as_connector
from .errors import ConnectRejected, PoolClosed, PoolTimeout
from .events import EVENTS, Listeners
from .growth import Grower, describe_error
from .histogram import Histogram
from .inventory import Inventory
from .leasing import Lease, LeasePath, PutBack
from .maintenance import Maintenance
from .monitoring import ClientStats
from .options import PoolOptions, check_seconds, check_sizes
from .pool_stats import PoolStats
from .retry import Backoff, RetryPolicy
from .scheduler import Scheduler, weak_task
from .states import PoolState

if TYPE_CHECKING:
    import tenacity  # for annotations only: tenacity is used in retry.py alone

    from .batch import BatchResult, OnError

__all__ = ["EVENTS", "Lease", "Pool"]


T = TypeVar("T")
R = TypeVar("R")

NEW, OPEN, CLOSING, CLOSED = PoolState.NEW, PoolState.OPEN, PoolState.CLOSING, PoolState.CLOSED

_pool_counter = iter(range(1, sys.maxsize))
_all_pools: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()

# Clients inherited from the parent by a forked child. They are referenced here for ever so that no finaliser in the
# child closes them (closing an inherited database connection would end the parent's session).
_fork_orphans: list[Any] = []


class Pool(LeasePath, Generic[T]):
    """A thread-safe, bounded pool of blocking clients with fair, timed leases.

    Callers are served first come, first served; every client being created counts against ``max_size``; no
    connector call or callback ever runs under the pool's lock. ``docs/design.md`` gives the algorithm, the
    invariants and the hazards.

    Args:
        connector: A [`Connector`][], or a zero-argument callable returning a new client.
        min_size: Clients kept open even when idle. Defaults to 0.
        max_size: Most clients that may exist at once, counting those being created. Defaults to 10.
        timeout: Seconds a lease waits for a client before [`PoolTimeout`][]. Defaults to 30.0.
        max_waiting: Most callers that may wait at once; one more gets [`TooManyWaiters`][] at once.
            0 means no bound. Defaults to 0.
        max_lifetime: Seconds after which a client is replaced (each client's lifetime is shortened at random by up
            to 10% so they do not all reconnect together); ``math.inf`` disables it. Defaults to 60 * 60.0.
        max_idle: Seconds an idle client above ``min_size`` is kept before being closed; ``math.inf`` disables it.
            Defaults to 10 * 60.0.
        leak_threshold: Seconds after which a lease still out is reported once as a probable leak, with the stack
            that took it; None disables it (and the stack capture it costs). Defaults to None.
        name: Name used in thread names, log lines and errors. Defaults to ``pool-<n>``.
        open: Open the pool (start its threads, begin filling to ``min_size``) at construction. Defaults to True.
        num_workers: Background worker threads (connects, closes, maintenance). Defaults to 3.
        reconnect_backoff: Delays between failed connect attempts. Defaults to ``Backoff()`` (0.1 s doubling to
            10 s); while callers are waiting the delay is capped at 0.25 s so a recovered server is found quickly.
        reconnect_timeout: Seconds of failing connects after which ``reconnect_failed`` is called (once per
            outage, at that moment); trying goes on. Defaults to 5 * 60.0.
        reconnect_failed: Called as ``reconnect_failed(pool)`` on a worker thread when ``reconnect_timeout``
            expires; for alerting. Defaults to None.
        health_check_interval: Seconds between health passes, which take idle clients out one at a time, run
            [`Connector.check`][] on them outside the lock and put them back or replace them; None disables
            them. Defaults to 30.0.
        health_check_timeout: Seconds any check (health pass or ``check_after_idle``) may take; past it the client
            is given up as failed, its slot freed at once, and it is closed when the check returns. Defaults to 5.0.
        check_after_idle: On lease, a client idle for at least this many seconds is checked first (in the leasing
            thread's time) and replaced if the check fails; 0 checks every client handed out, new and handed-over
            ones included; None disables it. Defaults to None.
        breaker_threshold: Consecutive failed connects that open the circuit breaker: leases that cannot be served
            from idle clients then fail at once with [`PoolUnavailable`][] instead of waiting out
            their timeout, and one probe connect at a time tests the backend; the first success closes it. None
            disables the breaker. Defaults to 5.
        breaker_probe_interval: Shortest gap in seconds between probes started by leases while the breaker is
            open (background retries follow ``reconnect_backoff``). Defaults to 0.25.
        monitor: Hand out every client wrapped in a [`MonitoredClient`][] that counts the calls made
            on it (operations, errors, rates, latencies), aggregated over the pool's members in
            [`client_stats`][] and in ``stats()["clients"]``. A [`ClientStats`][] may be
            given to share one aggregate between pools or to choose its options. Defaults to False.
        idle_order: Which idle client a lease takes: ``"lifo"``, the most recently returned one (a few clients
            stay hot and the others age out through ``max_idle``), or ``"fifo"``, the one idle the longest (every
            client is used in turn, as psycopg_pool does). Defaults to "lifo".
    """

    #: The logger of this kind of pool: ``syncpool`` (a compatible subclass may log where its original did).
    _logger_name = "syncpool"

    def __init__(
        self,
        connector: Connector[T] | Callable[[], T],
        *,
        min_size: int = 0,
        max_size: int = 10,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        leak_threshold: float | None = None,
        name: str | None = None,
        open: bool = True,
        num_workers: int = 3,
        reconnect_backoff: Backoff | None = None,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[Pool[T]], object] | None = None,
        health_check_interval: float | None = 30.0,
        health_check_timeout: float = 5.0,
        check_after_idle: float | None = None,
        breaker_threshold: int | None = 5,
        breaker_probe_interval: float = 0.25,
        monitor: bool | ClientStats = False,
        idle_order: str = "lifo",
    ) -> None:
        self._connector: Connector[T] = as_connector(connector)
        self._options = options = PoolOptions(
            min_size=min_size, max_size=max_size, timeout=timeout, max_waiting=max_waiting,
            max_lifetime=max_lifetime, max_idle=max_idle, leak_threshold=leak_threshold, num_workers=num_workers,
            reconnect_backoff=reconnect_backoff, reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed, health_check_interval=health_check_interval,
            health_check_timeout=health_check_timeout, check_after_idle=check_after_idle,
            breaker_threshold=breaker_threshold, breaker_probe_interval=breaker_probe_interval, monitor=monitor,
            idle_order=idle_order,
        )
        if name is None:
            name = f"pool-{next(_pool_counter)}"
        elif not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        elif not name:
            raise ValueError("name must not be empty")
        if not isinstance(open, bool):
            raise TypeError(f"open must be a bool, not {type(open).__name__}")
        self.name = name
        self._log = logging.getLogger(self._logger_name)
        self.client_stats: ClientStats | None = (
            monitor if isinstance(monitor, ClientStats) else ClientStats(name) if monitor else None
        )
        """Operation counts and latencies of the calls made on leased clients, aggregated over every member, when the
        pool was created with ``monitor=True``; else None.
        """
        self._stats = PoolStats()
        self._clients_popped: ClientStatsMark | None = None  # where the previous pop_stats() left client_stats
        self._inv = Inventory(min_size, max_size, max_waiting, self._stats, idle_order)
        self._events = Listeners(self)
        self._scheduler = Scheduler(name, num_workers=num_workers)
        self._grower = Grower(self, self._inv, self._connector, options, self._scheduler, self._events,
                              self.client_stats)
        self._maintenance = Maintenance(name, self._log, self._inv, self._grower, self._connector, options, self._events)
        # The lease path compares against these on every lease; inf when disabled.
        self._check_after_idle: float = math.inf if options.check_after_idle is None else options.check_after_idle
        self._leak_threshold = options.leak_threshold
        # Connector hooks the base class leaves as no-ops are not called on the return path at all.
        self._release_hook = _overridden(self._connector, "release")
        self._return_checks = bool(_overridden(self._connector, "is_broken") or _overridden(self._connector, "reset"))
        self._is_broken = self._connector.is_broken
        self._reset = self._connector.reset
        self._closed_event = threading.Event()
        self._orphans: dict[int, Any] = {}  # clients leased in the parent before a fork (only in a child)
        weakref.finalize(self, self._scheduler.stop, 0)
        _all_pools.add(self)
        forking.register(self)
        if open:
            self.open()

    # -- configuration, read-only ----------------------------------------------------------------------------------

    @property
    def min_size(self) -> int:
        """Clients kept open even when idle."""
        return self._inv.min_size

    @property
    def max_size(self) -> int:
        """Most clients that may exist at once."""
        return self._inv.max_size

    @property
    def max_waiting(self) -> int:
        """Most callers that may wait at once (0: no bound)."""
        return self._inv.max_waiting

    @property
    def max_lifetime(self) -> float:
        """Seconds after which a client is replaced (before jitter)."""
        return self._options.max_lifetime

    @property
    def max_idle(self) -> float:
        """Seconds an idle client above ``min_size`` is kept."""
        return self._options.max_idle

    @property
    def reconnect_timeout(self) -> float:
        """Seconds of failing connects after which ``reconnect_failed`` is called."""
        return self._options.reconnect_timeout

    @property
    def connector(self) -> Connector[T]:
        """The connector that makes this pool's clients."""
        return self._connector

    @property
    def state(self) -> PoolState:
        """Where the pool is in its life: ``"new"``, ``"open"``, ``"closing"`` or ``"closed"``."""
        return self._inv.state

    @property
    def closed(self) -> bool:
        """True unless the pool is open (so also before [`open`][], as in psycopg_pool)."""
        return self._inv.state is not OPEN

    def __repr__(self) -> str:
        with self._inv.lock:
            counts = self._inv.describe()
        return f"<{type(self).__name__} {self.name!r} {self._inv.state} {counts} connector={self._connector!r}>"

    # -- life cycle ------------------------------------------------------------------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool: start its threads and begin filling it to ``min_size``.

        Args:
            wait: Block until ``min_size`` clients exist (see [`wait`][]).
            timeout: Seconds to wait when ``wait`` is true.

        Raises:
            PoolClosed: The pool was closed; a closed pool cannot be reopened.
        """
        if not isinstance(wait, bool):
            raise TypeError(f"wait must be a bool, not {type(wait).__name__}")
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        with self._inv.lock:
            if self._inv.state is CLOSING or self._inv.state is CLOSED:
                raise PoolClosed(f"pool {self.name!r} is closed and cannot be reopened")
            starting = self._inv.state is NEW
            self._inv.state = OPEN
        if starting:
            self._start_threads()
            self._log.info("pool %r opened (min_size=%d, max_size=%d)", self.name, self.min_size, self.max_size)
            self._events.emit("open")
        if wait:
            self.wait(timeout)

    def _start_threads(self) -> None:
        scheduler = self._scheduler
        scheduler.start()
        scheduler.every(self._options.maintenance_interval(), weak_task(self._maintenance, "tidy"))
        if self._options.health_check_interval is not None:
            scheduler.every(self._options.health_check_interval, weak_task(self._maintenance, "health_pass"))
        self._grower.wake()  # fill to min_size

    def wait(self, timeout: float = 30.0) -> None:
        """Block until the pool holds at least ``min_size`` clients.

        Raises:
            PoolTimeout: ``min_size`` was not reached in time; ``__cause__`` is the last connect error, if any.
            AuthError, ConnectRejected: The backend refused the credentials or the connection settings.
            PoolClosed: The pool is closed or not open.
        """
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        deadline = monotonic() + timeout
        inv = self._inv
        with inv.lock:
            while True:
                if inv.state is not OPEN:
                    raise PoolClosed(f"pool {self.name!r} is not open")
                if len(inv.idle) + inv.in_use() >= inv.min_size:
                    return
                error = self._grower.last_error
                if isinstance(error, ConnectRejected):
                    copy = type(error)(*error.args)
                    raise copy from error.__cause__
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise PoolTimeout(
                        f"pool {self.name!r}: min_size={inv.min_size} not reached within {timeout:.3g}s "
                        f"({inv.describe()})"
                    ) from error
                inv.changed.wait(remaining)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool.

        Waiters get [`PoolClosed`][] at once and new leases fail. Idle clients are closed now. Leases
        still out may finish for up to ``timeout`` seconds; each is closed when it comes back. Clients still leased
        after the timeout are not closed under their user's feet (which could crash a client library mid-call):
        they are closed when returned, and a warning says how many are out. Background threads are then stopped and
        joined within what is left of the timeout, but given at least a second (or the timeout, if shorter) even
        when leases used it all up; a connect or check that hangs is left to end as a daemon thread. A lease held
        by the thread calling ``close()`` cannot come back while it waits: give it back first, or pass a short
        timeout ([`syncpool.postgres.ConnectionPool.close`][] does not wait for leases, as psycopg_pool's).
        Idempotent and safe to call from several threads: later callers wait for the first close to finish, up to
        their own timeout.
        """
        timeout = check_seconds("timeout", timeout, allow_zero=True)
        self._close(lease_timeout=timeout, thread_timeout=timeout)

    def _close(self, *, lease_timeout: float, thread_timeout: float) -> None:
        """Close, waiting up to ``lease_timeout`` for leases to come back, then up to ``thread_timeout`` (at most as
        long again) for the background threads: waiting for leases does not leave the threads no time at all."""
        started = monotonic()
        inv = self._inv
        with inv.lock:
            # Decide: who closes (the first caller); retire everything idle and fail every waiter.
            first = inv.state is NEW or inv.state is OPEN
            if first:
                inv.state = CLOSING
                for member in inv.idle:
                    inv.retire(member, "closed")
                inv.idle = []
                inv.fail_waiters(lambda: PoolClosed(f"pool {self.name!r} was closed while waiting"))
                self._grower.cancel_retries_locked()
                inv.changed.notify_all()
        if not first:
            self._closed_event.wait(max(lease_timeout, thread_timeout))
            return
        try:
            self._grower.close_retired()
            with inv.lock:
                deadline = started + lease_timeout
                while inv.leased and (remaining := deadline - monotonic()) > 0:
                    inv.changed.wait(remaining)
                still_out = len(inv.leased)
                inv.state = CLOSED
            if still_out:
                self._log.warning(
                    "pool %r closed with %d client(s) still leased after %.3gs; they will be closed when returned",
                    self.name, still_out, monotonic() - started,
                )
            join = max(started + thread_timeout - monotonic(), min(thread_timeout, 1.0))
            if not self._scheduler.stop(join):
                self._log.warning(
                    "pool %r: a background thread did not stop within %.3gs (a connect or close that hangs); "
                    "it is left to end as a daemon thread", self.name, join,
                )
            self._grower.close_retired()  # what came back or finished connecting meanwhile
            self._log.info("pool %r closed", self.name)
        finally:
            self._closed_event.set()
        self._events.emit("close")

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early when the pool closes; return True if it is not open."""
        return self._closed_event.wait(timeout) or self.closed

    def __enter__(self) -> Pool[T]:
        if self._inv.state is NEW:
            self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- leasing: the hot path -------------------------------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> Lease[T]:
        """Return a context manager that leases a client for the ``with`` block and always gives it back.

        When the block ends normally or by an ``Exception``, [`Connector.release`][] sees how it ended (a
        database connector commits or rolls back there), then the client is reset and goes back, or is replaced if
        broken; the exception propagates unchanged. When it ends by a ``BaseException`` that is not an ``Exception``
        (KeyboardInterrupt, SystemExit, an asynchronous timeout), the client may have been cut off mid-exchange: it
        is closed and replaced, and the exception propagates.
        """
        if timeout is not None:
            timeout = check_seconds("timeout", timeout, allow_zero=True)
        return Lease(self, timeout)

    def getconn(self, timeout: float | None = None) -> T:
        """Lease a client; give it back with [`putconn`][].

        Args:
            timeout: Seconds to wait; defaults to the pool's ``timeout``. 0 fails at once unless a client is idle.

        Raises:
            PoolTimeout: No client was free in time; the message gives the pool's counts and ``__cause__`` is the
                last connect error, if connects are failing.
            PoolUnavailable: The circuit breaker is open (connects keep failing); ``__cause__`` is the last error.
            TooManyWaiters: ``max_waiting`` callers are already queued.
            AuthError, ConnectRejected: The backend refused the credentials or the connection while this caller
                waited.
            PoolClosed: The pool is closed, or was closed while waiting.
        """
        if timeout is not None:
            timeout = check_seconds("timeout", timeout, allow_zero=True)
        lease: Lease[T] = Lease(self, timeout)
        return lease.__enter__()

    def putconn(self, client: T) -> None:
        """Return a client leased with [`getconn`][].

        The client is reset (see [`Connector.reset`][]) and goes back to the pool, or is discarded and replaced
        if it is broken, failed its reset, outlived ``max_lifetime`` or the pool shrank, reloaded or closed.

        Raises:
            PoolError: ``client`` is not leased from this pool (returned twice, or leased from another pool).
                A second return is caught only while nobody has leased that client again: the pool knows clients,
                not leases, so a stray return after someone else leased it would give their client away.
                [`connection`][] gives back exactly once.
        """
        member = self._inv.leased.get(id(client))
        if member is None or member.client is not client:
            if self._orphans.pop(id(client), None) is not None:
                return  # leased in the parent before a fork: not ours to reuse or close
            raise self._not_leased(client)
        lease = PutBack(self)
        lease.member = member
        lease.leased_as = member.leases
        lease.__exit__(None, None, None)

    # -- helpers above the pool ------------------------------------------------------------------------------------

    def run(
        self,
        fn: Callable[..., R],
        /,
        *args: Any,
        retry: RetryPolicy | tenacity.BaseRetrying | bool | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> R:
        """Call ``fn(client, *args, **kwargs)`` under a lease, retrying transient failures on a fresh lease.

        Args:
            fn: The operation; it receives a leased client first.
            retry: None (or True) for [`RetryPolicy`][]'s defaults: up to 3 attempts when the
                connector's [`is_transient`][Connector.is_transient] says the error is transient (connection lost,
                timeouts, throttling, 5xx...) or the breaker is open; a ``RetryPolicy`` of your own; a
                ``tenacity.Retrying`` whose own rules then decide; or False for a single attempt.
            deadline: Seconds all attempts together may take, lease waits and backoff sleeps included. Defaults
                to the policy's (30 s for ``RetryPolicy``; none for a tenacity policy).

        Returns:
            What ``fn`` returned.

        Raises:
            Exception: The last attempt's error, unwrapped (a tenacity policy built with ``reraise=False`` raises
                ``tenacity.RetryError`` instead).
            PoolClosed: The pool closed during a backoff.
        """
        from .retry import run

        return run(self, fn, args, kwargs, retry=retry, deadline=deadline)

    def map(
        self,
        fn: Callable[[T, Any], R],
        items: Iterable[Any],
        /,
        *,
        workers: int | None = None,
        ordered: bool = True,
        retry: RetryPolicy | tenacity.BaseRetrying | bool | None = None,
        on_error: OnError = "raise",
        progress: bool | Callable[[int, int | None], object] | None = None,
        timeout: float | None = None,
    ) -> BatchResult[R]:
        """Run ``fn(client, item)`` for every item on worker threads that lease from this pool.

        See [`syncpool.batch.map_pool`][] for every argument; in short: at most ``max_size`` workers, work in
        flight bounded (a generator is never read ahead by more than twice the workers), a progress bar on a
        terminal. Failures never pass silently: by default every item runs, then [`BatchError`][] is
        raised if any failed (its ``result`` holds every success and every failure, its ``__cause__`` the first
        failure); ``on_error="collect"`` returns the [`BatchResult`][] instead, and
        ``on_error="cancel"`` stops starting items at the first failure, then raises. Unlike [`run`][],
        ``retry=None`` makes one attempt per item, since ``fn`` may not be idempotent (an insert); pass
        ``retry=True`` for [`run`][]'s default policy.

        Raises:
            BatchError: Some items failed, were cancelled, or ``timeout`` cut the batch short (not with
                ``on_error="collect"``).
        """
        from .batch import map_pool

        return map_pool(self, fn, items, workers=workers, ordered=ordered, retry=retry, on_error=on_error,
                        progress=progress, timeout=timeout)

    def transaction(self, timeout: float | None = None) -> AbstractContextManager[T]:
        """Lease a client and run the ``with`` block in a transaction: committed on success, rolled back on error.

        For clients with transactions (psycopg, sqlite3); see [`syncpool.transactions.transaction`][].
        """
        from .transactions import transaction

        return transaction(self, timeout)

    # -- checks, resizing, reloading -------------------------------------------------------------------------------

    def check(self) -> dict[str, int]:
        """Check every idle client now and replace those that fail; return ``{"ok": n, "failed": n}``.

        Clients are taken out of the idle list one at a time (so leases barely notice), checked with
        [`Connector.check`][] outside the lock, and put back or discarded. A check that takes longer than
        ``health_check_timeout`` counts as failed: its slot is freed at once and its client is closed when the
        check finally returns. The background health pass (``health_check_interval``) does the same.
        """
        return self._maintenance.check_idle()

    def resize(self, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change the bounds. Surplus idle clients are closed now, surplus leased ones when they come back."""
        inv = self._inv
        new_min, new_max = check_sizes(
            inv.min_size if min_size is None else min_size, inv.max_size if max_size is None else max_size
        )
        with inv.lock:
            inv.min_size, inv.max_size = new_min, new_max
            # Decide: which idle members no longer fit (the least recently used go first).
            surplus = max(0, inv.size() - new_max)
            for member in inv.idle[:surplus]:
                inv.retire(member, "resize")
            del inv.idle[:surplus]
            inv.shrunk = inv.size() > new_max  # until it fits again, members that come back are retired
        self._log.info("pool %r resized to min_size=%d max_size=%d", self.name, new_min, new_max)
        self._grower.close_retired()  # here and now: the caller asked for it
        self._grower.wake()
        self._events.emit("resize", min_size=new_min, max_size=new_max)

    def reload(self) -> None:
        """Replace every client gracefully, e.g. after a credential rotation.

        Idle clients are closed now and new ones connected (to ``min_size``, and on demand); leased clients finish
        their work and are replaced when they come back. Leases keep being served throughout.
        """
        inv = self._inv
        with inv.lock:
            if inv.state is not OPEN:
                raise PoolClosed(f"pool {self.name!r} is not open")
            retired = len(inv.idle)
            for member in inv.idle:
                inv.retire(member, "reload")
            inv.idle = []
            for member in inv.leased.values():
                member.expires = -math.inf  # discarded on return, as "reload"
        self._log.info("pool %r: reloading (%d idle client(s) replaced now, leased ones on return)", self.name, retired)
        self._grower.close_retired()  # here and now: the caller asked for it
        self._events.emit("reload")

    # -- events ----------------------------------------------------------------------------------------------------

    def add_listener(self, event: str, callback: Callable[..., object]) -> None:
        """Call ``callback(pool, **info)`` whenever ``event`` happens; see [`EVENTS`][] for names and info.

        Callbacks run outside the pool's lock, on whichever thread caused the event (a leasing thread, a worker):
        they must be quick and must not block. An exception in a callback is logged and ignored. Listening to
        "lease" or "return" adds a little to every lease.
        """
        with self._inv.lock:
            self._events.add(event, callback)

    def remove_listener(self, event: str, callback: Callable[..., object]) -> None:
        """Stop calling ``callback`` for ``event``; unknown pairs are ignored."""
        with self._inv.lock:
            self._events.remove(event, callback)

    # -- statistics ------------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Return a snapshot of the pool's gauges, counters and histograms; ``docs/stats.md`` lists every key.

        Counters count since the pool was created and never go backwards (exporters publish them as monotonic
        counters). With ``monitor=True``, ``clients`` holds [`ClientStats.stats`][] of the calls made on leased
        clients.
        """
        return self._snapshot(since_pop=False, mark=False)

    def pop_stats(self) -> dict[str, Any]:
        """Return [`stats`][] with counters and histograms as changes since the previous ``pop_stats()``.

        Nothing is reset: [`stats`][] and the exporters keep counting from the pool's creation. Gauges are the
        state now.
        """
        return self._snapshot(since_pop=True, mark=True)

    def _snapshot(self, *, since_pop: bool, mark: bool) -> dict[str, Any]:
        """The stats for the pool's life, or since the previous pop (``mark``: and this is a pop)."""
        stats = self._stats
        with self._inv.lock:
            gauges = self._gauges_locked()
            counters = stats.counters()
            if since_pop:
                counters = stats.since_pop(counters, mark=mark)
            pending = stats.take_pending()
        stats.fold(pending)
        histograms = stats.histograms_since_pop(mark=mark) if since_pop else stats.histograms()
        result = self._assemble(gauges, counters, histograms)
        if self.client_stats is not None:
            if since_pop:
                result["clients"], popped = self.client_stats.changes(self._clients_popped)
                if mark:
                    self._clients_popped = popped
            else:
                result["clients"] = self.client_stats.stats()
        return result

    def histograms(self) -> dict[str, Histogram]:
        """Return copies of the ``wait_time``, ``use_time`` and ``connect_time`` histograms (seconds)."""
        with self._inv.lock:
            pending = self._stats.take_pending()
        self._stats.fold(pending)
        return self._stats.histograms()

    def _gauges_locked(self) -> dict[str, Any]:
        inv = self._inv
        closing = len(inv.retiring) + inv.closing
        return {
            "name": self.name,
            "state": inv.state.value,
            "size": inv.size() - closing,
            "idle": len(inv.idle),
            "in_use": inv.in_use(),
            "checking": len(inv.checking),
            "connecting": inv.connecting,
            "closing": closing,
            "waiting": len(inv.waiters),
            "min_size": inv.min_size,
            "max_size": inv.max_size,
            "breaker": self._grower.breaker.state.value,
        }

    def _assemble(self, gauges: dict[str, Any], counters: dict[str, Any], hists: dict[str, Histogram]) -> dict[str, Any]:
        snapshots = {name: histogram.snapshot() for name, histogram in hists.items()}  # percentiles: no lock held
        return {**gauges, **counters, "use_ms_total": snapshots["use_time"]["sum"] * 1000.0, **snapshots}

    # -- fork safety (see forking.py) ------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._inv.lock.acquire()  # so the child inherits consistent state, not a half-made decision

    def _after_fork_in_parent(self) -> None:
        self._inv.lock.release()

    def _after_fork_in_child(self) -> None:
        """Start the child with an empty pool that never touches the parent's clients."""
        inv = self._inv
        leased = list(inv.leased.values())
        inherited = inv.reset_after_fork()
        self._orphans = {member.key: member.client for member in leased}
        self._grower.reset_after_fork()
        self._stats.after_fork_in_child()
        self._closed_event = threading.Event()
        if inv.state is CLOSED or inv.state is CLOSING:
            inv.state = CLOSED
            self._closed_event.set()
        self._scheduler.after_fork_in_child()
        for member in inherited:
            _fork_orphans.append(member.raw)
            try:
                self._connector.after_fork(member.raw)
            except Exception as error:  # never let one connector break the child's start
                self._log.warning("pool %r: after_fork failed: %s", self.name, describe_error(error))
        if inv.state is OPEN:
            self._start_threads()


# -- helpers -------------------------------------------------------------------------------------------------------


def _overridden(connector: Connector[Any], name: str) -> Callable[..., Any] | None:
    """The connector's bound ``name`` method if its class overrides the base class's no-op, else None."""
    if getattr(type(connector), name) is getattr(Connector, name):
        return None
    return getattr(connector, name)  # type: ignore[no-any-return]
