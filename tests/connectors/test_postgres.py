"""PostgresConnector: classification with fakes, everything else against a real server (``postgres_server``)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from syncpool import AuthError, ConnectRejected, Pool
from syncpool.connectors import PostgresConnector

# -- without a server ------------------------------------------------------------------------------------------


def test_description_and_repr_mask_the_password() -> None:
    connector = PostgresConnector(
        "host=db user=app password=hunter2", sslpassword="keypass", application_name="x"
    )
    for text in (connector.description, repr(connector)):
        assert "hunter2" not in text and "keypass" not in text
        assert "host=db" in text and "user=app" in text and "application_name=x" in text
    url = PostgresConnector("postgresql://app:hunter2@db:5432/x")
    assert "hunter2" not in repr(url) and "app:***@db:5432" in url.description
    dynamic = PostgresConnector(lambda: "password=hunter2", password=lambda: "hunter3")
    assert "hunter" not in dynamic.description


def test_invalid_arguments() -> None:
    with pytest.raises(TypeError):
        PostgresConnector(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="check_timeout"):
        PostgresConnector("", check_timeout=0)


def test_is_auth_error_classification() -> None:
    connector = PostgresConnector("")
    refused = psycopg.OperationalError(
        'connection failed: FATAL:  password authentication failed for user "app"'
    )
    assert connector.is_auth_error(refused)
    assert connector.is_auth_error(
        psycopg.OperationalError('FATAL:  no pg_hba.conf entry for host "1.2.3.4"')
    )
    assert connector.is_auth_error(pg_errors.InvalidPassword())
    assert connector.is_auth_error(pg_errors.InvalidAuthorizationSpecification())
    for message in (
        'FATAL:  role "ghost" does not exist',  # 28000 under trust, peer or cert authentication
        'FATAL:  pg_hba.conf rejects connection for host "10.0.0.1", user "app", database "app", no encryption',
        'FATAL:  role "app" is not permitted to log in',
        "fe_sendauth: no password supplied",
        'FATAL:  Peer authentication failed for user "app"',
    ):
        assert connector.is_auth_error(psycopg.OperationalError(f"connection failed: {message}")), message
    assert not connector.is_auth_error(psycopg.OperationalError("connection refused"))
    assert not connector.is_auth_error(psycopg.OperationalError('FATAL:  database "x" does not exist'))
    assert not connector.is_auth_error(ValueError("password authentication failed"))
    # The same words from a query (SET ROLE ghost) carry a SQLSTATE of their own: not a refused login.
    assert not connector.is_auth_error(pg_errors.UndefinedObject('role "ghost" does not exist'))


def test_is_permanent_classification() -> None:
    connector = PostgresConnector("")
    assert connector.is_permanent(psycopg.OperationalError('connection failed: FATAL:  database "x" does not exist'))
    assert connector.is_permanent(pg_errors.InvalidCatalogName())
    assert connector.is_permanent(
        psycopg.OperationalError('FATAL:  database "x" is not currently accepting connections')
    )
    assert connector.is_permanent(psycopg.ProgrammingError('invalid connection option "hots"'))
    assert connector.is_permanent(ConnectRejected("rejected"))
    # Refused credentials are is_auth_error's; outages and server-side errors of configure are retried.
    assert not connector.is_permanent(psycopg.OperationalError('FATAL:  password authentication failed for user "a"'))
    assert not connector.is_permanent(psycopg.OperationalError("connection refused"))
    assert not connector.is_permanent(psycopg.OperationalError("FATAL:  the database system is starting up"))
    assert not connector.is_permanent(pg_errors.TooManyConnections())
    assert not connector.is_permanent(pg_errors.UndefinedTable())
    assert not connector.is_permanent(pg_errors.SyntaxError())
    assert not connector.is_permanent(ValueError('database "x" does not exist'))


@pytest.mark.parametrize("retry_serialization", [False, True])
def test_is_transient_classification(retry_serialization: bool) -> None:
    connector = PostgresConnector("", retry_serialization=retry_serialization)
    assert connector.is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert connector.is_transient(pg_errors.AdminShutdown())
    assert connector.is_transient(pg_errors.QueryCanceled())  # statement_timeout
    assert connector.is_transient(TimeoutError())
    assert connector.is_transient(ConnectionResetError())
    assert connector.is_transient(pg_errors.SerializationFailure()) is retry_serialization
    assert connector.is_transient(pg_errors.DeadlockDetected()) is retry_serialization
    assert not connector.is_transient(
        psycopg.OperationalError('FATAL:  password authentication failed for user "a"')
    )
    assert not connector.is_transient(psycopg.OperationalError('FATAL:  database "nodb" does not exist'))
    assert not connector.is_transient(psycopg.OperationalError('FATAL:  role "nobody" does not exist'))
    assert not connector.is_transient(psycopg.ProgrammingError('invalid connection option "hots"'))
    assert not connector.is_transient(pg_errors.SyntaxError())
    assert not connector.is_transient(pg_errors.UniqueViolation())
    assert not connector.is_transient(ValueError())


def test_connect_errors_are_scrubbed_of_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq may quote pieces of its conninfo; whatever psycopg raises is re-raised without the password."""

    def fake_connect(conninfo: str, **kwargs: Any) -> None:
        raise psycopg.OperationalError(f"could not parse something near 'hunter2' and {kwargs['password']}")

    monkeypatch.setattr(psycopg, "connect", fake_connect)
    connector = PostgresConnector("host=db password=hunter2", password=lambda: "rotated-token")
    with pytest.raises(psycopg.OperationalError) as info:
        connector.connect()
    assert "hunter2" not in str(info.value) and "rotated-token" not in str(info.value)
    assert "***" in str(info.value)


