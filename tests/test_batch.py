"""map_pool: batches over worker threads sharing one pool."""

from __future__ import annotations

import _thread
import io
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncpool import Backoff, Pool
from syncpool.batch import BatchResult, _ProgressBar, map_pool
from syncpool.connectors import SQLiteConnector
from syncpool.retry import RetryPolicy

from .fakes import FakeClient, FakeConnector

_LEAK_REGEX = re.compile(r"^syncpool-.+-(scheduler|worker-\d+|check)$")


def _batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "-batch-" in t.name and t.is_alive()]


def _assert_clean(pool: Pool[Any]) -> None:
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["waiting"] == 0
    assert not _batch_threads()


class TransientConnector(FakeConnector):
    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, ConnectionError)


def test_results_follow_input_order() -> None:
    def slow_double(client: FakeClient, item: int) -> int:
        time.sleep(0.001 * (item % 5))
        return item * 2

    with Pool(FakeConnector(), max_size=4) as pool:
        result = map_pool(pool, slow_double, range(40), workers=4)
        _assert_clean(pool)
    assert isinstance(result, BatchResult)
    assert result.results == [i * 2 for i in range(40)]
    assert list(result) == result.results and len(result) == 40
    assert (result.succeeded, result.failed, result.cancelled) == (40, 0, 0)
    assert result.ok and result.elapsed > 0
    result.raise_first()  # nothing to raise


def test_unordered_results_are_in_finishing_order() -> None:
    with Pool(FakeConnector(), max_size=3) as pool:
        result = map_pool(pool, lambda client, item: item, iter(range(25)), ordered=False)
    assert sorted(result.results) == list(range(25))  # type: ignore[type-var]
    assert result.succeeded == 25


def test_failures_are_collected_and_successes_kept() -> None:
    def picky(client: FakeClient, item: int) -> int:
        if item % 4 == 1:
            raise ValueError(f"bad item {item}")
        return item

    with Pool(FakeConnector(), max_size=3) as pool:
        result = map_pool(pool, picky, range(20))
        _assert_clean(pool)
    assert result.failed == 5 and result.succeeded == 15 and not result.ok
    assert [index for index, _, _ in result.errors] == [1, 5, 9, 13, 17]
    assert all(item == index for index, item, _ in result.errors)
    assert result.results[0] == 0 and result.results[1] is None and result.results[2] == 2
    with pytest.raises(ValueError, match="bad item 1$"):
        result.raise_first()


def test_cancel_stops_at_the_first_error() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for item in range(10_000):
            pulled += 1
            yield item

    def fails_at_three(client: FakeClient, item: int) -> int:
        if item == 3:
            raise RuntimeError("boom")
        time.sleep(0.002)
        return item

    with Pool(FakeConnector(), max_size=4) as pool:
        result = map_pool(pool, fails_at_three, items(), workers=4, on_error="cancel")
        _assert_clean(pool)
    assert result.failed == 1 and result.errors[0][0] == 3
    assert pulled < 100, pulled  # stopped pulling soon after the failure
    assert result.succeeded + result.failed + result.cancelled == pulled == len(result.results)


