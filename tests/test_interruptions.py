"""Every way a lease, a connect or a check can end: interrupts at any bytecode, BaseExceptions from connectors, checks
that hang. Each test here failed on the pool before it was split into parts (see docs/design.md)."""

from __future__ import annotations

import ctypes
import random
import signal
import threading
import time
from typing import Any

import pytest

from syncpool import Backoff, Pool, PoolError, PoolTimeout

from .fakes import FakeClient, FakeConnector, wait_until


class Interrupt(BaseException):
    """What a timeout library (gevent, eventlet, a test runner) raises asynchronously in a thread."""


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in ``thread`` at its next bytecode (``PyThreadState_SetAsyncExc``); False if it is gone."""
    assert thread.ident is not None
    return bool(ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)))


def _worker_threads(pool: Pool[Any]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"syncpool-{pool.name}-worker-") and t.is_alive()]


class FailingFirst(FakeConnector):
    """Raises ``error`` from the first ``count`` connects, then connects."""

    def __init__(self, error: type[BaseException], count: int) -> None:
        super().__init__()
        self.error, self.count = error, count

    def connect(self) -> FakeClient:
        with self.lock:
            fail = self.count > 0
            self.count -= fail
        if fail:
            with self.lock:
                self.connect_attempts += 1
            raise self.error()
        return super().connect()


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, Interrupt])
def test_a_base_exception_from_connect_is_a_failed_attempt(error: type[BaseException]) -> None:
    connector = FailingFirst(error, count=2)
    backoff = Backoff(initial=0.01, maximum=0.02)
    with Pool(connector, min_size=1, max_size=2, reconnect_backoff=backoff, name="connect-dies") as pool:
        pool.wait(5)  # the pool went on connecting after each failure
        wait_until(lambda: pool.stats()["connecting"] == 0)
        stats = pool.stats()
        assert stats["connect_errors"] == 2 and stats["connections_created"] == 1
        assert len(_worker_threads(pool)) == 3  # no worker died of it
        with pool.connection(timeout=2), pool.connection(timeout=2):
            pass  # and both slots work: no connecting slot or member index leaked


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, Interrupt])
def test_a_base_exception_from_check_is_a_failed_check(error: type[BaseException]) -> None:
    class Checked(FakeConnector):
        raising = 0

        def check(self, client: FakeClient) -> None:
            if self.raising:
                self.raising -= 1
                raise error()
            super().check(client)

    connector = Checked()
    with Pool(connector, min_size=2, max_size=2, health_check_interval=0.05, name="check-dies") as pool:
        pool.wait(5)
        connector.raising = 1
        wait_until(lambda: pool.stats()["health_checks"]["failed"] == 1)
        wait_until(lambda: pool.stats()["health_checks"]["ok"] >= 4)  # later passes still run
        assert pool.stats()["discards"]["check_failed"] == 1
        pool.wait(5)  # replaced
        assert len(_worker_threads(pool)) == 3


def test_checks_that_hang_never_hold_capacity() -> None:
    """min_size=max_size=2 with checks that hang: leases keep being served while hung checks are given up."""
    connector = FakeConnector()
    connector.check_gate = threading.Event()  # every check blocks until set
    pool = Pool(connector, min_size=2, max_size=2, health_check_interval=0.05, health_check_timeout=0.1,
                name="hung-checks")
    try:
        pool.wait(5)
        wait_until(lambda: pool.stats()["discards"]["check_failed"] >= 2, timeout=5)  # both hung once at least
        served = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # health passes keep taking members out and giving them up
            with pool.connection(timeout=3):
                served += 1
            time.sleep(0.01)
        assert served > 10
        stats = pool.stats()
        assert stats["size"] <= 2 and stats["checking"] <= 1  # one pass at a time, each check given up in time
    finally:
        pool.close(timeout=1)
        connector.check_gate.set()  # the hung checks end: their clients are closed by their own threads
        wait_until(lambda: connector.live == 0)


def test_a_check_on_lease_that_hangs_is_given_up_and_the_lease_served() -> None:
    connector = FakeConnector()
    with Pool(connector, min_size=1, max_size=2, check_after_idle=0.0, health_check_interval=None,
              health_check_timeout=0.1, name="hung-lease-check") as pool:
        pool.wait(5)
        connector.check_gate = threading.Event()
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.5)  # every member's check hangs: no client is handed out unchecked
        connector.check_gate.set()
        connector.check_gate = None
        with pool.connection(timeout=5):
            pass
        wait_until(lambda: connector.live == pool.stats()["size"])  # the given-up ones were closed in the end
        assert pool.stats()["discards"]["check_failed"] >= 2


def test_a_maintenance_run_that_fails_is_run_again() -> None:
    class CloseOnce(FakeConnector):
        fail = True

        def close(self, client: FakeClient) -> None:
            super().close(client)
            if self.fail:
                self.fail = False
                raise SystemExit("a client's close called sys.exit()")

    connector = CloseOnce()
    with Pool(connector, max_size=3, max_idle=0.05, health_check_interval=None, name="tidy") as pool:
        clients = [pool.getconn(timeout=2) for _ in range(3)]
        for client in clients:
            pool.putconn(client)
        wait_until(lambda: connector.closes == 3, timeout=5)  # retired for idleness, by later runs too
        assert pool.stats()["idle"] == 0 and pool.stats()["closing"] == 0


@pytest.mark.slow
def test_asynchronous_exceptions_and_sigint_leak_nothing() -> None:
    """Threads lease, wait and hold for seconds while exceptions land in them at random bytecodes; the main thread
    does the same under SIGINT. Afterwards nothing is held, nobody waits, and every slot is leasable at once."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")
    connector = FakeConnector()
    pool = Pool(connector, max_size=4, timeout=0.5, health_check_interval=0.02, check_after_idle=0.005,
                health_check_timeout=0.5, name="stress")
    stop = threading.Event()
    pending: dict[int, threading.Event] = {}  # per thread: an exception was sent and not handled yet
    handled: dict[str, int] = {"worker": 0, "main": 0}

    def lease_in_a_loop(index: int) -> None:
        rng = random.Random(index)
        mine = pending[threading.get_ident()]
        while True:
            try:
                if stop.is_set() and not mine.is_set():
                    return
                with pool.connection() as client:
                    assert isinstance(client, FakeClient) and not client.closed
                    time.sleep(rng.choice((0, 0, 0.0005, 0.002, 0.02)))
            except Interrupt:
                handled["worker"] += 1
                mine.clear()
            except PoolTimeout:
                pass

    ready = threading.Barrier(9)

    def start_worker(index: int) -> None:
        pending[threading.get_ident()] = threading.Event()
        ready.wait()
        lease_in_a_loop(index)

    workers = [threading.Thread(target=start_worker, args=(i,), name=f"stress-{i}") for i in range(8)]
    main_pending = threading.Event()
    injecting = threading.Event()
    injecting.set()

    def inject() -> None:
        rng = random.Random(7)
        end = time.monotonic() + 3.0
        main_ident = threading.main_thread().ident
        assert main_ident is not None
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.0, 0.004))
            if rng.random() < 0.2:
                if not main_pending.is_set():
                    main_pending.set()
                    signal.pthread_kill(main_ident, signal.SIGINT)
                continue
            thread = rng.choice(workers)
            mark = pending[thread.ident]  # type: ignore[index]
            if not mark.is_set():
                mark.set()  # one exception in flight per thread: each is handled before the next is sent
                if not _raise_in(thread, Interrupt):
                    mark.clear()
        injecting.clear()

    # SIGINT raises KeyboardInterrupt only while the main thread is in the code under test (armed): a signal that
    # lands in this test's own loop control is counted as missed, so no interrupt escapes the test itself.
    armed = [False]
    missed = [0]

    def on_sigint(signum: int, frame: Any) -> None:
        if armed[0]:
            raise KeyboardInterrupt
        missed[0] += 1
        main_pending.clear()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        for thread in workers:
            thread.start()
        ready.wait()
        injector = threading.Thread(target=inject, name="stress-injector")
        injector.start()
        while injecting.is_set() or main_pending.is_set():
            try:
                armed[0] = True
                with pool.connection() as client:
                    assert not client.closed
                    time.sleep(random.choice((0, 0.001, 0.01)))
                armed[0] = False
            except KeyboardInterrupt:
                armed[0] = False
                handled["main"] += 1
                main_pending.clear()
            except PoolTimeout:
                armed[0] = False
        injector.join()
        stop.set()
        for thread in workers:
            thread.join(timeout=10)
            assert not thread.is_alive()
    finally:
        signal.signal(signal.SIGINT, previous)
        stop.set()
    try:
        assert handled["worker"] > 20 and handled["main"] > 5, handled
        wait_until(lambda: pool.stats()["checking"] == 0 and pool.stats()["connecting"] == 0, timeout=5)
        stats = pool.stats()
        assert stats["in_use"] == 0 and stats["waiting"] == 0, stats
        assert stats["size"] <= 4
        held = [pool.getconn(timeout=5) for _ in range(4)]  # every slot is leasable at once
        assert len({id(client) for client in held}) == 4 and not any(client.closed for client in held)
        for client in held:
            pool.putconn(client)
        with pytest.raises(PoolError):
            pool.putconn(held[0])  # and nothing is leased twice
    finally:
        pool.close(timeout=2)


def test_a_connector_that_bounds_its_own_checks_is_checked_without_a_thread() -> None:
    class Bounded(FakeConnector):
        check_timeout = 1.0
        threads: set[str] = set()

        def check(self, client: FakeClient) -> None:
            self.threads.add(threading.current_thread().name)
            super().check(client)

    connector = Bounded()
    with Pool(connector, min_size=1, max_size=1, check_after_idle=0.0, health_check_interval=None,
              name="inline-checks") as pool:
        pool.wait(5)
        with pool.connection(timeout=2):
            pass
        pool.check()
    assert connector.threads == {threading.current_thread().name}  # on lease and in pool.check(): this thread


def test_checks_that_keep_failing_on_lease_back_off_instead_of_churning() -> None:
    connector = FakeConnector()
    connector.check_error = ConnectionResetError("the server is gone")
    with Pool(connector, max_size=2, check_after_idle=0.0, health_check_interval=None,
              reconnect_backoff=Backoff(initial=0.2, maximum=0.2), name="failing-checks") as pool:
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.5)  # never a client whose check failed
        # Immediate retry after the first failure, then one every 0.2 s: a handful of connects, not hundreds.
        assert 2 <= connector.connects <= 6, connector.connects
        connector.check_error = None