def test_connect_timeout_defaults_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def fake_connect(conninfo: str, **kwargs: Any) -> None:
        seen.append(kwargs)
        raise psycopg.OperationalError("refused")

    monkeypatch.setattr(psycopg, "connect", fake_connect)
    for connector in (PostgresConnector("host=db"), PostgresConnector("host=db connect_timeout=3")):
        with pytest.raises(psycopg.OperationalError):
            connector.connect()
    assert seen[0]["connect_timeout"] == 10
    assert "connect_timeout" not in seen[1]


# -- against a server --------------------------------------------------------------------------------------------


@pytest.fixture
def connector(postgres_server: Any) -> PostgresConnector:
    return PostgresConnector(postgres_server.dsn)


@pytest.fixture
def conn(connector: PostgresConnector) -> Any:
    client = connector.connect()
    yield client
    client.close()


def _terminate(postgres_server: Any, conn: Any) -> None:
    """End ``conn``'s backend, and wait until it is gone (PostgreSQL 14+ waits up to the timeout given, in ms)."""
    pid = conn.info.backend_pid
    postgres_server.execute(f"SELECT pg_terminate_backend({pid}, 10000)")


@pytest.mark.postgres
def test_connect_check_reset_close(connector: PostgresConnector) -> None:
    conn = connector.connect()
    assert conn.info.transaction_status == TransactionStatus.IDLE
    connector.check(conn)
    assert conn.info.transaction_status == TransactionStatus.IDLE  # check opened no transaction
    assert not conn.autocommit  # and switched autocommit back
    assert not connector.is_broken(conn)
    connector.reset(conn)
    connector.close(conn)
    assert conn.closed
    assert connector.is_broken(conn)


