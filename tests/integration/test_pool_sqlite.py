"""syncpool.Pool + SQLiteConnector on a database file shared by many threads."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from syncpool import Pool
from syncpool.connectors import SQLiteConnector

from . import Load, Sampler, wait_until

MAX_SIZE = 6


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "it.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER)")
    return path


def test_many_threads_write_and_read(database: Path) -> None:
    connector = SQLiteConnector(database, configure=_configure, timeout=10)
    with Pool(connector, min_size=1, max_size=MAX_SIZE, timeout=10.0, name="it-sqlite") as pool:

        def write_and_read(index: int) -> None:
            with pool.connection() as conn:
                with conn:  # a transaction: commit on success
                    conn.execute("INSERT INTO t VALUES (?)", (index,))
                assert conn.execute("SELECT count(*) FROM t").fetchone()[0] >= 1

        load = Load(write_and_read, threads=12)
        with Sampler(lambda: pool.stats()["size"]) as sampler:
            load.start()
            wait_until(lambda: load.ok >= 300, timeout=30)
            load.stop()
        assert load.errors == []
        assert max(sampler.seen) <= MAX_SIZE
        assert pool.stats()["in_use"] == 0
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == load.ok


def _leave_idle(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _leave_in_transaction(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction


def _leave_closed(conn: sqlite3.Connection) -> None:
    conn.close()


@pytest.mark.parametrize(
    ("leave", "kept", "warns"),
    [(_leave_idle, True, False), (_leave_in_transaction, True, True), (_leave_closed, False, False)],
    ids=["idle", "in-transaction", "closed"],
)
def test_return_in_every_state(database: Path, leave: Any, kept: bool, warns: bool, caplog: Any) -> None:
    with Pool(SQLiteConnector(database), max_size=1, name="it-sqlite-states") as pool:
        conn = pool.getconn()
        leave(conn)
        with caplog.at_level(logging.WARNING, logger="syncpool"):
            pool.putconn(conn)
        assert any("rolling back" in r.getMessage() for r in caplog.records) == warns
        with pool.connection() as again:
            assert (again is conn) == kept
            assert not again.in_transaction
            assert again.execute("SELECT count(*) FROM t").fetchone() == (0,)  # the insert was rolled back
        assert pool.stats()["discards"]["broken"] == (0 if kept else 1)


def test_database_locked_by_another_writer_is_the_documented_error(database: Path) -> None:
    with Pool(SQLiteConnector(database, timeout=0.05), max_size=2, name="it-sqlite-locked") as pool:
        with pool.connection() as holder:
            holder.execute("BEGIN IMMEDIATE")
            with (
                pytest.raises(sqlite3.OperationalError, match="locked") as caught,
                pool.connection() as other,
            ):
                other.execute("BEGIN IMMEDIATE")
            assert pool.connector.is_transient(caught.value)
            holder.rollback()
        with pool.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.rollback()
        assert pool.stats()["in_use"] == 0


# -- the end of a with pool.connection() block: commit, or roll back ---------------------------------------------


def _rows(database: Path) -> int:
    """The rows of ``t`` as another connection sees them: committed ones only."""
    other = sqlite3.connect(database)
    try:
        count: int = other.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        other.close()
    return count


def _warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syncpool" and r.levelno >= logging.WARNING]


def test_a_clean_block_commits_and_a_raising_one_leaves_nothing(database: Path, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="syncpool")
    with Pool(SQLiteConnector(database), max_size=1, name="it-sqlite-commit") as pool:
        with pool.connection() as conn:
            conn.execute("INSERT INTO t VALUES (1)")  # no commit: the end of the block commits
            assert _rows(database) == 0
        assert _rows(database) == 1
        failure = RuntimeError("the block failed")
        with pytest.raises(RuntimeError) as caught, pool.connection() as again:
            again.execute("INSERT INTO t VALUES (2)")
            raise failure
        assert caught.value is failure
        assert _rows(database) == 1
        with pool.connection() as last:
            assert last is conn and again is conn and not last.in_transaction
        assert _warnings(caplog) == []
        assert not any(pool.stats()["discards"].values())


def test_an_autocommit_connection_is_left_alone(database: Path, caplog: Any) -> None:
    with Pool(SQLiteConnector(database, isolation_level=None), max_size=1, name="it-sqlite-autocommit") as pool:
        with pytest.raises(RuntimeError), pool.connection() as conn:
            conn.execute("INSERT INTO t VALUES (1)")  # autocommit: written at once, block or no block
            raise RuntimeError("the block failed")
        assert _rows(database) == 1
        with caplog.at_level(logging.WARNING, logger="syncpool"), pool.connection() as conn:
            conn.execute("BEGIN")  # the caller's own transaction: not committed for them
            conn.execute("INSERT INTO t VALUES (2)")
        assert _rows(database) == 1
        assert any("rolling back" in warning for warning in _warnings(caplog))


def test_a_commit_that_fails_reaches_the_caller_and_the_connection_is_replaced(database: Path) -> None:
    with Pool(SQLiteConnector(database, timeout=0.05), max_size=1, name="it-sqlite-locked-commit") as pool:
        reader = sqlite3.connect(database)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"), pool.connection() as conn:
                conn.execute("INSERT INTO t VALUES (1)")
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM t").fetchone()  # a read lock the commit must wait for
        finally:
            reader.close()
        assert _rows(database) == 0
        assert pool.stats()["discards"]["reset_failed"] == 1
        with pool.connection() as again:
            assert again is not conn
            again.execute("INSERT INTO t VALUES (2)")
        assert _rows(database) == 1

