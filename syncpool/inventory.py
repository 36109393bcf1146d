"""What a pool holds, and the one lock that guards all of it.

Every part of a pool (the lease path in ``pool.py``, growth, maintenance, health checks) reads and changes the same
``Inventory`` under its ``lock``. The lock guards decisions only: no connector call, callback or other blocking
call is ever made while it is held. See ``docs/design.md`` for the parts and the flow of a lease.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from .members import Member, MemberIndexes
from .pool_stats import PoolStats
from .states import PoolState
from .waiters import Waiter

__all__ = ["Inventory"]


class Inventory:
    """The members of one pool by where they are, the callers waiting for one, and the lock over them.

    Where a member can be: ``idle`` (a list, most recently returned last), ``leased`` (by key), out for a health check
    (``checking``), or ``retiring`` (discarded, waiting for its close) and then being closed (counted in
    ``closing``). Connects under way, or waiting out a backoff, are counted in ``connecting``.

    Invariants, whenever the lock is free:

    - ``size()``, which counts all of the above, is at most ``max_size``: growth never starts a connect that would
      pass it. Only [`Pool.resize`][] can leave more (``shrunk`` is then set, and members that come
      back are retired until the pool fits).
    - A waiter is in ``waiters`` exactly until it is handed a member or failed; a handed member is already in
      ``leased``.
    - ``waiters`` is non-empty only while ``idle`` is empty, except for the moment between a member becoming idle
      and the next decision: every decision that adds to ``idle`` hands to waiters first (``hand_over``).
    """

    __slots__ = (
        "lock", "changed", "state", "idle", "leased", "waiters", "connecting", "checking", "retiring", "closing",
        "min_size", "max_size", "max_waiting", "shrunk", "indexes", "stats", "take_at",
    )

    def __init__(
        self, min_size: int, max_size: int, max_waiting: int, stats: PoolStats, idle_order: str = "lifo"
    ) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified when members appear, fail to appear or come back
        self.state = PoolState.NEW
        self.idle: list[Member] = []
        self.leased: dict[int, Member] = {}
        self.waiters: deque[Waiter] = deque()
        self.connecting = 0
        self.checking: set[Member] = set()
        self.retiring: list[Member] = []
        self.closing = 0
        self.min_size = min_size
        self.max_size = max_size
        self.max_waiting = max_waiting
        self.shrunk = False
        self.indexes = MemberIndexes()
        self.stats = stats
        #: Where a lease takes from the idle list: -1, its end (LIFO: the most recently returned member, which keeps a
        #: few members hot and lets the others age out), or 0, its start (FIFO: every member in turn).
        self.take_at = 0 if idle_order == "fifo" else -1

    def size(self) -> int:
        """Members that exist or are being made or closed: what counts against ``max_size``. Under the lock."""
        return (
            len(self.idle) + len(self.leased) + self.connecting + len(self.checking) + len(self.retiring) + self.closing
        )

    def in_use(self) -> int:
        """Members out of the idle list and alive: leased or being checked. Under the lock."""
        return len(self.leased) + len(self.checking)

    def fits(self) -> bool:
        """Whether a member that is not counted right now may stay (False after a shrink, until it fits). Locked."""
        return not self.shrunk or self.size() < self.max_size

    def hand_over(self, member: Member, now: float) -> None:
        """Give a member that is not counted anywhere to the oldest waiter, or put it on top of the idle list.

        Under the lock. The member is leased on the waiter's behalf before the waiter is taken off the queue and
        woken: an exception between two of these steps leaves a waiter that finds its member when it wakes or times
        out, and is skipped here if it is still queued; never a member in ``leased`` that nobody owns.
        """
        member.last_used = now
        waiters = self.waiters
        while waiters and waiters[0].member is not None:
            del waiters[0]  # served by a hand-off that an exception cut short before it took the waiter off
        if not waiters:
            self.idle.append(member)
            return
        waiter = waiters[0]
        member.leased_at = now
        member.leases += 1
        member.leak_reported = False
        self.leased[member.key] = member
        waiter.member = member
        del waiters[0]
        # Counted here (the contended path's hot spot), as PoolStats counts the other events.
        waited = now - waiter.since if now > waiter.since else 0.0
        stats = self.stats
        stats.leases += 1
        stats.waited += 1
        stats.wait_seconds += waited
        stats.wait_times.append(waited)
        waiter.wakeup.release()

    def take_back(self, member: Member) -> bool:
        """Remove ``member`` from ``leased`` if it is leased; return whether it was. Under the lock."""
        if self.leased.get(member.key) is member:
            del self.leased[member.key]
            return True
        return False

    def retire(self, member: Member, reason: str) -> None:
        """Queue a member that is not counted anywhere else for closing, as discarded for ``reason``. Locked.

        The close itself runs later, outside the lock (see ``Grower.close_retired``); until it ends the member still
        counts against ``max_size``.
        """
        member.retire_reason = reason
        self.retiring.append(member)
        self.stats.discarded(reason)

    def fail_waiters(self, make_error: Any) -> int:
        """Take every waiter off the queue and wake each with ``make_error()``; return how many. Under the lock."""
        waiters = self.waiters
        count = len(waiters)
        while waiters:
            waiter = waiters[0]
            del waiters[0]
            waiter.fail(make_error())  # one instance each: a traceback belongs to one raise
        return count

    def remove_waiter(self, waiter: Waiter) -> bool:
        """Take ``waiter`` off the queue if it is still there; return whether it was. Under the lock."""
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return False
        return True

    def describe(self) -> str:
        """The counts for a log line or an error message. Under the lock."""
        closing = len(self.retiring) + self.closing
        return (
            f"size={self.size() - closing} idle={len(self.idle)} in_use={self.in_use()} "
            f"connecting={self.connecting}{f' closing={closing}' if closing else ''} "
            f"waiting={len(self.waiters)} max_size={self.max_size}"
        )

    def reset_after_fork(self) -> list[Member]:
        """In a forked child: forget every member and waiter of the parent; return the members it held."""
        inherited = [*self.idle, *self.leased.values(), *self.checking, *self.retiring]
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.idle = []
        self.leased = {}
        self.waiters = deque()  # their threads do not exist here
        self.connecting = self.closing = 0  # nor do the parent's connects, checks and closes
        self.checking = set()
        self.retiring = []
        self.indexes.clear()
        return inherited
