"""syncpool.Pool + PostgresConnector against a real PostgreSQL server (``postgres_server``)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import syncpool
from syncpool import Pool
from syncpool.connectors import PostgresConnector
from syncpool.monitoring import unwrap

from . import Load, Sampler, assert_no_secret, outage_under_load, wait_until

psycopg = pytest.importorskip("psycopg")
from psycopg.pq import Trace, TransactionStatus  # noqa: E402

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


# -- the end of a with pool.connection() block: commit, or roll back ---------------------------------------------


class _Sent:
    """The messages libpq sends to the server on a connection between :meth:`start` and :meth:`stop`, e.g.
    ``Query "COMMIT"``: libpq's own protocol trace, so every round trip is seen, whoever starts it."""

    def start(self, conn: Any) -> _Sent:
        self._conn = unwrap(conn)
        self._file = tempfile.TemporaryFile("w+b")
        self._descriptor = os.dup(self._file.fileno())  # libpq's FILE takes this copy
        self._conn.pgconn.trace(self._descriptor)
        self._conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        return self

    def stop(self) -> list[str]:
        self._conn.pgconn.untrace()  # flushes libpq's FILE, which is never used again
        os.close(self._descriptor)
        with self._file:
            self._file.seek(0)
            lines = self._file.read().decode().splitlines()
        messages = []
        for line in lines:
            direction, _length, kind, *rest = line.split("\t")
            if direction == "F":
                messages.append(" ".join(part.strip() for part in [kind, *rest]))
        return messages


def _warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syncpool" and r.levelno >= logging.WARNING]


def _count(server: Any, table: str) -> int:
    return int(server.execute(f"SELECT count(*) FROM {table}")[0][0])


@pytest.mark.parametrize("monitor", [False, True], ids=["plain", "monitored"])
def test_a_clean_block_commits_with_one_round_trip_and_no_warning(
    postgres_server: Any, table: str, monitor: bool, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="syncpool")
    with Pool(PostgresConnector(postgres_server.dsn), max_size=1, name="it-commit", monitor=monitor) as pool:
        with pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1)")  # no commit: the end of the block commits
            assert _count(postgres_server, table) == 0  # not visible to another connection yet
            sent = _Sent().start(conn)
        assert sent.stop() == ['Query "COMMIT"']  # the commit is the only round trip on the way back
        assert _count(postgres_server, table) == 1
        assert _warnings(caplog) == []
        with pool.connection() as again:
            assert unwrap(again) is unwrap(conn)  # kept, idle
            assert again.info.transaction_status == TransactionStatus.IDLE
        assert not any(pool.stats()["discards"].values())


@pytest.mark.parametrize(
    "work",
    ["nothing", "committed", "transaction block", "autocommit"],
)
def test_an_idle_connection_goes_back_without_a_round_trip(
    postgres_server: Any, table: str, work: str, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="syncpool")
    connector = PostgresConnector(postgres_server.dsn, autocommit=work == "autocommit")
    with Pool(connector, max_size=1, name="it-idle") as pool:
        for _ in range(3):
            with pool.connection() as conn:
                if work == "committed":
                    conn.execute(f"INSERT INTO {table} VALUES (1)")
                    conn.commit()
                elif work == "transaction block":
                    with conn.transaction():
                        conn.execute(f"INSERT INTO {table} VALUES (1)")
                elif work == "autocommit":
                    conn.execute(f"INSERT INTO {table} VALUES (1)")
                sent = _Sent().start(conn)
            assert sent.stop() == []
        assert _count(postgres_server, table) == (0 if work == "nothing" else 3)
        assert _warnings(caplog) == []


@pytest.mark.parametrize("state", ["INTRANS", "INERROR"])
def test_a_raising_block_leaves_nothing(postgres_server: Any, table: str, state: str, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="syncpool")
    failure = RuntimeError("the block failed")
    with Pool(PostgresConnector(postgres_server.dsn), max_size=1, name="it-rollback") as pool:
        with pytest.raises(RuntimeError) as caught:
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} VALUES (1)")
                if state == "INERROR":
                    with pytest.raises(psycopg.errors.DivisionByZero):
                        conn.execute("SELECT 1 / 0")
                sent = _Sent().start(conn)
                raise failure
        assert caught.value is failure  # unchanged
        assert sent.stop() == ['Query "ROLLBACK"']
        assert _count(postgres_server, table) == 0
        assert _warnings(caplog) == []
        with pool.connection() as again:
            assert again is conn and again.info.transaction_status == TransactionStatus.IDLE
        assert not any(pool.stats()["discards"].values())


