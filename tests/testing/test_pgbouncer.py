"""PgBouncerServer and the pgbouncer_server fixture: a real PgBouncer in front of the test PostgreSQL server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from syncpool.testing import PgBouncerServer
from syncpool.testing import pgbouncer as pgbouncer_module
from syncpool.testing.pgbouncer import INSTALL_HINT, find_pgbouncer
from syncpool.testing.pytest_plugin import PGBOUNCER_POOL_SIZES, require_pgbouncer

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres


def _bouncer_beside(bouncer: PgBouncerServer, postgres_server, **kwargs) -> PgBouncerServer:
    """A second bouncer, owned by the test, for the same upstream and role as the fixture's."""
    return PgBouncerServer(postgres_server, user=bouncer.user, password=bouncer.password, **kwargs)


@pytest.mark.parametrize("pgbouncer_mode", ["transaction", "session"])
def test_clients_reach_postgres_through_the_bouncer(pgbouncer_server, postgres_server, pgbouncer_mode):
    assert pgbouncer_server.port != postgres_server.port
    with psycopg.connect(pgbouncer_server.dsn, connect_timeout=5) as conn:
        user, database, port = conn.execute(
            "SELECT current_user, current_database(), inet_server_port()"
        ).fetchone()
    assert (user, database, port) == (pgbouncer_server.user, postgres_server.dbname, postgres_server.port)
    pools = {row["database"]: row for row in pgbouncer_server.show("pools")}
    assert pools[pgbouncer_server.dbname]["pool_mode"] == pgbouncer_mode
    config = {row["key"]: row["value"] for row in pgbouncer_server.show("config")}
    assert int(config["default_pool_size"]) == PGBOUNCER_POOL_SIZES[pgbouncer_mode]
    assert pgbouncer_server.pool_mode == pgbouncer_mode


def test_url_reaches_the_bouncer(pgbouncer_server):
    with psycopg.connect(pgbouncer_server.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_bouncer_role_is_not_a_superuser(pgbouncer_server, postgres_server):
    if pgbouncer_server.user == postgres_server.user:
        pytest.skip("an external server: the bouncer logs in as the server's own role")
    with psycopg.connect(pgbouncer_server.dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)


def test_wrong_password_is_refused_and_no_password_is_logged(pgbouncer_server):
    wrong = f"{pgbouncer_server.dsn_without_password} password=wrong-{pgbouncer_server.password}"
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(wrong, connect_timeout=5)
    assert "authentication failed" in str(refused.value)  # PgBouncer 1.18 checks SCRAM itself: "SASL ..."
    log = pgbouncer_server.log_file.read_text(errors="replace")
    assert "login attempt" in log  # the log is being written...
    assert pgbouncer_server.password not in log  # ...without the password, right or wrong


def test_secrets_stay_in_the_auth_file(pgbouncer_server):
    password = pgbouncer_server.password
    assert password not in repr(pgbouncer_server)
    assert password not in pgbouncer_server.dsn_without_password
    directory = pgbouncer_server.log_file.parent
    assert password not in (directory / "pgbouncer.ini").read_text()
    auth_file = directory / "userlist.txt"
    assert password in auth_file.read_text()
    assert auth_file.stat().st_mode & 0o077 == 0
    assert directory.stat().st_mode & 0o077 == 0


def test_runs_as_an_unprivileged_user(pgbouncer_server):
    status = open(f"/proc/{pgbouncer_server._process.pid}/status").read()
    real, effective = status.split("Uid:")[1].split()[:2]
    assert real != "0" and effective != "0"
    if os.geteuid() != 0:
        assert int(effective) == os.geteuid()


def test_stop_and_start_on_the_same_port(pgbouncer_server, postgres_server):
    bouncer = _bouncer_beside(pgbouncer_server, postgres_server, default_pool_size=1)
    try:
        bouncer.start()
        port = bouncer.port
        with psycopg.connect(bouncer.dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        bouncer.stop()
        assert not bouncer.is_running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(bouncer.dsn, connect_timeout=2)
        bouncer.start()
        assert bouncer.port == port
        with psycopg.connect(bouncer.dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        directory = bouncer.log_file.parent
    finally:
        bouncer.close()
    assert not bouncer.is_running()
    assert not directory.exists()


def test_fast_stop_closes_client_connections(pgbouncer_server, postgres_server):
    with _bouncer_beside(pgbouncer_server, postgres_server, pool_mode="session") as bouncer:
        conn = psycopg.connect(bouncer.dsn, connect_timeout=5, autocommit=True)
        try:
            conn.execute("SELECT 1")
            bouncer.stop("fast")
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        finally:
            conn.close()


def test_a_failed_start_shows_the_log_without_the_password(pgbouncer_server, postgres_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bouncer = _bouncer_beside(pgbouncer_server, postgres_server, port=taken.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match="did not start") as failed:
                bouncer.start()
        finally:
            bouncer.close()
    assert pgbouncer_server.password not in str(failed.value)
    assert "listen" in str(failed.value).lower()  # PgBouncer's own words about the port it could not take


def test_upstream_must_have_a_port(pgbouncer_server):
    class NotStarted:
        host, port, user, password, dbname = "127.0.0.1", 0, "app", "pw", "app"

    bouncer = PgBouncerServer(NotStarted())
    try:
        with pytest.raises(RuntimeError, match="start it first"):
            bouncer.start()
    finally:
        bouncer.close()


class _Upstream:
    host, port, user, password, dbname = "127.0.0.1", 5432, "app", "s3cret-value", "app"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"pool_mode": "statements"}, ValueError, "pool_mode"),
        ({"default_pool_size": 0}, ValueError, "default_pool_size"),
        ({"default_pool_size": 2.5}, TypeError, "default_pool_size"),
        ({"max_client_conn": 0}, ValueError, "max_client_conn"),
        ({"port": 70000}, ValueError, "port"),
        ({"user": "app; drop"}, ValueError, "user"),
        ({"password": "s3cret\nvalue"}, ValueError, "password"),
    ],
)
def test_options_are_validated(kwargs, error, message):
    with pytest.raises(error, match=message) as raised:
        PgBouncerServer(_Upstream(), **kwargs)
    assert "s3cret" not in str(raised.value)


