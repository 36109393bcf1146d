"""syncpool.transactions.transaction(): lease + transaction, committed on success, rolled back on error."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncpool import Pool
from syncpool.connectors import PostgresConnector, SQLiteConnector
from syncpool.transactions import transaction


class Boom(Exception):
    pass


@pytest.fixture
def pg_pool(postgres_server: Any) -> Iterator[Pool[Any]]:
    table = "syncpool_tx_test"
    postgres_server.execute(f"DROP TABLE IF EXISTS {table}")
    postgres_server.execute(f"CREATE TABLE {table} (id int)")
    pool: Pool[Any] = Pool(PostgresConnector(postgres_server.dsn), max_size=2, name="tx", timeout=10)
    try:
        yield pool
    finally:
        pool.close()
        postgres_server.execute(f"DROP TABLE IF EXISTS {table}")


def _ids(pool: Pool[Any]) -> list[int]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT id FROM syncpool_tx_test ORDER BY id").fetchall()
        conn.rollback()
    return [row[0] for row in rows]


@pytest.mark.postgres
def test_postgres_commit_on_success(pg_pool: Pool[Any]) -> None:
    with transaction(pg_pool) as conn:
        conn.execute("INSERT INTO syncpool_tx_test VALUES (1)")
    assert _ids(pg_pool) == [1]
    assert pg_pool.stats()["in_use"] == 0


@pytest.mark.postgres
def test_postgres_rollback_on_error(pg_pool: Pool[Any]) -> None:
    with pytest.raises(Boom), transaction(pg_pool) as conn:
        conn.execute("INSERT INTO syncpool_tx_test VALUES (2)")
        raise Boom
    assert _ids(pg_pool) == []
    stats = pg_pool.stats()
    assert stats["in_use"] == 0 and stats["connections_discarded"] == 0  # rolled back cleanly, reused


@pytest.mark.postgres
def test_postgres_autocommit_connection_still_gets_a_transaction(postgres_server: Any) -> None:
    postgres_server.execute("DROP TABLE IF EXISTS syncpool_tx_test")
    postgres_server.execute("CREATE TABLE syncpool_tx_test (id int)")
    pool: Pool[Any] = Pool(PostgresConnector(postgres_server.dsn, autocommit=True), max_size=1, name="tx-auto")
    try:
        with pytest.raises(Boom), transaction(pool) as conn:
            conn.execute("INSERT INTO syncpool_tx_test VALUES (3)")
            raise Boom
        assert _ids(pool) == []
    finally:
        pool.close()
        postgres_server.execute("DROP TABLE IF EXISTS syncpool_tx_test")


def test_sqlite_commit_and_rollback(tmp_path: Path) -> None:
    database = tmp_path / "tx.db"
    with sqlite3.connect(database) as setup:
        setup.execute("CREATE TABLE t (id int)")
    setup.close()
    with Pool(SQLiteConnector(database), max_size=1, name="tx-sqlite") as pool:
        with transaction(pool) as conn:
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(Boom), transaction(pool) as conn:
            conn.execute("INSERT INTO t VALUES (2)")
            raise Boom
        with pool.connection() as conn:
            assert conn.execute("SELECT id FROM t").fetchall() == [(1,)]


def test_client_without_transactions_is_refused() -> None:
    with Pool(object, max_size=1, name="tx-none") as pool:
        with pytest.raises(TypeError, match="no transaction"), transaction(pool):
            pass
        assert pool.stats()["in_use"] == 0


class LeaseOnly:
    """A pool-like object with nothing but a name and ``connection()``: all that transaction() uses."""

    def __init__(self, pool: Pool[Any]) -> None:
        self._pool = pool
        self.name = "lease-only"

    def connection(self, timeout: float | None = None) -> Any:
        return self._pool.connection(timeout)


def test_any_pool_like_can_run_a_transaction(tmp_path: Path) -> None:
    database = tmp_path / "like.db"
    with Pool(SQLiteConnector(database), max_size=1, name="tx-like") as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (id int)")
            conn.commit()
        with transaction(LeaseOnly(pool)) as conn:  # type: ignore[arg-type]
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(Boom), transaction(LeaseOnly(pool)) as conn:  # type: ignore[arg-type]
            conn.execute("INSERT INTO t VALUES (2)")
            raise Boom
        with pool.connection() as conn:
            assert conn.execute("SELECT id FROM t").fetchall() == [(1,)]
    with Pool(object, max_size=1) as plain:
        with pytest.raises(TypeError, match="pool 'lease-only'"), transaction(LeaseOnly(plain)):  # type: ignore[arg-type]
            pass
        assert plain.stats()["in_use"] == 0