def test_a_failed_transaction_ended_cleanly_is_rolled_back_with_a_warning(
    postgres_server: Any, table: str, caplog: Any
) -> None:
    with Pool(PostgresConnector(postgres_server.dsn), max_size=1, name="it-inerror") as pool:
        with caplog.at_level(logging.WARNING, logger="syncpool"):
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} VALUES (1)")
                try:
                    conn.execute("SELECT 1 / 0")
                except psycopg.errors.DivisionByZero:
                    pass  # caught: the block ends cleanly, but its transaction cannot commit
        assert _count(postgres_server, table) == 0
        (warning,) = _warnings(caplog)
        assert "failed transaction" in warning
        with pool.connection() as again:
            assert again is conn and again.info.transaction_status == TransactionStatus.IDLE


def test_an_autocommit_connection_is_left_alone(postgres_server: Any, table: str, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="syncpool")
    with Pool(PostgresConnector(postgres_server.dsn, autocommit=True), max_size=1, name="it-autocommit") as pool:
        with pytest.raises(RuntimeError), pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1)")  # committed by the server, block or no block
            sent = _Sent().start(conn)
            raise RuntimeError("the block failed")
        assert sent.stop() == []
        assert _count(postgres_server, table) == 1
        assert _warnings(caplog) == []
        # A transaction the caller began by hand is theirs: not committed for them, rolled back with a warning.
        with pool.connection() as conn:
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO {table} VALUES (2)")
            sent = _Sent().start(conn)
        assert sent.stop() == ['Query "ROLLBACK"']
        assert _count(postgres_server, table) == 1
        (warning,) = _warnings(caplog)
        assert "rolling back" in warning
        with pool.connection() as again:
            assert again is conn and again.autocommit


