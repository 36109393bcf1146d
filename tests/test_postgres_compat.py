"""``syncpool.postgres.ConnectionPool`` behaves as psycopg_pool's documentation says ``ConnectionPool`` does.

Each test names the psycopg_pool behaviour it checks (https://www.psycopg.org/psycopg3/docs/api/pool.html and
.../advanced/pool.html). The last tests run the same snippets against both classes.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool
import pytest

import syncpool
from syncpool.postgres import (
    AuthError,
    ConnectionPool,
    ConnectRejected,
    PoolClosed,
    PoolTimeout,
    PoolUnavailable,
    TooManyRequests,
)

pytestmark = pytest.mark.postgres

STATS_KEYS = {
    "pool_min",
    "pool_max",
    "pool_size",
    "pool_available",
    "requests_waiting",
    "requests_num",
    "requests_queued",
    "requests_wait_ms",
    "requests_errors",
    "usage_ms",
    "returns_bad",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_lost",
}


def _refused_port() -> int:
    """A local port nobody listens on (connects fail at once with ECONNREFUSED)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _pid(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.backend_pid)


@pytest.fixture
def table(postgres_server: Any) -> str:
    name = f"compat_{threading.get_ident()}_{time.monotonic_ns()}"
    postgres_server.execute(f"CREATE TABLE {name} (id int)")
    postgres_server.execute(f"GRANT ALL ON {name} TO {postgres_server.user}")
    return name


# -- exceptions ----------------------------------------------------------------------------------------------------


def test_exceptions_are_catchable_as_psycopg_pool_psycopg_and_syncpool_ones() -> None:
    assert issubclass(PoolTimeout, psycopg_pool.PoolTimeout)
    assert issubclass(PoolTimeout, psycopg.OperationalError)
    assert issubclass(PoolTimeout, syncpool.PoolTimeout)
    assert issubclass(PoolClosed, psycopg_pool.PoolClosed)
    assert issubclass(PoolClosed, syncpool.PoolClosed)
    assert issubclass(TooManyRequests, psycopg_pool.TooManyRequests)
    assert issubclass(TooManyRequests, syncpool.TooManyWaiters)
    assert issubclass(AuthError, syncpool.AuthError)
    assert issubclass(AuthError, psycopg_pool.PoolTimeout)
    assert issubclass(AuthError, ConnectRejected)
    assert issubclass(ConnectRejected, syncpool.ConnectRejected)
    assert issubclass(ConnectRejected, psycopg_pool.PoolTimeout)
    assert issubclass(PoolUnavailable, syncpool.PoolUnavailable)
    assert issubclass(PoolUnavailable, psycopg_pool.PoolTimeout)
    for cls in (PoolTimeout, PoolClosed, TooManyRequests, AuthError, ConnectRejected, PoolUnavailable):
        assert issubclass(cls, syncpool.PoolError)
        assert issubclass(cls, psycopg.Error)
        assert cls.__doc__
        assert str(cls("message")) == "message"


def test_all_is_sorted_and_documented() -> None:
    import syncpool.postgres as module

    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name).__doc__, name


# -- construction, properties, lifecycle ---------------------------------------------------------------------------


def test_defaults_and_properties_match_psycopg_pool() -> None:
    pool = ConnectionPool(
        "host=127.0.0.1 port=1", kwargs={"application_name": "x"}, name="compat", open=False
    )
    assert pool.name == "compat"
    assert pool.min_size == 4 and pool.max_size == 4  # max_size None means min_size
    assert pool.timeout == 30.0
    assert pool.max_waiting == 0
    assert pool.max_lifetime == 3600.0
    assert pool.max_idle == 600.0
    assert pool.reconnect_timeout == 300.0
    assert pool.num_workers == 3
    assert pool.conninfo == "host=127.0.0.1 port=1"
    assert pool.kwargs == {"application_name": "x"}
    assert pool.connection_class is psycopg.Connection
    assert pool.closed
    assert isinstance(pool, syncpool.Pool)


