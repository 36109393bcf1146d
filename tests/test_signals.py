"""registry.install_signal_handlers(): the handler closes nothing itself, and the process ends as it would have.

Most tests run a small program in a subprocess, send it signals and read its exit status; every wait on it has a
timeout, so a handler that deadlocks fails the test instead of hanging it. Bounds are generous: they tell "ended
by itself" from "stuck until the grace ran out", and nothing about speed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from syncpool import Pool, registry
from tests.fakes import wait_until

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")

# Longer than any bound below: a handler that waits out its grace (what the registry did before) fails the test.
LONG_GRACE = 60.0
# How long a subprocess may take, from the signal, to end by itself (Python starts in well under a second).
ENDS_WITHIN = 20.0


@pytest.fixture(autouse=True)
def _empty_registry() -> Iterator[None]:
    registry.close_all(timeout=1.0)
    yield
    registry.close_all(timeout=1.0)


class Client:
    def close(self) -> None:
        pass


def _signal_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("syncpool-registry-signal")]


# -- in this process: the handler returns at once ------------------------------------------------------------------


@pytest.fixture
def sigusr2() -> Iterator[signal.Signals]:
    """SIGUSR2, with its handler restored after the test (a signal nothing else in the test run uses)."""
    saved = signal.getsignal(signal.SIGUSR2)
    try:
        yield signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, saved)
        registry._shutdown = None


def test_handler_returns_while_the_main_thread_holds_a_lease(sigusr2: signal.Signals) -> None:
    """The handler runs in the main thread, which holds a lease: it must not wait for that lease to come back."""
    pool = registry.register(Pool(Client, name="held", max_size=1))
    chained: list[tuple[int, str, int]] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        chained.append((signum, threading.current_thread().name, pool.stats()["in_use"]))

    signal.signal(sigusr2, previous)
    registry.install_signal_handlers(grace=LONG_GRACE, signals=[sigusr2])
    with pool.connection():
        started = time.monotonic()
        signal.raise_signal(sigusr2)
        returned_after = time.monotonic() - started
        # The previous handler ran from the signal handler, in the main thread, while the lease was still out.
        assert chained == [(sigusr2, threading.main_thread().name, 1)]
        assert returned_after < ENDS_WITHIN, "the handler waited for the lease its own thread holds"
        wait_until(lambda: pool.state != "open")  # the close began, on another thread
        assert pool.closed
    wait_until(lambda: not _signal_threads())  # it finished once the lease came back
    assert registry.info() == []
    assert pool.stats()["in_use"] == 0


def test_installing_twice_replaces_the_handler(sigusr2: signal.Signals) -> None:
    calls: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    signal.signal(sigusr2, previous)
    registry.install_signal_handlers(grace=1.0, signals=[sigusr2])
    registry.install_signal_handlers(grace=2.0, signals=[sigusr2])
    installed = signal.getsignal(sigusr2)
    assert isinstance(installed, registry._SignalHandler)
    assert installed.previous is previous and installed.grace == 2.0
    signal.raise_signal(sigusr2)
    assert calls == [sigusr2]  # chained once, not through a second copy of the handler
    wait_until(lambda: not _signal_threads())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"grace": -1.0}, ValueError, "grace"),
        ({"grace": float("inf")}, ValueError, "grace"),
        ({"grace": float("nan")}, ValueError, "grace"),
        ({"grace": "30"}, TypeError, "grace"),
        ({"signals": signal.SIGTERM}, TypeError, "signals"),
        ({"signals": ["SIGTERM"]}, TypeError, "signals"),
        ({"signals": [signal.SIGKILL]}, ValueError, "signals"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(error, match=match):
        registry.install_signal_handlers(**kwargs)
    assert signal.getsignal(signal.SIGTERM) is before


def test_only_from_the_main_thread() -> None:
    errors: list[BaseException] = []

    def install() -> None:
        try:
            registry.install_signal_handlers()
        except ValueError as error:
            errors.append(error)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert errors and "main thread" in str(errors[0])


# -- in a subprocess: how the process ends -------------------------------------------------------------------------


def _start(script: str) -> subprocess.Popen[str]:
    """Run ``script``, in which ``LONG_GRACE`` stands for its value."""
    script = textwrap.dedent(script).replace("LONG_GRACE", repr(LONG_GRACE))
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )


def _wait_for_line(process: subprocess.Popen[str], expected: str) -> None:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != expected:
        process.kill()
        _, stderr = process.communicate()
        raise AssertionError(f"expected {expected!r} from the subprocess, got {line!r}; stderr:\n{stderr}")


def _finish(process: subprocess.Popen[str], timeout: float = ENDS_WITHIN) -> tuple[int, str, str]:
    """Wait for the process to end by itself; kill it and fail if it does not within ``timeout`` seconds."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"still running {timeout}s after the signal; stderr:\n{stderr}") from None
    return process.returncode, stdout, stderr


