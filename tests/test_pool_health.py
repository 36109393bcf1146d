"""Health checks, check on lease, reconnect backoff, the circuit breaker and reload, with fake clients."""

from __future__ import annotations

import threading
import time

import pytest

from syncpool import Backoff, BreakerState, Pool, PoolTimeout, PoolUnavailable

from .fakes import FakeConnector, wait_until


def test_health_pass_replaces_clients_that_fail_their_check() -> None:
    connector = FakeConnector()
    with Pool(connector, min_size=3, max_size=3, health_check_interval=None) as pool:
        pool.wait(5)
        with pool._inv.lock:
            victim = pool._inv.idle[0].client
        victim.broken = True  # as if the server had dropped it while idle
        assert pool.check() == {"ok": 2, "failed": 1}
        assert victim.closed
        wait_until(lambda: pool.stats()["idle"] == 3)
        stats = pool.stats()
        assert stats["discards"]["check_failed"] == 1
        assert stats["health_checks"] == {"ok": 2, "failed": 1}


def test_background_health_pass_runs_by_itself() -> None:
    connector = FakeConnector()
    with Pool(connector, min_size=2, max_size=2, health_check_interval=0.05) as pool:
        pool.wait(5)
        with pool._inv.lock:
            victim = pool._inv.idle[0].client
        victim.broken = True
        wait_until(lambda: victim.closed)
        wait_until(lambda: pool.stats()["idle"] == 2)
        # A user never saw the broken client.
        with pool.connection(timeout=1) as client:
            assert not client.broken


def test_hung_check_delays_neither_leases_nor_close() -> None:
    connector = FakeConnector()
    connector.check_gate = threading.Event()  # every check blocks until set
    pool = Pool(connector, min_size=2, max_size=3, health_check_interval=None, health_check_timeout=0.2)
    pool.wait(5)
    checker = threading.Thread(target=pool.check)
    checker.start()
    wait_until(lambda: pool.stats()["checking"] == 1)
    # The other idle client is leased at once, and a third is created on demand, while the check hangs.
    for _ in range(3):
        start = time.monotonic()
        with pool.connection(timeout=1):
            assert time.monotonic() - start < 0.1
    checker.join(timeout=5)  # the pass gives up on each hung check after health_check_timeout
    assert not checker.is_alive()
    stats = pool.stats()
    assert stats["checking"] == 0 and stats["discards"]["check_failed"] >= 1  # given up: its slot is free again
    start = time.monotonic()
    pool.close(timeout=0.3)
    assert time.monotonic() - start < 0.6
    connector.check_gate.set()  # the hung checks return: their clients are closed, not reused
    wait_until(lambda: connector.live == 0)
    assert pool.stats()["discards"]["check_failed"] >= 1 or pool.stats()["discards"]["closed"] >= 1


def test_check_on_lease_only_for_clients_idle_long_enough() -> None:
    connector = FakeConnector()
    checks = []
    original = connector.check

    def counting_check(client: object) -> None:
        checks.append(client)
        original(client)  # type: ignore[arg-type]

    connector.check = counting_check  # type: ignore[method-assign]
    with Pool(connector, max_size=2, check_after_idle=0.1, health_check_interval=None) as pool:
        with pool.connection(timeout=1) as first:
            pass
        with pool.connection(timeout=1):  # used a moment ago: not checked
            pass
        assert checks == []
        time.sleep(0.15)
        first.broken = True
        with pool.connection(timeout=2) as second:  # idle long enough: checked, fails, replaced
            assert second is not first
        assert checks == [first]
        assert first.closed
        assert pool.stats()["discards"]["check_failed"] == 1


def test_backoff_gaps_double_within_ten_percent() -> None:
    connector = FakeConnector()
    connector.fail_connects = ConnectionRefusedError("down")
    with Pool(connector, min_size=1, max_size=1, breaker_threshold=None,
              reconnect_backoff=Backoff(initial=0.05, maximum=10.0)) as pool:
        wait_until(lambda: connector.connect_attempts >= 5, timeout=5)
        times = list(connector.attempt_times[:5])
        pool.close(timeout=1)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for earlier, later in zip(gaps, gaps[1:], strict=False):
        assert 1.8 <= later / earlier <= 2.2, gaps


