"""Contracts the pool states and nothing else pins: its error tree, what never runs under its lock, and what its
counters count."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncpool import (
    Backoff,
    Pool,
    PoolError,
    PoolTimeout,
    PoolUnavailable,
    TooManyWaiters,
    errors,
    leasing,
)
from syncpool.histogram import RELATIVE_ERROR
from syncpool.pool import EVENTS

from .fakes import FakeClient, FakeConnector, wait_until

# -- the error tree ------------------------------------------------------------------------------------------------


def _documented_tree() -> dict[str, str | None]:
    """The tree drawn in the docstring of syncpool.errors (its ```text block), as {class name: parent name}."""
    block = (errors.__doc__ or "").split("```text\n", 1)[1].split("\n```", 1)[0]
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) of the current branch
    for line in block.splitlines():
        match = re.search(r"[A-Z]\w+", line)
        assert match, line
        while stack and stack[-1][0] >= match.start():
            stack.pop()
        parents[match.group()] = stack[-1][1] if stack else None
        stack.append((match.start(), match.group()))
    return parents


def test_the_error_tree_is_the_documented_one() -> None:
    tree = _documented_tree()
    assert tree == {
        "PoolError": None,
        "PoolTimeout": "PoolError",
        "PoolUnavailable": "PoolTimeout",
        "PoolClosed": "PoolError",
        "TooManyWaiters": "PoolError",
        "ConnectRejected": "PoolError",
        "AuthError": "ConnectRejected",
        "ConnectError": "PoolError",
    }
    assert sorted(tree) == sorted(errors.__all__), "every public error is in the drawn tree, and only those"
    for name, parent in tree.items():
        cls = getattr(errors, name)
        assert cls.__bases__ == ((Exception,) if parent is None else (getattr(errors, parent),)), name
        assert cls.__doc__ and "\n" not in cls.__doc__.strip(), f"{name} needs a one-line docstring"
    # What callers rely on: one except clause catches every error the pool raises on its own account.
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), PoolError)
    assert issubclass(PoolUnavailable, PoolTimeout)  # code catching timeouts also catches failing fast


def test_the_psycopg_pool_compatible_errors_are_also_the_core_ones() -> None:
    pytest.importorskip("psycopg")
    from syncpool import postgres

    assert issubclass(postgres.PoolTimeout, errors.PoolTimeout)
    assert issubclass(postgres.PoolClosed, errors.PoolClosed)
    assert issubclass(postgres.TooManyRequests, errors.TooManyWaiters)
    assert issubclass(postgres.AuthError, errors.AuthError) and issubclass(postgres.AuthError, postgres.PoolTimeout)
    assert issubclass(postgres.PoolUnavailable, errors.PoolUnavailable)
    assert issubclass(postgres.PoolUnavailable, postgres.PoolTimeout)


# -- nothing runs under the lock -----------------------------------------------------------------------------------


class OwnedLock:
    """A ``threading.Lock`` that knows which thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking, timeout):
            self.owner = threading.get_ident()
            return True
        return False

    def release(self) -> None:
        self.owner = None
        self._lock.release()

    def held_here(self) -> bool:
        return self.owner == threading.get_ident()

    _is_owned = held_here  # what threading.Condition asks its lock

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class LockCheckingConnector(FakeConnector):
    """Records each call of a Connector method, and each one made while the calling thread holds the pool's lock."""

    def __init__(self) -> None:
        super().__init__()
        self.pool_lock: OwnedLock | None = None
        self.calls: Counter[str] = Counter()
        self.under_lock: list[str] = []
        self._record = threading.Lock()

    def _called(self, method: str) -> None:
        with self._record:
            self.calls[method] += 1
            if self.pool_lock is not None and self.pool_lock.held_here():
                self.under_lock.append(method)

    def connect(self) -> FakeClient:
        self._called("connect")
        return super().connect()

    def check(self, client: FakeClient) -> None:
        self._called("check")
        super().check(client)

    def is_broken(self, client: FakeClient) -> bool:
        self._called("is_broken")
        return super().is_broken(client)

    def reset(self, client: FakeClient) -> None:
        self._called("reset")
        super().reset(client)

    def close(self, client: FakeClient) -> None:
        self._called("close")
        super().close(client)

    def is_auth_error(self, error: BaseException) -> bool:
        self._called("is_auth_error")
        return super().is_auth_error(error)

    def is_transient(self, error: BaseException) -> bool:
        self._called("is_transient")
        return super().is_transient(error)


class _LockCheckingHandler(logging.Handler):
    def __init__(self, pool_lock: OwnedLock) -> None:
        super().__init__(logging.DEBUG)
        self.pool_lock = pool_lock  # not "lock": Handler uses that name for its own
        self.emitted = 0
        self.under_lock: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.emitted += 1
        if self.pool_lock.held_here():
            self.under_lock.append(record.getMessage())


@pytest.fixture
def syncpool_debug_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("syncpool")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.setLevel(level)


def _lease_and_give_back(pool: Pool[FakeClient], *, broken: bool = False, timeout: float = 2.0) -> None:
    with pool.connection(timeout=timeout) as client:
        client.broken = broken


def test_no_connector_method_listener_or_log_call_runs_under_the_lock(syncpool_debug_log: logging.Logger) -> None:
    connector = LockCheckingConnector()
    pool: Pool[FakeClient] = Pool(
        connector, min_size=1, max_size=2, open=False, name="lock-check", check_after_idle=0.05, max_idle=0.15,
        health_check_interval=None, leak_threshold=0.1, breaker_threshold=1,
        breaker_probe_interval=0.0, reconnect_backoff=Backoff(initial=0.01, maximum=0.02),
    )
    lock = OwnedLock()
    pool._inv.lock = lock  # type: ignore[assignment]
    pool._inv.changed = threading.Condition(lock)  # type: ignore[arg-type]
    connector.pool_lock = lock
    events: Counter[str] = Counter()
    listeners_under_lock: list[str] = []

    def listener(event: str) -> Any:
        def record(pool: Pool[FakeClient], **info: Any) -> None:
            events[event] += 1
            if lock.held_here():
                listeners_under_lock.append(event)

        return record

    for event in EVENTS:
        pool.add_listener(event, listener(event))
    handler = _LockCheckingHandler(lock)
    syncpool_debug_log.addHandler(handler)
    try:
        pool.open(wait=True, timeout=5)  # connects
        # Checks on lease of a client idle long enough: one passes, one fails (the client is replaced).
        for failing in (False, True):
            time.sleep(0.06)
            connector.check_error = ConnectionResetError("gone") if failing else None
            _lease_and_give_back(pool)
        connector.check_error = None
        assert connector.calls["check"] == 2  # health passes are off: both were checks on lease
        _lease_and_give_back(pool)  # lease, is_broken, reset, return
        _lease_and_give_back(pool, broken=True)  # discarded, closed and replaced
        connector.fail_reset = True
        _lease_and_give_back(pool)  # a reset that raises
        connector.fail_reset = False

        # A queued lease handed a returned client, and one that times out; both leases out long enough to leak.
        first, second = pool.getconn(timeout=2), pool.getconn(timeout=2)
        queued = threading.Thread(target=_lease_and_give_back, args=(pool,))
        queued.start()
        wait_until(lambda: pool.stats()["waiting"] == 1)
        pool.putconn(first)
        queued.join()
        first = pool.getconn(timeout=2)
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.02)
        wait_until(lambda: pool.stats()["leaks_detected"] >= 2)
        pool.putconn(first)
        pool.putconn(second)

        # Health passes, one failing.
        connector.check_error = ConnectionResetError("gone")
        pool.check()
        connector.check_error = None
        pool.check()

        # Failing connects open the breaker; a retry probes and closes it once connects work again.
        connector.fail_connects = ConnectionRefusedError("down")
        pool.resize(min_size=2)
        wait_until(lambda: pool.stats()["breaker"] == "open")
        connector.fail_connects = None
        wait_until(lambda: pool.stats()["breaker"] == "closed")

        # Several threads at once, breaking one client in five.
        def work() -> None:
            for i in range(20):
                _lease_and_give_back(pool, broken=i % 5 == 0)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        def fails(client: FakeClient) -> None:
            raise ConnectionResetError("lost")

        with pytest.raises(ConnectionResetError):
            pool.run(fails)  # asks is_transient

        # Maintenance retires the idle client above min_size.
        wait_until(lambda: pool.stats()["idle"] == 2)
        pool.resize(min_size=1)
        wait_until(lambda: pool.stats()["discards"]["idle"] >= 1)
        pool.resize(min_size=0, max_size=1)
        pool.reload()
        pool.close(timeout=2)
    finally:
        syncpool_debug_log.removeHandler(handler)
        pool.close(timeout=0)

    assert connector.under_lock == [], f"connector methods called under the pool lock: {set(connector.under_lock)}"
    assert listeners_under_lock == [], f"listeners called under the pool lock: {set(listeners_under_lock)}"
    assert handler.under_lock == [], f"logged under the pool lock: {handler.under_lock[:3]}"
    # The checks above can only vouch for what ran.
    methods = {"connect", "check", "is_broken", "reset", "close", "is_auth_error", "is_transient"}
    assert methods <= set(connector.calls), methods - set(connector.calls)
    assert set(EVENTS) <= set(events), set(EVENTS) - set(events)
    assert handler.emitted > 0


# -- counters ------------------------------------------------------------------------------------------------------


def _documented_keys(section: str) -> list[str]:
    """The keys in the first table under ``## <section>`` in docs/stats.md."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "stats.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1]
    table = re.search(r"^\|.*?(?=^[^|])", body, re.MULTILINE | re.DOTALL)
    assert table, section
    return re.findall(r"^\| `(\w+)` \|", table.group(), re.MULTILINE)


def test_wait_ms_total_is_the_time_queued_leases_waited() -> None:
    with Pool(FakeConnector(), min_size=1, max_size=1) as pool:
        pool.wait(5)
        held = pool.getconn(timeout=2)  # served at once: no wait
        observed: list[float] = []

        def wait() -> None:
            start = time.monotonic()
            with pool.connection(timeout=5):
                observed.append(time.monotonic() - start)

        waiter = threading.Thread(target=wait)
        waiter.start()
        wait_until(lambda: pool.stats()["waiting"] == 1)
        time.sleep(0.1)  # it is queued for at least this long
        pool.putconn(held)
        waiter.join()
        stats = pool.stats()
    assert stats["leases_total"] == 2 and stats["leases_waited"] == 1
    assert 100.0 <= stats["wait_ms_total"] <= observed[0] * 1000.0  # within the time the caller saw go by
    assert stats["wait_time"]["count"] == 1
    assert stats["wait_time"]["sum"] == pytest.approx(stats["wait_ms_total"] / 1000.0)


def test_connect_errors_and_connections_created_count_each_attempt() -> None:
    connector = FakeConnector()
    connector.fail_next = 3
    with Pool(connector, min_size=2, max_size=2, breaker_threshold=None,
              reconnect_backoff=Backoff(initial=0.001, maximum=0.005)) as pool:
        pool.wait(timeout=5)
        stats = pool.stats()
    assert connector.connect_attempts == 5
    assert stats["connect_errors"] == 3
    assert stats["connections_created"] == 2 == stats["connect_time"]["count"]
    assert stats["connect_ms_total"] > 0.0


def test_refused_leases_are_counted_by_kind() -> None:
    with Pool(FakeConnector(), max_size=1, max_waiting=1) as pool:
        held = pool.getconn(timeout=2)
        for _ in range(2):
            with pytest.raises(PoolTimeout):
                pool.getconn(timeout=0.02)
        waiter = threading.Thread(target=_lease_and_give_back, args=(pool,))
        waiter.start()
        wait_until(lambda: pool.stats()["waiting"] == 1)
        with pytest.raises(TooManyWaiters):
            pool.getconn(timeout=1)
        pool.putconn(held)
        waiter.join()
        stats = pool.stats()
    assert stats["lease_timeouts"] == 2
    assert stats["too_many_waiters"] == 1
    assert stats["leases_total"] == 2  # refused leases are not leases
    assert stats["breaker_rejections"] == 0


def test_every_close_is_counted_once_with_its_reason() -> None:
    connector = FakeConnector()
    with Pool(connector, min_size=1, max_size=3, health_check_interval=None) as pool:
        pool.wait(5)
        _lease_and_give_back(pool, broken=True)
        connector.fail_reset = True
        _lease_and_give_back(pool)
        connector.fail_reset = False
        wait_until(lambda: pool.stats()["idle"] == 1)
        connector.check_error = ConnectionResetError("gone")
        assert pool.check() == {"ok": 0, "failed": 1}
        connector.check_error = None
        wait_until(lambda: pool.stats()["idle"] == 1)
        clients = [pool.getconn(timeout=2) for _ in range(3)]
        for client in clients:
            pool.putconn(client)
        pool.resize(max_size=2)
        pool.reload()
        wait_until(lambda: pool.stats()["idle"] == 1)
        stats = pool.stats()
    assert stats["discards"] == {
        "broken": 1, "reset_failed": 1, "interrupted": 0, "lifetime": 0, "idle": 0, "check_failed": 1, "resize": 1,
        "reload": 2,
        "closed": 0,
    }
    assert stats["connections_discarded"] == 6
    assert stats["health_checks"] == {"ok": 0, "failed": 1}
    final = pool.stats()  # after close: the one idle client
    assert final["discards"]["closed"] == 1 and final["connections_discarded"] == 7 == connector.closes


def test_use_times_reach_the_histogram_exactly_across_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(10**9))
    monkeypatch.setattr(leasing, "monotonic", lambda: next(ticks) / 1000.0)  # +1 ms at every reading
    with Pool(object, max_size=1, health_check_interval=None) as pool:
        pool.putconn(pool.getconn(timeout=5))  # the first lease waits for the connect, reading the clock more often
        pool.pop_stats()
        for _ in range(2500):  # folded twice on the way (every 1024), the rest when read
            with pool.connection(timeout=5):
                pass
        use = pool.pop_stats()["use_time"]  # the change since the previous pop: count and sum exact
        assert use["count"] == 2500 and use["sum"] == pytest.approx(2.5)
        assert use["min"] == pytest.approx(0.001, rel=2 * RELATIVE_ERROR)
        assert use["max"] == pytest.approx(0.001, rel=2 * RELATIVE_ERROR)
        assert pool.stats()["use_time"]["count"] == 2501  # and the pool's whole life: nothing was reset
        with pool.connection(timeout=5):
            pass
        assert pool.pop_stats()["use_time"]["count"] == 1


def test_wait_times_reach_the_histogram_across_folds() -> None:
    with Pool(object, max_size=1, health_check_interval=None) as pool:

        def lease_in_turns() -> None:
            for _ in range(700):
                with pool.connection(timeout=5):
                    time.sleep(0)  # let the other thread queue

        threads = [threading.Thread(target=lease_in_turns) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = pool.stats()
    assert stats["leases_waited"] > 1024  # at least one fold on the way
    assert stats["wait_time"]["count"] == stats["leases_waited"]
    assert stats["wait_time"]["sum"] == pytest.approx(stats["wait_ms_total"] / 1000.0)


def test_pop_stats_returns_the_changes_of_every_counter_and_resets_nothing() -> None:
    counters = _documented_keys("Counters (since creation; in `pop_stats()`, since its previous call)")
    gauges = _documented_keys("Gauges (the state now)")
    histograms = _documented_keys("Histograms (seconds)")
    assert "wait_ms_total" in counters and "size" in gauges and "wait_time" in histograms
    connector = FakeConnector()
    with Pool(connector, min_size=1, max_size=1, max_waiting=1, leak_threshold=0.05, breaker_threshold=1,
              breaker_probe_interval=0.0, health_check_interval=None, name="counted") as pool:
        pool.wait(5)
        # Give every counter something to count.
        held = pool.getconn(timeout=2)
        failures: list[BaseException] = []

        def fails_fast() -> None:
            try:
                pool.getconn(timeout=5)
            except PoolError as error:
                failures.append(error)

        waiter = threading.Thread(target=fails_fast)
        waiter.start()
        wait_until(lambda: pool.stats()["waiting"] == 1)
        with pytest.raises(TooManyWaiters):
            pool.getconn(timeout=1)
        wait_until(lambda: pool.stats()["leaks_detected"] == 1)
        held.broken = True
        connector.fail_next = 1  # the replacement fails: the breaker opens and fails the waiter fast
        pool.putconn(held)
        waiter.join()
        assert isinstance(failures.pop(), PoolUnavailable)
        wait_until(lambda: pool.stats()["breaker"] == "open")
        _lease_and_give_back(pool)  # a probe connects: the breaker closes
        with pool.connection(timeout=2):
            with pytest.raises(PoolTimeout):
                pool.getconn(timeout=0.02)
        held = pool.getconn(timeout=2)
        waiter = threading.Thread(target=_lease_and_give_back, args=(pool,))
        waiter.start()
        wait_until(lambda: pool.stats()["waiting"] == 1)
        pool.putconn(held)  # handed to the waiter: a lease that waited
        waiter.join()
        assert pool.check() == {"ok": 1, "failed": 0}

        before = pool.stats()
        popped = pool.pop_stats()  # the first pop: everything since the pool was created
        after = pool.stats()
        again = pool.pop_stats()  # nothing happened since the first
        for key in counters:
            value = popped[key]
            assert value == before[key], key  # the first pop returns what stats would have
            assert (sum(value.values()) if isinstance(value, dict) else value) > 0, f"{key} was not exercised"
            assert after[key] == before[key], f"pop_stats reset {key}: exporters would see it go backwards"
            zero = {name: 0 for name in value} if isinstance(value, dict) else 0
            assert again[key] == zero, f"the second pop_stats did not return the change of {key}"
        for key in histograms:
            assert popped[key]["count"] > 0 and again[key]["count"] == 0, key
            assert after[key]["count"] == before[key]["count"], key
        for key in gauges:
            assert after[key] == popped[key], f"pop_stats changed the gauge {key}"
        assert sorted(counters + gauges + histograms) == sorted(after)
        _lease_and_give_back(pool)
        assert pool.pop_stats()["leases_total"] == 1 and pool.stats()["leases_total"] == before["leases_total"] + 1


def test_use_time_is_exact_in_count_sum_and_extremes_and_sampled_for_percentiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    durations = iter([0.004] * 100 + [0.001] * 899 + [0.5] + [0.002] * 2000)

    with Pool(object, max_size=1, health_check_interval=None) as pool:
        pool.putconn(pool.getconn(timeout=5))
        pool.pop_stats()
        clock = [1000.0]

        def tick() -> float:
            return clock[0]

        monkeypatch.setattr(leasing, "monotonic", tick)
        for _ in range(3000):
            with pool.connection(timeout=5):
                clock[0] += next(durations)
        use = pool.pop_stats()["use_time"]
    assert use["count"] == 3000
    assert use["sum"] == pytest.approx(0.4 + 0.899 + 0.5 + 4.0)
    assert use["min"] == pytest.approx(0.001) and use["max"] == pytest.approx(0.5)  # the long lease, not sampled
    assert use["p50"] == pytest.approx(0.002, rel=2 * RELATIVE_ERROR)
