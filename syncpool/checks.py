"""Health checks with a deadline: a check that hangs gives up its member instead of holding capacity for good.

A connector whose [`check`][Connector.check] enforces its own deadline says so with ``check_timeout``; its
checks run directly in the thread that needs them (``inline``). For any other, a ``Check`` runs
[`Connector.check`][] on a thread of its own (named ``syncpool-<pool>-check``) and waits at most ``timeout``
seconds. A check that returns or raises in time gives its verdict. One that overruns, or whose
waiting caller is interrupted, is abandoned: the caller frees the member's slot at once, and when the check finally
ends its thread closes the client (``on_late``), so nobody waits on it and nothing else can use it meanwhile. A
check blocked for ever (a blackholed server and a connector with no timeout of its own) leaves one daemon thread
and one client behind, never a slot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["OVERRAN", "Check"]

#: The verdict of a check that did not end within its deadline.
OVERRAN = TimeoutError("the check overran its deadline")


class Check:
    """One check of one client, run on its own thread with a deadline."""

    __slots__ = (
        "_check", "_raw", "_thread_name", "_on_late", "_inline", "_lock", "_done", "_finished", "abandoned", "_error",
    )

    def __init__(
        self,
        check: Callable[[Any], object],
        raw: Any,
        thread_name: str,
        on_late: Callable[[Any], None],
        *,
        inline: bool = False,
    ) -> None:
        self._check = check
        self._inline = inline
        self._raw = raw
        self._thread_name = thread_name
        self._on_late = on_late
        self._lock = threading.Lock()  # decides, once, between "finished in time" and "abandoned"
        self._done = threading.Event()
        self._finished = False
        #: True once the waiting side gave up: the check's thread then closes the client when the check ends.
        self.abandoned = False
        self._error: BaseException | None = None

    def run(self, timeout: float) -> BaseException | None:
        """Run the check, waiting at most ``timeout`` seconds. Without the pool lock.

        Returns:
            None if it passed, what it raised if it failed (any ``BaseException`` on its own thread is a failed
            check), or ``OVERRAN``.

        Raises:
            BaseException: Whatever interrupts the wait (KeyboardInterrupt...), after abandoning the check; for an
                inline check, whatever ``BaseException`` it raised (the calling thread was interrupted).
        """
        if self._inline:  # the connector bounds its own time: no thread, no wait
            try:
                self._check(self._raw)
            except Exception as error:
                return error
            return None
        try:
            threading.Thread(target=self._run, name=self._thread_name, daemon=True).start()
        except RuntimeError as error:  # no new thread (interpreter shutting down): a check that could not run
            return error
        try:
            self._done.wait(timeout)
        finally:
            with self._lock:
                if not self._finished:
                    self.abandoned = True
        return OVERRAN if self.abandoned else self._error

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._check(self._raw)
        except BaseException as failure:  # noqa: B036 - any way a check ends is a verdict
            error = failure
        with self._lock:
            self._error = error
            self._finished = True
            late = self.abandoned
        self._done.set()
        if late:
            self._on_late(self._raw)
