"""The pool: a thread-safe, bounded, fair pool of blocking clients."""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import sysconfig
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from time import monotonic
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._accel import speedups as _speedups
from .connector import Connector, _member_index, as_connector
from .errors import AuthError, ConnectRejected, PoolClosed, PoolError, PoolTimeout, PoolUnavailable, TooManyWaiters
from .histogram import Histogram
from .monitoring import ClientStats, MonitoredClient
from .retry import Backoff, RetryPolicy
from .retry import run as retry_run
from .scheduler import Scheduler, weak_task
from .states import PoolState

if TYPE_CHECKING:
    import tenacity  # for annotations only: tenacity is used in retry.py alone

    from ._speedups import Accumulator
    from .batch import BatchResult

__all__ = ["EVENTS", "Lease", "Pool"]

logger = logging.getLogger("syncpool")

T = TypeVar("T")
R = TypeVar("R")

_INF = math.inf
_pool_counter = iter(range(1, sys.maxsize))
_all_pools: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()

# Clients inherited from the parent by a forked child. They are referenced here forever so that no finaliser in the
# child closes them (closing an inherited database connection would end the parent's session).
_fork_orphans: list[Any] = []

# Discard reasons, as counted in ``stats()["discards"]``.
_REASONS = (
    "broken", "reset_failed", "interrupted", "lifetime", "idle", "check_failed", "resize", "reload", "closed",
)

#: Events a listener can subscribe to with :meth:`Pool.add_listener`, and the keyword arguments each one gets.
EVENTS = {
    "connect": "duration (seconds the connect took)",
    "connect_failed": "error, attempt (consecutive failures), duration",
    "lease": "wait (seconds spent queued; 0.0 when served at once)",
    "return": "use (seconds the client was leased)",
    "discard": "reason (one of the discard reasons of stats())",
    "timeout": "waited (seconds)",
    "check_failed": "error (None when the check overran health_check_timeout)",
    "open": "(nothing)",
    "close": "(nothing)",
    "resize": "min_size, max_size",
    "reload": "(nothing)",
    "breaker": "state (closed, open or half_open)",
}

# Pool states.
_NEW, _OPEN, _CLOSED = "new", "open", "closed"

# How many waiters that were handed a client may be woken and not yet running; the others are woken one by one as
# those start to run (see _hand_over_locked). Under the GIL a woken thread can do nothing but wait for the GIL, and
# on several cores it does that waiting on a core of its own: every thread woken early costs a sleep, a wake and a
# cross-core hand-over of the GIL. Measured with real PostgreSQL on 2 cores, in back-to-back pairs: contended
# lease+return took about 2 context switches per lease against 3 to 6 when every waiter was woken at once, and ran
# 1.1 to 1.9 times faster (the more, the freer the second core); contended SELECT 1 was no slower. Free-threaded
# builds have no GIL to queue on: there every waiter is woken at once.
_WAKE_BUDGET = sys.maxsize if sysconfig.get_config_var("Py_GIL_DISABLED") else 2


class _Record:
    """One client owned by the pool and the facts the pool keeps about it."""

    __slots__ = (
        "client", "raw", "index", "created", "expires", "last_used", "leased_at", "lease_frames", "leak_reported",
        "abandoned",
    )

    def __init__(self, client: Any, raw: Any, index: int, created: float, expires: float) -> None:
        self.index = index  # the member index (see current_member_index), free again once it is closed
        self.client = client  # what callers get: the connector's client, or a MonitoredClient around it
        self.raw = raw  # what the connector made, and is given back in every connector call
        self.created = created
        self.expires = expires  # jittered end of life (monotonic seconds)
        self.last_used = created  # when it last went back to the idle stack
        self.leased_at = 0.0
        self.lease_frames: list[tuple[str, int, str]] | None = None  # where it was leased, if leaks are watched
        self.leak_reported = False
        self.abandoned = False  # its health check overran: discard it whatever the check says


class _Waiter:
    """A caller queued for a client.

    The hand-off is explicit: whoever gives a client to a waiter does so under the pool lock, records the lease on
    the waiter's behalf, and only then wakes it by releasing ``wakeup`` (at once, or, beyond ``_WAKE_BUDGET``,
    when an earlier waiter starts to run). A waiter that timed out takes the pool lock before giving up, so it
    either finds a client that was handed to it in the meantime (and keeps it), or removes itself from the queue:
    a client can never be handed to a waiter that has gone.
    """

    __slots__ = ("wakeup", "record", "error", "since", "settled")

    def __init__(self, since: float) -> None:
        self.wakeup = threading.Lock()
        self.wakeup.acquire()
        self.record: _Record | None = None
        self.error: BaseException | None = None
        self.since = since  # when it joined the queue
        self.settled = False  # once handed a client: its share of the wake budget was passed on (_settle_wake_locked)