@pytest.mark.parametrize(
    ("min_size", "max_size", "message"),
    [
        (-1, None, "min_size cannot be negative"),
        (4, 2, "max_size must be greater"),
        (0, 0, "if min_size is 0"),
    ],
)
def test_size_validation_like_psycopg_pool(min_size: int, max_size: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionPool("", min_size=min_size, max_size=max_size, open=False)


def test_getconn_before_open_raises_pool_closed() -> None:
    pool = ConnectionPool("host=127.0.0.1 port=1", open=False)
    with pytest.raises(PoolClosed, match="not open"):
        pool.getconn()
    with pytest.raises(psycopg_pool.PoolClosed):
        pool.wait(0.1)


def test_context_manager_opens_and_closes(postgres_server: Any) -> None:
    pool = ConnectionPool(postgres_server.dsn, min_size=1, open=False)
    assert pool.closed
    with pool as entered:
        assert entered is pool
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.closed
    with pytest.raises(PoolClosed):  # a closed pool cannot be reopened
        pool.open()
    with pytest.raises(psycopg_pool.PoolClosed), pool:
        pass


def test_open_none_opens_and_warns_at_first_getconn(postgres_server: Any) -> None:
    pool = ConnectionPool(postgres_server.dsn, min_size=1)
    try:
        assert not pool.closed
        with pytest.warns(DeprecationWarning, match="'open' parameter will become 'False'"):
            with pool.connection():
                pass
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pool.connection():  # warned once only
                pass
    finally:
        pool.close()


def test_open_explicit_or_context_manager_does_not_warn(postgres_server: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ConnectionPool(postgres_server.dsn, min_size=1) as pool, pool.connection():
            pass
        pool = ConnectionPool(postgres_server.dsn, min_size=1, open=True)
        try:
            pool.wait(10)
        finally:
            pool.close()


def test_close_fails_waiters_and_new_requests_and_closes_returned_connections(postgres_server: Any) -> None:
    pool = ConnectionPool(postgres_server.dsn, min_size=1, open=True)
    conn = pool.getconn()
    errors: list[BaseException] = []

    def wait_for_one() -> None:
        try:
            pool.getconn(timeout=10)
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            errors.append(error)

    waiter = threading.Thread(target=wait_for_one)
    waiter.start()
    _wait_until(lambda: pool.get_stats()["requests_waiting"] == 1)
    pool.close(timeout=0)
    waiter.join(5)
    assert len(errors) == 1 and isinstance(errors[0], psycopg_pool.PoolClosed)
    assert pool.closed
    with pytest.raises(PoolClosed, match="closed"):
        pool.getconn()
    pool.putconn(conn)  # returned after close: closed, not kept
    assert conn.closed


# -- connection(): commit, rollback --------------------------------------------------------------------------------


def test_connection_commits_on_success(postgres_server: Any, table: str) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=1, open=True) as pool:
        with pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1)")
        assert not conn.closed  # returned to the pool, not closed by ``with conn``
    assert postgres_server.execute(f"SELECT count(*) FROM {table}") == [(1,)]


def test_connection_rolls_back_on_error_and_propagates_it(postgres_server: Any, table: str) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=1, open=True) as pool:
        with pytest.raises(ZeroDivisionError), pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1)")
            1 / 0  # noqa: B018
        with pool.connection() as again:
            assert again is conn  # rolled back and kept
            assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert postgres_server.execute(f"SELECT count(*) FROM {table}") == [(0,)]


def test_connection_broken_inside_block_is_replaced(postgres_server: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=1, open=True) as pool:
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            postgres_server.execute("SELECT pg_terminate_backend(%s)", (_pid(conn),))
            conn.execute("SELECT 1")
        with pool.connection(timeout=10) as fresh:
            assert fresh is not conn
            assert fresh.execute("SELECT 1").fetchone() == (1,)
        assert pool.get_stats()["returns_bad"] == 1


# -- getconn() / putconn() -----------------------------------------------------------------------------------------


