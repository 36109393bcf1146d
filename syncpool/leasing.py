"""The lease path: how a caller gets a client and gives it back.

[`Lease`][] is the context manager of ``pool.connection()`` and the record of one lease while it is being made;
``LeasePath`` is the part of [`Pool`][] that leases, queues, waits, checks, gives back and undoes.
The common case, an idle member taken at once and given back, is written out in ``Lease.__enter__`` and
``Lease.__exit__``: a lease+return costs a few microseconds, most of them the Python calls themselves, so the path
makes as few as it can. ``docs/design.md`` walks through it.

Interruptions: a caller can be interrupted at any bytecode (a signal's KeyboardInterrupt, an asynchronous exception).
The lease records what the pool did on its behalf (``member``, ``waiter``, ``check``) in the same lock hold that did
it, before anything else can happen, so whatever exception leaves ``__enter__`` or [`Pool.getconn`][], ``_undo``
finds what to give back, which queue entry to remove, or which check to abandon. On the way back, the lease knows
the number of its lease of the member (``Member.leases`` counts them): an interrupt discards the member only while
that lease still holds it, never once it has been handed to someone else.
"""

from __future__ import annotations

import logging
import math
import sys
from time import monotonic, sleep
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import PoolClosed, PoolError, PoolTimeout, TooManyWaiters
from .growth import describe_error
from .members import Member
from .pool_stats import FOLD_EVERY
from .states import BreakerState, PoolState
from .waiters import Waiter

if TYPE_CHECKING:
    from collections.abc import Callable

    from .checks import Check
    from .events import Listeners
    from .growth import Grower
    from .inventory import Inventory
    from .maintenance import Maintenance
    from .options import PoolOptions
    from .pool_stats import PoolStats

__all__ = ["Lease", "LeasePath", "PutBack"]


T = TypeVar("T")

NEW, OPEN = PoolState.NEW, PoolState.OPEN


