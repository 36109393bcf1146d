"""Leasing: bounds, fairness, timeouts, returns in every state."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import pytest

from syncpool import Pool, PoolError, PoolTimeout, TooManyWaiters
from syncpool.leasing import Lease
from syncpool.waiters import Waiter

from .fakes import FakeClient, FakeConnector, wait_until


def test_lease_and_return_reuses_the_client() -> None:
    connector = FakeConnector()
    with Pool(connector, max_size=2) as pool:
        with pool.connection(timeout=2) as first:
            assert isinstance(first, FakeClient)
        with pool.connection() as second:
            assert second is first
        stats = pool.stats()
    assert connector.connects == 1
    assert stats["leases_total"] == 2
    assert stats["size"] == stats["idle"] == 1


def _burst_of_short_leases(pool: Pool[FakeClient], *, threads: int, leases: int) -> None:
    """Start ``threads`` threads together, each taking ``leases`` short leases in a row; wait for them all."""
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(leases):
            with pool.connection():
                time.sleep(0.002)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def test_a_burst_never_creates_more_than_max_size() -> None:
    connector = FakeConnector(connect_delay=0.02)
    with Pool(connector, max_size=4, timeout=10) as pool:
        _burst_of_short_leases(pool, threads=40, leases=5)
        assert pool.stats()["leases_total"] == 200
    assert connector.max_in_flight <= 4
    assert connector.max_live <= 4


def test_waiters_are_served_first_come_first_served() -> None:
    with Pool(FakeConnector(), max_size=1, timeout=10) as pool:
        held = pool.getconn()
        order: list[int] = []

        def wait_in_line(i: int) -> None:
            with pool.connection():
                order.append(i)

        threads = []
        for i in range(8):
            t = threading.Thread(target=wait_in_line, args=(i,))
            t.start()
            threads.append(t)
            wait_until(lambda i=i: pool.stats()["waiting"] == i + 1)
        # A late arrival must queue behind them even though the client is about to be free.
        pool.putconn(held)
        late = threading.Thread(target=wait_in_line, args=(99,))
        late.start()
        for t in [*threads, late]:
            t.join()
    assert order[:8] == list(range(8))
    assert order[8] == 99


def test_lease_timeout_is_precise() -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        held = pool.getconn(timeout=2)
        try:
            for _ in range(5):
                start = time.monotonic()
                with pytest.raises(PoolTimeout):
                    pool.getconn(timeout=0.1)
                assert 0.1 <= time.monotonic() - start < 0.15
        finally:
            pool.putconn(held)
        assert pool.stats()["lease_timeouts"] == 5


def test_timeout_message_names_pool_wait_and_counts() -> None:
    with Pool(FakeConnector(), max_size=1, name="jobs") as pool:
        held = pool.getconn(timeout=2)
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=0.05)
        pool.putconn(held)
    message = str(info.value)
    assert "pool 'jobs'" in message
    assert "after waiting 0.05" in message
    for part in ("size=1", "idle=0", "in_use=1", "waiting=0", "max_size=1"):
        assert part in message


def test_timeout_chains_the_last_connect_error() -> None:
    connector = FakeConnector()
    connector.fail_connects = ConnectionRefusedError("db is down")
    with Pool(connector, max_size=2) as pool:
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=0.3)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_timed_out_waiters_never_swallow_a_client() -> None:
    """Return clients right when waiters give up, many times; every client must stay accounted for."""
    connector = FakeConnector()
    with Pool(connector, max_size=2, timeout=5) as pool:
        for _ in range(30):
            held = [pool.getconn(), pool.getconn()]
            results: list[object] = []

            def waiter(results: list[object] = results) -> None:
                try:
                    with pool.connection(timeout=0.02):
                        results.append("ok")
                except PoolTimeout:
                    results.append("timeout")

            threads = [threading.Thread(target=waiter) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.019)
            for client in held:
                pool.putconn(client)
            for t in threads:
                t.join()
            assert len(results) == 4
            stats = pool.stats()
            assert stats["waiting"] == 0 and stats["in_use"] == 0
            assert stats["idle"] == stats["size"] == 2
        # Both clients still serve leases.
        a, b = pool.getconn(timeout=0.5), pool.getconn(timeout=0.5)
        pool.putconn(a)
        pool.putconn(b)
    assert connector.connects == 2


def test_max_waiting_refuses_at_once() -> None:
    with Pool(FakeConnector(), max_size=1, max_waiting=2, timeout=5) as pool:
        held = pool.getconn()
        threads = [threading.Thread(target=lambda: pool.putconn(pool.getconn())) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: pool.stats()["waiting"] == 2)
        start = time.monotonic()
        with pytest.raises(TooManyWaiters, match="max_waiting=2"):
            pool.getconn()
        assert time.monotonic() - start < 0.05
        pool.putconn(held)
        for t in threads:
            t.join()
        assert pool.stats()["too_many_waiters"] == 1


def test_exception_in_block_resets_and_returns() -> None:
    connector = FakeConnector()
    with Pool(connector, max_size=1) as pool:
        with pytest.raises(ZeroDivisionError):
            with pool.connection(timeout=2) as client:
                client.dirty = True
                1 / 0  # noqa: B018
        assert client.resets == 1 and not client.dirty
        with pool.connection() as again:
            assert again is client


def test_failed_reset_discards_and_replaces() -> None:
    connector = FakeConnector()
    with Pool(connector, max_size=1, min_size=1) as pool:
        pool.wait(2)
        connector.fail_reset = True
        with pool.connection() as client:
            pass
        assert client.closed
        connector.fail_reset = False
        wait_until(lambda: pool.stats()["idle"] == 1)
        with pool.connection() as replacement:
            assert replacement is not client
        assert pool.stats()["discards"]["reset_failed"] == 1


def test_broken_client_is_discarded_not_reset() -> None:
    connector = FakeConnector()
    with Pool(connector, max_size=1) as pool:
        with pool.connection(timeout=2) as client:
            client.broken = True
        assert client.closed and client.resets == 0
        with pool.connection(timeout=2) as replacement:
            assert replacement is not client
        assert pool.stats()["discards"]["broken"] == 1


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_in_block_discard_the_client_and_leak_nothing(exc_type: type[BaseException]) -> None:
    connector = FakeConnector()
    with Pool(connector, max_size=1) as pool:
        with pytest.raises(exc_type):
            with pool.connection(timeout=2) as interrupted:
                raise exc_type()
        assert pool.stats()["in_use"] == 0
        assert pool.stats()["discards"]["interrupted"] == 1
        wait_until(lambda: interrupted.closed)  # cut off mid-exchange, maybe: never handed out again
        with pool.connection(timeout=2) as replacement:
            assert replacement is not interrupted and replacement.resets == 0


def test_keyboard_interrupt_while_waiting_leaks_nothing() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    with Pool(FakeConnector(), max_size=1) as pool:
        held = pool.getconn(timeout=2)
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(KeyboardInterrupt):
                pool.getconn(timeout=5)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert pool.stats()["waiting"] == 0
        pool.putconn(held)
        pool.putconn(pool.getconn(timeout=0))


def test_interrupted_waiter_gives_back_a_client_handed_to_it() -> None:
    """The race: a client is handed over just as the waiter leaves by an exception."""
    with Pool(FakeConnector(), max_size=1) as pool:
        held = pool.getconn(timeout=2)
        (ticket,) = _queue_waiters(pool, 1)
        pool.putconn(held)  # handed to the waiter, which never wakes up to take it
        assert ticket.waiter.member is not None and pool.stats()["in_use"] == 1
        pool._undo(ticket)  # what an exception in the waiting thread does
        assert pool.stats()["in_use"] == 0 and pool.stats()["idle"] == 1


def _queue_waiters(pool: Pool[FakeClient], count: int) -> list[Lease[FakeClient]]:
    """Queue ``count`` waiters with no thread behind them, so the test plays each one's part by hand."""
    tickets = [Lease[FakeClient](pool) for _ in range(count)]
    with pool._inv.lock:
        for ticket in tickets:
            ticket.waiter = Waiter(time.monotonic())
            pool._inv.waiters.append(ticket.waiter)
    return tickets