def test_putconn_rolls_back_an_open_transaction(postgres_server: Any, table: str, caplog: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=1, open=True) as pool:
        conn = pool.getconn()
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
            pool.putconn(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert any(
            record.name == "psycopg.pool" and "rolling back returned connection" in record.getMessage()
            for record in caplog.records
        )
        assert pool.getconn() is conn  # kept
        pool.putconn(conn)
    assert postgres_server.execute(f"SELECT count(*) FROM {table}") == [(0,)]


def test_putconn_of_a_foreign_or_returned_connection_raises_value_error(postgres_server: Any) -> None:
    with (
        ConnectionPool(postgres_server.dsn, min_size=1, name="one", open=True) as one,
        ConnectionPool(postgres_server.dsn, min_size=1, name="two", open=True) as two,
    ):
        conn = one.getconn()
        with pytest.raises(ValueError, match="it comes from pool 'one'"):
            two.putconn(conn)
        one.putconn(conn)
        with pytest.raises(ValueError, match="doesn't come from any pool"):
            one.putconn(conn)
        with psycopg.connect(postgres_server.dsn) as outsider, pytest.raises(ValueError):
            one.putconn(outsider)


def test_getconn_timeout_raises_pool_timeout(postgres_server: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=1, timeout=0.2, open=True) as pool:
        conn = pool.getconn()
        started = time.monotonic()
        with pytest.raises(psycopg_pool.PoolTimeout):
            pool.getconn()
        assert 0.15 < time.monotonic() - started < 2.0
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.05)
        pool.putconn(conn)
        stats = pool.get_stats()
        assert stats["requests_errors"] == 2
        assert stats["requests_num"] == 3


def test_max_waiting_raises_too_many_requests(postgres_server: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=1, max_waiting=1, open=True) as pool:
        conn = pool.getconn()
        waiter_result: list[Any] = []
        waiter = threading.Thread(target=lambda: waiter_result.append(pool.getconn(timeout=10)))
        waiter.start()
        _wait_until(lambda: pool.get_stats()["requests_waiting"] == 1)
        with pytest.raises(psycopg_pool.TooManyRequests):
            pool.getconn(timeout=5)
        pool.putconn(conn)
        waiter.join(5)
        pool.putconn(waiter_result[0])


def test_close_returns_makes_close_return_the_connection(postgres_server: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=1, close_returns=True, open=True) as pool:
        conn = pool.getconn()
        conn.close()
        assert not conn.closed
        assert pool.get_stats()["pool_available"] == 1
        assert pool.getconn() is conn
        pool.putconn(conn)


# -- callbacks -----------------------------------------------------------------------------------------------------


def test_configure_is_called_once_per_connection(postgres_server: Any) -> None:
    configured: list[int] = []

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET application_name = 'configured'")
        conn.commit()  # configure must leave the connection idle
        configured.append(_pid(conn))

    with ConnectionPool(postgres_server.dsn, min_size=2, configure=configure, open=True) as pool:
        pool.wait(10)
        for _ in range(5):
            with pool.connection() as conn:
                assert conn.execute("SHOW application_name").fetchone() == ("configured",)
    assert len(configured) == 2 and len(set(configured)) == 2


def test_reset_is_called_on_return(postgres_server: Any) -> None:
    resets: list[int] = []

    def reset(conn: psycopg.Connection[Any]) -> None:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # after our rollback
        conn.execute("RESET ALL")
        resets.append(_pid(conn))

    with ConnectionPool(postgres_server.dsn, min_size=1, reset=reset, open=True) as pool:
        with pool.connection() as conn:
            conn.execute("SET search_path TO nowhere")
        conn = pool.getconn()
        conn.execute("SELECT 1")  # leaves a transaction open
        pool.putconn(conn)
        with pool.connection() as conn:
            assert conn.execute("SHOW search_path").fetchone() != ("nowhere",)
    assert len(resets) == 3


