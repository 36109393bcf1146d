"""SQLiteConnector: the standard library's sqlite3, no server needed."""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from syncpool.connectors import SQLiteConnector


def test_connect_check_reset_close(tmp_path: Path) -> None:
    connector = SQLiteConnector(tmp_path / "db.sqlite")
    conn = connector.connect()
    conn.execute("CREATE TABLE t (x)")
    connector.check(conn)
    assert not conn.in_transaction
    assert not connector.is_broken(conn)
    connector.reset(conn)
    connector.close(conn)
    assert connector.is_broken(conn)
    assert "db.sqlite" in connector.description


def test_connection_can_move_between_threads(tmp_path: Path) -> None:
    connector = SQLiteConnector(tmp_path / "db.sqlite")
    conn = connector.connect()
    errors: list[BaseException] = []

    def use() -> None:
        try:
            connector.check(conn)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    conn.close()
    assert errors == []


def test_reset_rolls_back_an_open_transaction(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    connector = SQLiteConnector(tmp_path / "db.sqlite")
    conn = connector.connect()
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        connector.reset(conn)
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert any("rolling back" in r.getMessage() for r in caplog.records)
    conn.close()


def test_memory_databases_are_private_unless_shared() -> None:
    private = SQLiteConnector(":memory:")
    a, b = private.connect(), private.connect()
    a.execute("CREATE TABLE t (x)")
    with pytest.raises(sqlite3.OperationalError):
        b.execute("SELECT * FROM t")
    a.close()
    b.close()

    shared = SQLiteConnector("file:syncpool_shared_test?mode=memory&cache=shared", uri=True)
    a, b = shared.connect(), shared.connect()
    a.execute("CREATE TABLE t (x)")
    a.commit()
    assert b.execute("SELECT count(*) FROM t").fetchone() == (0,)
    a.close()
    b.close()


def test_configure_runs_once_per_connection(tmp_path: Path) -> None:
    calls: list[sqlite3.Connection] = []

    def configure(conn: sqlite3.Connection) -> None:
        calls.append(conn)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")

    connector = SQLiteConnector(tmp_path / "db.sqlite", configure=configure)
    conn = connector.connect()
    assert calls == [conn] and not conn.in_transaction
    conn.close()


def test_is_transient_classification() -> None:
    connector = SQLiteConnector(":memory:")
    assert connector.is_transient(sqlite3.OperationalError("database is locked"))
    assert connector.is_transient(TimeoutError())
    assert not connector.is_transient(sqlite3.OperationalError("no such table: t"))
    assert not connector.is_transient(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not connector.is_auth_error(sqlite3.OperationalError("database is locked"))


def test_locked_database_error_is_transient(tmp_path: Path) -> None:
    connector = SQLiteConnector(tmp_path / "db.sqlite", timeout=0.05)
    a, b = connector.connect(), connector.connect()
    a.execute("CREATE TABLE t (x)")
    a.commit()
    a.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as info:
        b.execute("BEGIN IMMEDIATE")
    assert connector.is_transient(info.value)
    a.rollback()
    a.close()
    b.close()


# -- the end of a with pool.connection() block: release -----------------------------------------------------------

needs_autocommit_attribute = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="sqlite3.Connection.autocommit is new in Python 3.12"
)


def _open(tmp_path: Path, **kwargs: Any) -> tuple[SQLiteConnector, sqlite3.Connection, list[str]]:
    """A connector, one of its connections with a table ``t``, and the statements it runs from now on."""
    connector = SQLiteConnector(tmp_path / "db.sqlite", **kwargs)
    conn = connector.connect()
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    if conn.in_transaction:
        conn.commit()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    return connector, conn, statements


def _rows(tmp_path: Path) -> int:
    """The rows of ``t`` as another connection sees them: committed ones only."""
    with sqlite3.connect(tmp_path / "db.sqlite") as other:
        count: int = other.execute("SELECT count(*) FROM t").fetchone()[0]
    other.close()
    return count


def test_release_commits_a_clean_block(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    connector, conn, statements = _open(tmp_path)
    conn.execute("INSERT INTO t VALUES (1)")
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        connector.release(conn, None)
    assert not conn.in_transaction and _rows(tmp_path) == 1
    assert statements[-1] == "COMMIT" and caplog.records == []
    conn.close()


def test_release_rolls_back_when_the_block_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    connector, conn, statements = _open(tmp_path)
    conn.execute("INSERT INTO t VALUES (1)")
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        connector.release(conn, ValueError("the block failed"))
    assert not conn.in_transaction and _rows(tmp_path) == 0
    assert statements[-1] == "ROLLBACK" and caplog.records == []
    conn.close()


@pytest.mark.parametrize("error", [None, ValueError("the block failed")])
def test_release_of_an_idle_connection_runs_nothing(tmp_path: Path, error: Exception | None) -> None:
    connector, conn, statements = _open(tmp_path)
    conn.execute("SELECT count(*) FROM t").fetchone()
    del statements[:]
    connector.release(conn, error)
    assert statements == []
    conn.close()


@pytest.mark.parametrize("error", [None, ValueError("the block failed")])
def test_release_does_not_commit_on_an_isolation_level_none_connection(
    tmp_path: Path, error: Exception | None, caplog: pytest.LogCaptureFixture
) -> None:
    connector, conn, statements = _open(tmp_path, isolation_level=None)
    conn.execute("BEGIN")  # the caller's own transaction, on a connection that asked for autocommit
    conn.execute("INSERT INTO t VALUES (1)")
    del statements[:]
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        assert connector.release(conn, error)  # reset(), as on any return: rolled back, with a warning
    assert "COMMIT" not in " ".join(statements).upper()
    assert not conn.in_transaction and _rows(tmp_path) == 0
    assert any("rolling back" in r.getMessage() for r in caplog.records)
    conn.close()


def test_release_raises_a_failed_commit(tmp_path: Path) -> None:
    connector, conn, _ = _open(tmp_path)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    conn.commit()
    conn.execute("INSERT INTO child VALUES (42)")  # checked at COMMIT
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        connector.release(conn, None)
    conn.close()


@pytest.mark.parametrize("error", [None, ValueError("the block failed")])
def test_release_leaves_a_closed_connection_to_is_broken(tmp_path: Path, error: Exception | None) -> None:
    connector, conn, _ = _open(tmp_path)
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    connector.release(conn, error)
    assert connector.is_broken(conn)


@needs_autocommit_attribute
def test_autocommit_true_is_not_committed_and_reset_still_rolls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connector, conn, statements = _open(tmp_path, autocommit=True)
    conn.execute("INSERT INTO t VALUES (1)")  # committed at once
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (2)")
    del statements[:]
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        # release() commits nothing; its reset() ends the caller's BEGIN (rollback() does nothing under
        # autocommit=True, so reset sends ROLLBACK itself).
        assert connector.release(conn, None)
    assert "COMMIT" not in " ".join(statements).upper()
    assert not conn.in_transaction and _rows(tmp_path) == 1
    assert any("rolling back" in r.getMessage() for r in caplog.records)
    conn.close()


@needs_autocommit_attribute
def test_autocommit_false_commits_a_clean_block_and_resets_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connector, conn, _ = _open(tmp_path, autocommit=False)
    conn.execute("INSERT INTO t VALUES (1)")
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        connector.release(conn, None)
        assert _rows(tmp_path) == 1
        conn.execute("INSERT INTO t VALUES (2)")
        connector.release(conn, ValueError("the block failed"))
        connector.reset(conn)  # PEP 249 mode: a transaction is always open, which is no reason to warn
    assert _rows(tmp_path) == 1
    assert caplog.records == []
    conn.close()
