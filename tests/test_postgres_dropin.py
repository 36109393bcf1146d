"""``syncpool.postgres`` behaves as psycopg_pool does: the same code, run against both, sees the same things.

Most tests take ``pool_class`` (psycopg_pool's class, then ours) and assert what psycopg_pool's source and docs say;
where syncpool deliberately differs, the test says so and ``docs/migrating-from-psycopg-pool.md`` lists it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg_pool
import pytest

import syncpool
from syncpool.postgres import ConnectionPool, ConnectRejected, NullConnectionPool, PoolTimeout

from .fakes import wait_until

pytestmark = pytest.mark.postgres

LOGGER = "psycopg.pool"


def _pid(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.backend_pid)


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


@pytest.fixture(params=["psycopg_pool", "syncpool"])
def pool_class(request: pytest.FixtureRequest) -> type[Any]:
    return psycopg_pool.ConnectionPool if request.param == "psycopg_pool" else ConnectionPool


@pytest.fixture(params=["psycopg_pool", "syncpool"])
def null_pool_class(request: pytest.FixtureRequest) -> type[Any]:
    return psycopg_pool.NullConnectionPool if request.param == "psycopg_pool" else NullConnectionPool


@pytest.fixture
def make_pool(postgres_server: Any) -> Iterator[Callable[..., Any]]:
    """Build pools on the test server; every one is closed at the end, whatever the test did."""
    made: list[Any] = []

    def make(cls: type[Any], **options: Any) -> Any:
        options.setdefault("open", True)
        pool = cls(options.pop("conninfo", postgres_server.dsn), **options)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


# -- close() -------------------------------------------------------------------------------------------------------


def test_close_does_not_wait_for_leased_connections_and_closes_them_on_return(
    pool_class: type[Any], make_pool: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(pool_class, min_size=2)
    pool.wait(10)
    leased = pool.getconn()
    with pool.connection() as idle_later:
        pass
    # Closed by the very thread that holds a lease, with a timeout far longer than the test: if close() waited for
    # the lease it would wait on itself until the test's own timeout.
    with caplog.at_level(logging.WARNING):
        pool.close(timeout=600)
    assert pool.closed
    assert idle_later.closed  # idle: closed by close()
    assert not leased.closed  # leased: left alone...
    assert leased.execute("SELECT 1").fetchone() == (1,)
    pool.putconn(leased)
    assert leased.closed  # ...until it came back
    assert not any("did not stop" in message for message in _messages(caplog, logging.WARNING))
    pool.close()  # again: nothing to do


def test_close_from_another_thread_while_a_lease_is_out(pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    pool = make_pool(pool_class, min_size=1)
    conn = pool.getconn()
    closer = threading.Thread(target=pool.close, kwargs={"timeout": 600})
    closer.start()
    closer.join(60)  # if close() waited for the lease, it would still be running
    assert not closer.is_alive()
    assert pool.closed and not conn.closed
    pool.putconn(conn)
    assert conn.closed


def test_a_connection_returned_after_close_is_closed_without_rollback_or_reset(
    pool_class: type[Any], make_pool: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    resets: list[Any] = []
    pool = make_pool(pool_class, min_size=1, reset=resets.append)
    conn = pool.getconn(timeout=10)
    conn.execute("SELECT 1")  # a transaction left open
    pool.close()
    caplog.set_level(logging.INFO, logger=LOGGER)
    pool.putconn(conn)
    assert conn.closed
    assert resets == []
    assert not [m for m in _messages(caplog, logging.WARNING) if "returned connection" in m]


def test_a_pool_closed_before_it_was_opened_can_still_be_opened(
    pool_class: type[Any], make_pool: Callable[..., Any]
) -> None:
    pool = make_pool(pool_class, min_size=1, open=False)
    pool.close()
    pool.open(wait=True, timeout=10)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pool.close()
    with pytest.raises(psycopg_pool.PoolClosed, match="pool has already been opened/closed and cannot be reused"):
        pool.open()


# -- error messages ------------------------------------------------------------------------------------------------


def test_error_messages_carry_psycopg_pools_phrases(pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    pool = make_pool(pool_class, min_size=1, max_waiting=1, open=False, name="phrases")
    with pytest.raises(psycopg_pool.PoolClosed, match="the pool 'phrases' is not open yet"):
        pool.getconn()
    with pytest.raises(psycopg_pool.PoolClosed, match="the pool 'phrases' is not open yet"):
        pool.wait(1)
    pool.open()
    conn = pool.getconn()
    with pytest.raises(psycopg_pool.PoolTimeout, match=r"couldn't get a connection after 0\.10 sec"):
        pool.getconn(timeout=0.1)
    # psycopg_pool keeps a timed-out request in its queue (counted against max_waiting) until the next return.
    pool.putconn(conn)
    conn = pool.getconn()
    errors: list[BaseException] = []

    def wait_for_one() -> None:
        try:
            pool.getconn(timeout=60)
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            errors.append(error)

    waiter = threading.Thread(target=wait_for_one)
    waiter.start()
    wait_until(lambda: pool.get_stats()["requests_waiting"] == 1, timeout=10.0)
    with pytest.raises(psycopg_pool.TooManyRequests, match="the pool 'phrases' has already 1 requests waiting"):
        pool.getconn(timeout=60)
    with psycopg.connect(pool.conninfo) as outsider, pytest.raises(
        ValueError, match="can't return connection to pool 'phrases', it doesn't come from any pool"
    ):
        pool.putconn(outsider)
    pool.close()
    waiter.join(60)
    assert len(errors) == 1
    assert isinstance(errors[0], psycopg_pool.PoolClosed) and "the pool 'phrases' is closed" in str(errors[0])
    with pytest.raises(psycopg_pool.PoolClosed, match="the pool 'phrases' is already closed"):
        pool.getconn()
    pool.putconn(conn)


def test_wait_timeout_message_and_the_pool_is_closed(pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    with socket_refusing() as port:
        pool = make_pool(pool_class, conninfo=f"host=127.0.0.1 port={port}", min_size=1)
        with pytest.raises(psycopg_pool.PoolTimeout, match="pool initialization incomplete after 0.3 sec"):
            pool.wait(0.3)
    assert pool.closed


class socket_refusing:  # noqa: N801 - used as a context manager, like a function
    """A local port nobody listens on while the block runs (connects are refused at once)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))  # bound, never listening: connects get ECONNREFUSED
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()