def test_workers_never_outnumber_the_pool() -> None:
    lock = threading.Lock()
    running = peak = 0
    names: set[str] = set()

    def track(client: FakeClient, item: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            names.add(threading.current_thread().name)
        time.sleep(0.005)
        with lock:
            running -= 1

    with Pool(FakeConnector(), max_size=3, name="small") as pool:
        result = map_pool(pool, track, range(30), workers=50)
        _assert_clean(pool)
    assert result.succeeded == 30
    assert peak <= 3 and len(names) <= 3
    assert all(re.fullmatch(r"syncpool-small-batch-\d+", name) for name in names)
    assert not any(_LEAK_REGEX.match(name) for name in names)


def test_workers_never_outnumber_the_items() -> None:
    names: set[str] = set()
    with Pool(FakeConnector(), max_size=8) as pool:
        map_pool(pool, lambda client, item: names.add(threading.current_thread().name), [1, 2])
    assert len(names) <= 2


def test_lazy_generator_is_bounded_in_flight() -> None:
    pulled = completed = 0
    worst = 0
    lock = threading.Lock()

    def items() -> Iterator[int]:
        nonlocal pulled, worst
        for item in range(300):
            with lock:
                pulled += 1
                worst = max(worst, pulled - completed)
            yield item

    def work(client: FakeClient, item: int) -> int:
        nonlocal completed
        time.sleep(0.0005)
        with lock:
            completed += 1
        return item

    with Pool(FakeConnector(), max_size=4) as pool:
        result = map_pool(pool, work, items(), workers=4)
    assert result.succeeded == 300
    assert worst <= 2 * 4, worst


def test_progress_callable_is_called() -> None:
    calls: list[tuple[int, int | None]] = []
    with Pool(FakeConnector(), max_size=2) as pool:
        map_pool(pool, lambda client, item: time.sleep(0.001), range(50), progress=lambda d, t: calls.append((d, t)))
        map_pool(pool, lambda client, item: None, iter(range(7)), progress=lambda d, t: calls.append((d, t)))
    first, second = calls[: calls.index((50, 50)) + 1], calls[calls.index((50, 50)) + 1 :]
    assert first[-1] == (50, 50) and [d for d, _ in first] == sorted(d for d, _ in first)
    assert second[-1] == (7, None)  # no len(): total unknown


def test_progress_bar_draws_on_a_stream() -> None:
    stream = io.StringIO()
    bar = _ProgressBar(200, "jobs", stream=stream)
    bar(50, 200)
    bar(200, 200)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\rjobs [") and "25%" in text and "200/200" in text and "ETA" in text
    assert text.endswith("\n")
    unknown = io.StringIO()
    bar = _ProgressBar(None, "jobs", stream=unknown)
    bar(3, None)
    assert "3 done" in unknown.getvalue()


def test_progress_is_off_when_stderr_is_not_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        map_pool(pool, lambda client, item: None, range(500))
    assert capsys.readouterr().err == ""


def test_keyboard_interrupt_in_the_calling_thread_leaks_nothing() -> None:
    started: list[int] = []

    def interrupt(done: int, total: int | None) -> None:
        if done >= 5:
            raise KeyboardInterrupt

    def work(client: FakeClient, item: int) -> None:
        started.append(item)
        time.sleep(0.002)

    with Pool(FakeConnector(), max_size=4) as pool:
        with pytest.raises(KeyboardInterrupt):
            map_pool(pool, work, range(10_000), progress=interrupt)
        _assert_clean(pool)
    assert len(started) < 200


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_ctrl_c_cancels_cleanly() -> None:
    def work(client: FakeClient, item: int) -> None:
        if item == 10:
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        time.sleep(0.002)

    with Pool(FakeConnector(), max_size=4) as pool:
        with pytest.raises(KeyboardInterrupt):
            map_pool(pool, work, range(100_000))
        _assert_clean(pool)


def test_keyboard_interrupt_inside_fn_stops_the_batch() -> None:
    def work(client: FakeClient, item: int) -> None:
        if item == 3:
            raise KeyboardInterrupt
        time.sleep(0.001)

    with Pool(FakeConnector(), max_size=4) as pool:
        with pytest.raises(KeyboardInterrupt):
            map_pool(pool, work, range(10_000))
        _assert_clean(pool)


def test_transient_errors_are_retried_on_a_fresh_lease() -> None:
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def flaky(client: FakeClient, item: int) -> int:
        with lock:
            attempts[item] = attempts.get(item, 0) + 1
            first = attempts[item] == 1
        if first:
            client.broken = True
            raise ConnectionResetError("connection reset by peer")
        return item

    policy = RetryPolicy(attempts=3, backoff=Backoff(initial=0.001, maximum=0.001))
    with Pool(TransientConnector(), max_size=3) as pool:
        result = map_pool(pool, flaky, range(12), retry=policy)
        assert result.results == list(range(12)) and result.failed == 0
        assert all(count == 2 for count in attempts.values())
        attempts.clear()
        no_retry = map_pool(pool, flaky, range(12))
        assert no_retry.failed == 12
        _assert_clean(pool)


class PoolWithoutRun:
    """A pool-like object with no ``run`` method: map_pool falls back to its own retry loop."""

    def __init__(self, pool: Pool[Any]) -> None:
        self._pool = pool
        self.name, self.max_size, self.timeout, self.connector = pool.name, pool.max_size, pool.timeout, pool.connector

    def connection(self, timeout: float | None = None) -> Any:
        return self._pool.connection(timeout)


def test_pools_without_run_get_the_simple_retry_loop() -> None:
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def flaky(client: FakeClient, item: int) -> int:
        with lock:
            attempts[item] = attempts.get(item, 0) + 1
            count = attempts[item]
        if count < 3:
            raise ConnectionResetError("reset")
        if item == 0:
            raise ValueError("not transient")
        return item

    policy = RetryPolicy(attempts=3, backoff=Backoff(initial=0.001, maximum=0.001))
    with Pool(TransientConnector(), max_size=2) as pool:
        result = map_pool(PoolWithoutRun(pool), flaky, range(6), retry=policy)  # type: ignore[arg-type]
        _assert_clean(pool)
    assert result.results == [None, 1, 2, 3, 4, 5]
    assert isinstance(result.errors[0][2], ValueError) and attempts[0] == 3


def test_errors_that_are_not_transient_are_not_retried() -> None:
    calls = 0

    def bad(client: FakeClient, item: int) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad request")

    with Pool(TransientConnector(), max_size=2) as pool:
        result = map_pool(pool, bad, range(4), retry=True)
    assert result.failed == 4 and calls == 4


def test_timeout_cancels_what_has_not_started() -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        result = map_pool(pool, lambda client, item: time.sleep(0.02), range(1000), timeout=0.2)
        _assert_clean(pool)
    assert result.timed_out and result.cancelled > 0
    assert result.succeeded < 100 and result.elapsed < 2


def test_rows_land_in_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "batch.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")

    def insert(conn: sqlite3.Connection, item: int) -> int:
        with conn:
            conn.execute("INSERT INTO item VALUES (?, ?)", (item, f"item-{item}"))
        return item

    with Pool(SQLiteConnector(path, timeout=10), max_size=4) as pool:
        result = map_pool(pool, insert, range(200), workers=4)
        _assert_clean(pool)
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM item").fetchone() == (200,)
    assert result.succeeded == 200


def test_empty_input() -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        result = map_pool(pool, lambda client, item: item, [])
    assert result.results == [] and result.ok


def test_an_error_in_the_iterable_propagates_after_cleanup() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise OSError("disk gone")

    with Pool(FakeConnector(), max_size=2) as pool:
        with pytest.raises(OSError, match="disk gone"):
            map_pool(pool, lambda client, item: item, items())
        _assert_clean(pool)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"workers": 0}, ValueError),
        ({"workers": "4"}, TypeError),
        ({"on_error": "stop"}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"retry": 3}, TypeError),
        ({"progress": "yes"}, TypeError),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        with pytest.raises(error):
            map_pool(pool, lambda client, item: item, range(3), **kwargs)
        _assert_clean(pool)