def test_every_hand_off_wakes_its_waiter_at_once_in_order() -> None:
    """No waiter's wake-up depends on another woken thread running some pass-on code."""
    with Pool(FakeConnector(), max_size=4) as pool:
        held = [pool.getconn(timeout=2) for _ in range(4)]
        tickets = _queue_waiters(pool, 4)
        for client in held:
            pool.putconn(client)
        # Every waiter has its client (leased on its behalf, in order) and was woken: none is left asleep.
        assert [t.waiter.member.client for t in tickets] == held
        assert all(not t.waiter.wakeup.locked() for t in tickets)
        assert pool.stats()["in_use"] == 4 and pool.stats()["waiting"] == 0
        for ticket in tickets:
            pool._wait(ticket, ticket.waiter, 0)  # each finds its member without waiting
            pool.putconn(ticket.member.client)
        assert pool.stats()["idle"] == 4


def test_an_interrupted_waiter_leaves_the_queue_and_the_next_is_served() -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        held = pool.getconn(timeout=2)
        first, second = _queue_waiters(pool, 2)
        pool._undo(first)  # KeyboardInterrupt while asleep, before any hand-off: it just leaves the queue
        assert pool.stats()["waiting"] == 1
        pool.putconn(held)
        assert second.waiter.member is not None and first.waiter is None
        pool._wait(second, second.waiter, 0)
        pool.putconn(second.member.client)
        assert pool.stats()["idle"] == 1 and pool.stats()["in_use"] == 0