class Lease(Generic[T]):
    """The context manager returned by :meth:`Pool.connection`: leases on enter, always returns on exit.

    Entering calls :meth:`Pool.getconn` with the ``timeout`` given to :meth:`~Pool.connection`; leaving calls
    :meth:`Pool.putconn` and lets any exception of the block propagate. A lease may be entered again once it has
    been left, but not while it is entered: a second client needs a second ``pool.connection()``.

    Where the optional C accelerator is built (see ``syncpool/_accel.py``), ``syncpool.Lease`` is its C twin,
    ``syncpool._speedups.Lease``, which does exactly this without the Python frames: a lease then costs about a
    tenth less. Tests run against both.
    """

    __slots__ = ("_pool", "_timeout", "_client")

    def __init__(self, pool: Pool[T], timeout: float | None = None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._client: T | None = None

    def __enter__(self) -> T:
        if self._client is not None:
            raise RuntimeError("this lease is already entered: call pool.connection() again for a second client")
        self._client = client = self._pool.getconn(self._timeout)
        return client

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("lease was not entered: nothing to return")
        self._client = None  # left whatever putconn does: it takes the client back or raises for good
        self._pool._end_lease(client, exc)


_PyLease = Lease


class Pool(Generic[T]):
    """A thread-safe, bounded pool of blocking clients with fair, timed leases.

    Algorithm:
        Idle clients sit on a stack (LIFO): a lease takes the most recently returned one, which keeps a few clients
        hot and lets surplus ones age out through ``max_idle``. A lease that finds the stack empty, or finds other
        callers already queued, joins a FIFO queue of waiters; a returned or new client is handed to the oldest
        waiter directly, under the lock, so late arrivals can never barge ahead of a waiter. Connects run on the
        pool's worker threads, never in the leasing thread, so a lease waits exactly as long as its timeout.
        Growth on demand is one connect at a time: a burst of short leases is mostly served by returns, and the
        next connect starts only if callers are still waiting when one finishes. Every client being created counts
        against ``max_size``, so ``idle + in_use + connecting`` never exceeds it. Health passes take idle clients
        out one at a time (counted in ``in_use`` as ``checking``) and check each on its own thread. When connects
        keep failing, a circuit breaker fails leases that would have to wait for a connect at once
        (:class:`~syncpool.PoolUnavailable`) and lets one probe at a time test the backend.

    Invariants:
        ``size == idle + in_use + connecting`` at every moment the lock is free, and ``size <= max_size`` except
        after :meth:`resize` shrinks the pool below the clients still leased, until they come back. No connector
        method, callback or log call that could block runs with the lock held: the lock only guards decisions.

    Hazards:
        A client is never closed while leased, so a caller that never returns one keeps it (and its slot) forever;
        ``leak_threshold`` reports such leases with the stack that took them. Returning a client from a thread other
        than the one that leased it is fine; using one client from two threads at once is not (that is the client's
        own thread-safety, which the pool cannot add). With ``check_after_idle``, the check runs in the leasing
        thread after the wait, so a lease can take its timeout plus the connector's check time. Under the GIL,
        FIFO hand-off means every queued lease costs a thread switch: pools that let a running thread barge
        serve more leases per second when threads far outnumber clients, and are unfair doing so. After
        ``os.fork()`` the child starts with an empty pool: it never uses, closes or finalises a client inherited
        from the parent.

    Args:
        connector: A :class:`~syncpool.Connector`, or a zero-argument callable returning a new client.
        min_size: Clients kept open even when idle. Defaults to 0.
        max_size: Most clients that may exist at once, counting those being created. Defaults to 10.
        timeout: Seconds a lease waits for a client before :class:`~syncpool.PoolTimeout`. Defaults to 30.0.
        max_waiting: Most callers that may wait at once; one more gets :class:`~syncpool.TooManyWaiters` at once.
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
            outage); trying goes on. Defaults to 5 * 60.0.
        reconnect_failed: Called as ``reconnect_failed(pool)`` on a worker thread when ``reconnect_timeout``
            expires; for alerting. Defaults to None.
        health_check_interval: Seconds between health passes, which take idle clients out one at a time, run
            :meth:`Connector.check` on them outside the lock and put them back or replace them; None disables
            them. Defaults to 30.0.
        health_check_timeout: Seconds a health check may take before its client is given up as failed (it is
            closed when the check returns). Defaults to 5.0.
        check_after_idle: On lease, a client idle for at least this many seconds is checked first (in the leasing
            thread) and replaced if the check fails; 0 checks every lease; None disables it. Defaults to None.
        breaker_threshold: Consecutive failed connects that open the circuit breaker: leases that cannot be served
            from idle clients then fail at once with :class:`~syncpool.PoolUnavailable` instead of waiting out
            their timeout, and one probe connect at a time tests the backend; the first success closes it. None
            disables the breaker. Defaults to 5.
        breaker_probe_interval: Shortest gap in seconds between probes started by leases while the breaker is
            open (background retries follow ``reconnect_backoff``). Defaults to 0.25.
        monitor: Hand out every client wrapped in a :class:`~syncpool.MonitoredClient` that counts the calls made
            on it (operations, errors, rates, latencies), aggregated over the pool's members in
            :attr:`client_stats` and in ``stats()["clients"]``. A :class:`~syncpool.monitoring.ClientStats` may be
            given to share one aggregate between pools or to choose its options. Defaults to False.
    """

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
    ) -> None:
        self._connector: Connector[T] = as_connector(connector)
        # Skip the connector on returns when it keeps the base class's no-op hooks (e.g. a plain callable).
        connector_type = type(self._connector)
        self._is_broken = self._connector.is_broken
        self._reset = self._connector.reset
        self._returns_need_connector = (
            connector_type.is_broken is not Connector.is_broken or connector_type.reset is not Connector.reset
        )
        self._recycle = _recycle_hook(self._connector)
        _check_int("min_size", min_size, minimum=0)
        _check_int("max_size", max_size, minimum=1)
        if min_size > max_size:
            raise ValueError(f"min_size ({min_size}) must not be greater than max_size ({max_size})")
        self._timeout = _check_seconds("timeout", timeout, allow_zero=True)
        _check_int("max_waiting", max_waiting, minimum=0)
        self._max_lifetime = _check_seconds("max_lifetime", max_lifetime, allow_inf=True)
        self._max_idle = _check_seconds("max_idle", max_idle, allow_inf=True)
        self._leak_threshold = (
            None if leak_threshold is None else _check_seconds("leak_threshold", leak_threshold)
        )
        if name is None:
            name = f"pool-{next(_pool_counter)}"
        elif not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        elif not name:
            raise ValueError("name must not be empty")
        if not isinstance(open, bool):
            raise TypeError(f"open must be a bool, not {type(open).__name__}")
        _check_int("num_workers", num_workers, minimum=1)
        if reconnect_backoff is not None and not isinstance(reconnect_backoff, Backoff):
            raise TypeError(f"reconnect_backoff must be a syncpool.retry.Backoff, not {type(reconnect_backoff).__name__}")

        self._reconnect_timeout = _check_seconds("reconnect_timeout", reconnect_timeout, allow_inf=True)
        if reconnect_failed is not None and not callable(reconnect_failed):
            raise TypeError(f"reconnect_failed must be callable, not {type(reconnect_failed).__name__}")
        self._health_check_interval = (
            None if health_check_interval is None else _check_seconds("health_check_interval", health_check_interval)
        )
        self._health_check_timeout = _check_seconds("health_check_timeout", health_check_timeout)
        # inf when disabled, so the lease path compares once instead of testing for None.
        self._check_after_idle = (
            _INF if check_after_idle is None else _check_seconds("check_after_idle", check_after_idle, allow_zero=True)
        )
        if breaker_threshold is not None:
            _check_int("breaker_threshold", breaker_threshold, minimum=1)
        self._breaker_probe_interval = _check_seconds("breaker_probe_interval", breaker_probe_interval, allow_zero=True)

        if isinstance(monitor, ClientStats):
            client_stats: ClientStats | None = monitor
        elif isinstance(monitor, bool):
            client_stats = ClientStats(name) if monitor else None
        else:
            raise TypeError(f"monitor must be a bool or a syncpool.monitoring.ClientStats, not {type(monitor).__name__}")

        self.name = name
        #: Operation counts and latencies of the calls made on leased clients, aggregated over every member, when
        #: the pool was created with ``monitor=True``; else None.
        self.client_stats = client_stats
        self._reconnect_failed = reconnect_failed
        self._breaker_threshold = breaker_threshold
        self._min_size = min_size
        self._max_size = max_size
        self._max_waiting = max_waiting
        self._backoff = reconnect_backoff or Backoff()

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when clients appear, fail or come back
        self._state = _NEW
        self._idle: list[_Record] = []  # a stack: the newest at the end
        self._leased: dict[int, _Record] = {}  # id(client) -> record, for clients out of the pool
        self._waiters: deque[_Waiter] = deque()
        self._waking = 0  # waiters handed a client and woken, not yet running (at most _WAKE_BUDGET)
        self._handed: deque[_Waiter] = deque()  # waiters handed a client, to be woken when one of those runs
        self._connecting = 0  # connect attempts under way or waiting out a backoff
        self._checking = 0  # clients out of the idle stack for a health check
        self._closing = 0  # discarded clients whose Connector.close() has not returned: they still count in the size
        self._connect_failures = 0  # consecutive failed connect attempts
        self._last_connect_error: BaseException | None = None
        self._outage_since: float | None = None  # when the current run of failed connects began
        self._outage_reported = False  # reconnect_failed already called for this outage
        self._retry_tokens: set[int] = set()  # retries waiting out a backoff (each counted in _connecting)
        self._next_token = 0
        self._breaker = "closed"  # or "open" (failing fast), "half_open" (a probe is connecting)
        self._next_probe_at = 0.0
        self._health_running = False
        self._listeners: dict[str, list[Callable[..., object]]] = {}
        self._lease_listeners = False  # any "lease" or "return" listener: the hot path checks only this flag
        self._plain_leases = self._leak_threshold is None  # and no lease listeners: the fast path has nothing to add
        self._shrunk = False  # resize() left more clients than max_size: returns check the bound until it fits
        self._indexes: set[int] = set()  # member indexes in use, by live clients and connects under way
        self._use_times = _pending_times()  # lease durations not yet folded into the use_time histogram
        self._wait_times = _pending_times()  # queued lease waits not yet folded into the wait_time histogram
        self._breaker_changes: deque[str] = deque()  # breaker states to log and emit once outside the lock
        self._closed_event = threading.Event()
        self._orphans: dict[int, Any] = {}  # clients leased in the parent before a fork (only in a child)
        self._scheduler = Scheduler(name, num_workers=num_workers)
        self._maintenance_interval = self._pick_maintenance_interval()
        weakref.finalize(self, self._scheduler.stop, 0)

        self._reset_counters()
        _all_pools.add(self)
        if open:
            self.open()

    # -- configuration, read-only ----------------------------------------------------------------------------------

    @property
    def min_size(self) -> int:
        """Clients kept open even when idle."""
        return self._min_size

    @property
    def max_size(self) -> int:
        """Most clients that may exist at once."""
        return self._max_size

    @property
    def timeout(self) -> float:
        """Default lease timeout in seconds."""
        return self._timeout

    @property
    def max_waiting(self) -> int:
        """Most callers that may wait at once (0: no bound)."""
        return self._max_waiting

    @property
    def max_lifetime(self) -> float:
        """Seconds after which a client is replaced (before jitter)."""
        return self._max_lifetime

    @property
    def max_idle(self) -> float:
        """Seconds an idle client above ``min_size`` is kept."""
        return self._max_idle

    @property
    def reconnect_timeout(self) -> float:
        """Seconds of failing connects after which ``reconnect_failed`` is called."""
        return self._reconnect_timeout

    @property
    def connector(self) -> Connector[T]:
        """The connector that makes this pool's clients."""
        return self._connector

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called (or before :meth:`open`)."""
        return self._state != _OPEN

    def __repr__(self) -> str:
        with self._lock:
            counts = self._describe_locked()
        return f"<{type(self).__name__} {self.name!r} {self._state} {counts} connector={self._connector!r}>"

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool: start its threads and begin filling it to ``min_size``.

        Args:
            wait: Block until ``min_size`` clients exist (see :meth:`wait`).
            timeout: Seconds to wait when ``wait`` is true.

        Raises:
            PoolClosed: The pool was closed; a closed pool cannot be reopened.
        """
        if not isinstance(wait, bool):
            raise TypeError(f"wait must be a bool, not {type(wait).__name__}")
        timeout = _check_seconds("timeout", timeout, allow_zero=True)
        with self._lock:
            if self._state == _CLOSED:
                raise PoolClosed(f"pool {self.name!r} is closed and cannot be reopened")
            starting = self._state == _NEW
            self._state = _OPEN
            connects = self._plan_connects_locked() if starting else 0
        if starting:
            self._start_threads()
            self._start_connects(connects)
            logger.info("pool %r opened (min_size=%d, max_size=%d)", self.name, self._min_size, self._max_size)
            self._emit("open")
        if wait:
            self.wait(timeout)

    def _start_threads(self) -> None:
        self._scheduler.start()
        self._scheduler.call_later(self._maintenance_interval, weak_task(self, "_maintain"))
        if self._health_check_interval is not None:
            self._scheduler.call_later(self._health_check_interval, weak_task(self, "_scheduled_health_pass"))

    def wait(self, timeout: float = 30.0) -> None:
        """Block until the pool holds at least ``min_size`` clients.

        Raises:
            PoolTimeout: ``min_size`` was not reached in time; ``__cause__`` is the last connect error, if any.
            AuthError: The backend refused the credentials.
            PoolClosed: The pool is closed or not open.
        """
        timeout = _check_seconds("timeout", timeout, allow_zero=True)
        deadline = monotonic() + timeout
        with self._lock:
            while True:
                if self._state != _OPEN:
                    raise PoolClosed(f"pool {self.name!r} is not open")
                if len(self._idle) + len(self._leased) + self._checking >= self._min_size:
                    return
                error = self._last_connect_error
                if isinstance(error, ConnectRejected):
                    raise self._auth_error(error)
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise PoolTimeout(
                        f"pool {self.name!r}: min_size={self._min_size} not reached within {timeout:.3g}s "
                        f"({self._describe_locked()})"
                    ) from error
                self._changed.wait(remaining)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool.

        Waiters get :class:`~syncpool.PoolClosed` at once and new leases fail. Idle clients are closed now. Leases
        still out may finish for up to ``timeout`` seconds; each is closed when it comes back. Clients still leased
        after the timeout are not closed under their user's feet (which could crash a client library mid-call):
        they are closed when returned, and a warning says how many are out. Background threads are stopped and
        joined within the same timeout (a connect or check that hangs is left to end as a daemon thread). Idempotent
        and safe to call from several threads: later callers wait for the first close to finish, up to their own
        timeout.
        """
        timeout = _check_seconds("timeout", timeout, allow_zero=True)
        deadline = monotonic() + timeout
        with self._lock:
            # Decide: who closes (the first caller), and take everything idle and every waiter out.
            if self._state == _CLOSED:
                first = False
            else:
                first = True
                self._state = _CLOSED
                idle, self._idle = self._idle, []
                waiters, self._waiters = self._waiters, deque()
                for waiter in waiters:
                    waiter.error = PoolClosed(f"pool {self.name!r} was closed while waiting")
                    waiter.wakeup.release()
                # Retries waiting out a backoff will never run: the scheduler drops them.
                self._connecting -= len(self._retry_tokens)
                self._retry_tokens.clear()
                self._count_discards_locked("closed", len(idle))
                self._changed.notify_all()
        if not first:
            self._closed_event.wait(max(0.0, deadline - monotonic()))
            return
        try:
            self._close_clients(idle, "closed")
            with self._lock:
                while self._leased and (remaining := deadline - monotonic()) > 0:
                    self._changed.wait(remaining)
                still_out = len(self._leased)
            if still_out:
                logger.warning(
                    "pool %r closed with %d client(s) still leased after %.3gs; they will be closed when returned",
                    self.name, still_out, timeout,
                )
            if not self._scheduler.stop(max(0.0, deadline - monotonic())):
                logger.warning("pool %r: a background thread did not stop within %.3gs", self.name, timeout)
            logger.info("pool %r closed", self.name)
        finally:
            self._closed_event.set()
        self._emit("close")

    def __enter__(self) -> Pool[T]:
        if self._state == _NEW:
            self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- leasing: the hot path -------------------------------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> Lease[T]:
        """Return a context manager that leases a client for the ``with`` block and always returns it.

        If the block raises, the client is still reset and returned (or discarded and replaced if it is broken) and
        the exception propagates unchanged.
        """
        return Lease(self, timeout)

    def getconn(self, timeout: float | None = None) -> T:
        """Lease a client; give it back with :meth:`putconn`.

        Args:
            timeout: Seconds to wait; defaults to the pool's ``timeout``. 0 fails at once unless a client is idle.

        Raises:
            PoolTimeout: No client was free in time; the message gives the pool's counts and ``__cause__`` is the
                last connect error, if connects are failing.
            PoolUnavailable: The circuit breaker is open (connects keep failing); ``__cause__`` is the last error.
            TooManyWaiters: ``max_waiting`` callers are already queued.
            AuthError: The backend refused the credentials while this caller waited.
            PoolClosed: The pool is closed, or was closed while waiting.
        """
        if timeout is not None and (timeout.__class__ is not float or not 0.0 <= timeout < _INF):
            timeout = _check_seconds("timeout", timeout, allow_zero=True)  # ints pass as floats; the rest raises
        served = False
        waiter: _Waiter | None = None
        # acquire/release rather than "with": measured at about 1,000 fewer CPU instructions per lock hold, a
        # tenth of a lease. The try/finally still releases on any exception.
        lock = self._lock
        lock.acquire()
        try:
            idle = self._idle
            waiters = self._waiters
            if idle and not waiters:
                record = idle[-1]
                now = monotonic()
                if record.expires > now and now - record.last_used < self._check_after_idle:
                    # Decide: the newest idle client is fresh and nobody is queued ahead of us: it is ours.
                    idle.pop()
                    record.leased_at = now
                    self._leased[id(record.client)] = record
                    self._leases_total += 1
                    if self._plain_leases:  # no leak tracking, no lease listeners
                        return record.client  # type: ignore[no-any-return]
                    record.leak_reported = False
                    served = True
            elif (
                not idle
                and self._state is _OPEN
                and self._breaker == "closed"
                and self._size_locked() >= self._max_size
                and (not self._max_waiting or len(waiters) < self._max_waiting)
                and (timeout is None or timeout > 0)
            ):
                # Decide: the contended path. Every slot is taken, so there is nothing to connect and nothing
                # to fail fast: queue at once, in this same lock hold, for a return to be handed to us.
                waiter = _Waiter(monotonic())
                waiters.append(waiter)
        finally:
            lock.release()
        if waiter is not None:  # queued above: what _getconn_slow does after queueing, for this one case
            record = self._wait_for(waiter, self._timeout if timeout is None else timeout)
            if self._lease_listeners:
                self._emit("lease", wait=monotonic() - waiter.since)
            if self._leak_threshold is not None:
                record.lease_frames = _capture_frames(sys._getframe(1))
            return record.client  # type: ignore[no-any-return]
        if served:  # the fast path, with leak tracking or listeners
            if self._leak_threshold is not None:
                record.lease_frames = _capture_frames(sys._getframe(1))
            self._emit("lease", wait=0.0)
            return record.client  # type: ignore[no-any-return]
        record = self._getconn_slow(self._timeout if timeout is None else timeout)
        if self._leak_threshold is not None:
            record.lease_frames = _capture_frames(sys._getframe(1))
        return record.client  # type: ignore[no-any-return]

    def _getconn_slow(self, timeout: float) -> _Record:
        """The lease path when the fast one could not serve: expired or stale clients, queueing, the breaker."""
        deadline = monotonic() + timeout
        while True:
            record, waited = self._take_or_wait(max(0.0, deadline - monotonic()))
            if waited or monotonic() - record.last_used < self._check_after_idle:
                break
            # Idle long enough to deserve a check before use (check_after_idle): done here, unlocked.
            try:
                self._connector.check(record.raw)
                break
            except Exception as error:
                logger.warning(
                    "pool %r: discarding a client that failed its check on lease: %s", self.name, _describe_error(error)
                )
                self._emit("check_failed", error=error)
                self._discard_leased(record, "check_failed")
        if self._lease_listeners:
            self._emit("lease", wait=waited)
        return record

    def _take_or_wait(self, timeout: float) -> tuple[_Record, float]:
        """Take the newest fresh idle client, or queue for one; return it and the seconds spent queued."""
        expired: list[_Record] = []
        record: _Record | None = None
        probe = False
        try:
            with self._lock:
                # Decide: serve the newest fresh idle client unless earlier callers are queued; else queue.
                while self._idle and not self._waiters:
                    candidate = self._idle.pop()
                    now = monotonic()
                    if candidate.expires <= now:
                        expired.append(candidate)
                        continue
                    self._lease_locked(candidate, now)
                    record = candidate
                    break
                # Counted out (and closed below) whatever this lease does next, failing fast included.
                self._count_discards_locked("lifetime", len(expired))
                waiter, probe, connects = self._queue_or_fail_locked(record, expired)
        finally:
            self._close_clients(expired, "lifetime")
        if probe:
            self._scheduler.submit(weak_task(self, "_connect", None))
        if connects:
            self._start_connects(connects)
        if record is not None:
            return record, 0.0
        assert waiter is not None
        return self._wait_for(waiter, timeout), monotonic() - waiter.since

    def _queue_or_fail_locked(
        self, record: _Record | None, expired: list[_Record]
    ) -> tuple[_Waiter | None, bool, int]:
        """Queue a caller that found no client, or fail it fast; return its waiter, whether it probes, connects.

        Raises:
            PoolClosed, TooManyWaiters, PoolUnavailable: As documented on :meth:`getconn`.
        """
        waiter: _Waiter | None = None
        probe = False
        if record is None:
            if self._state != _OPEN:
                raise PoolClosed(f"pool {self.name!r} is closed" if self._state == _CLOSED else
                                 f"pool {self.name!r} is not open yet: call open()")
            if self._max_waiting and len(self._waiters) >= self._max_waiting:
                self._too_many_waiters += 1
                raise TooManyWaiters(
                    f"pool {self.name!r}: {len(self._waiters)} callers already waiting (max_waiting="
                    f"{self._max_waiting})"
                )
            if self._breaker != "closed" and self._size_locked() < self._max_size:
                # Decide: fail fast, unless this caller may start the one probe and wait for its outcome.
                # (With every slot taken, connects are not the question: wait for a return as usual.)
                now = monotonic()
                if self._breaker == "half_open" or now < self._next_probe_at:
                    self._breaker_rejections += 1
                    raise self._unavailable_error()
                probe = True
                self._set_breaker_locked("half_open")
                self._next_probe_at = now + self._breaker_probe_interval
                if self._retry_tokens:
                    self._retry_tokens.pop()  # the pending retry's slot becomes the probe's
                else:
                    self._connecting += 1
            waiter = _Waiter(monotonic())
            self._waiters.append(waiter)
        # Growth is needed only if we queue, or replace expired clients; never while a connect is under way.
        connects = self._plan_connects_locked() if (expired or record is None) else 0
        return waiter, probe, connects

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
            retry: None (or True) for :class:`~syncpool.retry.RetryPolicy`'s defaults: up to 3 attempts when the
                connector's :meth:`~syncpool.Connector.is_transient` says the error is transient (connection lost,
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
        return retry_run(self, fn, args, kwargs, retry=retry, deadline=deadline)

    def map(
        self,
        fn: Callable[[T, Any], R],
        items: Iterable[Any],
        /,
        *,
        workers: int | None = None,
        ordered: bool = True,
        retry: RetryPolicy | tenacity.BaseRetrying | bool | None = None,
        on_error: str = "continue",
        progress: bool | Callable[[int, int | None], object] | None = None,
        timeout: float | None = None,
    ) -> BatchResult[R]:
        """Run ``fn(client, item)`` for every item on worker threads that lease from this pool.

        See :func:`syncpool.batch.map_pool` for every argument; in short: at most ``max_size`` workers, work in
        flight bounded (a generator is never read ahead by more than twice the workers), failures collected
        without losing the successes (``on_error="cancel"`` stops at the first), a progress bar on a terminal.
        Unlike :meth:`run`, ``retry=None`` makes one attempt per item, since ``fn`` may not be idempotent (an
        insert); pass ``retry=True`` for :meth:`run`'s default policy.
        """
        from .batch import map_pool

        return map_pool(self, fn, items, workers=workers, ordered=ordered, retry=retry, on_error=on_error,
                        progress=progress, timeout=timeout)

    def transaction(self, timeout: float | None = None) -> AbstractContextManager[T]:
        """Lease a client and run the ``with`` block in a transaction: committed on success, rolled back on error.

        For clients with transactions (psycopg, sqlite3); see :func:`syncpool.transactions.transaction`.
        """
        from .transactions import transaction

        return transaction(self, timeout)

    def putconn(self, client: T) -> None:
        """Return a client leased with :meth:`getconn`.

        The client is reset (see :meth:`Connector.reset`) and goes back to the pool, or is discarded and replaced
        if it is broken, failed its reset, outlived ``max_lifetime`` or the pool shrank, reloaded or closed.

        Raises:
            PoolError: ``client`` is not leased from this pool (returned twice, or leased from another pool).
                A second return is caught only while nobody has leased that client again: the pool knows clients,
                not leases, so a stray return after someone else leased it would give their client away.
                :meth:`connection` returns exactly once.
        """
        key = id(client)
        record = self._leased.get(key)
        if record is None or record.client is not client:
            if self._orphans.pop(key, None) is not None:
                return  # leased in the parent before a fork: not ours to reuse or close
            raise PoolError(
                f"pool {self.name!r}: cannot return a {type(client).__name__} that is not leased from this pool "
                "(returned twice, or leased from another pool)"
            )
        reason: str | None = None
        if self._returns_need_connector:
            try:
                recycle = self._recycle
                if recycle is not None:  # is_broken() and reset() in one call
                    if not recycle(record.raw):
                        reason = "broken"
                elif self._is_broken(record.raw):
                    reason = "broken"
                else:
                    self._reset(record.raw)
            except Exception as error:
                reason = reason or "reset_failed"
                logger.warning(
                    "pool %r: discarding a client whose reset failed: %s", self.name, _describe_error(error)
                )
            except BaseException:
                # KeyboardInterrupt or SystemExit mid-reset: the client's state is unknown. Discard it (a
                # replacement is connected) so that the slot is not lost, then let the exception go on.
                self._discard_leased(record, "reset_failed")
                raise
        now = monotonic()
        lock = self._lock
        lock.acquire()  # not "with": see getconn
        try:
            if self._leased.pop(key, None) is None:
                raise PoolError(f"pool {self.name!r}: client returned twice (by two threads at once)")
            use_times = self._use_times
            use_times.append(now - record.leased_at)
            if len(use_times) >= 1024:
                _fold(use_times, self._use_hist)
            if (
                reason is None
                and self._state is _OPEN
                and record.expires > now
                # After a shrink, keep it only if the pool is back under max_size (it no longer counts in _leased).
                and (not self._shrunk or self._size_locked() < self._max_size)
            ):
                # Decide: it goes to the oldest waiter, else on top of the idle stack.
                record.last_used = now
                if self._waiters:
                    self._hand_over_locked(record, now)
                else:
                    self._idle.append(record)
                if not self._lease_listeners:
                    return
            else:
                if reason is None:
                    if self._state is not _OPEN:
                        reason = "closed"
                    elif record.expires <= now:
                        reason = "reload" if record.expires == -_INF else "lifetime"
                    else:
                        reason = "resize"
                self._count_discards_locked(reason, 1)
                connects = self._plan_connects_locked()
                if self._state is not _OPEN:
                    self._changed.notify_all()
        finally:
            lock.release()
        if self._lease_listeners:
            self._emit("return", use=now - record.leased_at)
        if reason is not None:
            self._start_connects(connects)
            self._close_clients([record], reason)

    def _end_lease(self, client: T, error: BaseException | None) -> None:
        """Return a client at the end of a ``with pool.connection()`` block that ended with ``error``."""
        record = self._leased.get(id(client))
        if record is None or record.client is not client:
            self.putconn(client)  # raises the usual error
            return
        if error is not None and not isinstance(error, Exception):
            self._discard_leased(record, "interrupted")
            return
        try:
            self._connector.release(record.raw, error)
        except BaseException:
            self._discard_leased(record, "reset_failed")
            raise
        self.putconn(client)

    @property
    def state(self) -> PoolState:
        """Where the pool is in its life: new, open, closing or closed."""
        return PoolState(self._state)

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early when the pool closes; return True if it is closed."""
        return self._closed_event.wait(timeout) or self._state == _CLOSED

    def _discard_leased(self, record: _Record, reason: str) -> None:
        """Discard a leased client: it failed its check on lease, or its return was interrupted mid-reset."""
        with self._lock:
            self._leased.pop(id(record.client), None)
            self._count_discards_locked(reason, 1)
            connects = self._plan_connects_locked()
            if self._state is not _OPEN:
                self._changed.notify_all()
        self._start_connects(connects)
        self._close_clients([record], reason)

    def _wait_for(self, waiter: _Waiter, timeout: float) -> _Record:
        """Block until ``waiter`` is handed a client, fails, or times out. Runs without the lock."""
        try:
            woken = waiter.wakeup.acquire(True, timeout) if timeout > 0 else False
            if woken:
                if waiter.record is not None:  # woken by a hand-off: wake the next waiter handed a client, if any
                    lock = self._lock
                    lock.acquire()  # not "with": see getconn
                    try:
                        waiter.settled = True
                        self._pass_wake_locked()
                    finally:
                        lock.release()
            else:
                timed_out: PoolTimeout | None = None
                with self._lock:
                    # Decide: a client handed over since the timeout fired is ours; otherwise leave the queue.
                    if waiter.record is not None:
                        self._settle_wake_locked(waiter)
                    elif waiter.error is None:
                        self._waiters.remove(waiter)
                        self._lease_timeouts += 1
                        waited = monotonic() - waiter.since
                        timed_out = PoolTimeout(
                            f"pool {self.name!r}: no client available after waiting {waited:.3f}s "
                            f"(timeout={timeout:.3g}s; {self._describe_locked()})"
                        )
                        timed_out.__cause__ = self._last_connect_error
                if timed_out is not None:
                    self._emit("timeout", waited=waited)
                    raise timed_out
        except BaseException:
            # KeyboardInterrupt or SystemExit while waiting, or the timeout above: leak nothing.
            self._abandon(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.record is not None
        return waiter.record

    def _abandon(self, waiter: _Waiter) -> None:
        """Withdraw a waiter that is leaving by an exception; give back a client handed to it meanwhile."""
        with self._lock:
            record = waiter.record
            if record is None:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                return
            self._settle_wake_locked(waiter)
            waiter.record = None
        self.putconn(record.client)

    # -- decisions taken under the lock ----------------------------------------------------------------------------

    def _lease_locked(self, record: _Record, now: float) -> None:
        """Record ``record`` as leased at ``now``."""
        record.leased_at = now
        self._leased[id(record.client)] = record
        self._leases_total += 1
        record.leak_reported = False

    def _hand_over_locked(self, record: _Record, now: float) -> None:
        """Give a client to the oldest waiter, leasing it on the waiter's behalf, or put it on the idle stack."""
        if self._waiters:
            waiter = self._waiters.popleft()
            record.leased_at = now  # what _lease_locked does, inlined: this runs once per queued lease
            self._leased[id(record.client)] = record
            self._leases_total += 1
            record.leak_reported = False
            self._waited_leases += 1
            # ``now`` may predate the lock (the return path reads the clock first), and so this waiter's arrival.
            waited = now - waiter.since if now > waiter.since else 0.0
            self._wait_seconds_total += waited
            wait_times = self._wait_times
            wait_times.append(waited)  # folded into the histogram in batches, like use times
            if len(wait_times) >= 1024:
                _fold(wait_times, self._wait_hist)
            waiter.record = record
            # Wake it now if the budget allows; else the next waiter to start running wakes it, in this order.
            if self._waking < _WAKE_BUDGET:
                self._waking += 1
                waiter.wakeup.release()
            else:
                self._handed.append(waiter)
        else:
            self._idle.append(record)

    def _pass_wake_locked(self) -> None:
        """A waiter woken by a hand-off is running: wake the oldest one still to be woken, or free its share."""
        if self._handed:
            self._handed.popleft().wakeup.release()
        else:
            self._waking -= 1

    def _settle_wake_locked(self, waiter: _Waiter) -> None:
        """A waiter handed a client is leaving its wait some other way (timeout race, interrupt): keep the count.

        If it was still to be woken, it leaves the line of those; if it was woken, it passes its share on. Once.
        """
        if waiter.settled:
            return
        waiter.settled = True
        try:
            self._handed.remove(waiter)
        except ValueError:
            self._pass_wake_locked()

    def _size_locked(self) -> int:
        """Clients that exist or are being made, as counted against ``max_size``: also those being closed."""
        return len(self._idle) + len(self._leased) + self._connecting + self._checking + self._closing

    def _plan_connects_locked(self) -> int:
        """Return how many connects to start now, and count them as connecting.

        Fill to ``min_size`` in parallel; beyond it grow by one connect at a time while callers wait. Nothing
        while the breaker is open: only its probe connects then.
        """
        if self._state != _OPEN or self._breaker != "closed":
            return 0
        size = self._size_locked()
        wanted = self._min_size - size
        if self._waiters and not self._idle and self._connecting == 0:
            wanted = max(wanted, 1)
        wanted = min(wanted, self._max_size - size)
        if wanted <= 0:
            return 0
        self._connecting += wanted
        return wanted

    def _count_discards_locked(self, reason: str, count: int) -> None:
        """Count ``count`` clients leaving the pool for ``reason``; each is then closed by _close_clients."""
        if count:
            self._discards[reason] += count
            self._closing += count

    def _describe_locked(self) -> str:
        closing = f" closing={self._closing}" if self._closing else ""
        return (
            f"size={self._size_locked() - self._closing} idle={len(self._idle)} "
            f"in_use={len(self._leased) + self._checking} connecting={self._connecting}{closing} "
            f"waiting={len(self._waiters)} max_size={self._max_size}"
        )

    def _set_breaker_locked(self, state: str) -> None:
        if state != self._breaker:
            self._breaker = state
            self._breaker_changes.append(state)

    def _unavailable_error(self) -> PoolUnavailable:
        error = PoolUnavailable(
            f"pool {self.name!r}: circuit breaker open after {self._connect_failures} failed connects to "
            f"{self._connector.description}; failing fast ({self._describe_locked()})"
        )
        error.__cause__ = self._last_connect_error
        return error

    # -- connecting (on worker threads) ----------------------------------------------------------------------------

    def _start_connects(self, count: int) -> None:
        for _ in range(count):
            self._scheduler.submit(weak_task(self, "_connect", None))

    def _connect(self, token: int | None) -> None:
        """Create one client (on a worker thread) and hand it to a waiter or the idle stack.

        ``token`` identifies a retry scheduled after a failure; a probe may have taken over its slot since, in which
        case this task has nothing left to do.
        """
        with self._lock:
            # Decide: is this attempt (counted in connecting) still wanted?
            if token is not None:
                if token not in self._retry_tokens:
                    return  # its slot went to a probe (or the pool closed)
                self._retry_tokens.discard(token)
            if not self._connect_still_wanted_locked():
                self._connecting -= 1
                if self._breaker == "half_open":
                    # The probe's caller left before it ran: back to open, so that the next lease may probe.
                    self._set_breaker_locked("open")
                self._changed.notify_all()
                unwanted = True
            else:
                unwanted = False
                if self._breaker == "open":
                    self._set_breaker_locked("half_open")  # this retry is the probe
                index = self._take_index_locked()
        self._flush_breaker_events()
        if unwanted:
            return
        started = monotonic()
        context = _member_index.set(index)
        try:
            client = self._connector.connect()
            if client is None:  # a factory that forgot its return: say so, instead of leasing None around
                raise TypeError(f"{self._connector.description}: connect() returned None, not a client")
        except Exception as error:
            with self._lock:
                self._indexes.discard(index)
            self._connect_failed(error, monotonic() - started)
            return
        finally:
            _member_index.reset(context)
        now = monotonic()
        handed = client if self.client_stats is None else MonitoredClient(
            client, name=self.name, sink=self.client_stats, **self._connector.monitor_options()
        )
        record = _Record(handed, client, index, now, now + self._max_lifetime * (1.0 - random.uniform(0.0, 0.1)))
        with self._lock:
            recovered = self._breaker != "closed" or self._outage_since is not None
            self._connect_failures = 0
            self._last_connect_error = None
            self._outage_since = None
            self._outage_reported = False
            self._set_breaker_locked("closed")
            self._connect_seconds_total += now - started
            self._connect_hist.add(now - started)
            # Decide: keep it, unless the pool closed or shrank below its size while we connected.
            keep = self._state is _OPEN and self._size_locked() <= self._max_size
            self._connecting -= 1
            if keep:
                self._created += 1
                self._hand_over_locked(record, now)
                connects = self._plan_connects_locked()
            else:
                self._count_discards_locked("closed" if self._state is not _OPEN else "resize", 1)
            self._changed.notify_all()
        self._flush_breaker_events()
        if not keep:
            self._close_clients([record], "closed" if self._state is not _OPEN else "resize")
            return
        if recovered:
            logger.info("pool %r: connected to %s again", self.name, self._connector.description)
        else:
            logger.debug("pool %r: new client connected in %.3fs", self.name, now - started)
        self._emit("connect", duration=now - started)
        self._start_connects(connects)

    def _connect_still_wanted_locked(self) -> bool:
        if self._state != _OPEN:
            return False
        # This attempt is already counted in connecting, hence "<=".
        size = self._size_locked()
        if size > self._max_size:
            return False
        return size <= self._min_size or bool(self._waiters and not self._idle)

    def _connect_failed(self, error: Exception, duration: float) -> None:
        auth = isinstance(error, ConnectRejected) or self._connector.is_auth_error(error)
        if not auth and self._connector.is_permanent(error):
            auth = True
            original, error = error, ConnectRejected(
                f"pool {self.name!r}: {self._connector.description} rejected the connection "
                f"({_describe_error(error)})"
            )
            error.__cause__ = original
        wrapped = self._auth_error(error) if auth else error
        now = monotonic()
        report_outage = False
        with self._lock:
            self._connect_errors += 1
            self._connect_failures += 1
            self._last_connect_error = wrapped
            failures = self._connect_failures
            if self._outage_since is None:
                self._outage_since = now - duration
            elif not self._outage_reported and now - self._outage_since >= self._reconnect_timeout:
                self._outage_reported = report_outage = True
            if auth:
                # Retrying cannot fix refused credentials: fail every waiter now instead of at its timeout.
                for waiter in self._waiters:
                    waiter.error = self._auth_error(error)  # one instance each: tracebacks are per raise
                    waiter.wakeup.release()
                self._waiters.clear()
                if self._breaker == "half_open":  # the probe failed: back to open until the next probe time
                    self._set_breaker_locked("open")
                    self._next_probe_at = now + self._breaker_probe_interval
            elif self._breaker_threshold is not None and failures >= self._breaker_threshold:
                self._set_breaker_locked("open")
                self._next_probe_at = now + self._breaker_probe_interval
                for waiter in self._waiters:
                    waiter.error = self._unavailable_error()
                    waiter.wakeup.release()
                self._breaker_rejections += len(self._waiters)
                self._waiters.clear()
            # Decide: retry after a backoff? While the breaker is open, one retry loop is enough.
            retry = self._connect_still_wanted_locked() and not (self._breaker != "closed" and self._retry_tokens)
            if retry:
                delay = self._backoff.delay(failures)
                if self._waiters:
                    delay = min(delay, 0.25)
                self._next_token += 1
                token = self._next_token
                self._retry_tokens.add(token)
            else:
                self._connecting -= 1
            self._changed.notify_all()
        self._flush_breaker_events()
        logger.warning(
            "pool %r: connect to %s failed (attempt %d, %.3fs): %s%s",
            self.name, self._connector.description, failures, duration, _describe_error(error),
            f"; retrying in {delay:.2f}s" if retry else "",
        )
        self._emit("connect_failed", error=wrapped, attempt=failures, duration=duration)
        if retry:
            self._scheduler.call_later(delay, weak_task(self, "_connect", token))
        if report_outage and self._reconnect_failed is not None:
            logger.error(
                "pool %r: no connection to %s for %.3gs (reconnect_timeout); still trying",
                self.name, self._connector.description, self._reconnect_timeout,
            )
            try:
                self._reconnect_failed(self)
            except Exception:
                logger.exception("pool %r: reconnect_failed callback failed", self.name)

    def _flush_breaker_events(self) -> None:
        """Log and emit breaker state changes recorded under the lock, in order, outside it."""
        while self._breaker_changes:
            try:
                state = self._breaker_changes.popleft()
            except IndexError:
                return
            log = logger.warning if state == "open" else logger.info
            log("pool %r: circuit breaker %s", self.name, state.replace("_", "-"))
            self._emit("breaker", state=state)

    def _auth_error(self, error: Exception) -> ConnectRejected:
        """Return an AuthError for a refused connect, chaining the client's own error."""
        if isinstance(error, ConnectRejected):
            wrapped = type(error)(*error.args)
            wrapped.__cause__ = error.__cause__ or error
        else:
            wrapped = AuthError(
                f"pool {self.name!r}: {self._connector.description} refused the credentials ({type(error).__name__})"
            )
            wrapped.__cause__ = error
        return wrapped

    def _take_index_locked(self) -> int:
        """Return the smallest member index not in use, and mark it used."""
        index = 0
        while index in self._indexes:
            index += 1
        self._indexes.add(index)
        return index

    def _close_clients(self, records: list[_Record], reason: str) -> None:
        """Close clients counted out by _count_discards_locked; each counts against ``max_size`` until closed."""
        for record in records:
            try:
                self._connector.close(record.raw)
            except Exception as error:
                logger.warning("pool %r: error closing a client: %s", self.name, _describe_error(error))
            finally:
                with self._lock:
                    # Decide: the slot is free now; a caller may be waiting for it to connect.
                    self._closing -= 1
                    self._indexes.discard(record.index)
                    connects = self._plan_connects_locked()
                self._start_connects(connects)
            self._emit("discard", reason=reason)
        if records:
            logger.debug("pool %r: closed %d client(s) (%s)", self.name, len(records), reason)

    # -- health checks ---------------------------------------------------------------------------------------------

    def check(self) -> dict[str, int]:
        """Check every idle client now and replace those that fail; return ``{"ok": n, "failed": n}``.

        Clients are taken out of the idle stack one at a time (so leases barely notice), checked with
        :meth:`Connector.check` outside the lock, and put back or discarded. A check that takes longer than
        ``health_check_timeout`` counts as failed: its client is closed when the check finally returns, and the
        pass goes on without it. The background health pass (``health_check_interval``) does the same.
        """
        with self._lock:
            if self._state is not _OPEN:
                return {"ok": 0, "failed": 0}
            candidates = list(self._idle)  # least recently used first
        outcome = {"ok": 0, "failed": 0}
        for record in candidates:
            with self._lock:
                # Decide: take it out for a check only if it is still idle.
                if self._state is not _OPEN:
                    break
                try:
                    self._idle.remove(record)
                except ValueError:
                    continue  # leased or retired since
                self._checking += 1
            ok = self._check_one(record)
            outcome["ok" if ok else "failed"] += 1
        return outcome

    def _check_one(self, record: _Record) -> bool:
        """Check one client on its own thread, waiting at most ``health_check_timeout``; True if it passed."""
        done = threading.Event()
        verdict: list[bool] = []

        def run() -> None:
            try:
                self._connector.check(record.raw)
                error: Exception | None = None
            except Exception as failure:
                error = failure
            verdict.append(self._finish_check(record, error))
            done.set()

        threading.Thread(target=run, name=f"syncpool-{self.name}-check", daemon=True).start()
        if done.wait(self._health_check_timeout):
            return verdict[0]
        with self._lock:
            if not done.is_set():
                record.abandoned = True  # _finish_check discards it whenever the check returns
        if done.is_set():
            return verdict[0]
        logger.warning(
            "pool %r: health check still running after %.3gs; the client will be discarded",
            self.name, self._health_check_timeout,
        )
        self._emit("check_failed", error=None)
        return False

    def _finish_check(self, record: _Record, error: Exception | None) -> bool:
        now = monotonic()
        with self._lock:
            self._checking -= 1
            # Decide: back to the pool (as its least recently used client), or discard and replace it.
            fits = not self._shrunk or self._size_locked() < self._max_size  # it no longer counts in _checking
            if error is None and not record.abandoned and self._state is _OPEN and record.expires > now and fits:
                self._health_ok += 1
                if self._waiters:
                    self._hand_over_locked(record, now)
                else:
                    self._idle.insert(0, record)
                return True
            if error is not None or record.abandoned:
                reason = "check_failed"
            elif self._state is not _OPEN:
                reason = "closed"
            else:
                reason = "lifetime" if record.expires <= now else "resize"
            if reason == "check_failed":
                self._health_failed += 1
            self._count_discards_locked(reason, 1)
            connects = self._plan_connects_locked()
            self._changed.notify_all()
        if error is not None:
            logger.warning("pool %r: idle client failed its health check: %s", self.name, _describe_error(error))
            self._emit("check_failed", error=error)
        self._start_connects(connects)
        self._close_clients([record], reason)
        return reason != "check_failed" and error is None

    def _scheduled_health_pass(self) -> None:
        """The periodic health pass (on a worker); a pass still running makes the next one wait its turn."""
        with self._lock:
            if self._state is not _OPEN or self._health_running:
                return
            self._health_running = True
        try:
            self.check()
        finally:
            with self._lock:
                self._health_running = False
            if self._health_check_interval is not None:
                self._scheduler.call_later(self._health_check_interval, weak_task(self, "_scheduled_health_pass"))

    # -- maintenance -----------------------------------------------------------------------------------------------

    def _pick_maintenance_interval(self) -> float:
        """Run maintenance often enough to honour the shortest configured time limit closely."""
        limits = [5.0, self._max_idle / 4, self._max_lifetime / 20]
        if self._leak_threshold is not None:
            limits.append(self._leak_threshold / 4)
        return max(0.02, min(limits))

    def _maintain(self) -> None:
        """Retire expired and long-idle clients, refill to ``min_size``, report leaks. Runs on a worker."""
        now = monotonic()
        leaks: list[tuple[_Record, float]] = []
        with self._lock:
            if self._state != _OPEN:
                return
            # Decide: which idle clients to retire. The stack's bottom holds the least recently used ones.
            expired: list[_Record] = []
            stale: list[_Record] = []
            keep: list[_Record] = []
            spare = len(self._idle) + len(self._leased) + self._checking - self._min_size
            for record in self._idle:
                if record.expires <= now:
                    expired.append(record)
                    spare -= 1
                elif spare > 0 and now - record.last_used >= self._max_idle:
                    stale.append(record)
                    spare -= 1
                else:
                    keep.append(record)
            if expired or stale:
                self._idle = keep
                self._count_discards_locked("lifetime", len(expired))
                self._count_discards_locked("idle", len(stale))
            if self._leak_threshold is not None:
                for record in self._leased.values():
                    held = now - record.leased_at
                    if not record.leak_reported and held >= self._leak_threshold:
                        record.leak_reported = True
                        self._leaks_detected += 1
                        leaks.append((record, held))
            if self._shrunk and self._size_locked() <= self._max_size:
                self._shrunk = False
            connects = self._plan_connects_locked()
        self._start_connects(connects)
        self._close_clients(expired, "lifetime")
        self._close_clients(stale, "idle")
        for record, held in leaks:
            logger.warning(
                "pool %r: a client has been leased for %.1fs (leak_threshold=%.3gs); possible leak, leased at:\n%s",
                self.name, held, self._leak_threshold, _format_frames(record.lease_frames or []),
            )
        self._scheduler.call_later(self._maintenance_interval, weak_task(self, "_maintain"))

    # -- resizing and reloading ------------------------------------------------------------------------------------

    def resize(self, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change the bounds. Surplus idle clients are closed now, surplus leased ones when they come back."""
        new_min = self._min_size if min_size is None else min_size
        new_max = self._max_size if max_size is None else max_size
        _check_int("min_size", new_min, minimum=0)
        _check_int("max_size", new_max, minimum=1)
        if new_min > new_max:
            raise ValueError(f"min_size ({new_min}) must not be greater than max_size ({new_max})")
        with self._lock:
            self._min_size, self._max_size = new_min, new_max
            self._shrunk = self._size_locked() > new_max  # returns must then check the bound
            # Decide: which idle clients no longer fit (the least recently used go first).
            surplus = max(0, self._size_locked() - new_max)
            retire = self._idle[:surplus]
            del self._idle[: len(retire)]
            self._count_discards_locked("resize", len(retire))
            connects = self._plan_connects_locked()
        logger.info("pool %r resized to min_size=%d max_size=%d", self.name, new_min, new_max)
        self._close_clients(retire, "resize")
        self._start_connects(connects)
        self._emit("resize", min_size=new_min, max_size=new_max)

    def reload(self) -> None:
        """Replace every client gracefully, e.g. after a credential rotation.

        Idle clients are closed now and new ones connected (to ``min_size``, and on demand); leased clients finish
        their work and are replaced when they come back. Leases keep being served throughout.
        """
        with self._lock:
            if self._state is not _OPEN:
                raise PoolClosed(f"pool {self.name!r} is not open")
            retire, self._idle = self._idle, []
            for record in self._leased.values():
                record.expires = -_INF  # discarded on return, as "reload"
            self._count_discards_locked("reload", len(retire))
            connects = self._plan_connects_locked()
        logger.info("pool %r: reloading (%d idle client(s) replaced now, leased ones on return)", self.name,
                    len(retire))
        self._close_clients(retire, "reload")
        self._start_connects(connects)
        self._emit("reload")

    # -- events ----------------------------------------------------------------------------------------------------

    def add_listener(self, event: str, callback: Callable[..., object]) -> None:
        """Call ``callback(pool, **info)`` whenever ``event`` happens; see :data:`EVENTS` for names and info.

        Callbacks run outside the pool's lock, on whichever thread caused the event (a leasing thread, a worker):
        they must be quick and must not block. An exception in a callback is logged and ignored. Listening to
        "lease" or "return" adds a little to every lease.
        """
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; choose from {', '.join(EVENTS)}")
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        with self._lock:
            self._listeners = {**self._listeners, event: [*self._listeners.get(event, []), callback]}
            self._lease_listeners = bool(self._listeners.get("lease") or self._listeners.get("return"))
            self._plain_leases = self._leak_threshold is None and not self._lease_listeners

    def remove_listener(self, event: str, callback: Callable[..., object]) -> None:
        """Stop calling ``callback`` for ``event``; unknown pairs are ignored."""
        with self._lock:
            callbacks = [c for c in self._listeners.get(event, []) if c != callback]
            self._listeners = {**self._listeners, event: callbacks}
            self._lease_listeners = bool(self._listeners.get("lease") or self._listeners.get("return"))
            self._plain_leases = self._leak_threshold is None and not self._lease_listeners

    def _emit(self, event: str, **info: Any) -> None:
        # The dict is replaced, never mutated, so reading it without the lock is safe.
        for callback in self._listeners.get(event, ()):
            try:
                callback(self, **info)
            except Exception:
                logger.exception("pool %r: %s listener failed", self.name, event)

    # -- statistics ------------------------------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        self._leases_total = 0
        self._waited_leases = 0
        self._lease_timeouts = 0
        self._too_many_waiters = 0
        self._breaker_rejections = 0
        self._wait_seconds_total = 0.0
        self._connect_seconds_total = 0.0
        self._created = 0
        self._connect_errors = 0
        self._leaks_detected = 0
        self._health_ok = 0
        self._health_failed = 0
        self._discards = dict.fromkeys(_REASONS, 0)
        self._wait_hist = Histogram()
        self._use_hist = Histogram()
        self._connect_hist = Histogram()
        self._use_times = _pending_times()
        self._wait_times = _pending_times()

    def histograms(self) -> dict[str, Histogram]:
        """Return copies of the ``wait_time``, ``use_time`` and ``connect_time`` histograms (seconds)."""
        with self._lock:
            self._flush_times_locked()
            return {
                "wait_time": self._wait_hist.copy(),
                "use_time": self._use_hist.copy(),
                "connect_time": self._connect_hist.copy(),
            }

    def _flush_times_locked(self) -> None:
        _fold(self._use_times, self._use_hist)
        _fold(self._wait_times, self._wait_hist)

    def stats(self) -> dict[str, Any]:
        """Return a snapshot of the pool's gauges and counters.

        Gauges (the state now):
            ``name``; ``state`` ("new", "open" or "closed"); ``size`` (clients that exist or are being created,
            always ``idle + in_use + connecting``); ``idle`` (on the idle stack); ``in_use`` (out of the idle
            stack: leased, or being health-checked); ``checking`` (of ``in_use``, how many are being checked);
            ``connecting`` (connect attempts under way or waiting out a reconnect backoff); ``closing`` (discarded
            clients whose close has not returned yet: not in ``size``, but they count against ``max_size`` until
            closed); ``waiting`` (callers queued for a client); ``min_size``; ``max_size``; ``breaker`` ("closed", "open" or "half_open").

        Counters (since creation or the last :meth:`pop_stats`):
            ``leases_total`` (successful leases); ``leases_waited`` (of those, how many had to queue);
            ``lease_timeouts`` (leases that raised :class:`PoolTimeout`); ``too_many_waiters`` (leases refused by
            ``max_waiting``); ``breaker_rejections`` (leases failed fast by the open breaker); ``wait_ms_total``
            (milliseconds spent queued by leases that got a client); ``use_ms_total`` (milliseconds clients spent
            leased, counted on return); ``connections_created``; ``connections_discarded`` (closed by the pool for
            any reason); ``discards`` (the same by reason: ``broken``, ``reset_failed``, ``lifetime``, ``idle``,
            ``check_failed``, ``resize``, ``reload``, ``closed``); ``connect_errors`` (failed connect attempts);
            ``connect_ms_total`` (time spent in successful connects); ``leaks_detected`` (leases reported by
            ``leak_threshold``); ``health_checks`` (``{"ok": n, "failed": n}``).

        Histograms (seconds; each a dict with ``count``, ``sum``, ``min``, ``max``, ``mean``, ``p50``, ``p90``,
        ``p99``): ``wait_time`` (queued leases only), ``use_time`` (every returned lease), ``connect_time``.

        With ``monitor=True``, ``clients`` holds :meth:`ClientStats.stats` of the calls made on leased clients:
        ``operations``, ``errors``, ``ops_per_sec``, ``error_rate``, latencies and the same per method.
        """
        with self._lock:
            stats = self._stats_locked()
        if self.client_stats is not None:
            stats["clients"] = self.client_stats.stats()
        return stats

    def pop_stats(self) -> dict[str, Any]:
        """Return :meth:`stats` and reset its counters and histograms (gauges are not counters and stay)."""
        with self._lock:
            stats = self._stats_locked()
            self._reset_counters()
        if self.client_stats is not None:
            stats["clients"] = self.client_stats.stats()
            self.client_stats.reset()
        return stats

    def _stats_locked(self) -> dict[str, Any]:
        self._flush_times_locked()
        discards = dict(self._discards)
        use = self._use_hist.snapshot()
        return {
            "name": self.name,
            "state": self._state,
            "size": self._size_locked() - self._closing,
            "idle": len(self._idle),
            "in_use": len(self._leased) + self._checking,
            "checking": self._checking,
            "connecting": self._connecting,
            "closing": self._closing,
            "waiting": len(self._waiters),
            "min_size": self._min_size,
            "max_size": self._max_size,
            "breaker": self._breaker,
            "leases_total": self._leases_total,
            "leases_waited": self._waited_leases,
            "lease_timeouts": self._lease_timeouts,
            "too_many_waiters": self._too_many_waiters,
            "breaker_rejections": self._breaker_rejections,
            "wait_ms_total": self._wait_seconds_total * 1000.0,
            "use_ms_total": use["sum"] * 1000.0,
            "connections_created": self._created,
            "connections_discarded": sum(discards.values()),
            "discards": discards,
            "connect_errors": self._connect_errors,
            "connect_ms_total": self._connect_seconds_total * 1000.0,
            "leaks_detected": self._leaks_detected,
            "health_checks": {"ok": self._health_ok, "failed": self._health_failed},
            "wait_time": self._wait_hist.snapshot(),
            "use_time": use,
            "connect_time": self._connect_hist.snapshot(),
        }

    # -- fork safety -----------------------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._lock.acquire()  # so the child inherits consistent state, not a half-made decision

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        """Start the child with an empty pool that never touches the parent's clients."""
        inherited = self._idle + list(self._leased.values())
        self._orphans = {id(record.client): record.client for record in self._leased.values()}
        self._idle = []
        self._leased = {}
        self._waiters = deque()  # their threads do not exist in the child
        self._waking = 0
        self._handed = deque()
        self._connecting = 0  # nor do the connects, retries and checks under way in the parent
        self._checking = 0
        self._closing = 0
        self._indexes = set()
        self._retry_tokens = set()
        self._health_running = False
        self._breaker = "closed"
        self._breaker_changes = deque()
        self._connect_failures = 0
        self._outage_since = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed_event = threading.Event()
        if self._state == _CLOSED:
            self._closed_event.set()
        self._scheduler.after_fork_in_child()
        for record in inherited:
            _fork_orphans.append(record.raw)
            try:
                self._connector.after_fork(record.raw)
            except Exception as error:  # never let one connector break the child's start
                logger.warning("pool %r: after_fork failed: %s", self.name, _describe_error(error))
        if self._state == _OPEN:
            self._start_threads()
            self._start_connects(self._plan_connects_locked())


def _before_fork() -> None:
    for pool in list(_all_pools):
        pool._before_fork()


def _after_fork_in_parent() -> None:
    for pool in list(_all_pools):
        pool._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for pool in list(_all_pools):
        pool._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


# -- helpers -------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_seconds(name: str, value: object, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got NaN")
    if math.isinf(seconds) and not (allow_inf and seconds > 0):
        raise ValueError(f"{name} must be finite, got {value}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value}")
    return seconds


def _recycle_hook(connector: Connector[Any]) -> Callable[[Any], bool] | None:
    """The connector's ``_recycle(client) -> bool``, if it has one that its ``is_broken`` and ``reset`` still describe.

    ``_recycle`` is a private fast path of the built-in connectors (PostgresConnector): ``is_broken()`` then
    ``reset()`` in one call, False for broken. A subclass that overrides ``is_broken`` or ``reset`` below the class
    that defines ``_recycle`` would be bypassed by it, so then the pool calls those two as usual.
    """
    kind = type(connector)
    if getattr(kind, "_recycle", None) is None:
        return None

    def owner(name: str) -> type:
        return next(cls for cls in kind.__mro__ if name in vars(cls))

    recycle_owner = owner("_recycle")
    if all(issubclass(recycle_owner, owner(name)) for name in ("is_broken", "reset")):
        return connector._recycle  # type: ignore[attr-defined,no-any-return]
    return None


def _pending_times() -> list[float] | Accumulator:
    """Durations on their way to a histogram: appended on the hot path, folded in every 1024 by :func:`_fold`.

    The C accelerator's Accumulator where it is used: it counts each value straight into the histogram's buckets,
    so a fold merges counts. A fold of a list buckets every value in Python, at about 0.13 us a value: measured at
    a tenth of an uncontended lease+return.
    """
    return [] if _speedups is None else _speedups.Accumulator()


def _fold(pending: list[float] | Accumulator, histogram: Histogram) -> None:
    """Move the durations in ``pending`` (from :func:`_pending_times`) into ``histogram``, emptying ``pending``."""
    if isinstance(pending, list):
        if pending:
            histogram.add_many(pending)
            pending.clear()
    else:
        histogram.add_accumulated(pending)


def _capture_frames(frame: FrameType | None) -> list[tuple[str, int, str]]:
    """Cheaply record where a lease was taken (formatting is deferred until a leak is reported)."""
    frames: list[tuple[str, int, str]] = []
    while frame is not None and len(frames) < 32:
        code = frame.f_code
        frames.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    return frames


def _format_frames(frames: list[tuple[str, int, str]]) -> str:
    return "".join(f'  File "{filename}", line {lineno}, in {name}\n' for filename, lineno, name in reversed(frames))


def _describe_error(error: BaseException) -> str:
    """Describe an error for a log line: its type and message (connectors keep secrets out of messages)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__