def test_unknown_database_raises_connect_rejected_at_once_which_is_a_pool_timeout(
    postgres_server: Any, make_pool: Callable[..., Any]
) -> None:
    dsn = postgres_server.dsn.replace(f"dbname={postgres_server.dbname}", "dbname=no_such_db_here")
    assert "no_such_db_here" in dsn
    pool = make_pool(ConnectionPool, conninfo=dsn, min_size=1, timeout=60)
    with pytest.raises(psycopg_pool.PoolTimeout) as caught:  # what psycopg_pool users catch; it would time out
        pool.getconn()
    assert isinstance(caught.value, ConnectRejected)
    assert isinstance(caught.value, syncpool.ConnectRejected) and isinstance(caught.value, PoolTimeout)
    assert 'database "no_such_db_here" does not exist' in str(caught.value)
    assert postgres_server.password not in str(caught.value)
    assert pool.get_stats()["requests_errors"] == 1


# -- check, configure, reset ---------------------------------------------------------------------------------------


def test_check_runs_before_every_hand_out_new_and_handed_over_connections_included(
    pool_class: type[Any], make_pool: Callable[..., Any]
) -> None:
    checked: list[int] = []
    lock = threading.Lock()

    def check(conn: psycopg.Connection[Any]) -> None:
        with lock:
            checked.append(_pid(conn))

    pool = make_pool(pool_class, min_size=0, max_size=1, check=check)
    first = pool.getconn(timeout=10)  # a new connection, made for this request
    assert checked == [_pid(first)]
    received: list[Any] = []
    waiter = threading.Thread(target=lambda: received.append(pool.getconn(timeout=60)))
    waiter.start()
    wait_until(lambda: pool.get_stats()["requests_waiting"] == 1, timeout=10.0)
    pool.putconn(first)  # handed over to the waiting request
    waiter.join(60)
    assert received == [first]
    assert checked == [_pid(first)] * 2
    pool.putconn(first)
    with pool.connection():  # an idle one
        pass
    assert checked == [_pid(first)] * 3


