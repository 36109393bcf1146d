"""A watchdog process that stops a test server when the process that started it dies in any way.

A test server (PostgreSQL, PgBouncer) must not outlive the test run that started it, even when that process is
killed (SIGKILL, a pytest-xdist worker ending abruptly) and no ``atexit`` hook runs. A ``Watchdog`` starts a tiny
Python process, in its own session (Ctrl-C does not reach it), that reads a pipe from us. When we die, the pipe
closes and it sends the server ``stop_signal``, waits up to ``grace`` seconds, kills it, and deletes ``directory``.
A clean stop writes "keep" first, and the watchdog just exits.
"""

from __future__ import annotations

import signal
import subprocess
import sys

__all__ = ["Watchdog"]

_SCRIPT = """
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pid, stop_signal, grace, directory = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
if sys.stdin.readline().strip() != "keep":
    try:
        os.kill(pid, stop_signal)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
"""


class Watchdog:
    """Stops process ``pid`` (and deletes ``directory``, if given) unless ``dismiss()`` is called first."""

    def __init__(self, pid: int, *, stop_signal: signal.Signals, grace: float, directory: str = "") -> None:
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _SCRIPT, str(pid), str(int(stop_signal)), str(grace), directory],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )

    def dismiss(self) -> None:
        """The server was stopped cleanly: let the watchdog exit without touching anything. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write(b"keep\n")
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill the watchdog itself (its server then keeps running): for tests of the watchdog."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