def test_a_burst_of_returns_serves_every_waiter_in_order() -> None:
    """Many clients come back at once to many queued threads: all are served, first come first served."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # so the returning thread keeps the GIL: woken waiters cannot run in between
    try:
        with Pool(FakeConnector(), max_size=8, timeout=10) as pool:
            held = [pool.getconn() for _ in range(8)]
            order: list[int] = []
            served: list[object] = []

            def wait_in_line(i: int) -> None:
                client = pool.getconn()
                order.append(i)
                served.append(client)

            threads = []
            for i in range(24):
                t = threading.Thread(target=wait_in_line, args=(i,))
                t.start()
                threads.append(t)
                wait_until(lambda i=i: pool.stats()["waiting"] == i + 1)
            for _ in range(3):  # three waves: each return hands a client to the oldest waiter
                for client in held:
                    pool.putconn(client)
                wait_until(lambda: len(served) % 8 == 0 and len(served) > 0 and pool.stats()["in_use"] == 8)
                held, served[:] = list(served), []
            for t in threads:
                t.join()
            for client in held:
                pool.putconn(client)
            assert pool.stats()["idle"] == 8 and pool.stats()["waiting"] == 0
    finally:
        sys.setswitchinterval(previous)
    assert sorted(order[:8]) == list(range(8))
    assert sorted(order[8:16]) == list(range(8, 16))
    assert sorted(order[16:]) == list(range(16, 24))


def test_a_waiter_keeps_a_client_handed_over_as_its_timeout_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race, made certain: the hand-off lands after the waiter's wait timed out, before it takes the lock."""
    from syncpool import waiters as waiters_module

    class LateWakeup:
        """A wakeup lock whose wait times out, but only after the racing return has handed the client over."""

        def __init__(self, real: Any, on_timeout: Any) -> None:
            self.real, self.on_timeout = real, on_timeout

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            self.on_timeout()
            return False

        def release(self) -> None:
            self.real.release()

        def locked(self) -> bool:
            return bool(self.real.locked())

    with Pool(FakeConnector(), max_size=1, timeout=5) as pool:
        held = pool.getconn()
        make_waiter = waiters_module.Waiter.__init__

        def late_waiter(waiter: Any, since: float) -> None:
            make_waiter(waiter, since)
            waiter.wakeup = LateWakeup(waiter.wakeup, lambda: pool.putconn(held))

        monkeypatch.setattr(waiters_module.Waiter, "__init__", late_waiter)
        got = pool.getconn(timeout=0.1)
        monkeypatch.undo()
        assert got is held  # it kept the client handed to it, rather than time out and strand it
        stats = pool.stats()
        assert stats["in_use"] == 1 and stats["lease_timeouts"] == 0
        pool.putconn(got)
        assert pool.stats()["idle"] == 1


