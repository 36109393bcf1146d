"""A pool's periodic work: retire expired and long-idle members, report leaks, refill, and health passes.

Both tasks run on the pool's workers, re-armed by the scheduler whatever they do (see ``scheduler.py``):

- ``Maintenance.tidy``, every ``PoolOptions.maintenance_interval()``: retire idle members past their lifetime
  or idle above ``min_size`` for ``max_idle``, report leases held past ``leak_threshold``, and start the connects
  the pool lacks (a refill after an outage, a request a lease could not make).
- ``Maintenance.health_pass``, every ``health_check_interval``: take idle members out one at a time (least
  recently used first), check each with a deadline outside the lock (see ``checks.py``), and put it back or
  replace it. At most one pass runs at a time.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

from .checks import OVERRAN, Check
from .connector import Connector
from .events import Listeners
from .growth import Grower, close_abandoned, describe_error
from .inventory import Inventory
from .members import Member
from .options import PoolOptions
from .states import BreakerState, PoolState

__all__ = ["Maintenance", "format_frames"]


OPEN = PoolState.OPEN


class Maintenance:
    """The periodic tasks of one pool (see the module docstring)."""

    def __init__(
        self,
        name: str,
        log: logging.Logger,
        inventory: Inventory,
        grower: Grower,
        connector: Connector[Any],
        options: PoolOptions,
        events: Listeners,
    ) -> None:
        self.name = name
        self._log = log
        self._inv = inventory
        self._grower = grower
        self._connector = connector
        self._options = options
        self._events = events
        self._pass_running = False
        self._close_late = close_abandoned(connector, name)
        self._inline_checks = connector.check_timeout is not None

    def tidy(self) -> None:
        """Retire expired and long-idle members, report leaks, refill to what the pool needs."""
        inv = self._inv
        options = self._options
        now = monotonic()
        leaks: list[tuple[Member, float]] = []
        with inv.lock:
            if inv.state is not OPEN:
                return
            # Decide: which idle members to retire. The bottom of the stack holds the least recently used ones.
            spare = len(inv.idle) + inv.in_use() - inv.min_size
            keep: list[Member] = []
            for member in inv.idle:
                if member.expires <= now:
                    inv.retire(member, "lifetime")
                    spare -= 1
                elif spare > 0 and now - member.last_used >= options.max_idle:
                    inv.retire(member, "idle")
                    spare -= 1
                else:
                    keep.append(member)
            inv.idle = keep
            if options.leak_threshold is not None:
                for member in inv.leased.values():
                    held = now - member.leased_at
                    if not member.leak_reported and held >= options.leak_threshold:
                        member.leak_reported = True
                        inv.stats.leaks += 1
                        leaks.append((member, held))
            if inv.shrunk and inv.size() <= inv.max_size:
                inv.shrunk = False
            if self._grower.breaker.state is BreakerState.HALF_OPEN and inv.connecting == 0:
                self._grower.breaker.probe_dropped()  # a probe was asked for and never ran: let another lease try
            count = self._grower.plan_locked()
        self._grower.start(count)
        self._grower.close_retired()
        self._grower.report_breaker()
        for member, held in leaks:
            self._log.warning(
                "pool %r: a client has been leased for %.1fs (leak_threshold=%.3gs); possible leak, leased at:\n%s",
                self.name, held, options.leak_threshold, format_frames(member.lease_frames or []),
            )

    def health_pass(self) -> None:
        """The periodic health pass; skipped while the previous one still runs."""
        with self._inv.lock:
            if self._inv.state is not OPEN or self._pass_running:
                return
            self._pass_running = True
        try:
            self.check_idle()
        finally:
            with self._inv.lock:
                self._pass_running = False

    def check_idle(self) -> dict[str, int]:
        """Check every idle member now, one at a time, and replace those that fail; return the counts."""
        inv = self._inv
        outcome = {"ok": 0, "failed": 0}
        with inv.lock:
            if inv.state is not OPEN:
                return outcome
            candidates = list(inv.idle)  # least recently used first
        for member in candidates:
            with inv.lock:
                # Decide: take it out for a check only if it is still idle.
                if inv.state is not OPEN:
                    break
                try:
                    inv.idle.remove(member)  # members compare by identity
                except ValueError:
                    continue  # leased or retired since
                inv.checking.add(member)
            try:
                verdict = self.new_check(member).run(self._options.health_check_timeout)
            except BaseException as error:  # noqa: B036 - an inline check's SystemExit is a failed check here too
                verdict = error
            outcome["ok" if self._finish(member, verdict) else "failed"] += 1
        return outcome

    def new_check(self, member: Member) -> Check:
        """A check of ``member`` whose client is closed by the check's thread if the check is abandoned."""
        return Check(self._connector.check, member.raw, f"syncpool-{self.name}-check", self._close_late,
                     inline=self._inline_checks)

    def _finish(self, member: Member, verdict: BaseException | None) -> bool:
        """Put a checked member back (to a waiter, or at the bottom of the idle list), or replace it."""
        inv = self._inv
        now = monotonic()
        with inv.lock:
            inv.checking.discard(member)
            # Decide: back to the pool as its least recently used member, or out.
            if verdict is None and inv.state is OPEN and member.expires > now and inv.fits():
                inv.stats.health_ok += 1
                if inv.waiters:
                    inv.hand_over(member, now)
                else:
                    inv.idle.insert(0, member)
                return True
            if verdict is not None:
                inv.stats.health_failed += 1
            self.discard_locked(member, verdict, now)
            count = self._grower.plan_locked()
            inv.changed.notify_all()
        self.report_check_failure(verdict, "idle client failed its health check")
        self._grower.start(count)
        self._grower.close_retired()
        return False

    def discard_locked(self, member: Member, verdict: BaseException | None, now: float) -> None:
        """Discard a member that is not counted anywhere after its check. Locked.

        One whose check overran is abandoned: its slot and index are free now, and it is closed by its check's
        thread whenever the check ends (see ``checks.py``).
        """
        inv = self._inv
        if verdict is OVERRAN:
            inv.stats.discarded("check_failed")
            inv.indexes.free(member.index)
        elif verdict is not None:
            inv.retire(member, "check_failed")
        elif inv.state is not OPEN:
            inv.retire(member, "closed")
        else:
            inv.retire(member, "lifetime" if member.expires <= now else "resize")

    def report_check_failure(self, verdict: BaseException | None, what: str) -> None:
        """Log and emit a failed check (nothing for a pass), outside the lock."""
        if verdict is OVERRAN:
            self._log.warning(
                "pool %r: health check still running after %.3gs; the client is discarded",
                self.name, self._options.health_check_timeout,
            )
            self._events.emit("check_failed", error=None)
        elif verdict is not None:
            self._log.warning("pool %r: %s: %s", self.name, what, describe_error(verdict))
            self._events.emit("check_failed", error=verdict)


def format_frames(frames: list[tuple[str, int, str]]) -> str:
    """Format the frames a lease was taken from (see ``Pool``'s leak tracking) like a traceback."""
    return "".join(f'  File "{filename}", line {lineno}, in {name}\n' for filename, lineno, name in reversed(frames))
