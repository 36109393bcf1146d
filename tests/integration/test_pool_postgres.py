"""syncpool.Pool + PostgresConnector against a real PostgreSQL server (``postgres_server``)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

import syncpool
from syncpool import Pool
from syncpool.connectors import PostgresConnector

from . import Load, Sampler, assert_no_secret, outage_under_load, wait_until

psycopg = pytest.importorskip("psycopg")
from psycopg.pq import TransactionStatus  # noqa: E402

pytestmark = pytest.mark.postgres

MAX_SIZE = 6


@pytest.fixture
def table(postgres_server: Any) -> str:
    name = f"it_{time.monotonic_ns()}"
    postgres_server.execute(f"CREATE TABLE {name} (id int)")
    postgres_server.execute(f"GRANT ALL ON {name} TO {postgres_server.user}")
    return name


@pytest.fixture
def pool(postgres_server: Any) -> Iterator[Pool[Any]]:
    with Pool(
        PostgresConnector(postgres_server.dsn, connect_timeout=2),
        min_size=2,
        max_size=MAX_SIZE,
        timeout=5.0,
        name="it-postgres",
    ) as pool:
        yield pool


def _pid(conn: Any) -> int:
    return int(conn.info.backend_pid)


# -- many threads --------------------------------------------------------------------------------------------------


def test_many_threads_real_work_stays_within_max_size(
    postgres_server: Any, pool: Pool[Any], table: str
) -> None:
    def insert(index: int) -> None:
        with pool.connection() as conn, conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (index,))
            conn.execute("SELECT pg_sleep(0.002)")

    load = Load(insert, threads=16)
    with Sampler(postgres_server.count_connections, interval=0.05) as sampler:
        load.start()
        wait_until(lambda: load.ok >= 400, timeout=20)
        load.stop()
    assert load.errors == []
    assert max(sampler.seen) <= MAX_SIZE
    rows = postgres_server.execute(f"SELECT count(*) FROM {table}")[0][0]
    assert rows == load.ok
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["size"] <= MAX_SIZE
    assert stats["leases_total"] == load.ok


# -- returns in every state ----------------------------------------------------------------------------------------


def _leave_idle(conn: Any, server: Any) -> None:
    conn.execute("SELECT 1")
    conn.commit()


def _leave_intrans(conn: Any, server: Any) -> None:
    conn.execute("SELECT 1")


def _leave_inerror(conn: Any, server: Any) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1/0")


def _leave_active(conn: Any, server: Any) -> None:
    manager = conn.cursor().copy("COPY (SELECT generate_series(1, 100000)) TO STDOUT")
    copy = manager.__enter__()  # an unfinished COPY: the connection is mid-command
    assert copy.read()
    conn._syncpool_test_copy = manager  # keep it referenced until the connection is closed


def _leave_closed(conn: Any, server: Any) -> None:
    conn.close()


def _leave_terminated(conn: Any, server: Any) -> None:
    server.execute("SELECT pg_terminate_backend(%s)", (_pid(conn),))
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")


@pytest.mark.parametrize(
    ("leave", "status", "outcome", "warns"),
    [
        (_leave_idle, TransactionStatus.IDLE, "kept", False),
        (_leave_intrans, TransactionStatus.INTRANS, "kept", True),
        (_leave_inerror, TransactionStatus.INERROR, "kept", True),
        (_leave_active, TransactionStatus.ACTIVE, "broken", False),
        (_leave_closed, TransactionStatus.UNKNOWN, "broken", False),
        (_leave_terminated, TransactionStatus.UNKNOWN, "broken", False),
    ],
    ids=["idle", "intrans", "inerror", "active-copy", "closed", "terminated"],
)
def test_return_in_every_state(
    postgres_server: Any, leave: Any, status: TransactionStatus, outcome: str, warns: bool, caplog: Any
) -> None:
    with Pool(PostgresConnector(postgres_server.dsn), min_size=1, max_size=1, name="it-states") as pool:
        conn = pool.getconn()
        pid = _pid(conn)
        leave(conn, postgres_server)
        assert conn.info.transaction_status == status
        with caplog.at_level(logging.WARNING, logger="syncpool"):
            pool.putconn(conn)
        warnings = [r for r in caplog.records if "rolling back" in r.getMessage()]
        assert bool(warnings) == warns
        stats = pool.stats()
        with pool.connection() as again:
            assert again.execute("SELECT 1").fetchone() == (1,)
            if outcome == "kept":
                assert again is conn and _pid(again) == pid
                assert stats["connections_discarded"] == 0
            else:
                assert again is not conn and _pid(again) != pid
                assert stats["discards"]["broken"] == 1
        if outcome != "kept":
            assert conn.closed
        assert again.info.transaction_status == TransactionStatus.IDLE


def test_idle_connection_killed_server_side_is_found_by_the_health_check(
    postgres_server: Any, pool: Pool[Any]
) -> None:
    pool.wait(10)
    assert postgres_server.terminate_backends() >= 2
    outcome = pool.check()
    assert outcome["failed"] >= 2
    pool.wait(10)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats()["discards"]["check_failed"] >= 2


# -- server restarted under load -----------------------------------------------------------------------------------

# What a caller may see while the server restarts: no client in time (PoolTimeout, PoolUnavailable when the
# breaker is open), or the error of a connection that died while it was being used.
ALLOWED = (syncpool.PoolTimeout, psycopg.OperationalError)


@pytest.mark.slow
@pytest.mark.managed_servers("postgres")
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restarted_under_load(postgres_server: Any, mode: str) -> None:
    pool = Pool(
        PostgresConnector(postgres_server.dsn, connect_timeout=2),
        min_size=2,
        max_size=MAX_SIZE,
        timeout=1.0,
        name=f"it-restart-{mode}",
        reconnect_backoff=syncpool.Backoff(initial=0.05, maximum=0.5),
    )

    def work(index: int) -> None:
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.005)")
            conn.commit()

    load = Load(work, threads=10)
    try:
        with Sampler(postgres_server.count_connections, interval=0.05) as sampler:
            recovery = outage_under_load(load, lambda: postgres_server.stop(mode), postgres_server.start)
        assert recovery < 5.0
        assert load.unexpected(ALLOWED) == []
        assert load.errors, "the outage went unnoticed: the test did not test anything"
        assert max(sampler.seen) <= MAX_SIZE
        stats = pool.stats()
        assert stats["in_use"] == 0
        assert stats["size"] <= MAX_SIZE
    finally:
        load.stop()
        pool.close()
    wait_until(lambda: postgres_server.count_connections() == 0, timeout=5)


# -- authentication and secrets ------------------------------------------------------------------------------------


@pytest.mark.managed_servers("postgres")
def test_wrong_password_raises_auth_error_fast_and_leaks_nothing(postgres_server: Any, caplog: Any) -> None:
    role = f"it_role_{secrets.token_hex(4)}"
    right = f"Right-{secrets.token_urlsafe(12)}"
    wrong = f"Wrong-{secrets.token_urlsafe(12)}"
    dsn = postgres_server.create_role(role, right)
    caplog.set_level(logging.DEBUG)
    bad = Pool(
        PostgresConnector(dsn.replace(right, wrong)), min_size=1, max_size=2, timeout=20.0, name="it-auth"
    )
    try:
        started = time.monotonic()
        with pytest.raises(syncpool.AuthError) as caught:
            bad.getconn()
        assert time.monotonic() - started < 5.0
        assert role in str(caught.value)
        cause = caught.value.__cause__
        assert isinstance(cause, psycopg.OperationalError)
        assert_no_secret([wrong, right], pool=bad, errors=[caught.value], records=caplog.records)
    finally:
        bad.close()

    with Pool(PostgresConnector(dsn), min_size=2, max_size=2, name="it-good") as good:
        with good.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
        postgres_server.terminate_backends(role)
        good.check()
        good.wait(10)
        with pytest.raises(psycopg.OperationalError) as broken:
            with good.connection() as conn:
                postgres_server.terminate_backends(role)
                conn.execute("SELECT 1")
        assert_no_secret([right], pool=good, errors=[broken.value], records=caplog.records)


def test_password_in_keyword_and_url_is_masked(postgres_server: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    for connector in (
        PostgresConnector(postgres_server.url),
        PostgresConnector(postgres_server.dsn_without_password, password=postgres_server.password),
    ):
        with Pool(connector, min_size=1, max_size=2, name="it-masked") as pool:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
            assert_no_secret([postgres_server.password], pool=pool, records=caplog.records)