def test_reset_that_fails_or_leaves_a_transaction_discards_the_connection(postgres_server: Any) -> None:
    def reset(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT 1")  # leaves INTRANS: psycopg_pool discards such a connection

    with ConnectionPool(postgres_server.dsn, min_size=1, reset=reset, open=True) as pool:
        with pool.connection() as first:
            pass
        with pool.connection(timeout=10) as second:
            assert second is not first
        assert first.closed
        assert pool.get_stats()["returns_bad"] >= 1


def test_check_callback_discards_bad_connections(postgres_server: Any) -> None:
    with ConnectionPool(
        postgres_server.dsn, min_size=1, check=ConnectionPool.check_connection, open=True
    ) as pool:
        with pool.connection() as conn:
            victim = _pid(conn)
        postgres_server.execute("SELECT pg_terminate_backend(%s)", (victim,))
        _wait_until(lambda: postgres_server.count_connections() == 0)
        with pool.connection(timeout=10) as conn:  # the dead one fails the check and is replaced
            assert _pid(conn) != victim
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert pool.get_stats()["connections_lost"] == 1


def test_check_callback_is_called_on_every_getconn(postgres_server: Any) -> None:
    checked: list[int] = []
    check = lambda conn: checked.append(_pid(conn))  # noqa: E731
    with ConnectionPool(postgres_server.dsn, min_size=1, check=check, open=True) as pool:
        pool.wait(10)
        for _ in range(3):
            with pool.connection():
                pass
    assert len(checked) == 3  # wait() leases nothing: only the three requests were checked


def test_check_connection_runs_an_empty_query(postgres_server: Any) -> None:
    with psycopg.connect(postgres_server.dsn) as conn:
        ConnectionPool.check_connection(conn)
        assert not conn.autocommit
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.close()
        with pytest.raises(psycopg.OperationalError):
            ConnectionPool.check_connection(conn)


def test_reconnect_failed_is_called_after_reconnect_timeout() -> None:
    called = threading.Event()
    seen: list[Any] = []

    def reconnect_failed(pool: ConnectionPool) -> None:
        seen.append(pool)
        called.set()

    pool = ConnectionPool(
        f"host=127.0.0.1 port={_refused_port()}",
        min_size=1,
        reconnect_timeout=0.3,
        reconnect_failed=reconnect_failed,
        open=True,
    )
    try:
        assert called.wait(10)
        assert seen[0] is pool
    finally:
        pool.close()


# -- connection_class, kwargs --------------------------------------------------------------------------------------


class _TaggedConnection(psycopg.Connection[Any]):
    pass


def test_connection_class_and_callable_kwargs(postgres_server: Any) -> None:
    calls: list[int] = []

    def kwargs() -> dict[str, Any]:
        calls.append(1)
        return {"application_name": "from-callable"}

    with (
        ConnectionPool(
            postgres_server.dsn, connection_class=_TaggedConnection, kwargs=kwargs, min_size=1, open=True
        ) as pool,
        pool.connection() as conn,
    ):
        assert type(conn) is _TaggedConnection
        assert conn.execute("SHOW application_name").fetchone() == ("from-callable",)
    assert calls


# -- wait(), stats, resize, drain ----------------------------------------------------------------------------------


def test_wait_raises_pool_timeout_and_closes_when_the_server_is_unreachable() -> None:
    pool = ConnectionPool(f"host=127.0.0.1 port={_refused_port()}", min_size=1, open=True)
    started = time.monotonic()
    with pytest.raises(psycopg_pool.PoolTimeout) as caught:
        pool.wait(timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)  # the last connect error
    assert pool.closed


def test_wrong_password_raises_auth_error_at_once(postgres_server: Any) -> None:
    dsn = f"host={postgres_server.host} port={postgres_server.port} user={postgres_server.user} password=wrong-pw"
    with ConnectionPool(dsn, min_size=1, timeout=20, open=True) as pool:
        started = time.monotonic()
        with pytest.raises(psycopg_pool.PoolTimeout) as caught:  # what psycopg_pool users catch
            pool.getconn()
        assert time.monotonic() - started < 5.0
        assert isinstance(caught.value, AuthError)
        assert "wrong-pw" not in str(caught.value)


def test_get_stats_and_pop_stats_keys(postgres_server: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=2, max_size=3, open=True) as pool:
        pool.wait(10)
        for _ in range(3):
            with pool.connection():
                time.sleep(0.01)
        stats = pool.get_stats()
        assert set(stats) == STATS_KEYS
        assert all(isinstance(value, int) for value in stats.values())
        assert (stats["pool_min"], stats["pool_max"], stats["pool_size"], stats["pool_available"]) == (
            2,
            3,
            2,
            2,
        )
        assert stats["requests_num"] == 3
        assert stats["usage_ms"] >= 30
        assert stats["connections_num"] == 2
        popped = pool.pop_stats()
        assert popped["requests_num"] == 3
        after = pool.get_stats()
        assert after["requests_num"] == 0 and after["connections_num"] == 0 and after["usage_ms"] == 0
        assert after["pool_size"] == 2  # gauges stay


def test_resize(postgres_server: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=1, open=True) as pool:
        pool.resize(3)  # max_size None means min_size
        assert (pool.min_size, pool.max_size) == (3, 3)
        pool.wait(10)
        _wait_until(lambda: pool.get_stats()["pool_size"] == 3)
        pool.resize(1, 2)
        assert (pool.min_size, pool.max_size) == (1, 2)
        _wait_until(lambda: pool.get_stats()["pool_size"] <= 2)
        with pytest.raises(ValueError):
            pool.resize(3, 2)


def test_drain_replaces_every_connection(postgres_server: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=2, open=True) as pool:
        pool.wait(10)
        leased = pool.getconn()
        with pool.connection() as idle:
            before = {_pid(leased), _pid(idle)}
        pool.drain()
        pool.putconn(leased)  # closed on return, not kept
        assert leased.closed and idle.closed
        pool.wait(10)
        with pool.connection() as one, pool.connection() as two:
            assert not {_pid(one), _pid(two)} & before


def test_check_method_replaces_dead_idle_connections(postgres_server: Any) -> None:
    with ConnectionPool(postgres_server.dsn, min_size=2, open=True) as pool:
        pool.wait(10)
        postgres_server.terminate_backends()
        pool.check()
        pool.wait(10)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


# -- the same code against both pools ------------------------------------------------------------------------------


@pytest.fixture(params=[psycopg_pool.ConnectionPool, ConnectionPool], ids=["psycopg_pool", "syncpool"])
def pool_class(request: pytest.FixtureRequest) -> type[Any]:
    return request.param  # type: ignore[no-any-return]


def test_same_snippet_runs_with_both_pools(pool_class: type[Any], postgres_server: Any, table: str) -> None:
    configured: list[int] = []
    with pool_class(
        postgres_server.dsn,
        min_size=2,
        max_size=4,
        open=True,
        name="same-snippet",
        configure=lambda conn: configured.append(1),
        check=pool_class.check_connection,
        timeout=10,
        kwargs={"application_name": "snippet"},
    ) as pool:
        pool.wait(timeout=10)
        assert pool.name == "same-snippet"
        with pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(RuntimeError), pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (2)")
            raise RuntimeError("roll me back")
        conn = pool.getconn()
        try:
            assert conn.execute("SHOW application_name").fetchone() == ("snippet",)
        finally:
            pool.putconn(conn)

        def work() -> None:
            with pool.connection() as conn:
                conn.execute("SELECT pg_sleep(0.01)")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = pool.get_stats()
        assert stats["pool_min"] == 2 and stats["pool_max"] == 4
        assert 2 <= stats["pool_size"] <= 4
        assert stats.get("requests_num", 0) >= 10
        pool.resize(2, 3)
        assert pool.max_size == 3
        pool.check()
        pool.drain()
        with pool.connection(timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.closed
    assert len(configured) >= 2
    assert postgres_server.execute(f"SELECT array_agg(id) FROM {table}") == [([1],)]


def test_same_timeout_and_error_handling_with_both_pools(pool_class: type[Any], postgres_server: Any) -> None:
    with pool_class(postgres_server.dsn, min_size=1, max_waiting=1, open=True) as pool:
        conn = pool.getconn()
        try:
            with pytest.raises(psycopg_pool.PoolTimeout):
                pool.getconn(timeout=0.1)
            with pytest.raises(psycopg.OperationalError):  # PoolTimeout is one
                pool.getconn(timeout=0.1)
        finally:
            pool.putconn(conn)
        with pytest.raises(ValueError):
            pool.putconn(conn)
    with pytest.raises(psycopg_pool.PoolClosed):
        pool.getconn()


def test_same_unreachable_wait_with_both_pools(pool_class: type[Any]) -> None:
    pool = pool_class(f"host=127.0.0.1 port={_refused_port()}", min_size=1, open=True)
    with pytest.raises(psycopg_pool.PoolTimeout):
        pool.wait(timeout=0.5)
    assert pool.closed
