"""PostgreSQL behind a real PgBouncer: ``PostgresConnector(..., pgbouncer=True)`` through :class:`syncpool.Pool`.

The load test runs 4 spawned processes of 8 threads, each process with its own pool, against the bouncer in
transaction and in session pooling mode, and watches PostgreSQL's ``pg_stat_activity`` while they write.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from collections import Counter
from typing import Any

import pytest

from syncpool import AuthError, Pool
from syncpool.connectors import PostgresConnector
from syncpool.testing import PgBouncerServer

from . import Sampler, assert_no_secret

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

PROCESSES = 4
THREADS = 8
LEASES_PER_THREAD = 25
ROWS_PER_LEASE = 2
# Executions of one statement on one connection after which psycopg prepares it (its default prepare_threshold).
PSYCOPG_PREPARE_THRESHOLD = 5
BARRIER_TIMEOUT = 60.0


# -- the switch, without a server ------------------------------------------------------------------------------


class _RecordingConnection:
    """Stands in for ``psycopg.Connection``: records what ``connect()`` was given."""

    calls: list[dict[str, Any]] = []

    @classmethod
    def connect(cls, conninfo: str, **kwargs: Any) -> _RecordingConnection:
        cls.calls.append(kwargs)
        return cls()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"pgbouncer": True}, None),
        ({"pgbouncer": True, "prepare_threshold": 3}, 3),  # PgBouncer 1.22+ with max_prepared_statements
        ({}, "unset"),
        ({"pgbouncer": False}, "unset"),
    ],
)
def test_the_switch_turns_server_side_prepared_statements_off(options, expected):
    _RecordingConnection.calls = []
    connector = PostgresConnector("host=db user=app", connection_class=_RecordingConnection, **options)
    connector.connect()
    (kwargs,) = _RecordingConnection.calls
    assert kwargs.get("prepare_threshold", "unset") == expected
    assert connector.pgbouncer is options.get("pgbouncer", False)
    assert "prepare_threshold" not in connector.description


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_the_switch_is_a_bool(value):
    with pytest.raises(TypeError, match="pgbouncer must be True or False"):
        PostgresConnector("host=db", pgbouncer=value)


# -- what the switch fixes, deterministically --------------------------------------------------------------------


def _run_queries(conn: Any, cast: str) -> None:
    for value in range(2 * PSYCOPG_PREPARE_THRESHOLD):
        conn.execute(f"SELECT %s::{cast}", (value,))


@pytest.mark.parametrize("statements", ["queries", "checks"])
@pytest.mark.parametrize("pgbouncer", [False, True])
def test_transaction_pooling_needs_the_switch(pgbouncer_server, postgres_server, statements, pgbouncer):
    """Two clients take turns on the one server connection of a bouncer: without the switch, psycopg names the
    statement it prepares ``_pg3_0`` on both, and the second one collides with the first."""
    bouncer = PgBouncerServer(
        postgres_server, user=pgbouncer_server.user, password=pgbouncer_server.password, default_pool_size=1
    )
    with bouncer:
        connector = PostgresConnector(bouncer.dsn, autocommit=True, pgbouncer=pgbouncer)
        first, second = connector.connect(), connector.connect()
        try:

            def run(conn: Any, cast: str) -> None:
                if statements == "queries":
                    _run_queries(conn, cast)
                else:  # the pool's health check, as often as health passes would run it
                    for _ in range(2 * PSYCOPG_PREPARE_THRESHOLD):
                        connector.check(conn)

            run(first, "int")
            if not pgbouncer:
                with pytest.raises(psycopg.errors.DuplicatePreparedStatement, match="_pg3_0"):
                    run(second, "text")
                return
            run(second, "text")
            # Both clients ran on the bouncer's only server connection, which holds no prepared statement.
            backends = {conn.execute("SELECT pg_backend_pid()").fetchone() for conn in (first, second)}
            assert len(backends) == 1
            assert second.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        finally:
            first.close()
            second.close()


def test_a_refused_login_at_the_bouncer_is_an_auth_error(pgbouncer_server, caplog):
    wrong_password = f"wrong-{pgbouncer_server.password}"
    dsn = f"{pgbouncer_server.dsn_without_password} password={wrong_password}"
    pool = Pool(PostgresConnector(dsn, pgbouncer=True), max_size=2, timeout=10, name="bouncer-auth")
    try:
        with pytest.raises(AuthError, match="SASL authentication failed") as refused:
            pool.getconn()
    finally:
        pool.close()
    assert_no_secret(
        [wrong_password, pgbouncer_server.password], pool=pool, errors=[refused.value], records=caplog.records
    )


# -- many processes through the bouncer --------------------------------------------------------------------------


def _write_rows(
    dsn: str,
    table: str,
    process: int,
    max_size: int,
    started: Any,
    finished: Any,
    results: Any,
) -> None:
    """Runs in a spawned process: fill a pool, wait for the others, write from THREADS threads, report."""
    errors: list[str] = []
    executions: Counter[int] = Counter()  # INSERTs run, by connection
    lock = threading.Lock()
    insert = f"INSERT INTO {table} (process, thread, lease, row) VALUES (%s, %s, %s, %s)"
    pool = Pool(
        PostgresConnector(dsn, pgbouncer=True),
        min_size=max_size,
        max_size=max_size,
        timeout=30,
        name=f"bouncer-load-{process}",
    )
    try:
        pool.wait(30)
        started.wait(BARRIER_TIMEOUT)

        def work(thread: int) -> None:
            for lease in range(LEASES_PER_THREAD):
                try:
                    with pool.connection() as conn:
                        for row in range(ROWS_PER_LEASE):
                            conn.execute(insert, (process, thread, lease, row))
                        conn.commit()
                        with lock:
                            executions[id(conn)] += ROWS_PER_LEASE
                except Exception as error:  # every error is a failure the parent reports
                    with lock:
                        errors.append("".join(traceback.format_exception_only(type(error), error)).strip())

        threads = [threading.Thread(target=work, args=(index,)) for index in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finished.wait(BARRIER_TIMEOUT)  # pools stay open (clients connected) until the parent has looked
    except BaseException as error:
        started.abort()
        finished.abort()
        errors.append(f"process {process}: {type(error).__name__}: {error}")
    finally:
        pool.close()
    results.put({"process": process, "errors": errors, "executions": dict(executions)})


def _server_connections(conn: Any, role: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE usename = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        (role,),
    ).fetchone()
    return int(row[0])


def _bouncer_clients(bouncer: PgBouncerServer) -> int:
    return sum(1 for client in bouncer.show("clients") if client["database"] == bouncer.dbname)


@pytest.mark.slow
@pytest.mark.parametrize("pgbouncer_mode", ["transaction", "session"])
def test_processes_write_through_the_bouncer_within_its_pool(pgbouncer_server, postgres_server, pgbouncer_mode):
    bouncer = pgbouncer_server
    pool_size = bouncer.default_pool_size
    # Transaction mode shares the server connections among all the clients: each process gets as many clients
    # as threads. In session mode a client keeps its server connection, so the clients must fit the bouncer's pool.
    max_size = THREADS if pgbouncer_mode == "transaction" else pool_size // PROCESSES
    table = f"bouncer_{pgbouncer_mode}_{time.monotonic_ns()}"
    with psycopg.connect(bouncer.dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE TABLE {table} (process int, thread int, lease int, row int)")

    context = multiprocessing.get_context("spawn")
    started = context.Barrier(PROCESSES + 1)
    finished = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=_write_rows,
            args=(bouncer.dsn, table, index, max_size, started, finished, results),
            name=f"bouncer-writer-{index}",
        )
        for index in range(PROCESSES)
    ]
    reports: list[dict[str, Any]] = []
    # The server-side count, from a direct connection that is not the bouncer's role on a managed server.
    with psycopg.connect(postgres_server.dsn, autocommit=True, connect_timeout=10) as watcher:
        watch_lock = threading.Lock()

        def sample() -> int:
            with watch_lock:
                return _server_connections(watcher, bouncer.user)

        with Sampler(sample, interval=0.005) as sampler:
            for process in processes:
                process.start()
            try:
                started.wait(BARRIER_TIMEOUT)  # every pool is full: all the clients are connected
                clients_at_start = _bouncer_clients(bouncer)
                servers_at_start = sample()
                finished.wait(BARRIER_TIMEOUT)
                servers_at_end = sample()
            except threading.BrokenBarrierError:
                pass  # a writer failed: its report says why
            finally:
                for _ in processes:
                    reports.append(results.get(timeout=BARRIER_TIMEOUT))
                for process in processes:
                    process.join(BARRIER_TIMEOUT)
    errors = [error for report in reports for error in report["errors"]]
    assert not errors, errors[:5]
    assert [process.exitcode for process in processes] == [0] * PROCESSES

    rows = postgres_server.execute(f"SELECT count(*), count(DISTINCT (process, thread, lease, row)) FROM {table}")
    expected = PROCESSES * THREADS * LEASES_PER_THREAD * ROWS_PER_LEASE
    assert rows == [(expected, expected)]
    # Every process ran its INSERT often enough on one connection for psycopg to have prepared it otherwise.
    for report in reports:
        assert max(report["executions"].values()) > PSYCOPG_PREPARE_THRESHOLD

    # The clients exceed the bouncer's pool in transaction mode; PostgreSQL never sees more than the pool.
    assert clients_at_start >= PROCESSES * max_size
    if pgbouncer_mode == "transaction":
        assert clients_at_start > pool_size
    assert len(sampler.seen) > 0
    peak = max([*sampler.seen, servers_at_start, servers_at_end])
    if bouncer.user != postgres_server.user:  # else an external server's own sessions count as well
        assert 1 <= peak <= pool_size, (peak, pool_size)
    postgres_server.execute(f"DROP TABLE {table}")
