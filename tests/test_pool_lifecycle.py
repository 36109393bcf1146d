"""Opening, waiting, expiry, leaks, resizing and closing."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from syncpool import AuthError, Pool, PoolClosed, PoolTimeout

from .fakes import FakeConnector, wait_until
from .test_pool_leasing import FakeClient


def test_open_wait_fills_to_min_size() -> None:
    connector = FakeConnector(connect_delay=0.01)
    with Pool(connector, min_size=4, max_size=6, open=False) as pool:
        pool.open(wait=True, timeout=5)
        assert pool.stats()["idle"] == 4
    assert connector.closes == 4


def test_wait_fails_with_the_connect_error_as_cause() -> None:
    connector = FakeConnector()
    connector.fail_connects = ConnectionRefusedError("nobody listening on 127.0.0.1:1")
    with Pool(connector, min_size=2, max_size=2) as pool:
        start = time.monotonic()
        with pytest.raises(PoolTimeout, match="min_size=2 not reached") as info:
            pool.wait(timeout=0.5)
        assert time.monotonic() - start < 0.7
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        # The server comes back: the pool fills by itself.
        connector.fail_connects = None
        pool.wait(timeout=5)


def test_refused_credentials_fail_waiters_at_once() -> None:
    connector = FakeConnector()
    connector.auth_errors = (PermissionError,)
    connector.fail_connects = PermissionError("password authentication failed for user 'app'")
    with Pool(connector, max_size=2, timeout=10) as pool:
        start = time.monotonic()
        with pytest.raises(AuthError) as info:
            pool.getconn()
        assert time.monotonic() - start < 1.0
        assert isinstance(info.value.__cause__, PermissionError)
        start = time.monotonic()
        with pytest.raises(AuthError):  # a later lease tries again, and fails as fast
            pool.getconn()
        assert time.monotonic() - start < 1.0
    with Pool(connector, min_size=1, max_size=2) as pool, pytest.raises(AuthError):
        pool.wait(timeout=5)


def test_lifetime_is_jittered_and_enforced_on_checkout() -> None:
    connector = FakeConnector()
    with Pool(connector, min_size=10, max_size=10, max_lifetime=0.4) as pool:
        pool.wait(5)
        with pool._inv.lock:
            lifetimes = [r.expires - r.created for r in pool._inv.idle]
        assert all(0.36 - 1e-9 <= span <= 0.4 for span in lifetimes)
        assert len(set(lifetimes)) > 1
    with Pool(FakeConnector(), max_size=1, max_lifetime=0.2, max_idle=60, open=False) as pool:
        pool._options = dataclasses.replace(pool._options, max_lifetime=60 * 20.0)  # only the checkout notices
        pool.open()
        with pool.connection(timeout=2) as first:
            pass
        time.sleep(0.25)
        with pool.connection(timeout=2) as second:
            assert second is not first
        wait_until(lambda: first.closed)
        assert pool.stats()["discards"]["lifetime"] >= 1


def test_a_leased_client_is_never_closed_by_expiry() -> None:
    connector = FakeConnector()
    with Pool(connector, min_size=1, max_size=1, max_lifetime=0.1, max_idle=0.1) as pool:
        client = pool.getconn(timeout=2)
        time.sleep(0.4)  # several maintenance passes
        assert not client.closed
        pool.putconn(client)
        assert client.closed  # it expired while out: discarded on return
        wait_until(lambda: pool.stats()["idle"] == 1)


def test_idle_clients_above_min_size_are_retired() -> None:
    with Pool(FakeConnector(), min_size=1, max_size=3, max_idle=0.2) as pool:
        reasons: list[str] = []
        pool.add_listener("discard", lambda pool, reason: reasons.append(reason))
        clients = [pool.getconn(timeout=2) for _ in range(3)]
        for client in clients:
            pool.putconn(client)
        wait_until(lambda: pool.stats()["size"] == 1, timeout=3)
        stats = pool.stats()
        assert stats["discards"]["idle"] == 2
        assert sum(c.closed for c in clients) == 2
        wait_until(lambda: len(reasons) == 2)
        assert reasons == ["idle", "idle"]  # events carry the same reasons as stats()["discards"]


def test_maintenance_retires_expired_idle_clients_as_lifetime() -> None:
    with Pool(FakeConnector(), min_size=0, max_size=2, max_lifetime=0.2) as pool:
        reasons: list[str] = []
        pool.add_listener("discard", lambda pool, reason: reasons.append(reason))
        pool.putconn(pool.getconn(timeout=2))
        wait_until(lambda: reasons == ["lifetime"], timeout=3)
        assert pool.stats()["discards"]["lifetime"] == 1


def test_leak_is_reported_once_with_the_leasing_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="syncpool")
    with Pool(FakeConnector(), max_size=1, leak_threshold=0.1, name="leaky") as pool:
        client = pool.getconn(timeout=2)  # the line the warning must point at
        time.sleep(0.45)
        pool.putconn(client)
        assert pool.stats()["leaks_detected"] == 1
    leaks = [r for r in caplog.records if "possible leak" in r.getMessage()]
    assert len(leaks) == 1
    message = leaks[0].getMessage()
    assert "pool 'leaky'" in message
    assert "test_leak_is_reported_once_with_the_leasing_stack" in message
    assert __file__ in message


def test_resize_shrinks_and_grows() -> None:
    connector = FakeConnector()
    with Pool(connector, min_size=4, max_size=8) as pool:
        pool.wait(5)
        held = pool.getconn(timeout=2)
        pool.resize(min_size=1, max_size=2)
        stats = pool.stats()
        assert stats["size"] == 2 and stats["in_use"] == 1
        assert stats["discards"]["resize"] == 2
        pool.resize(min_size=3, max_size=5)
        wait_until(lambda: pool.stats()["size"] == 3)
        pool.putconn(held)
        with pytest.raises(ValueError, match="min_size"):
            pool.resize(min_size=6)


def test_shrinking_below_leases_out_discards_them_on_return() -> None:
    with Pool(FakeConnector(), max_size=3) as pool:
        clients = [pool.getconn(timeout=2) for _ in range(3)]
        pool.resize(max_size=1)
        for client in clients:
            pool.putconn(client)
        assert pool.stats()["size"] == 1
        assert sum(c.closed for c in clients) == 2


def test_close_fails_waiters_at_once_and_lets_leases_finish() -> None:
    connector = FakeConnector()
    pool = Pool(connector, max_size=1, timeout=10)
    held = pool.getconn()
    failures: list[BaseException] = []

    failed_at: list[float] = []

    def wait() -> None:
        try:
            pool.getconn()
        except BaseException as error:
            failed_at.append(time.monotonic())
            failures.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: pool.stats()["waiting"] == 1)
    threading.Timer(0.2, pool.putconn, args=(held,)).start()
    start = time.monotonic()
    pool.close(timeout=2)
    elapsed = time.monotonic() - start
    waiter.join()
    assert isinstance(failures[0], PoolClosed)
    assert failed_at[0] - start < 0.1  # at once, not when the lease came back at 0.2 s
    assert 0.15 < elapsed < 1.0  # waited for the lease, not the full timeout
    assert held.closed and connector.live == 0
    with pytest.raises(PoolClosed):
        pool.getconn()


def test_close_times_out_without_closing_a_leased_client(caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(FakeConnector(), max_size=1)
    held = pool.getconn(timeout=2)
    start = time.monotonic()
    pool.close(timeout=0.2)
    assert time.monotonic() - start < 0.5
    assert not held.closed
    assert "still leased" in caplog.text
    pool.putconn(held)
    assert held.closed


def test_close_is_idempotent_and_safe_from_many_threads() -> None:
    connector = FakeConnector()
    pool = Pool(connector, min_size=3, max_size=3)
    pool.wait(5)
    threads = [threading.Thread(target=pool.close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    assert connector.closes == 3
    assert not [t for t in threading.enumerate() if t.name.startswith(f"syncpool-{pool.name}-")]


def test_close_does_not_wait_for_a_hung_connect() -> None:
    connector = FakeConnector(connect_delay=3.0)
    pool = Pool(connector, min_size=1, max_size=1)
    time.sleep(0.05)
    start = time.monotonic()
    pool.close(timeout=0.2)
    assert time.monotonic() - start < 0.5


@pytest.mark.allow_leaks
def test_threads_end_when_the_pool_is_garbage_collected() -> None:
    import gc

    pool = Pool(FakeConnector(), max_size=1, name="forgotten")
    del pool
    gc.collect()
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("syncpool-forgotten-")])


def test_interpreter_exit_with_an_open_pool_does_not_hang() -> None:
    script = textwrap.dedent(
        """
        import time
        from syncpool import Pool, Connector

        class Hanging(Connector):
            def connect(self):
                time.sleep(3600)

        hung = Pool(Hanging(), min_size=2, max_size=2)
        ok = Pool(lambda: object(), min_size=2, max_size=2)
        ok.wait(5)
        lease = ok.getconn()
        print("leaving")
        """
    )
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "leaving" in result.stdout
    assert time.monotonic() - start < 10


def test_stats_and_pop_stats() -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        for _ in range(3):
            with pool.connection(timeout=2):
                pass
        stats = pool.pop_stats()
        assert stats["leases_total"] == 3 and stats["connections_created"] == 1
        for key in ("size", "idle", "in_use", "waiting", "min_size", "max_size", "leases_total", "lease_timeouts",
                    "wait_ms_total", "connections_created", "connections_discarded", "connect_errors"):
            assert key in stats
        after = pool.stats()
        assert after["leases_total"] == 3 and after["connections_created"] == 1  # nothing reset
        assert pool.pop_stats()["leases_total"] == 0  # the change since the previous pop
        assert after["size"] == 1  # gauges stay
    assert isinstance(stats["wait_ms_total"], float)


def test_repr_and_stats_show_no_connector_secrets() -> None:
    class Secretive(FakeConnector):
        description = "db at 127.0.0.1 as app"

        def __init__(self) -> None:
            super().__init__()
            self.password = "hunter2"

    with Pool(Secretive(), max_size=1) as pool:
        assert "hunter2" not in repr(pool) and "hunter2" not in str(pool.stats())


def test_client_type_is_preserved() -> None:
    with Pool(FakeConnector(), max_size=1) as pool, pool.connection(timeout=2) as client:
        assert isinstance(client, FakeClient)


@pytest.mark.parametrize("full", [True, False], ids=["at-max-size", "growing"])
def test_a_queued_lease_reports_its_wait_and_leasing_stack(full: bool, caplog: pytest.LogCaptureFixture) -> None:
    # At max_size a lease queues in getconn's own lock hold; a pool that can still grow queues on the slow path.
    # Both must tell lease listeners how long they waited and remember where they were leased.
    caplog.set_level(logging.WARNING, logger="syncpool")
    with Pool(FakeConnector(connect_delay=0.0 if full else 0.2), min_size=1, max_size=1 if full else 2,
              leak_threshold=0.5, name="queued") as pool:
        pool.wait()
        waits: list[float] = []
        pool.add_listener("lease", lambda _pool, wait: waits.append(wait))
        held = pool.getconn()
        released = threading.Timer(0.2, pool.putconn, args=(held,))
        if full:
            released.start()
        leased_on_line = sys._getframe().f_lineno + 1
        client = pool.getconn(timeout=5)  # queues: the one client is out
        if full:
            released.join()
        else:
            pool.putconn(held)  # out for about the connect delay: below leak_threshold
        time.sleep(0.8)
        pool.putconn(client)
        stats = pool.stats()
    assert len(waits) == 2
    assert waits[0] == 0.0
    assert 0.15 <= waits[1] < 2.0
    assert stats["leaks_detected"] == 1
    leaks = [r.getMessage() for r in caplog.records if "possible leak" in r.getMessage()]
    assert len(leaks) == 1
    assert f'{__file__}", line {leased_on_line}, in test_a_queued_lease' in leaks[0]