def test_an_interrupt_during_reset_discards_the_client_and_loses_no_slot() -> None:
    class InterruptedReset(FakeConnector):
        armed = False

        def reset(self, client: FakeClient) -> None:
            if self.armed:
                self.armed = False
                raise KeyboardInterrupt  # as if Ctrl-C landed during a blocking ROLLBACK
            super().reset(client)

    connector = InterruptedReset()
    with Pool(connector, max_size=1) as pool:
        with pytest.raises(KeyboardInterrupt):
            with pool.connection(timeout=2) as client:
                connector.armed = True
        assert client.closed
        stats = pool.stats()
        assert stats["in_use"] == 0 and stats["discards"]["interrupted"] == 1
        with pool.connection(timeout=2) as replacement:  # the slot is free: a new client is connected
            assert replacement is not client


def test_a_client_being_closed_still_counts_against_max_size() -> None:
    """A slow close of a broken client must finish before its replacement connects, even with a caller waiting."""

    class SlowClose(FakeConnector):
        def close(self, client: FakeClient) -> None:
            time.sleep(0.2)  # a session goodbye over a slow network
            super().close(client)

    connector = SlowClose()
    with Pool(connector, min_size=1, max_size=1, timeout=5) as pool:
        pool.wait(2)
        client = pool.getconn()
        served: list[FakeClient] = []
        waiter = threading.Thread(target=lambda: served.append(pool.getconn()))
        waiter.start()
        wait_until(lambda: pool.stats()["waiting"] == 1)
        client.broken = True
        returner = threading.Thread(target=pool.putconn, args=(client,))  # closes the broken client inline
        returner.start()
        wait_until(lambda: pool.stats()["closing"] == 1)
        stats = pool.stats()
        assert stats["size"] == 0 and stats["connecting"] == 0 and stats["waiting"] == 1
        assert "closing=1" in repr(pool)
        returner.join()
        waiter.join()
        assert served and served[0] is not client and client.closed
        assert connector.max_live == 1 and connector.max_in_flight == 1
        assert pool.stats()["closing"] == 0
        pool.putconn(served[0])


def test_a_burst_while_the_pool_fills_never_creates_more_than_max_size() -> None:
    """Connects under way count against max_size: leases arriving as the pool fills cannot add more."""
    connector = FakeConnector(connect_delay=0.05)
    with Pool(connector, min_size=4, max_size=4, timeout=10) as pool:
        _burst_of_short_leases(pool, threads=20, leases=3)
        assert pool.stats()["leases_total"] == 60
    assert connector.connects == 4
    assert connector.max_in_flight <= 4


def test_returning_twice_or_to_the_wrong_pool_is_an_error() -> None:
    with Pool(FakeConnector(), max_size=1, name="a") as a, Pool(FakeConnector(), max_size=1, name="b") as b:
        client = a.getconn(timeout=2)
        with pytest.raises(PoolError, match="not leased from this pool"):
            b.putconn(client)
        a.putconn(client)
        with pytest.raises(PoolError, match="returned twice"):
            a.putconn(client)


def test_growth_is_gradual_under_a_burst_of_short_leases() -> None:
    connector = FakeConnector(connect_delay=0.15)
    with Pool(connector, min_size=5, max_size=10, timeout=10) as pool:
        pool.wait(5)
        barrier = threading.Barrier(50)

        def short_lease() -> None:
            barrier.wait()
            with pool.connection():
                time.sleep(0.001)

        threads = [threading.Thread(target=short_lease) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)  # let any connect in flight land
        assert pool.stats()["size"] <= 7
