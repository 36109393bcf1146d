"""Pool.run: retried operations on fresh leases, bounded by one deadline."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import tenacity

from syncpool import Backoff, Pool, PoolClosed, retry
from syncpool.retry import RetryPolicy

from .fakes import FakeClient, FakeConnector


class FlakyConnector(FakeConnector):
    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, ConnectionError)


def test_run_returns_the_result_and_passes_arguments() -> None:
    with Pool(FlakyConnector(), max_size=2) as pool:
        assert pool.run(lambda client, a, b=0: (type(client).__name__, a, b), 1, b=2) == ("FakeClient", 1, 2)


def test_transient_errors_are_retried_on_fresh_leases() -> None:
    seen: list[FakeClient] = []

    def flaky(client: FakeClient) -> str:
        seen.append(client)
        if len(seen) < 3:
            client.broken = True  # the failure broke the client: the pool must replace it
            raise ConnectionResetError("connection reset by peer")
        return "done"

    with Pool(FlakyConnector(), max_size=2) as pool:
        policy = RetryPolicy(attempts=5, backoff=Backoff(initial=0.01, maximum=0.02))
        assert pool.run(flaky, retry=policy) == "done"
        assert len(seen) == 3 and seen[0] is not seen[1] is not seen[2]
        assert pool.stats()["discards"]["broken"] == 2


def test_permanent_errors_are_raised_at_once_unwrapped() -> None:
    calls = []

    def bad_request(client: FakeClient) -> None:
        calls.append(1)
        raise ValueError("no such bucket")

    with Pool(FlakyConnector(), max_size=1) as pool:
        with pytest.raises(ValueError, match="no such bucket"):
            pool.run(bad_request)
        assert calls == [1]


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    calls = []

    def always_down(client: FakeClient) -> None:
        calls.append(1)
        raise TimeoutError(f"attempt {len(calls)}")

    class TimeoutsAreTransient(FakeConnector):
        def is_transient(self, error: BaseException) -> bool:
            return isinstance(error, TimeoutError)

    with Pool(TimeoutsAreTransient(), max_size=1) as pool:
        with pytest.raises(TimeoutError, match="attempt 3"):
            pool.run(always_down, retry=RetryPolicy(attempts=3, backoff=Backoff(initial=0.01, maximum=0.01)))
        assert len(calls) == 3
        with pytest.raises(TimeoutError, match="attempt 4"):
            pool.run(always_down, retry=False)


def test_deadline_bounds_all_attempts_together() -> None:
    def slow_failure(client: FakeClient) -> None:
        time.sleep(0.1)
        raise ConnectionError("gone")

    with Pool(FlakyConnector(), max_size=1) as pool:
        start = time.monotonic()
        with pytest.raises(ConnectionError):
            pool.run(slow_failure, retry=RetryPolicy(attempts=100, backoff=Backoff(initial=0.05, maximum=0.05)),
                     deadline=0.5)
        assert 0.45 <= time.monotonic() - start < 0.8


def test_a_tenacity_policy_is_honoured() -> None:
    calls = []

    def flaky(client: FakeClient) -> int:
        calls.append(1)
        if len(calls) < 2:
            raise KeyError("retry me")
        return len(calls)

    policy = tenacity.Retrying(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.01),
                               retry=tenacity.retry_if_exception_type(KeyError), reraise=True)
    with Pool(FakeConnector(), max_size=1) as pool:
        assert pool.run(flaky, retry=policy) == 2


def test_backoff_sleep_ends_when_the_pool_closes() -> None:
    pool = Pool(FlakyConnector(), max_size=1)

    def down(client: FakeClient) -> None:
        raise ConnectionError("down")

    threading.Timer(0.1, pool.close).start()
    start = time.monotonic()
    with pytest.raises(PoolClosed):
        pool.run(down, retry=RetryPolicy(attempts=5, backoff=Backoff(initial=5.0, maximum=5.0)))
    assert time.monotonic() - start < 1.0


def test_bad_retry_argument_is_refused() -> None:
    with Pool(FakeConnector(), max_size=1) as pool, pytest.raises(TypeError, match="retry must be"):
        pool.run(lambda client: None, retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


class PoolLikeView:
    """Only what :class:`syncpool.protocols.PoolLike` promises, backed by a real pool (no ``_closed_event``)."""

    def __init__(self, pool: Pool[Any]) -> None:
        self._pool = pool
        self.name, self.max_size, self.timeout, self.connector = pool.name, pool.max_size, pool.timeout, pool.connector
        self.waits: list[float] = []

    @property
    def closed(self) -> bool:
        return self._pool.closed

    def connection(self, timeout: float | None = None) -> Any:
        return self._pool.connection(timeout)

    def wait_closed(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return self._pool.wait_closed(timeout)


def test_retry_run_needs_only_a_pool_like() -> None:
    calls = 0

    def flaky(client: FakeClient, value: int) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionResetError("reset")
        return value

    with Pool(FlakyConnector(), max_size=1) as pool:
        view = PoolLikeView(pool)
        policy = RetryPolicy(attempts=3, backoff=Backoff(initial=0.01, maximum=0.01))
        assert retry.run(view, flaky, (7,), {}, retry=policy, deadline=None) == 7
    assert calls == 3 and len(view.waits) == 2  # each backoff slept through wait_closed()


def test_a_pool_like_closing_ends_the_backoff() -> None:
    pool = Pool(FlakyConnector(), max_size=1)
    view = PoolLikeView(pool)

    def down(client: FakeClient) -> None:
        raise ConnectionError("down")

    threading.Timer(0.1, pool.close).start()
    with pytest.raises(PoolClosed, match="closed while run\\(\\) was waiting to retry"):
        retry.run(view, down, (), {}, retry=RetryPolicy(attempts=5, backoff=Backoff(initial=30.0, maximum=30.0)),
                  deadline=None)
    assert view.waits and view.waits[0] > 20  # it was in a long backoff, and the close ended it