def test_reconnect_failed_is_called_once_and_trying_goes_on() -> None:
    connector = FakeConnector()
    connector.fail_connects = ConnectionRefusedError("down")
    calls: list[object] = []
    with Pool(connector, min_size=1, max_size=1, breaker_threshold=None, reconnect_timeout=0.2,
              reconnect_backoff=Backoff(initial=0.02, maximum=0.05), reconnect_failed=calls.append) as pool:
        wait_until(lambda: calls, timeout=5)
        attempts = connector.connect_attempts
        time.sleep(0.3)
        assert calls == [pool]
        assert connector.connect_attempts > attempts  # still trying
        connector.fail_connects = None
        pool.wait(5)


def test_breaker_opens_fails_fast_probes_and_closes() -> None:
    connector = FakeConnector()
    connector.fail_connects = ConnectionRefusedError("down")
    states: list[str] = []
    with Pool(connector, max_size=4, breaker_threshold=3, breaker_probe_interval=0.1, timeout=5,
              reconnect_backoff=Backoff(initial=0.01, maximum=0.02)) as pool:
        pool.add_listener("breaker", lambda pool, state: states.append(state))
        # Waiters ride out the first failures, then the breaker opens and fails them at once.
        start = time.monotonic()
        with pytest.raises(PoolUnavailable) as info:
            pool.getconn()
        assert time.monotonic() - start < 1.0
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert pool.stats()["breaker"] in ("open", "half_open")
        # While open: leases fail at once, and attempts are rate-limited (no herd from many callers).
        attempts = connector.connect_attempts
        rejected = 0
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            try:
                pool.getconn(timeout=1)
            except PoolUnavailable:
                rejected += 1
        assert rejected > 10
        assert connector.connect_attempts - attempts <= 8
        # Backend back: the next probe succeeds and closes the breaker.
        connector.fail_connects = None
        time.sleep(0.12)
        with pool.connection(timeout=1):
            pass
        assert pool.stats()["breaker"] == "closed"
    assert states[0] == "open" and states[-1] == "closed" and "half_open" in states


def test_breaker_can_be_turned_off() -> None:
    connector = FakeConnector()
    connector.fail_connects = ConnectionRefusedError("down")
    with Pool(connector, max_size=2, breaker_threshold=None,
              reconnect_backoff=Backoff(initial=0.01, maximum=0.02)) as pool:
        start = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=0.4)
        assert not isinstance(info.value, PoolUnavailable)
        assert time.monotonic() - start >= 0.4
        assert pool.stats()["breaker"] == "closed"