def test_a_failed_commit_reaches_the_caller_and_the_connection_is_replaced(
    postgres_server: Any, caplog: Any
) -> None:
    name = f"it_deferred_{time.monotonic_ns()}"
    postgres_server.execute(f"CREATE TABLE {name} (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    postgres_server.execute(f"GRANT ALL ON {name} TO {postgres_server.user}")
    with Pool(PostgresConnector(postgres_server.dsn), max_size=1, name="it-commit-fails") as pool:
        with pytest.raises(psycopg.errors.UniqueViolation), pool.connection() as conn:
            conn.execute(f"INSERT INTO {name} VALUES (1), (1)")  # checked at COMMIT, when the block ends
        assert _count(postgres_server, name) == 0
        assert pool.stats()["discards"]["reset_failed"] == 1
        # A commit that cannot reach the server fails the same way: the caller learns the work was lost.
        with pytest.raises(psycopg.OperationalError), pool.connection() as again:
            assert again is not conn
            again.execute(f"INSERT INTO {name} VALUES (2)")
            postgres_server.execute("SELECT pg_terminate_backend(%s)", (_pid(again),))
            wait_until(lambda: postgres_server.count_connections() == 0, timeout=5)
        assert _count(postgres_server, name) == 0
        assert pool.stats()["discards"]["reset_failed"] == 2


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


# -- connect errors that retrying cannot fix -----------------------------------------------------------------------


class _Forwarder:
    """Forwards each TCP connection to ``upstream`` from the source address 127.0.0.2.

    The server then sees a client its pg_hba.conf does not list (only 127.0.0.1/32 is), the way an application host
    missing from pg_hba.conf is refused, with nothing changed on the server.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="test-forwarder", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._sockets.append(client)
            self._spawn(self._forward, client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=10, source_address=("127.0.0.2", 0))
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._sockets.append(upstream)
        self._spawn(self._pump, upstream, client)
        self._pump(client, upstream)

    @staticmethod
    def _pump(source: socket.socket, destination: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                destination.sendall(data)
        except OSError:
            pass
        try:
            destination.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


WAITERS = 8

# (what is wrong, the error every waiter must get, what its message must say)
REJECTIONS = {
    "wrong password": (syncpool.AuthError, "password authentication failed"),
    "unknown role": (syncpool.AuthError, "password authentication failed"),  # scram does not say which
    "no user nor password": (syncpool.AuthError, "password"),  # "no password supplied", or a PGPASSWORD refused
    "role may not log in": (syncpool.AuthError, "is not permitted to log in"),
    "no pg_hba.conf entry": (syncpool.AuthError, 'no pg_hba.conf entry for host "127.0.0.2"'),
    "unknown database": (syncpool.ConnectRejected, 'database "it_no_such_db" does not exist'),
    "misspelt parameter": (syncpool.ConnectRejected, 'invalid connection option "hots"'),  # found by libpq
}


@pytest.mark.managed_servers("postgres")
@pytest.mark.parametrize("problem", list(REJECTIONS))
def test_a_connect_retrying_cannot_fix_fails_every_waiting_caller_at_once(
    postgres_server: Any, problem: str, caplog: Any
) -> None:
    expected, says = REJECTIONS[problem]
    caplog.set_level(logging.DEBUG)
    role = f"it_rejected_{secrets.token_hex(4)}"
    password = f"Right-{secrets.token_urlsafe(12)}"
    wrong = f"Wrong-{secrets.token_urlsafe(12)}"
    postgres_server.create_role(role, password)
    if problem == "role may not log in":
        postgres_server.execute(f"ALTER ROLE {role} NOLOGIN")
    params = {"user": role, "password": password, "dbname": postgres_server.dbname}
    if problem == "wrong password":
        params["password"] = wrong
    elif problem == "unknown role":
        params["user"] = f"it_ghost_{secrets.token_hex(4)}"
    elif problem == "no user nor password":
        del params["user"], params["password"]
    elif problem == "unknown database":
        params["dbname"] = "it_no_such_db"
    elif problem == "misspelt parameter":
        params["hots"] = "db.example"
    forwarder = _Forwarder((postgres_server.host, postgres_server.port)) if problem == "no pg_hba.conf entry" else None
    port = forwarder.port if forwarder is not None else postgres_server.port
    conninfo = " ".join(f"{key}={value}" for key, value in [("port", port), *params.items()])

    def slow_conninfo() -> str:
        time.sleep(0.3)  # each attempt lasts long enough for every caller to be waiting on it
        return f"host={postgres_server.host} {conninfo}"

    pool = Pool(PostgresConnector(slow_conninfo), max_size=4, timeout=30.0, name="it-rejected")
    outcomes: list[tuple[BaseException | None, float]] = []
    start = threading.Barrier(WAITERS)

    def wait_for_a_connection() -> None:
        start.wait()
        began = time.monotonic()
        try:
            pool.putconn(pool.getconn(timeout=30.0))
        except Exception as error:  # noqa: BLE001 - the outcome is the point
            outcomes.append((error, time.monotonic() - began))
        else:
            outcomes.append((None, time.monotonic() - began))

    callers = [threading.Thread(target=wait_for_a_connection, name=f"test-caller-{n}") for n in range(WAITERS)]
    try:
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=60)
        errors = [error for error, _ in outcomes]
        assert len(outcomes) == WAITERS
        for error in errors:
            assert type(error) is expected, repr(error)
            assert says in str(error)
            assert isinstance(error.__cause__, psycopg.Error)
        # Each caller was told at once, not after its 30 s timeout; one failed attempt reached several of them.
        assert max(waited for _, waited in outcomes) < 10.0
        assert pool.stats()["connect_errors"] < WAITERS
        assert_no_secret([password, wrong], pool=pool, errors=errors, records=caplog.records)
    finally:
        pool.close()
        if forwarder is not None:
            forwarder.close()
        postgres_server.execute(f"DROP OWNED BY {role}")
        postgres_server.execute(f"DROP ROLE {role}")
