"""map_pool: batches over worker threads sharing one pool."""

from __future__ import annotations

import _thread
import io
import itertools
import pickle
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syncpool
from syncpool import Backoff, BatchError, Pool, PoolError
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
        result = map_pool(pool, picky, range(20), on_error="collect")
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
        with pytest.raises(BatchError) as caught:
            map_pool(pool, fails_at_three, items(), workers=4, on_error="cancel")
        _assert_clean(pool)
    result = caught.value.result
    assert result.failed == 1 and result.errors[0][0] == 3
    assert caught.value.__cause__ is result.errors[0][2]
    assert pulled < 100, pulled  # stopped pulling soon after the failure
    assert result.succeeded + result.failed + result.cancelled == pulled == len(result.results)
    assert f"1 of {pulled} items failed" in str(caught.value)


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
        no_retry = map_pool(pool, flaky, range(12), on_error="collect")
        assert no_retry.failed == 12
        _assert_clean(pool)


class PoolLikeView:
    """Only what :class:`syncpool.protocols.PoolLike` promises (no ``run``, no ``map``), backed by a real pool."""

    def __init__(self, pool: Pool[Any]) -> None:
        self._pool = pool
        self.name, self.max_size, self.timeout, self.connector = pool.name, pool.max_size, pool.timeout, pool.connector

    @property
    def closed(self) -> bool:
        return self._pool.closed

    def connection(self, timeout: float | None = None) -> Any:
        return self._pool.connection(timeout)

    def wait_closed(self, timeout: float) -> bool:
        return self._pool.wait_closed(timeout)


def test_any_pool_like_gets_the_retries_of_pool_run() -> None:
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
        result = map_pool(PoolLikeView(pool), flaky, range(6), retry=policy, on_error="collect")
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
        with pytest.raises(BatchError) as caught:
            map_pool(pool, bad, range(4), retry=True)
    assert caught.value.result.failed == 4 and calls == 4


def test_timeout_cancels_what_has_not_started_and_raises() -> None:
    with Pool(FakeConnector(), max_size=2, name="slow") as pool:
        with pytest.raises(BatchError) as caught:
            map_pool(pool, lambda client, item: time.sleep(0.02), range(1000), timeout=0.2)
        _assert_clean(pool)
    result = caught.value.result
    assert result.timed_out and result.cancelled > 0 and not result.ok
    assert result.succeeded < 1000
    message = str(caught.value)
    assert message.startswith("pool 'slow': ") and "timeout of 0.2s passed" in message
    if not result.errors:  # an item dequeued just as the deadline passed fails with a TimeoutError instead
        assert caught.value.__cause__ is None


def test_timeout_with_collect_returns_the_result() -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        result = map_pool(pool, lambda client, item: time.sleep(0.02), range(1000), timeout=0.2, on_error="collect")
        _assert_clean(pool)
    assert result.timed_out and result.cancelled > 0 and not result.ok


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
        ({"on_error": "continue"}, ValueError),
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


# -- failures never pass silently -------------------------------------------------------------------------------------


def test_by_default_failures_raise_after_every_item_ran() -> None:
    later_failed = threading.Event()
    calls: list[int] = []
    lock = threading.Lock()

    def work(client: FakeClient, item: int) -> int:
        with lock:
            calls.append(item)
        if item == 7:
            later_failed.set()
            raise KeyError("seven")
        if item == 2:
            # Fails after item 7 has: the cause is still the failure with the lowest index, not the first in time.
            later_failed.wait(5)
            raise ValueError("two")
        return item * 10

    with Pool(FakeConnector(), max_size=4, name="jobs") as pool:
        with pytest.raises(BatchError) as caught:
            map_pool(pool, work, range(30), workers=4)
        _assert_clean(pool)  # raised only once every worker was joined and every lease returned
    error = caught.value
    result = error.result
    assert sorted(calls) == list(range(30))  # every item ran
    assert (result.succeeded, result.failed, result.cancelled) == (28, 2, 0)
    assert [(index, item) for index, item, _ in result.errors] == [(2, 2), (7, 7)]
    assert result.results[3] == 30 and result.results[2] is None
    assert isinstance(error.__cause__, ValueError) and error.__cause__ is result.errors[0][2]
    assert str(error) == "pool 'jobs': 2 of 30 items failed (28 succeeded); first failure at index 2: ValueError: two"


def test_collect_returns_the_failures_without_raising() -> None:
    def odd_fails(client: FakeClient, item: int) -> int:
        if item % 2:
            raise RuntimeError(f"odd {item}")
        return item

    with Pool(FakeConnector(), max_size=3) as pool:
        result = map_pool(pool, odd_fails, range(10), on_error="collect", ordered=False)
        _assert_clean(pool)
    assert result.failed == 5 and result.succeeded == 5 and not result.ok
    assert sorted(result.results) == [0, 2, 4, 6, 8]  # type: ignore[type-var]


def test_a_batch_that_succeeds_returns_in_every_mode() -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        for mode in ("raise", "collect", "cancel"):
            result = map_pool(pool, lambda client, item: item, range(5), on_error=mode)  # type: ignore[arg-type]
            assert result.ok and result.results == [0, 1, 2, 3, 4], mode


def test_continue_is_refused_with_the_new_names() -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        with pytest.raises(ValueError, match="on_error='continue' was renamed: pass on_error='collect'"):
            map_pool(pool, lambda client, item: item, range(3), on_error="continue")  # type: ignore[arg-type]
        _assert_clean(pool)