class Lease(Generic[T]):
    """The context manager returned by [`Pool.connection`][]: leases on enter, always gives back on exit.

    Entering leases a client (waiting up to the ``timeout`` given to [`connection`][Pool.connection]). Leaving gives
    it back and lets any exception of the block propagate: after a clean exit or an ``Exception``,
    [`Connector.release`][] sees how the block ended and the client goes back to the pool (or is replaced if it
    is broken); after a ``BaseException`` that is not an ``Exception`` (KeyboardInterrupt, SystemExit, an
    asynchronous timeout) the client may have been cut off mid-exchange, so it is closed and replaced instead. A
    lease may be entered again once it has been left, not while it is entered.

    [`Pool.getconn`][] leases through a ``Lease`` too, and [`Pool.putconn`][] gives back by the same path
    (without ``release``): the ``lease`` and ``return`` events of [`Pool.add_listener`][] see every lease.
    """

    #: Whether [`Connector.release`][] ends the lease (a ``with`` block), or ``is_broken`` and ``reset`` (putconn).
    _block = True

    # What the pool does on this caller's behalf, each set in the lock hold that does it. The class holds the
    # defaults, so that a lease served at once pays only for ``member``.
    member: Member | None  # leased on our behalf
    leased_as: int = 0  # the number of our lease of it (Member.leases): it is ours while they are equal
    waiter: Waiter | None = None  # our place in the wait queue, while we wait
    check: Check | None = None  # the check on lease under way, while it runs

    def __init__(self, pool: LeasePath, timeout: float | None = None) -> None:
        self._pool = pool
        self._timeout = timeout
        self.member = None

    def __enter__(self) -> T:
        if self.member is not None:
            raise RuntimeError("this lease is already entered: call pool.connection() again for a second client")
        pool = self._pool
        try:
            inv = pool._inv
            with inv.lock:
                idle = inv.idle
                if idle and not inv.waiters:
                    take = inv.take_at
                    member = idle[take]
                    now = monotonic()
                    if member.expires > now and now - member.last_used < pool._check_after_idle:
                        # Decide: the next idle member is fresh and nobody is queued ahead: it is ours. This lease
                        # learns it first, and it is leased before it leaves the idle list.
                        self.member = member
                        member.leased_at = now
                        member.leases += 1
                        self.leased_as = member.leases
                        member.leak_reported = False
                        inv.leased[member.key] = member
                        del idle[take]
                        pool._stats.leases += 1
                        if pool._leak_threshold is None and not pool._events.leases_watched:
                            return member.client  # type: ignore[no-any-return]
                        waited: float | None = 0.0
                    else:
                        waited = None
                else:
                    waited = None
            if waited is None:
                member, waited = pool._acquire_slow(self, pool.timeout if self._timeout is None else self._timeout)
            if pool._leak_threshold is not None:
                member.lease_frames = _capture_frames(sys._getframe(1))
            if pool._events.leases_watched:
                pool._events.emit("lease", wait=waited)
            return member.client  # type: ignore[no-any-return]
        except BaseException:
            pool._undo(self)  # whatever was leased or queued on our behalf before the exception
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Give the member back (the whole return path: the common case costs no other Python call)."""
        member = self.member
        if member is None:
            raise RuntimeError("lease was not entered: nothing to return")
        pool = self._pool
        inv = pool._inv
        number = self.leased_as
        reason: str | None = None
        try:
            if member.leases != number:
                # Given back by hand inside the block, and leased by someone else since: never touch their client.
                # (Given back and still idle: release() finds nothing to do, and the check below raises.)
                raise pool._not_leased(member.client)
            if exc is not None and not isinstance(exc, Exception):
                pool._discard_leased(member, "interrupted", number)  # cut off mid-exchange, maybe: never reused
                return
            if self._block and pool._release_hook is not None:
                try:
                    if not pool._release_hook(member.raw, exc):
                        reason = "broken"
                except Exception:
                    pool._discard_leased(member, "reset_failed", number)
                    raise
            elif pool._return_checks:  # what the default release() does, without its frame
                try:
                    if pool._is_broken(member.raw):
                        reason = "broken"
                    else:
                        pool._reset(member.raw)
                except Exception as failure:
                    reason = "reset_failed"
                    pool._log.warning(
                        "pool %r: discarding a client whose reset failed: %s", pool.name, describe_error(failure)
                    )
            now = monotonic()
            with inv.lock:
                if member.leases != number or inv.leased.get(member.key) is not member:
                    raise pool._not_leased(member.client)  # given back already (by hand, or by another thread)
                stats = pool._stats
                used = now - member.leased_at
                stats.use_times.append(used)
                full = stats.take_pending() if len(stats.use_times) >= FOLD_EVERY else None
                del inv.leased[member.key]
                # Decide: to the oldest waiter, back on the idle list, or retired.
                if reason is None and inv.state is OPEN and member.expires > now and (not inv.shrunk or inv.fits()):
                    if inv.waiters:
                        inv.hand_over(member, now)
                    else:
                        member.last_used = now
                        inv.idle.append(member)
                else:
                    reason = reason or _retire_reason(inv, member, now)
                    inv.retire(member, reason)
                    if inv.state is not OPEN:
                        inv.changed.notify_all()  # close() may be waiting for this return
        except BaseException as error:
            if not isinstance(error, Exception):
                # Interrupted mid-return (in release, reset, or before the decision): the client's state is
                # unknown. Discard it if this lease still holds it, so that no slot is lost; then go on.
                pool._discard_leased(member, "interrupted", number)
            raise
        finally:
            self.member = None
        if full is not None:
            stats.fold(full)
        if pool._events.leases_watched:
            pool._events.emit("return", use=used)
        if reason is not None:
            pool._grower.close_retired()


class PutBack(Lease[Any]):
    """How [`Pool.putconn`][] gives a member back: the return path of a ``with`` block, but with ``is_broken`` and
    ``reset`` (a rollback) instead of ``Connector.release``, as getconn/putconn always did."""

    _block = False


def _retire_reason(inv: Inventory, member: Member, now: float) -> str:
    """Why a healthy member that comes back cannot stay. Locked."""
    if inv.state is not OPEN:
        return "closed"
    if member.expires <= now:
        return "reload" if member.expires == -math.inf else "lifetime"
    return "resize"


class LeasePath:
    """The lease path of [`Pool`][] (a base class of it): everything between a caller and a member.

    Reads the pool's parts, which [`Pool`][] sets up.
    """

    name: str
    _log: logging.Logger
    _inv: Inventory
    _stats: PoolStats
    _grower: Grower
    _maintenance: Maintenance
    _events: Listeners
    _options: PoolOptions
    _check_after_idle: float
    _leak_threshold: float | None
    _release_hook: Callable[[Any, BaseException | None], bool] | None
    _return_checks: bool
    _is_broken: Callable[[Any], bool]
    _reset: Callable[[Any], None]

    @property
    def timeout(self) -> float:
        """Default lease timeout in seconds."""
        return self._options.timeout

    def _acquire_slow(self, lease: Lease[Any], timeout: float) -> tuple[Member, float]:
        """The lease path when the newest idle member could not simply be taken: expiry, checks, queueing."""
        deadline = monotonic() + timeout
        failed_checks = 0
        while True:
            member = self._lease_or_queue(lease)
            waited = 0.0
            if member is None:
                assert lease.waiter is not None
                since = lease.waiter.since
                member = self._wait(lease, lease.waiter, deadline - monotonic())
                now = monotonic()
                waited = now - since
                if now - member.last_used < self._check_after_idle:
                    return member, waited
            elif monotonic() - member.last_used < self._check_after_idle:
                return member, waited
            # Idle long enough to deserve a check before use (check_after_idle; with 0, every member handed out,
            # new and handed-over ones too), bounded like any check: by health_check_timeout, not by what is left
            # of the lease's timeout, which would give up healthy members for want of time.
            lease.check = check = self._maintenance.new_check(member)
            verdict = check.run(self._options.health_check_timeout)
            lease.check = None
            if verdict is None:
                return member, waited
            self._discard_checked(lease, member, verdict)
            failed_checks += 1
            if failed_checks > 1:
                # Checks keep failing: the server is likely down. Back off as reconnects do rather than churn through
                # connects and checks; the first retry is immediate (the next member may well be fine).
                sleep(max(0.0, min(self._options.backoff.delay(failed_checks - 1), deadline - monotonic())))

    def _lease_or_queue(self, lease: Lease[Any]) -> Member | None:
        """Lease the next fresh idle member into ``lease`` and return it, or queue the caller (None); or fail fast.

        Raises:
            PoolClosed, TooManyWaiters, PoolUnavailable: As documented on [`getconn`][Pool.getconn].
        """
        inv = self._inv
        grower = self._grower
        now = monotonic()
        retired = probe = grow = False
        leased: Member | None = None
        with inv.lock:
            # Decide: serve the next fresh idle member unless callers are queued ahead; else queue or fail fast.
            idle = inv.idle
            take = inv.take_at
            while idle and not inv.waiters:
                member = idle[take]
                if member.expires <= now:
                    del idle[take]
                    inv.retire(member, "lifetime")
                    retired = True
                    continue
                # The same steps as the common case in Lease.__enter__ (written out there, for speed).
                lease.member = member
                member.leased_at = now
                member.leases += 1
                lease.leased_as = member.leases
                member.leak_reported = False
                inv.leased[member.key] = member
                del idle[take]
                self._stats.leases += 1
                leased = member
                break
            else:
                if inv.state is not OPEN:
                    raise PoolClosed(f"pool {self.name!r} is closed" if inv.state is not NEW else
                                     f"pool {self.name!r} is not open yet: call open()")
                if inv.max_waiting and len(inv.waiters) >= inv.max_waiting:
                    self._stats.too_many_waiters += 1
                    raise TooManyWaiters(
                        f"pool {self.name!r}: {len(inv.waiters)} callers already waiting "
                        f"(max_waiting={inv.max_waiting})"
                    )
                room = inv.size() < inv.max_size
                if room and grower.breaker.state is not BreakerState.CLOSED:
                    # Decide: fail fast, unless this caller may start the one probe and wait for its outcome.
                    # (With every slot taken, connects are not the question: wait for a return as usual.)
                    if not grower.breaker.try_probe(now):
                        self._stats.breaker_rejections += 1
                        raise grower.unavailable_error_locked()
                    probe = True
                lease.waiter = waiter = Waiter(now)
                inv.waiters.append(waiter)
                grow = room and inv.connecting == 0
        if retired:
            grower.close_retired()
        if probe:
            grower.report_breaker()
            grower.wake_probe()
        elif grow:
            grower.wake()
        return leased

    def _wait(self, lease: Lease[Any], waiter: Waiter, timeout: float) -> Member:
        """Sleep until the queued caller of ``lease`` is handed a member (also put in ``lease.member``), or raise."""
        if not waiter.wait(timeout):
            inv = self._inv
            timed_out: PoolTimeout | None = None
            with inv.lock:
                # Decide: a member handed over since the timeout fired is ours; otherwise leave the queue.
                if waiter.member is None and waiter.error is None:
                    inv.remove_waiter(waiter)
                    lease.waiter = None
                    waited = monotonic() - waiter.since
                    self._stats.timed_out(waited)
                    timed_out = PoolTimeout(
                        f"pool {self.name!r}: no client available after waiting {waited:.3f}s "
                        f"(timeout={max(timeout, 0.0):.3g}s; {inv.describe()})"
                    )
                    timed_out.__cause__ = self._grower.last_error
            if timed_out is not None:
                self._events.emit("timeout", waited=waited)
                raise timed_out
        if waiter.error is not None:
            lease.waiter = None
            raise waiter.error
        member: Member = waiter.member
        lease.leased_as = member.leases  # handed over and leased on our behalf: nobody else touches it now
        lease.member = member
        lease.waiter = None
        return member

    def _undo(self, lease: Lease[Any]) -> None:
        """A caller is leaving by an exception: give back what was leased on its behalf, or leave the queue.

        A member it never got to use goes straight back to the pool. One whose check on lease was under way is
        discarded: the check was abandoned and its thread closes the client (see ``checks.py``).
        """
        inv = self._inv
        retired = False
        with inv.lock:
            waiter, lease.waiter = lease.waiter, None
            member, lease.member = lease.member, None
            check, lease.check = lease.check, None
            if waiter is not None:
                if waiter.member is not None:
                    member = waiter.member
                else:
                    inv.remove_waiter(waiter)
            if member is not None and inv.take_back(member):
                now = monotonic()
                if check is not None and check.abandoned:
                    inv.stats.discarded("interrupted")
                    inv.indexes.free(member.index)
                    self._grower.wake()
                elif check is None and inv.state is OPEN and member.expires > now and inv.fits():
                    inv.hand_over(member, now)
                else:
                    inv.retire(member, "interrupted" if check is not None else "closed")
                    retired = True
                inv.changed.notify_all()
        if retired:
            self._grower.close_retired()

    def _discard_checked(self, lease: Lease[Any], member: Member, verdict: BaseException) -> None:
        """A member failed its check on lease: discard it and clear the lease for another try."""
        inv = self._inv
        with inv.lock:
            lease.member = None
            if inv.take_back(member):
                inv.stats.health_failed += 1
                self._maintenance.discard_locked(member, verdict, monotonic())
        self._maintenance.report_check_failure(verdict, "discarding a client that failed its check on lease")
        self._grower.close_retired()
        self._grower.wake()

    def _not_leased(self, client: object) -> PoolError:
        return PoolError(
            f"pool {self.name!r}: cannot return a {type(client).__name__} that is not leased from this pool "
            "(returned twice, or leased from another pool)"
        )

    def _discard_leased(self, member: Member, reason: str, number: int) -> None:
        """Discard a member without talking to it (its lease was interrupted, or its release failed), if the lease
        numbered ``number`` still holds it: once given back, it may be someone else's."""
        inv = self._inv
        with inv.lock:
            if member.leases == number and inv.take_back(member):
                inv.retire(member, reason)
                inv.changed.notify_all()
        self._grower.close_retired()


def _capture_frames(frame: FrameType | None) -> list[tuple[str, int, str]]:
    """Cheaply record where a lease was taken (formatting is deferred until a leak is reported)."""
    frames: list[tuple[str, int, str]] = []
    while frame is not None and len(frames) < 32:
        code = frame.f_code
        frames.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    return frames