# The main thread leases and gives back in a tight loop, as a worker process's main loop would. With keep_going,
# it treats PoolClosed as one more error and loops on; without, PoolClosed ends the main thread (and the atexit
# hook must still end the process by the signal).
_TIGHT_LOOP = """
    import atexit, faulthandler, signal, sys
    from syncpool import PoolClosed, registry

    {previous}
    # Registered before the registry's own hook, so it runs after it. It prints the pools left in the registry,
    # the pool's state and its leases out.
    atexit.register(lambda: print("at exit:", len(registry.info()), pool.state, pool.stats()["in_use"], flush=True))
    pool = registry.get_pool("jobs", {{"connector": "sqlite", "options": {{"database": ":memory:"}}}}, max_size=2)
    registry.install_signal_handlers(grace=LONG_GRACE, signals=[{signal}])
    faulthandler.dump_traceback_later({dump_after})  # if it is still alive by then, show where it is stuck
    print("ready", flush=True)
    while True:
        try:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        except PoolClosed:
            if not {keep_going}:
                raise
"""


def _tight_loop(previous: str = "", *, keep_going: bool = False, signum: str = "signal.SIGTERM") -> str:
    return _TIGHT_LOOP.format(
        previous=previous, signal=signum, dump_after=ENDS_WITHIN / 2, keep_going=keep_going
    )


@pytest.mark.slow
def test_sigterm_while_the_main_thread_leases_in_a_loop_ends_by_the_signal() -> None:
    rng = random.Random()
    for attempt in range(8):
        process = _start(_tight_loop(keep_going=attempt % 2 == 0))
        _wait_for_line(process, "ready")
        time.sleep(rng.uniform(0.0, 0.3))  # land the signal anywhere in the lease loop
        process.send_signal(signal.SIGTERM)
        returncode, stdout, stderr = _finish(process)
        assert returncode == -signal.SIGTERM, f"attempt {attempt}: exit status {returncode}; stderr:\n{stderr}"


@pytest.mark.slow
def test_sigterm_chains_to_a_python_handler_that_exits() -> None:
    previous = "signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))"
    rng = random.Random()
    for attempt in range(8):
        process = _start(_tight_loop(previous))
        _wait_for_line(process, "ready")
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGTERM)
        returncode, stdout, stderr = _finish(process)
        assert returncode == 3, f"attempt {attempt}: exit status {returncode}; stderr:\n{stderr}"
        _assert_closed_at_exit(stdout, stderr)


def _assert_closed_at_exit(stdout: str, stderr: str) -> None:
    """The registry is empty and the pool closed by the time the interpreter exits.

    Unless a lease never came back: the signal raised in the main thread can land inside the lease machinery (at
    the first bytecode of ``Lease.__exit__``, say), and then no one gives that client back; the pool is still
    closing (it waits ``grace`` for the lease) and the exit only waited for it up to ``EXIT_TIMEOUT``.
    """
    words = stdout.splitlines()[-1].split() if stdout else []
    assert words[:2] == ["at", "exit:"] and len(words) == 5, f"{stdout}\n{stderr}"
    registered, state, in_use = words[2:]
    assert registered == "0", stdout
    assert state == "closed" or (state == "closing" and in_use != "0"), f"{stdout}\n{stderr}"


@pytest.mark.slow
def test_default_sigint_raises_keyboard_interrupt_and_the_pools_close() -> None:
    process = _start(_tight_loop(signum="signal.SIGINT"))
    _wait_for_line(process, "ready")
    process.send_signal(signal.SIGINT)
    returncode, stdout, stderr = _finish(process)
    assert "KeyboardInterrupt" in stderr
    assert returncode == -signal.SIGINT, stderr  # how Python ends on an uncaught KeyboardInterrupt
    _assert_closed_at_exit(stdout, stderr)


# The main thread holds a lease for ever (the default action: the signal must still end the process).
_HOLD_FOREVER = """
    import time
    from syncpool import registry

    pool = registry.get_pool("jobs", {{"connector": "sqlite", "options": {{"database": ":memory:"}}}})
    registry.install_signal_handlers(grace={grace})
    with pool.connection():
        print("leased", flush=True)
        time.sleep(3600)
"""


@pytest.mark.slow
def test_main_thread_holding_a_lease_for_ever_ends_by_the_signal_after_the_grace() -> None:
    grace = 1.0
    process = _start(_HOLD_FOREVER.format(grace=grace))
    _wait_for_line(process, "leased")
    process.send_signal(signal.SIGTERM)
    returncode, _, stderr = _finish(process, timeout=grace + registry._GRACE_SLACK + ENDS_WITHIN)
    assert returncode == -signal.SIGTERM, stderr
    assert "1 client(s) still leased" in stderr  # it did wait for the lease, and gave up on it


