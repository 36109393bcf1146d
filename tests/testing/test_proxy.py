"""FaultProxy: every mode against a raw echo server, and cut() against a real psycopg connection."""

from __future__ import annotations

import socket
import threading
import time

import pytest


@pytest.fixture
def echo_server():
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    handlers = []

    def handle(conn):
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def serve():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=handle, args=(conn,), daemon=True)
            handlers.append(thread)
            thread.start()

    server_thread = threading.Thread(target=serve, daemon=True)
    server_thread.start()
    yield listener.getsockname()
    stop.set()
    server_thread.join(5)
    listener.close()
    for thread in handlers:
        thread.join(5)


def _roundtrip(address, payload=b"ping", timeout=2.0):
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(payload)
        return sock.recv(1024)


def test_pass_through(fault_proxy, echo_server):
    proxy = fault_proxy(*echo_server)
    assert _roundtrip(proxy.address) == b"ping"
    assert proxy.address == (proxy.host, proxy.port)


def test_refuse_then_listen_again_on_same_port(fault_proxy, echo_server):
    proxy = fault_proxy(*echo_server)
    port = proxy.port
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2)
    proxy.pass_through()
    assert proxy.port == port
    assert _roundtrip(proxy.address) == b"ping"


def test_reset(fault_proxy, echo_server):
    proxy = fault_proxy(*echo_server)
    proxy.reset()
    # On loopback the RST can beat connect() itself; either way the client sees ECONNRESET.
    with pytest.raises(ConnectionResetError):
        with socket.create_connection(proxy.address, timeout=2) as sock:
            sock.sendall(b"ping")
            time.sleep(0.05)
            sock.recv(1024)


def test_blackhole(fault_proxy, echo_server):
    proxy = fault_proxy(*echo_server)
    proxy.blackhole()
    with socket.create_connection(proxy.address, timeout=0.3) as sock:
        sock.sendall(b"ping")
        with pytest.raises(TimeoutError):
            sock.recv(1024)
    assert proxy.connections == 0


def test_latency(fault_proxy, echo_server):
    proxy = fault_proxy(*echo_server)
    proxy.latency(0.15)
    started = time.monotonic()
    assert _roundtrip(proxy.address) == b"ping"
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2  # 0.15s each way
    proxy.pass_through()
    started = time.monotonic()
    _roundtrip(proxy.address)
    assert time.monotonic() - started < 0.15


def test_cut_resets_established_raw_connection(fault_proxy, echo_server):
    proxy = fault_proxy(*echo_server)
    with socket.create_connection(proxy.address, timeout=2) as sock:
        sock.sendall(b"ping")
        assert sock.recv(1024) == b"ping"
        assert proxy.connections == 1
        proxy.cut()
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    deadline = time.monotonic() + 2
    while proxy.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.connections == 0
    assert _roundtrip(proxy.address) == b"ping"  # the mode stays pass-through


@pytest.mark.postgres
def test_cut_breaks_psycopg_connection(fault_proxy, postgres_server):
    psycopg = pytest.importorskip("psycopg")
    proxy = fault_proxy(postgres_server.host, postgres_server.port)
    dsn = f"{postgres_server.dsn} port={proxy.port}"
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        proxy.cut()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert conn.broken


def test_close_leaves_no_threads(echo_server):
    from syncpool.testing import FaultProxy

    with FaultProxy(*echo_server) as proxy:
        socks = [socket.create_connection(proxy.address, timeout=2) for _ in range(3)]
        for sock in socks:
            sock.sendall(b"x")
            assert sock.recv(10) == b"x"
        assert proxy.connections == 3
    assert not [t for t in threading.enumerate() if t.name.startswith("syncpool-proxy")]
    for sock in socks:
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2)