def test_the_message_masks_secrets_and_leaves_items_out() -> None:
    def leaky(client: FakeClient, item: dict[str, str]) -> None:
        raise ConnectionError(
            "cannot reach postgresql://app:hunter2@db:5432/orders (host=db password=hunter2 sslpassword='s3 cret') "
            "with Authorization: Bearer tok3n and {'api_key': 'k3y'}\nsecond line: hunter2"
        )

    with Pool(FakeConnector(), max_size=1) as pool:
        with pytest.raises(BatchError) as caught:
            map_pool(pool, leaky, [{"card": "4111-1111-1111-1111"}])
    message = str(caught.value)
    for secret in ("hunter2", "s3 cret", "tok3n", "k3y", "4111", "second line"):
        assert secret not in message, (secret, message)
    assert "first failure at index 0: ConnectionError: cannot reach postgresql://app:***@db:5432/orders" in message
    assert "password=***" in message and "Bearer ***" in message
    assert "hunter2" in str(caught.value.__cause__)  # the failure itself is the caller's, left as it was


def test_the_message_names_the_failure_type_and_stays_short() -> None:
    class OrderRejected(Exception):
        pass

    def reject(client: FakeClient, item: int) -> None:
        raise OrderRejected("x" * 1000)

    with Pool(FakeConnector(), max_size=1) as pool:
        with pytest.raises(BatchError) as caught:
            map_pool(pool, reject, [1])
    message = str(caught.value)
    assert f"{__name__}.test_the_message_names_the_failure_type_and_stays_short.<locals>.OrderRejected: xxx" in message
    assert message.endswith("...") and len(message) < 400


def test_batch_error_is_not_a_pool_error_and_is_exported() -> None:
    assert issubclass(BatchError, Exception) and not issubclass(BatchError, PoolError)
    assert syncpool.BatchError is BatchError and "BatchError" in syncpool.__all__


def test_batch_error_pickles_with_its_result() -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        with pytest.raises(BatchError) as caught:
            map_pool(pool, lambda client, item: 1 / item, [1, 0, 2])
    copy = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(copy, BatchError) and str(copy) == str(caught.value)
    assert copy.result.results == [1.0, None, 0.5] and isinstance(copy.result.errors[0][2], ZeroDivisionError)


def test_a_deadline_that_passes_once_nothing_is_left_to_start_cuts_nothing_off() -> None:
    # Both items start at once; the deadline passes while they run, and they finish: nothing was cut off.
    with Pool(FakeConnector(), max_size=2) as pool:
        result = map_pool(pool, lambda client, item: time.sleep(1.0) or item, [1, 2], timeout=0.5)
        _assert_clean(pool)
    assert result.ok and not result.timed_out and result.results == [1, 2]


def test_a_deadline_with_items_left_in_the_iterable_raises() -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        with pytest.raises(BatchError, match="timeout of 0.1s passed") as caught:
            map_pool(pool, lambda client, item: time.sleep(0.5), itertools.count(), timeout=0.1)
        _assert_clean(pool)
    result = caught.value.result
    assert result.timed_out and not result.ok and result.cancelled >= 1 and caught.value.__cause__ is None


def test_duplicate_rows_in_sqlite_raise_with_the_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "dupes.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE item (id INTEGER PRIMARY KEY)")
    setup.close()

    def insert(conn: sqlite3.Connection, item: int) -> None:
        with conn:
            conn.execute("INSERT INTO item VALUES (?)", (item,))

    with Pool(SQLiteConnector(path, timeout=10), max_size=3) as pool:
        with pytest.raises(BatchError) as caught:
            map_pool(pool, insert, [1, 2, 3, 2, 4, 1])
        _assert_clean(pool)
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM item").fetchone() == (4,)  # the successes stay committed
    result = caught.value.result
    assert result.succeeded == 4 and result.failed == 2
    assert {index for index, _, _ in result.errors} <= {0, 1, 3, 5}
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert "sqlite3.IntegrityError: UNIQUE constraint failed" in str(caught.value)


def test_pool_map_passes_on_error_through() -> None:
    def picky(client: FakeClient, item: int) -> int:
        if item == 1:
            raise ValueError("one")
        return item

    with Pool(FakeConnector(), max_size=2) as pool:
        with pytest.raises(BatchError) as caught:
            pool.map(picky, range(4), on_error="raise")
        assert caught.value.result.results == [0, None, 2, 3]
        result = pool.map(picky, range(4), on_error="collect")
        assert result.failed == 1 and result.results == [0, None, 2, 3]
        _assert_clean(pool)


def test_the_deadline_holds_with_a_slow_iterable_and_a_quick_fn() -> None:
    pulled = 0

    def slow_items() -> Iterator[int]:
        nonlocal pulled
        for item in range(500):
            time.sleep(0.02)  # a slow source (a paginated API, a network read): ~10 s for all of it
            pulled += 1
            yield item

    with Pool(FakeConnector(), max_size=2) as pool:
        result = map_pool(pool, lambda client, item: item, slow_items(), timeout=0.3, on_error="collect")
        _assert_clean(pool)
    # There was always room for one more item: the calling thread must still notice the deadline between pulls.
    assert result.timed_out and pulled < 500
    assert not result.errors  # items that had not started were cancelled, not failed
    assert result.succeeded + result.cancelled == pulled