@pytest.mark.slow
def test_second_sigterm_ends_the_process_at_once() -> None:
    process = _start(_HOLD_FOREVER.format(grace=LONG_GRACE))
    _wait_for_line(process, "leased")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the first one is being handled (either way, the process must end below)
    process.send_signal(signal.SIGTERM)
    returncode, _, stderr = _finish(process)
    assert returncode == -signal.SIGTERM, stderr


@pytest.mark.slow
def test_second_signal_skips_the_wait_at_exit() -> None:
    """The previous handler exits, but a daemon thread holds a lease for ever: the exit waits, a second signal
    ends that wait."""
    script = """
        import signal, sys, threading, time
        from syncpool import registry

        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))
        pool = registry.get_pool("jobs", {"connector": "sqlite", "options": {"database": ":memory:"}})
        registry.install_signal_handlers(grace=LONG_GRACE)
        registry.EXIT_TIMEOUT = LONG_GRACE  # so that only a second signal can cut the wait at exit short

        leased = threading.Event()

        def hold():
            with pool.connection():
                leased.set()
                time.sleep(3600)

        threading.Thread(target=hold, daemon=True).start()
        try:
            leased.wait()
            print("leased", flush=True)  # inside the try: the SystemExit the signal raises runs the finally
            time.sleep(3600)
        finally:
            print("waiting at exit", flush=True)
    """
    process = _start(script)
    _wait_for_line(process, "leased")
    process.send_signal(signal.SIGTERM)
    _wait_for_line(process, "waiting at exit")
    time.sleep(0.2)  # into the atexit hook's wait, most likely (the assertions hold either way)
    process.send_signal(signal.SIGTERM)
    returncode, _, stderr = _finish(process)
    assert returncode == 3, stderr


@pytest.mark.slow
def test_ignored_signal_closes_the_pools_and_the_process_goes_on() -> None:
    script = """
        import signal, time
        from syncpool import PoolClosed, registry

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pool = registry.get_pool("jobs", {"connector": "sqlite", "options": {"database": ":memory:"}})
        registry.install_signal_handlers(grace=LONG_GRACE)
        print("ready", flush=True)
        while True:
            try:
                with pool.connection():
                    pass
            except PoolClosed:
                break
        time.sleep(0.2)
        print("still running,", pool.state, flush=True)
    """
    process = _start(script)
    _wait_for_line(process, "ready")
    process.send_signal(signal.SIGTERM)
    returncode, stdout, stderr = _finish(process)
    assert returncode == 0, stderr
    assert stdout.splitlines() == ["still running, closed"], stderr


@pytest.mark.slow
def test_python_handler_is_chained_while_a_worker_thread_finishes_its_lease() -> None:
    """A worker thread's lease in flight comes back within the grace, after the previous handler has run."""
    script = """
        import atexit, signal, sys, threading, time
        from syncpool import registry

        handled = threading.Event()

        def on_term(signum, frame):
            print("previous handler", flush=True)
            handled.set()
            sys.exit(0)

        signal.signal(signal.SIGTERM, on_term)
        atexit.register(lambda: print("at exit:", pool.state, flush=True))
        pool = registry.get_pool("jobs", {"connector": "sqlite", "options": {"database": ":memory:"}})
        registry.install_signal_handlers(grace=LONG_GRACE)

        def work():
            with pool.connection() as conn:
                print("leased", flush=True)
                handled.wait(30)
                time.sleep(0.2)  # still in flight after the handler has chained
                conn.execute("SELECT 1")
                print("lease finished", flush=True)

        threading.Thread(target=work).start()
        while True:
            time.sleep(0.05)
    """
    process = _start(script)
    _wait_for_line(process, "leased")
    process.send_signal(signal.SIGTERM)
    returncode, stdout, stderr = _finish(process)
    assert returncode == 0, stderr
    assert stdout.splitlines() == ["previous handler", "lease finished", "at exit: closed"], stderr


@pytest.mark.slow
def test_default_action_waits_for_a_worker_thread_lease_then_ends_by_the_signal() -> None:
    script = """
        import threading, time
        from syncpool import registry

        pool = registry.get_pool("jobs", {"connector": "sqlite", "options": {"database": ":memory:"}})
        registry.install_signal_handlers(grace=LONG_GRACE)

        def work():
            with pool.connection() as conn:
                print("leased", flush=True)
                time.sleep(0.5)
                conn.execute("SELECT 1")
                print("lease finished", flush=True)

        threading.Thread(target=work).start()
        while True:
            time.sleep(0.05)
    """
    process = _start(script)
    _wait_for_line(process, "leased")
    process.send_signal(signal.SIGTERM)
    returncode, stdout, stderr = _finish(process)
    assert returncode == -signal.SIGTERM, stderr
    assert stdout.splitlines() == ["lease finished"], stderr
