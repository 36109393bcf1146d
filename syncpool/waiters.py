"""Callers queued for a client, and the explicit hand-off that serves them first come, first served."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Waiter"]


class Waiter:
    """A caller queued for a client.

    The hand-off is explicit: whoever gives a member to a waiter does so under the pool lock, leases it on the
    waiter's behalf, sets ``member``, takes the waiter off the queue and only then wakes it by releasing ``wakeup``
    (``Inventory.hand_over``). A waiter whose wait ended without a wake-up (timeout, interrupt) takes the pool lock
    before giving up, so it either finds the member handed to it meanwhile, or removes itself from the queue: a
    member is never handed to a waiter that has gone. Every hand-off wakes its waiter at once; nothing depends on a
    woken thread running some pass-on code.
    """

    __slots__ = ("wakeup", "member", "error", "since")

    def __init__(self, since: float) -> None:
        self.wakeup = threading.Lock()
        self.wakeup.acquire()  # released exactly once: by the hand-off, or by fail()
        self.member: Any = None  # the Member handed to this waiter
        self.error: BaseException | None = None  # why this waiter was failed instead
        self.since = since  # when it joined the queue (monotonic seconds)

    def fail(self, error: BaseException) -> None:
        """Wake the waiter with ``error`` to raise. Under the pool lock, after taking it off the queue."""
        self.error = error
        self.wakeup.release()

    def wait(self, timeout: float) -> bool:
        """Sleep until handed a member or failed, at most ``timeout`` seconds; True if woken. Without the lock."""
        return self.wakeup.acquire(True, timeout) if timeout > 0 else False