@pytest.mark.postgres
def test_reset_of_an_idle_connection_does_no_round_trip(connector: PostgresConnector, conn: Any) -> None:
    def no_io(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("reset talked to the server")

    conn.rollback = no_io
    conn.execute = no_io
    connector.reset(conn)


@pytest.mark.postgres
@pytest.mark.parametrize("state", ["INTRANS", "INERROR"])
def test_reset_rolls_back_with_a_warning(
    connector: PostgresConnector, conn: Any, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn.execute("CREATE TEMP TABLE t (x int)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")
    if state == "INERROR":
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
    assert conn.info.transaction_status.name == state
    assert not connector.is_broken(conn)
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        connector.reset(conn)
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.rollback()
    (record,) = [r for r in caplog.records if r.name == "syncpool"]
    assert state in record.getMessage()
    assert "secret" not in record.getMessage() and connector.description in record.getMessage()


@pytest.mark.postgres
def test_unfinished_copy_is_broken(connector: PostgresConnector, conn: Any) -> None:
    cursor = conn.cursor()
    copy_context = cursor.copy("COPY (SELECT generate_series(1, 10)) TO STDOUT")
    copy_context.__enter__()
    assert conn.info.transaction_status == TransactionStatus.ACTIVE
    assert connector.is_broken(conn)


@pytest.mark.postgres
def test_lost_connection_is_broken_and_fails_check(
    postgres_server: Any, connector: PostgresConnector
) -> None:
    conn = connector.connect()
    try:
        _terminate(postgres_server, conn)
        with pytest.raises(psycopg.OperationalError) as info:
            connector.check(conn)
        assert connector.is_transient(info.value)
        assert connector.is_broken(conn)
    finally:
        conn.close()


@pytest.mark.postgres
def test_failed_rollback_raises_so_the_pool_discards(
    postgres_server: Any, connector: PostgresConnector
) -> None:
    conn = connector.connect()
    try:
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        _terminate(postgres_server, conn)
        time.sleep(0.1)
        with pytest.raises(psycopg.OperationalError):
            connector.reset(conn)
        assert connector.is_broken(conn)
    finally:
        conn.close()


# -- the end of a with pool.connection() block: release -----------------------------------------------------------


def _with_temp_table(conn: Any) -> None:
    conn.execute("CREATE TEMP TABLE t (x int)")
    conn.commit()


def _no_io(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("release talked to the server")


@pytest.mark.postgres
@pytest.mark.parametrize("error", [None, ValueError("the block failed")])
def test_release_of_an_idle_connection_does_no_round_trip(
    connector: PostgresConnector, conn: Any, error: Exception | None
) -> None:
    conn.execute("SELECT 1")
    conn.commit()
    conn.commit = conn.rollback = conn.execute = _no_io
    connector.release(conn, error)


@pytest.mark.postgres
def test_release_commits_a_clean_block(
    connector: PostgresConnector, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _with_temp_table(conn)
    conn.execute("INSERT INTO t VALUES (1)")
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        connector.release(conn, None)
    assert conn.info.transaction_status == TransactionStatus.IDLE
    conn.rollback()  # nothing left to roll back: the row was committed
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert caplog.records == []


@pytest.mark.postgres
@pytest.mark.parametrize("state", ["INTRANS", "INERROR"])
def test_release_rolls_back_when_the_block_raised(
    connector: PostgresConnector, conn: Any, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    _with_temp_table(conn)
    conn.execute("INSERT INTO t VALUES (1)")
    if state == "INERROR":
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        connector.release(conn, ValueError("the block failed"))
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert caplog.records == []  # rolling back a block that raised is the normal path


@pytest.mark.postgres
def test_release_rolls_back_a_failed_transaction_on_a_clean_exit_with_a_warning(
    connector: PostgresConnector, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _with_temp_table(conn)
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(psycopg.errors.DivisionByZero):  # caught in the block, which then ends cleanly
        conn.execute("SELECT 1 / 0")
    with caplog.at_level(logging.WARNING, logger="syncpool"):
        connector.release(conn, None)
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    (record,) = caplog.records
    assert "failed transaction" in record.getMessage() and connector.description in record.getMessage()


@pytest.mark.postgres
@pytest.mark.parametrize("error", [None, ValueError("the block failed")])
def test_release_does_not_commit_on_an_autocommit_connection(
    postgres_server: Any, error: Exception | None, caplog: pytest.LogCaptureFixture
) -> None:
    connector = PostgresConnector(postgres_server.dsn, autocommit=True)
    conn = connector.connect()
    try:
        conn.execute("BEGIN")  # the caller's own transaction, on a connection that asked for autocommit
        conn.execute("SELECT 1")
        conn.commit = _no_io
        with caplog.at_level(logging.WARNING, logger="syncpool"):
            assert connector.release(conn, error)  # reset(), as on any return: rolled back, with a warning
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert any("rolling back" in r.getMessage() for r in caplog.records)
    finally:
        conn.close()


@pytest.mark.postgres
def test_release_raises_a_failed_commit(connector: PostgresConnector, conn: Any) -> None:
    conn.execute("CREATE TEMP TABLE u (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    conn.commit()
    conn.execute("INSERT INTO u VALUES (1), (1)")  # checked at COMMIT
    with pytest.raises(psycopg.errors.UniqueViolation):
        connector.release(conn, None)
    assert conn.execute("SELECT count(*) FROM u").fetchone() == (0,)


@pytest.mark.postgres
def test_release_logs_a_failed_rollback_and_keeps_the_blocks_error(
    postgres_server: Any, connector: PostgresConnector, caplog: pytest.LogCaptureFixture
) -> None:
    conn = connector.connect()
    try:
        conn.execute("SELECT 1")
        _terminate(postgres_server, conn)
        time.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="syncpool"):
            connector.release(conn, ValueError("the block failed"))  # does not replace the block's error
        assert "rollback" in caplog.records[0].getMessage()
        assert connector.is_broken(conn)  # so the pool discards it
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("error", [None, ValueError("the block failed")])
def test_release_leaves_a_busy_or_closed_connection_to_is_broken(
    connector: PostgresConnector, conn: Any, error: Exception | None
) -> None:
    copy = conn.cursor().copy("COPY (SELECT generate_series(1, 10)) TO STDOUT")
    copy.__enter__()  # mid-command: neither commit nor rollback may be sent
    connector.release(conn, error)
    assert connector.is_broken(conn)
    conn.close()
    connector.release(conn, error)
    assert connector.is_broken(conn)


# -- the pool's return paths: release() for with blocks, is_broken then reset for putconn ----------------------


def _leave_in(state: str, conn: Any, postgres_server: Any) -> Any:
    """Put ``conn`` in the state a careless caller could return it in; return what must stay referenced."""
    if state in ("INTRANS", "INERROR", "failed rollback"):
        conn.execute("SELECT 1")
    if state == "INERROR":
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
    elif state == "ACTIVE":  # an unfinished COPY
        copy = conn.cursor().copy("COPY (SELECT generate_series(1, 10)) TO STDOUT")
        copy.__enter__()
        return copy
    elif state == "closed":
        conn.close()
    elif state == "failed rollback":
        _terminate(postgres_server, conn)
        time.sleep(0.1)
    return None


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["putconn", "with block"])
@pytest.mark.parametrize(
    ("state", "kept", "reason"),
    [
        ("IDLE", True, None),
        ("INTRANS", True, None),
        ("INERROR", True, None),
        ("ACTIVE", False, "broken"),
        ("closed", False, "broken"),
        ("failed rollback", False, "reset_failed"),
    ],
)
def test_a_returned_connection_meets_the_same_fate_on_both_return_paths(
    postgres_server: Any, path: str, state: str, kept: bool, reason: str | None
) -> None:
    with Pool(PostgresConnector(postgres_server.dsn), max_size=1, name="fates") as pool:
        if path == "putconn":
            conn = pool.getconn(timeout=10)
            unfinished = _leave_in(state, conn, postgres_server)
            pool.putconn(conn)
        elif state == "failed rollback":  # the commit at the end of the block fails: the caller must see it
            with pytest.raises(psycopg.OperationalError):
                with pool.connection(timeout=10) as conn:
                    unfinished = _leave_in(state, conn, postgres_server)
        else:
            with pool.connection(timeout=10) as conn:
                unfinished = _leave_in(state, conn, postgres_server)
        stats = pool.stats()
        assert stats["in_use"] == 0
        if kept:
            assert stats["idle"] == 1 and not any(stats["discards"].values())
            assert conn.info.transaction_status == TransactionStatus.IDLE  # ended or rolled back if it had to be
        else:
            assert stats["discards"][reason] == 1
            del unfinished
            with pool.connection(timeout=10) as replacement:
                assert replacement is not conn
                assert replacement.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.postgres
def test_a_subclass_overriding_is_broken_or_reset_is_heard_on_return(postgres_server: Any) -> None:
    calls: list[str] = []

    class Picky(PostgresConnector):
        def is_broken(self, client: Any) -> bool:
            calls.append("is_broken")
            return super().is_broken(client)

    class Fussy(PostgresConnector):
        def reset(self, client: Any) -> None:
            calls.append("reset")
            super().reset(client)

    class Plain(PostgresConnector):  # overrides neither: release() answers for an idle connection alone
        pass

    for kind, heard in ((Picky, ["is_broken"]), (Fussy, ["reset"]), (Plain, [])):
        calls.clear()
        with Pool(kind(postgres_server.dsn), max_size=1, name=kind.__name__) as pool:
            with pool.connection(timeout=10):  # release() hears them through super()
                pass
            pool.putconn(pool.getconn(timeout=10))  # the pool calls them itself
        assert calls == heard * 2, kind.__name__


@pytest.mark.postgres
@pytest.mark.slow
def test_check_times_out_on_a_slow_network(postgres_server: Any, fault_proxy: Any) -> None:
    proxy = fault_proxy(postgres_server.host, postgres_server.port)
    dsn = postgres_server.dsn.replace(f"port={postgres_server.port}", f"port={proxy.port}")
    connector = PostgresConnector(dsn, check_timeout=0.5)
    conn = connector.connect()
    try:
        proxy.latency(5.0)  # established connections: every chunk delayed well past check_timeout
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="check got no answer"):
            connector.check(conn)
        assert time.monotonic() - started < 3
        assert connector.is_broken(conn)
        assert connector.is_transient(TimeoutError())
    finally:
        conn.close()
        proxy.pass_through()


@pytest.mark.postgres
def test_checks_start_no_thread_of_their_own(postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check's deadline is kept by one watcher thread for the process, not by a timer thread per check."""
    import threading

    connector = PostgresConnector(postgres_server.dsn, check_timeout=5.0)
    conn = connector.connect()
    try:
        connector.check(conn)  # the watcher starts, once
        started: list[str] = []
        start = threading.Thread.start
        monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), start(self))[1])
        for _ in range(20):
            connector.check(conn)
        assert started == []
    finally:
        conn.close()


@pytest.mark.postgres
def test_wrong_password_raises_auth_error_without_the_secret(postgres_server: Any) -> None:
    connector = PostgresConnector(
        f"host={postgres_server.host} port={postgres_server.port} dbname={postgres_server.dbname}",
        user=postgres_server.user,
        password="wrong-hunter2",
    )
    with pytest.raises(AuthError) as info:
        connector.connect()
    message = str(info.value)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert connector.is_auth_error(info.value.__cause__)
    assert not connector.is_transient(info.value.__cause__)
    assert postgres_server.user in message and str(postgres_server.port) in message
    assert postgres_server.host in message
    for text in (message, str(info.value.__cause__), repr(info.value.__cause__), repr(connector)):
        assert "wrong-hunter2" not in text
    assert info.value.__cause__.pgconn is None  # its repr would list the password


@pytest.mark.postgres
def test_unknown_role_raises_auth_error(postgres_server: Any) -> None:
    connector = PostgresConnector(postgres_server.dsn, user=f"ghost_{uuid.uuid4().hex[:8]}")
    with pytest.raises(AuthError):
        connector.connect()


@pytest.mark.postgres
def test_missing_database_raises_connect_rejected_with_the_servers_message(postgres_server: Any) -> None:
    connector = PostgresConnector(postgres_server.dsn, dbname="no_such_db_here")
    with pytest.raises(ConnectRejected) as info:
        connector.connect()
    assert not isinstance(info.value, AuthError)
    message = str(info.value)
    assert 'database "no_such_db_here" does not exist' in message
    assert postgres_server.user in message and str(postgres_server.port) in message
    cause = info.value.__cause__
    assert isinstance(cause, psycopg.OperationalError)
    assert connector.is_permanent(cause) and not connector.is_transient(cause)
    for text in (message, str(cause), repr(cause)):
        assert postgres_server.password not in text


@pytest.mark.postgres
@pytest.mark.managed_servers("postgres")
def test_database_closed_to_connections_raises_connect_rejected(postgres_server: Any) -> None:
    name = f"closed_{uuid.uuid4().hex[:8]}"
    postgres_server.execute(f"CREATE DATABASE {name}")
    try:
        postgres_server.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        with pytest.raises(ConnectRejected, match="not currently accepting connections") as info:
            PostgresConnector(postgres_server.dsn, dbname=name).connect()
        assert not isinstance(info.value, AuthError)
    finally:
        postgres_server.execute(f"DROP DATABASE {name}")


@pytest.mark.postgres
@pytest.mark.managed_servers("postgres")
def test_role_that_may_not_log_in_raises_auth_error(postgres_server: Any) -> None:
    role = f"nologin_{uuid.uuid4().hex[:8]}"
    postgres_server.execute(f"CREATE ROLE {role} NOLOGIN PASSWORD 'nologin-secret'")
    try:
        connector = PostgresConnector(postgres_server.dsn, user=role, password="nologin-secret")
        with pytest.raises(AuthError, match="is not permitted to log in") as info:
            connector.connect()
        assert "nologin-secret" not in str(info.value) and role in str(info.value)
    finally:
        postgres_server.execute(f"DROP ROLE {role}")


@pytest.mark.postgres
@pytest.mark.parametrize("where", ["conninfo", "keyword"])
def test_invalid_conninfo_is_permanent_and_masked(postgres_server: Any, where: str) -> None:
    if where == "conninfo":
        connector = PostgresConnector(f"{postgres_server.dsn} hots=elsewhere")
    else:
        connector = PostgresConnector(postgres_server.dsn, hots="elsewhere")
    with pytest.raises(psycopg.ProgrammingError) as info:  # psycopg's own error: the server never saw it
        connector.connect()
    assert "hots" in str(info.value)
    assert connector.is_permanent(info.value) and not connector.is_transient(info.value)
    assert postgres_server.password not in str(info.value)


@pytest.mark.postgres
def test_rotated_password_is_picked_up_at_each_connect(postgres_server: Any) -> None:
    role = f"rot_{uuid.uuid4().hex[:8]}"
    try:
        postgres_server.create_role(role, "first-secret")
    except NotImplementedError:
        pytest.skip("cannot create roles on this server")
    current = {"password": "first-secret"}
    connector = PostgresConnector(
        lambda: f"host={postgres_server.host} port={postgres_server.port} dbname={postgres_server.dbname}",
        user=role,
        password=lambda: current["password"],
    )
    try:
        connector.connect().close()
        postgres_server.execute(f"ALTER ROLE {role} PASSWORD 'second-secret'")
        with pytest.raises(AuthError) as info:
            connector.connect()
        assert "first-secret" not in str(info.value) and role in str(info.value)
        current["password"] = "second-secret"
        conn = connector.connect()
        assert conn.execute("SELECT current_user").fetchone() == (role,)
        conn.close()
    finally:
        postgres_server.execute(f"DROP OWNED BY {role}")  # the privileges create_role granted
        postgres_server.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.postgres
def test_configure_runs_once_per_connection_and_its_settings_persist(postgres_server: Any) -> None:
    calls: list[Any] = []

    def configure(conn: Any) -> None:
        calls.append(conn)
        conn.execute("SET application_name = 'configured'")  # autocommit off: leaves a transaction open

    connector = PostgresConnector(postgres_server.dsn, configure=configure)
    conn = connector.connect()
    try:
        assert calls == [conn]
        assert conn.info.transaction_status == TransactionStatus.IDLE
        connector.check(conn)
        connector.reset(conn)
        assert conn.execute("SHOW application_name").fetchone() == ("configured",)
        assert len(calls) == 1
    finally:
        conn.close()


@pytest.mark.postgres
def test_failing_configure_closes_the_connection(postgres_server: Any) -> None:
    made: list[Any] = []

    def configure(conn: Any) -> None:
        made.append(conn)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        PostgresConnector(postgres_server.dsn, configure=configure).connect()
    assert made[0].closed


@pytest.mark.postgres
def test_multi_host_conninfo_skips_a_dead_host(postgres_server: Any) -> None:
    s = postgres_server
    connector = PostgresConnector(
        f"host={s.host},{s.host} port=1,{s.port} user={s.user} password={s.password} dbname={s.dbname}"
        " target_session_attrs=read-write connect_timeout=2"
    )
    assert s.password not in connector.description
    conn = connector.connect()
    try:
        assert conn.info.port == s.port
    finally:
        conn.close()


@pytest.mark.postgres
def test_serialization_failure_classified_from_a_real_server(postgres_server: Any) -> None:
    plain = PostgresConnector(postgres_server.dsn)
    retrying = PostgresConnector(postgres_server.dsn, retry_serialization=True)
    conn = plain.connect()
    try:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
        assert info.value.sqlstate == "40001"
        assert not plain.is_transient(info.value)
        assert retrying.is_transient(info.value)
    finally:
        conn.close()


_FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from syncpool.connectors import PostgresConnector

    connector = PostgresConnector(sys.argv[1], autocommit=True)
    conn = connector.connect()
    pid = os.fork()
    if pid == 0:
        if sys.argv[2] == "after_fork":
            connector.after_fork(conn)
        connector.close(conn)  # what a child's pool (or atexit handler) closing inherited clients would do
        del conn
        sys.exit(0)  # normal interpreter exit and finalisation
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    try:
        print(conn.execute("SELECT 1").fetchone()[0])
    except Exception as error:
        print("BROKEN", type(error).__name__)
    """
)


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["after_fork", "nothing"])
def test_child_exit_leaves_the_parent_connection_alone_only_with_after_fork(
    postgres_server: Any, mode: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, postgres_server.dsn, mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    if mode == "after_fork":
        assert result.stdout.strip() == "1"
    else:  # the hazard after_fork exists for: the child's close ended the parent's session
        assert result.stdout.strip().startswith("BROKEN")
