"""SQLiteConnector: the standard library's sqlite3, no server needed."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

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
