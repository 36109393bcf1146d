"""PostgresServer: a real server with password authentication, stop/start on the same port."""

from __future__ import annotations

import pytest

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres


def test_connects_with_correct_password(postgres_server):
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        user, db = conn.execute("SELECT current_user, current_database()").fetchone()
    assert (user, db) == (postgres_server.user, postgres_server.dbname)


def test_url_connects(postgres_server):
    with psycopg.connect(postgres_server.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_wrong_password_is_refused(postgres_server):
    wrong = f"{postgres_server.dsn_without_password} password=wrong-{postgres_server.password}"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_repr_hides_password(postgres_server):
    assert postgres_server.password not in repr(postgres_server)
    assert postgres_server.password not in postgres_server.dsn_without_password


@pytest.mark.managed_servers("postgres")
def test_non_superuser_role(postgres_server):
    dsn = postgres_server.create_role("app_user", "app-secret")
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
            False,
        )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn.replace("app-secret", "nope"), connect_timeout=5)


@pytest.mark.managed_servers("postgres")
def test_stop_fast_and_start_on_same_port(postgres_server):
    port = postgres_server.port
    conn = psycopg.connect(postgres_server.dsn, connect_timeout=5)
    try:
        postgres_server.stop("fast")
        assert not postgres_server.is_running()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(postgres_server.dsn, connect_timeout=2)
    finally:
        conn.close()
    postgres_server.start()
    assert postgres_server.is_running()
    assert postgres_server.port == port
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.managed_servers("postgres")
def test_stop_immediate_then_restart(postgres_server):
    postgres_server.execute("CREATE TABLE IF NOT EXISTS survivor (x int)")
    postgres_server.stop("immediate")
    assert not postgres_server.is_running()
    postgres_server.restart()
    assert postgres_server.execute("SELECT count(*) FROM survivor") == [(0,)]


def test_stopped_server_is_running_again_for_next_test(postgres_server):
    # Runs after the stop tests in file order: the fixture must have started it again.
    assert postgres_server.is_running()


def test_execute_counts_and_terminates_backends(postgres_server):
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        assert postgres_server.count_connections() >= 1
        assert postgres_server.terminate_backends() >= 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")


def test_max_connections_is_high_enough(postgres_server):
    assert int(postgres_server.execute("SHOW max_connections")[0][0]) >= 100


@pytest.mark.managed_servers("postgres")
def test_standalone_server_context_manager():
    import tempfile
    from pathlib import Path

    from syncpool.testing import PostgresServer

    # Not tmp_path: as root the server runs as another user, and pytest keeps its temp root at mode 0700.
    base = Path(tempfile.mkdtemp(prefix="syncpool-test-"))
    with PostgresServer(data_dir=base / "pg", user="alice", password="s3cret", dbname="shop") as server:
        assert "s3cret" not in repr(server)
        assert server.dsn == f"host=127.0.0.1 port={server.port} user=alice password=s3cret dbname=shop"
        with psycopg.connect(server.dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("shop",)
    assert not server.is_running()
    assert not (base / "pg").exists()
    base.rmdir()


@pytest.mark.managed_servers("postgres")
def test_server_dies_with_its_owner_process():
    import os
    import signal
    import subprocess
    import sys
    import time

    code = (
        "from syncpool.testing import PostgresServer; import sys, time; "
        "s = PostgresServer().start(); print(s._pid, s.data_dir, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid, data_dir = child.stdout.readline().split()
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
        raise AssertionError(f"postmaster {pid} outlived its owner")
    while os.path.exists(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(data_dir)