def test_repr_names_mode_pool_and_addresses_only():
    text = repr(PgBouncerServer(_Upstream(), pool_mode="session", default_pool_size=3))
    assert text == "<PgBouncerServer session pool of 3 on 127.0.0.1:0 -> 127.0.0.1:5432/app stopped>"


def test_missing_binary_is_reported_with_the_install_hint(monkeypatch):
    bouncer = PgBouncerServer(_Upstream(), binary="/nonexistent/pgbouncer")
    with pytest.raises(FileNotFoundError, match="apt-get install -y pgbouncer"):
        bouncer.start()
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pgbouncer_module, "_SBIN_CANDIDATES", ("/nonexistent/sbin/pgbouncer",))
    assert find_pgbouncer() is None
    with pytest.raises(pytest.skip.Exception, match="pgbouncer is not installed: apt-get install -y pgbouncer"):
        require_pgbouncer()
    assert INSTALL_HINT == "pgbouncer is not installed: apt-get install -y pgbouncer"


def test_binary_is_found_in_sbin_outside_path(monkeypatch):
    installed = require_pgbouncer()
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pgbouncer_module, "_SBIN_CANDIDATES", ("/nonexistent/sbin/pgbouncer", installed))
    assert find_pgbouncer() == installed


def test_bouncer_dies_with_its_owner_process(pgbouncer_server, postgres_server):
    code = (
        "import sys, time\n"
        "from syncpool.testing import PgBouncerServer\n"
        "class Upstream:\n"
        f"    host, port, dbname = '127.0.0.1', {postgres_server.port}, {postgres_server.dbname!r}\n"
        "    user, password = sys.stdin.readline().split()\n"
        "b = PgBouncerServer(Upstream()).start()\n"
        "print(b._process.pid, b.log_file.parent, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        child.stdin.write(f"{pgbouncer_server.user} {pgbouncer_server.password}\n")
        child.stdin.close()
        pid, directory = child.stdout.readline().split()
    finally:
        child.send_signal(signal.SIGKILL)  # no atexit, no finally: only the watchdog can clean up
        child.wait()
        child.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"pgbouncer {pid} outlived its owner")
    while os.path.exists(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(directory)
