"""Members in and out: connects with backoff and the circuit breaker, and the closes of retired members.

Connects run on the pool's worker threads; leasing threads only ask for them (``Grower.wake``,
``Grower.wake_probe``), which queues a task and returns. So a lease that is interrupted at any point can never
leave a connect counted that nobody runs: the counting and the running happen on the same worker, and a request
that was lost is made again by the next lease or maintenance run. Closes run in the thread that retired the member
(``Grower.close_retired``), one member at a time, each accounted for in a ``finally``.

Growth: fill to ``min_size`` in parallel; beyond it, one connect at a time while callers wait (a burst of short
leases is mostly served by returns, and the next connect starts only if callers are still waiting when one
finishes). Every connect under way, or waiting out its backoff before a retry, counts against ``max_size``.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Callable
from math import inf
from time import monotonic
from typing import Any

from .breaker import CircuitBreaker
from .connector import Connector, _member_index
from .errors import AuthError, ConnectRejected, PoolUnavailable
from .events import Listeners
from .inventory import Inventory
from .members import Member
from .monitoring import ClientStats, MonitoredClient
from .options import PoolOptions
from .scheduler import Scheduler, weak_task
from .states import BreakerState, PoolState

__all__ = ["Grower", "describe_error"]

logger = logging.getLogger("syncpool")

OPEN = PoolState.OPEN

# While callers wait, a failed connect is retried after at most this long, so a recovered server is found quickly.
_WAITED_RETRY_CAP = 0.25


class Grower:
    """Connects new members and closes retired ones for one pool (see the module docstring)."""

    def __init__(
        self,
        pool: Any,
        inventory: Inventory,
        connector: Connector[Any],
        options: PoolOptions,
        scheduler: Scheduler,
        events: Listeners,
        client_stats: ClientStats | None,
    ) -> None:
        self.name: str = pool.name
        self._log: logging.Logger = pool._log
        self._pool = weakref.ref(pool)  # for the reconnect_failed callback only
        self._inv = inventory
        self._connector = connector
        self._options = options
        self._backoff = options.backoff
        self._scheduler = scheduler
        self._events = events
        self._client_stats = client_stats
        self.breaker = CircuitBreaker(options.breaker_threshold, options.breaker_probe_interval)
        self.failures = 0  # consecutive failed connects
        self.last_error: BaseException | None = None  # the last connect error, chained to lease timeouts
        self._outage_since: float | None = None  # when the current run of failed connects began
        self._retries: set[int] = set()  # retries waiting out a backoff, each counted in connecting
        self._next_token = 0
        self._grow_task = weak_task(self, "grow")
        self._connect_task = weak_task(self, "connect", None, False)
        self._probe_task = weak_task(self, "connect", None, True)

    # -- requests, from any thread without the lock ----------------------------------------------------------------

    def wake(self) -> None:
        """Ask a worker to start the connects the pool needs now, if any."""
        self._scheduler.submit(self._grow_task)

    def wake_probe(self) -> None:
        """Ask a worker to run the probe a lease was allowed to start (the breaker is half-open)."""
        self._scheduler.submit(self._probe_task)

    # -- growth (on workers) ---------------------------------------------------------------------------------------

    def grow(self) -> None:
        """Start the connects the pool needs now."""
        with self._inv.lock:
            count = self.plan_locked()
        self.start(count)

    def plan_locked(self) -> int:
        """Return how many connects to start now, and count them as connecting. Locked.

        Fill to ``min_size`` in parallel; beyond it, grow by one connect at a time while callers wait. Nothing while
        the breaker is not closed: only its probe connects then.
        """
        inv = self._inv
        if inv.state is not OPEN or not self.breaker.closed:
            return 0
        size = inv.size()
        wanted = inv.min_size - size
        if inv.waiters and not inv.idle and inv.connecting == 0:
            wanted = max(wanted, 1)
        wanted = min(wanted, inv.max_size - size)
        if wanted <= 0:
            return 0
        inv.connecting += wanted
        return wanted

    def start(self, count: int) -> None:
        """Run ``count`` connects already counted as connecting, on workers."""
        for _ in range(count):
            if not self._scheduler.submit(self._connect_task):
                with self._inv.lock:
                    self._inv.connecting -= 1

    def _wanted_locked(self) -> bool:
        """Whether a connect counted in ``connecting`` is still needed. Locked."""
        inv = self._inv
        if inv.state is not OPEN:
            return False
        size = inv.size()
        if size > inv.max_size:
            return False
        return size <= inv.min_size or bool(inv.waiters and not inv.idle)

    def connect(self, token: int | None, probe: bool) -> None:
        """Make one member and hand it to a waiter or the idle list.

        A planned connect (``token`` None) is counted in ``connecting`` already; a retry (``token``) is counted
        while it waits, unless a probe took its slot meanwhile; a lease's probe (``probe``) counts itself here.
        """
        inv = self._inv
        with inv.lock:
            # Decide: is this attempt still wanted, and which member index does it make?
            if probe:
                if self.breaker.state is not BreakerState.HALF_OPEN or inv.state is not OPEN:
                    return  # the probe was dropped meanwhile (see maintenance), or the pool closed
                if self._retries:
                    self._retries.pop()  # the waiting retry's slot becomes the probe's
                else:
                    inv.connecting += 1
            elif token is not None:
                if token not in self._retries:
                    return  # its slot went to a probe, or the pool closed
                self._retries.discard(token)
            if not self._wanted_locked():
                inv.connecting -= 1
                self.breaker.probe_dropped()
                inv.changed.notify_all()
                index = None
            else:
                if token is not None:
                    self.breaker.retry_starting()  # while open, a background retry is the probe
                index = inv.indexes.take()
        self.report_breaker()
        if index is None:
            return
        started = monotonic()
        context = _member_index.set(index)
        try:
            raw = self._connector.connect()
            if raw is None:  # a factory that forgot its return: say so, instead of leasing None around
                raise TypeError(f"{self._connector.description}: connect() returned None, not a client")
        except BaseException as error:  # noqa: B036 - a SystemExit from a connector is a failed attempt too
            with inv.lock:
                inv.indexes.free(index)
            self._failed(error, monotonic() - started)
            return
        finally:
            _member_index.reset(context)
        self._connected(raw, index, started)

    def _connected(self, raw: Any, index: int, started: float) -> None:
        inv = self._inv
        now = monotonic()
        client = raw
        if self._client_stats is not None:
            client = MonitoredClient(raw, name=self.name, sink=self._client_stats, **self._connector.monitor_options())
        lifetime = self._options.max_lifetime * (1.0 - random.uniform(0.0, 0.1))  # jittered: no reconnect storms
        member = Member(client, raw, index, now, now + lifetime)
        with inv.lock:
            recovered = not self.breaker.closed or self._outage_since is not None
            self.failures = 0
            self.last_error = None
            self._outage_since = None
            self.breaker.connect_succeeded()
            inv.stats.connected(now - started)
            inv.connecting -= 1
            # Decide: keep it, unless the pool closed or shrank below its size while we connected.
            keep = inv.state is OPEN and inv.size() < inv.max_size
            if keep:
                inv.hand_over(member, now)
                count = self.plan_locked()
            else:
                inv.retire(member, "closed" if inv.state is not OPEN else "resize")
                count = 0
            inv.changed.notify_all()
        self.report_breaker()
        if not keep:
            self.close_retired()
            return
        if recovered:
            self._log.info("pool %r: connected to %s again", self.name, self._connector.description)
        else:
            self._log.debug("pool %r: new client connected in %.3fs", self.name, now - started)
        self.start(count)
        self._events.emit("connect", duration=now - started)

    def _failed(self, error: BaseException, duration: float) -> None:
        """Count a failed connect, fail the waiters that cannot be served, and retry after a backoff if needed."""
        inv = self._inv
        wrapped = self._classify(error)
        rejected = isinstance(wrapped, ConnectRejected)
        now = monotonic()
        with inv.lock:
            inv.stats.connect_errors += 1
            self.failures += 1
            failures = self.failures
            self.last_error = wrapped
            outage_started = self._outage_since is None
            if outage_started:
                self._outage_since = now - duration
            if rejected:
                # Retrying cannot fix this: every waiter learns it now instead of at its timeout.
                inv.fail_waiters(lambda: _copy_rejection(wrapped))
                self.breaker.probe_failed(now)
            elif self.breaker.connect_failed(failures, now):
                inv.stats.breaker_rejections += inv.fail_waiters(self.unavailable_error_locked)
            # Decide: retry after a backoff? While the breaker is open, one retry loop is enough.
            retry = self._wanted_locked() and (self.breaker.closed or not self._retries)
            if retry:
                delay = self._backoff.delay(failures)
                if inv.waiters:
                    delay = min(delay, _WAITED_RETRY_CAP)
                self._next_token += 1
                token = self._next_token
                self._retries.add(token)
            else:
                inv.connecting -= 1
            inv.changed.notify_all()
        self.report_breaker()
        self._log.warning(
            "pool %r: connect to %s failed (attempt %d, %.3fs): %s%s",
            self.name, self._connector.description, failures, duration, describe_error(error),
            f"; retrying in {delay:.2f}s" if retry else "",
        )
        if retry and not self._scheduler.call_later(delay, weak_task(self, "connect", token, False)):
            with inv.lock:
                if token in self._retries:
                    self._retries.discard(token)
                    inv.connecting -= 1
        if outage_started and self._options.reconnect_failed is not None and self._options.reconnect_timeout < inf:
            outage = self._outage_since
            self._scheduler.call_later(
                self._options.reconnect_timeout, weak_task(self, "_outage_deadline", outage)
            )
        self._events.emit("connect_failed", error=wrapped, attempt=failures, duration=duration)

    def _outage_deadline(self, began: float | None) -> None:
        """``reconnect_timeout`` after an outage began: if that outage is still going on, call reconnect_failed."""
        with self._inv.lock:
            still_down = began is not None and self._outage_since == began and self._inv.state is OPEN
        callback = self._options.reconnect_failed
        pool = self._pool()
        if not still_down or callback is None or pool is None:
            return
        self._log.error(
            "pool %r: no connection to %s for %.3gs (reconnect_timeout); still trying",
            self.name, self._connector.description, self._options.reconnect_timeout,
        )
        try:
            callback(pool)
        except Exception:
            self._log.exception("pool %r: reconnect_failed callback failed", self.name)

    def _classify(self, error: BaseException) -> BaseException:
        """Wrap a connect error that retrying cannot fix as AuthError or ConnectRejected; return others as they are."""
        if isinstance(error, ConnectRejected):
            return _copy_rejection(error)
        connector = self._connector
        try:
            if connector.is_auth_error(error):
                wrapped: ConnectRejected = AuthError(
                    f"pool {self.name!r}: {connector.description} refused the credentials ({type(error).__name__})"
                )
            elif connector.is_permanent(error):
                wrapped = ConnectRejected(
                    f"pool {self.name!r}: {connector.description} rejected the connection ({describe_error(error)})"
                )
            else:
                return error
        except Exception:  # a connector's classifier must not turn a failed connect into a lost slot
            self._log.exception("pool %r: classifying a connect error failed", self.name)
            return error
        wrapped.__cause__ = error
        return wrapped

    def unavailable_error_locked(self) -> PoolUnavailable:
        """The error of a lease failed fast by the open breaker, with the last connect error as its cause. Locked."""
        error = PoolUnavailable(
            f"pool {self.name!r}: circuit breaker open after {self.failures} failed connects to "
            f"{self._connector.description}; failing fast ({self._inv.describe()})"
        )
        error.__cause__ = self.last_error
        return error

    def report_breaker(self) -> None:
        """Log and emit the breaker's state changes, in order, outside the lock."""
        with self._inv.lock:
            changes = self.breaker.take_changes()
        for state in changes:
            log = self._log.warning if state is BreakerState.OPEN else self._log.info
            log("pool %r: circuit breaker %s", self.name, state.value.replace("_", "-"))
            self._events.emit("breaker", state=state.value)

    def cancel_retries_locked(self) -> None:
        """The pool is closing: retries waiting out a backoff will never run. Locked."""
        self._inv.connecting -= len(self._retries)
        self._retries.clear()

    def reset_after_fork(self) -> None:
        """In a forked child: none of the parent's connects, retries or outages exist here."""
        self.breaker.reset()
        self.failures = 0
        self.last_error = None
        self._outage_since = None
        self._retries.clear()

    # -- closes (on workers, or in the thread closing the pool) -----------------------------------------------------

    def close_retired(self) -> None:
        """Close every retired member, one at a time; each counts against ``max_size`` until its close returns.

        Runs in whichever thread retired them (a return, a lease that found expired members, maintenance, close).
        A close that fails is logged. An interrupt (KeyboardInterrupt...) in the middle propagates after the member
        being closed is accounted for; members not reached yet stay retired, for the next call to close.
        """
        inv = self._inv
        while True:
            with inv.lock:
                if not inv.retiring:
                    return
                member = inv.retiring.pop()
                inv.closing += 1
            try:
                self._connector.close(member.raw)
            except Exception as error:
                self._log.warning("pool %r: error closing a client: %s", self.name, describe_error(error))
            finally:
                with inv.lock:
                    # Decide: the slot is free now; a caller may be waiting for it to connect.
                    inv.closing -= 1
                    inv.indexes.free(member.index)
                    count = self.plan_locked()
                    inv.changed.notify_all()
            self.start(count)
            self._log.debug("pool %r: closed a client (%s)", self.name, member.retire_reason)
            self._events.emit("discard", reason=member.retire_reason)


def close_abandoned(connector: Connector[Any], name: str) -> Callable[[Any], None]:
    """Return a function that closes a member given up on (its check overran) once its check ends at last."""

    def close(raw: Any) -> None:
        try:
            connector.close(raw)
        except BaseException as error:  # noqa: B036 - on a check thread of its own: nothing to propagate to
            logger.warning("pool %r: error closing an abandoned client: %s", name, describe_error(error))

    return close


def _copy_rejection(error: BaseException) -> BaseException:
    """A fresh instance of a ConnectRejected for each raise (a traceback belongs to one raise), same cause."""
    copy = type(error)(*error.args)
    copy.__cause__ = error.__cause__ or error
    return copy


def describe_error(error: BaseException) -> str:
    """Describe an error for a log line: its type and first line (connectors keep secrets out of messages)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