def test_a_check_that_always_fails_ends_in_pool_timeout(pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    calls: list[int] = []

    def check(conn: psycopg.Connection[Any]) -> None:
        calls.append(1)
        raise psycopg.OperationalError("check says no")

    pool = make_pool(pool_class, min_size=1, check=check)
    with pytest.raises(psycopg_pool.PoolTimeout, match="couldn't get a connection after 1.00 sec"):
        pool.getconn(timeout=1.0)
    assert calls  # it was tried, and nothing was handed out
    assert pool.get_stats()["requests_num"] == 1


def test_configure_leaving_a_transaction_open_is_refused_not_committed(
    pool_class: type[Any], make_pool: Callable[..., Any], postgres_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("CREATE TEMPORARY TABLE configured_here (id int)")  # opens a transaction it does not end

    caplog.set_level(logging.WARNING, logger=LOGGER)
    pool = make_pool(pool_class, min_size=1, configure=configure)
    # psycopg_pool retries until the request times out; syncpool says so at once (a ConnectRejected, which is a
    # PoolTimeout): retrying cannot change what configure does.
    with pytest.raises(psycopg_pool.PoolTimeout) as caught:
        pool.getconn(timeout=1.0)
    refusal = "connection left in status INTRANS by configure function"
    if isinstance(caught.value, ConnectRejected):
        assert refusal in str(caught.value)
    wait_until(lambda: any(  # the failed connect's warning (syncpool's request may fail before it is logged)
        refusal in message and "discarded" in message for message in _messages(caplog, logging.WARNING)
    ), timeout=10.0)
    assert pool.get_stats()["pool_available"] == 0


def test_configure_that_commits_is_kept(pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET application_name = 'configured'")
        conn.commit()
        with conn:  # marked as the pool's while configure runs: this does not close it
            pass

    pool = make_pool(pool_class, min_size=1, configure=configure)
    with pool.connection(timeout=10) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("configured",)


def test_reset_leaving_a_transaction_discards_the_connection_with_a_warning(
    pool_class: type[Any], make_pool: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(pool_class, min_size=1, reset=lambda conn: conn.execute("SELECT 1"))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    conn = pool.getconn(timeout=10)
    pool.putconn(conn)
    wait_until(lambda: conn.closed, timeout=10.0)  # psycopg_pool resets on a worker
    assert any(
        message.startswith("error resetting connection: connection left in status INTRANS by reset function")
        for message in _messages(caplog, logging.WARNING)
    )
    wait_until(lambda: pool.get_stats()["returns_bad"] == 1, timeout=10.0)


# -- warnings for connections returned in a bad state --------------------------------------------------------------


def test_connection_returned_mid_command_is_closed_with_a_warning(
    pool_class: type[Any], make_pool: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(pool_class, min_size=1)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    conn = pool.getconn(timeout=10)
    copy = conn.cursor().copy("COPY (SELECT 1) TO STDOUT")
    copy.__enter__()  # the COPY is under way: the connection is ACTIVE
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE
    pool.putconn(conn)
    assert conn.closed
    assert any(m.startswith("closing returned connection: <psycopg.Connection")
               for m in _messages(caplog, logging.WARNING))
    assert pool.get_stats()["returns_bad"] == 1
    with pool.connection(timeout=10) as fresh:
        assert fresh is not conn


def test_broken_connection_returned_is_discarded_with_a_warning(
    pool_class: type[Any], make_pool: Callable[..., Any], postgres_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(pool_class, min_size=1)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    conn = pool.getconn(timeout=10)
    postgres_server.execute("SELECT pg_terminate_backend(%s)", (_pid(conn),))
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    pool.putconn(conn)
    assert any(m.startswith("discarding closed connection: <psycopg.Connection")
               for m in _messages(caplog, logging.WARNING))
    wait_until(lambda: pool.get_stats()["returns_bad"] == 1, timeout=10.0)
    with pool.connection(timeout=10) as fresh:
        assert fresh is not conn


def test_open_transaction_is_rolled_back_with_a_warning(
    pool_class: type[Any], make_pool: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(pool_class, min_size=1)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    conn = pool.getconn(timeout=10)
    conn.execute("SELECT 1")
    pool.putconn(conn)
    assert any(m.startswith("rolling back returned connection: <psycopg.Connection")
               for m in _messages(caplog, logging.WARNING))
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pool.connection(timeout=10) as again:
        assert again is conn  # kept
    assert pool.get_stats().get("returns_bad", 0) == 0


# -- idle order ----------------------------------------------------------------------------------------------------


def test_idle_connections_are_used_in_turn(pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    pool = make_pool(pool_class, min_size=3)
    pool.wait(10)
    pids = []
    for _ in range(6):
        with pool.connection() as conn:
            pids.append(_pid(conn))
    assert len(set(pids[:3])) == 3
    assert pids[3:] == pids[:3]  # FIFO: every connection in turn


# -- reconnect_failed ----------------------------------------------------------------------------------------------


@pytest.mark.managed_servers("postgres")
@pytest.mark.slow
def test_reconnect_failed_fires_at_reconnect_timeout_against_a_stopped_server(
    pool_class: type[Any], make_pool: Callable[..., Any], postgres_server: Any
) -> None:
    # With the default backoff, syncpool's failed attempts start at about 0, 0.1, 0.3, 0.7 and 1.5 s: 1.1 s falls
    # well between two of them.
    reconnect_timeout = 1.1
    fired: list[float] = []
    done = threading.Event()

    def reconnect_failed(pool: Any) -> None:
        fired.append(time.monotonic())
        done.set()

    pool = make_pool(pool_class, min_size=1, reconnect_timeout=reconnect_timeout, reconnect_failed=reconnect_failed)
    pool.wait(10)
    failures: list[float] = []
    if isinstance(pool, syncpool.Pool):
        pool.add_listener("connect_failed", lambda _pool, **info: failures.append(time.monotonic()))
    try:
        postgres_server.stop("fast")
        started = time.monotonic()
        pool.check()  # finds the connection dead: the pool starts reconnecting, and failing
        assert done.wait(60)
    finally:
        postgres_server.start()
    assert len(fired) == 1
    assert fired[0] - started >= reconnect_timeout * 0.95  # not before reconnect_timeout...
    if isinstance(pool, syncpool.Pool):
        # ...and at it, not at the first attempt that fails after it (which would be about 0.4 s later).
        assert failures
        deadline = failures[0] + reconnect_timeout
        assert not [failure for failure in failures if deadline <= failure <= fired[0]]


# -- statistics ----------------------------------------------------------------------------------------------------


def test_requests_wait_ms_includes_waits_that_timed_out(pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    pool = make_pool(pool_class, min_size=1)
    conn = pool.getconn(timeout=10)
    pool.pop_stats()
    with pytest.raises(psycopg_pool.PoolTimeout):
        pool.getconn(timeout=0.3)
    stats = pool.get_stats()
    assert stats["requests_wait_ms"] >= 250
    assert stats["requests_errors"] == 1
    assert stats["requests_queued"] == 1
    assert stats["requests_num"] == 1
    pool.putconn(conn)


def test_same_statistics_for_the_same_story(pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    pool = make_pool(pool_class, min_size=1, max_size=2)
    pool.wait(10)
    for _ in range(3):
        with pool.connection():
            pass
    first = pool.getconn()
    second = pool.getconn(timeout=10)  # queued while the pool grows
    with pytest.raises(psycopg_pool.PoolTimeout):
        pool.getconn(timeout=0.1)  # queued, timed out
    pool.putconn(first)
    second.close()
    pool.putconn(second)  # bad
    wait_until(lambda: pool.get_stats()["pool_available"] >= 1, timeout=10.0)
    stats = pool.get_stats()
    assert stats["pool_min"] == 1 and stats["pool_max"] == 2
    assert stats["requests_num"] == 6
    assert stats["requests_queued"] == 2
    assert stats["requests_errors"] == 1
    assert stats["returns_bad"] == 1
    assert stats.get("connections_errors", 0) == 0
    assert stats.get("connections_lost", 0) == 0
    assert stats["connections_num"] >= 2
    assert stats["requests_waiting"] == 0
    popped = pool.pop_stats()
    assert popped["requests_num"] == 6
    after = pool.get_stats()
    for key in ("requests_num", "requests_queued", "requests_errors", "returns_bad", "requests_wait_ms"):
        assert after.get(key, 0) == 0, key
    assert after["pool_min"] == 1  # gauges are the state now


def test_failed_checks_count_one_request_and_lost_connections(
    pool_class: type[Any], make_pool: Callable[..., Any], postgres_server: Any
) -> None:
    pool = make_pool(pool_class, min_size=2, check=pool_class.check_connection)
    pool.wait(10)
    pool.pop_stats()
    postgres_server.terminate_backends()
    wait_until(lambda: postgres_server.count_connections() == 0, timeout=10.0)
    with pool.connection(timeout=30) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    stats = pool.get_stats()
    assert stats["requests_num"] == 1  # one getconn(), however many connections it had to check
    assert stats["connections_lost"] >= 1


# -- NullConnectionPool --------------------------------------------------------------------------------------------


def test_null_pool_keeps_no_connection(null_pool_class: type[Any], make_pool: Callable[..., Any]) -> None:
    pool = make_pool(null_pool_class)
    assert (pool.min_size, pool.max_size) == (0, 0)  # max_size 0: no bound
    pool.wait(10)  # a test connection, not kept
    wait_until(lambda: pool.get_stats()["pool_available"] == 0, timeout=10.0)
    with pool.connection() as one, pool.connection() as two:
        assert one is not two and not one.closed
    assert one.closed and two.closed  # closed on return: nobody waited for them
    with pool.connection() as three:
        assert three is not one
    stats = pool.get_stats()
    assert stats["pool_available"] == 0 and stats["pool_max"] == 0
    assert stats["requests_num"] == 3


def test_null_pool_hands_a_returned_connection_to_a_waiting_request(
    null_pool_class: type[Any], make_pool: Callable[..., Any]
) -> None:
    pool = make_pool(null_pool_class, max_size=1)
    conn = pool.getconn(timeout=10)
    received: list[Any] = []
    waiter = threading.Thread(target=lambda: received.append(pool.getconn(timeout=60)))
    waiter.start()
    wait_until(lambda: pool.get_stats()["requests_waiting"] == 1, timeout=10.0)
    pool.putconn(conn)
    waiter.join(60)
    assert received == [conn] and not conn.closed
    pool.putconn(conn)
    assert conn.closed


def test_null_pool_size_rules(null_pool_class: type[Any]) -> None:
    with pytest.raises(ValueError, match="null pools must have min_size = 0"):
        null_pool_class("", min_size=1, open=False)
    with pytest.raises(ValueError, match="max_size must be greater or equal than min_size"):
        null_pool_class("", max_size=-1, open=False)
    pool = null_pool_class("", max_size=3, open=False)
    assert pool.max_size == 3
    pool.resize(0, 5)
    assert pool.max_size == 5
    with pytest.raises(ValueError, match="null pools must have min_size = 0"):
        pool.resize(1, 5)


def test_null_pool_wait_closes_the_pool_when_the_server_is_unreachable(
    null_pool_class: type[Any], make_pool: Callable[..., Any]
) -> None:
    with socket_refusing() as port:
        pool = make_pool(null_pool_class, conninfo=f"host=127.0.0.1 port={port}")
        with pytest.raises(psycopg_pool.PoolTimeout, match="pool initialization incomplete after 0.3 sec"):
            pool.wait(0.3)
    assert pool.closed