def test_outage_attempts_are_bounded_with_fifty_waiters() -> None:
    connector = FakeConnector(connect_delay=0.02)
    connector.fail_connects = ConnectionRefusedError("down")
    with Pool(connector, min_size=2, max_size=5, timeout=0.5, breaker_threshold=None) as pool:
        errors: list[BaseException] = []

        def lease() -> None:
            try:
                pool.putconn(pool.getconn())
            except PoolTimeout as error:
                errors.append(error)

        threads = [threading.Thread(target=lease) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 50
        assert connector.max_in_flight <= 5


def test_recovery_after_outage_is_quick() -> None:
    connector = FakeConnector()
    connector.fail_connects = ConnectionRefusedError("down")
    with Pool(connector, min_size=2, max_size=4, timeout=5, breaker_threshold=3) as pool:
        time.sleep(1.0)  # a long outage: backoff has grown past a second
        connector.fail_connects = None
        back = time.monotonic()
        while True:
            try:
                with pool.connection(timeout=1):
                    break
            except PoolUnavailable:
                time.sleep(0.01)
        assert time.monotonic() - back < 0.5


def test_reload_replaces_every_client_gracefully() -> None:
    connector = FakeConnector()
    events: list[str] = []
    with Pool(connector, min_size=2, max_size=3) as pool:
        pool.add_listener("reload", lambda pool: events.append("reload"))
        pool.wait(5)
        leased = pool.getconn(timeout=1)
        with pool._inv.lock:
            old_idle = [r.client for r in pool._inv.idle]
        pool.reload()
        assert all(c.closed for c in old_idle)
        assert not leased.closed
        pool.putconn(leased)
        wait_until(lambda: leased.closed)  # closed by a worker, not by the thread that gave it back
        wait_until(lambda: pool.stats()["idle"] >= 2)
        assert pool.stats()["discards"]["reload"] == len(old_idle) + 1
        assert events == ["reload"]


def test_listeners_get_events_and_cannot_break_the_pool() -> None:
    seen: list[tuple[str, dict]] = []

    def record(event: str):  # type: ignore[no-untyped-def]
        return lambda pool, **info: seen.append((event, info))

    with Pool(FakeConnector(), max_size=1) as pool:
        for event in ("connect", "lease", "return", "discard"):
            pool.add_listener(event, record(event))
        pool.add_listener("lease", lambda pool, **info: 1 / 0)  # a broken listener is logged, not raised
        with pool.connection(timeout=1) as client:
            client.broken = True
        with pytest.raises(ValueError, match="unknown event"):
            pool.add_listener("nope", print)
    names = [name for name, _ in seen]
    assert names[:4] == ["connect", "lease", "return", "discard"]
    assert seen[1][1]["wait"] >= 0 and seen[2][1]["use"] >= 0 and seen[3][1]["reason"] == "broken"


def test_stats_include_histograms() -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        held = pool.getconn(timeout=1)
        threading.Timer(0.05, pool.putconn, args=(held,)).start()
        with pool.connection(timeout=1):
            pass
        stats = pool.stats()
        # Two queued leases: the first waited for the connect, the second for the return.
        assert stats["wait_time"]["count"] == 2 and stats["wait_time"]["max"] >= 0.04
        assert stats["use_time"]["count"] == 2
        assert stats["connect_time"]["count"] == 1
        assert set(pool.histograms()) == {"wait_time", "use_time", "connect_time"}


def test_monitor_counts_calls_on_leased_clients() -> None:
    import sqlite3

    from syncpool import MonitoredClient
    from syncpool.monitoring import unwrap

    with Pool(lambda: sqlite3.connect(":memory:", check_same_thread=False), max_size=4, monitor=True) as pool:

        def work() -> None:
            for _ in range(50):
                with pool.connection(timeout=5) as conn:
                    conn.execute("select 1")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pool.connection() as conn:
            assert isinstance(conn, MonitoredClient) and isinstance(unwrap(conn), sqlite3.Connection)
            with pytest.raises(sqlite3.OperationalError):
                conn.execute("select * from missing_table")
        clients = pool.stats()["clients"]
        assert clients["operations"] == 401
        assert clients["errors"] == 1
        assert clients["methods"]["execute"]["operations"] == 401
        assert pool.pop_stats()["clients"]["operations"] == 401
        assert pool.stats()["clients"]["operations"] == 401  # nothing reset: exporters read these
        assert pool.pop_stats()["clients"]["operations"] == 0  # the change since the previous pop


def test_open_breaker_with_every_slot_leased_waits_for_a_return() -> None:
    connector = FakeConnector()
    with Pool(connector, max_size=2, breaker_threshold=1, timeout=5) as pool:
        held = [pool.getconn(timeout=1), pool.getconn(timeout=1)]  # every slot taken
        connector.fail_connects = ConnectionRefusedError("down")
        with pool._inv.lock:  # as after a failed connect: open, and no probe allowed for a minute
            pool._grower.breaker.state = BreakerState.OPEN
            pool._grower.breaker.next_probe_at = time.monotonic() + 60
        threading.Timer(0.1, pool.putconn, args=(held.pop(),)).start()
        start = time.monotonic()
        with pool.connection(timeout=2):  # connects are not the question here: wait for the return
            assert 0.05 < time.monotonic() - start < 1.0
        assert pool.stats()["size"] == 2 and connector.connect_attempts == 2
        pool.putconn(held.pop())
