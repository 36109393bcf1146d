"""Fork safety: a child never uses, closes or finalises a client it inherited."""

from __future__ import annotations

import gc
import os
import socket
import sys
import weakref

import pytest

from syncpool import Pool

from .fakes import FakeClient, FakeConnector

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def _say_goodbye(report_fd: int, creator: int, client_id: int, sock: socket.socket) -> None:
    """A client's finaliser, like libpq's: it ends the session by saying goodbye over the socket it shares."""
    if os.getpid() != creator:
        os.write(report_fd, f"finalised inherited client {client_id}\n".encode())
    try:
        sock.sendall(b"bye")
        sock.close()
    except OSError:
        pass


class ForkAwareConnector(FakeConnector):
    """Records, in a pipe the parent reads, any close or finalisation of a client made by another process.

    Each client has a session with a "server": a socket pair, the client's end and the server's. Closing or
    finalising a client says goodbye over its end, which ends the session for every process sharing the socket.
    """

    def __init__(self, report_fd: int) -> None:
        super().__init__()
        self.report_fd = report_fd
        self.after_fork_calls = 0
        self.sessions: dict[int, tuple[socket.socket, socket.socket]] = {}  # client id -> (its end, the server's)

    def connect(self) -> FakeClient:
        client = super().connect()
        self.sessions[client.id] = own, _ = socket.socketpair()
        weakref.finalize(client, _say_goodbye, self.report_fd, client.pid, client.id, own)
        return client

    def close(self, client: FakeClient) -> None:
        if client.pid != os.getpid():
            os.write(self.report_fd, b"closed an inherited client\n")
        super().close(client)
        own = self.sessions[client.id][0]
        own.sendall(b"bye")
        own.close()

    def after_fork(self, client: FakeClient) -> None:
        self.after_fork_calls += 1

    def session_alive(self, client: FakeClient) -> bool:
        """Use ``client``: True if its server answers, False if someone ended the session."""
        own, server = self.sessions[client.id]
        server.setblocking(False)
        try:
            said = server.recv(16)
        except BlockingIOError:
            said = b""
        server.setblocking(True)
        if said:  # a goodbye, from this process or another
            return False
        own.sendall(b"ping")
        if server.recv(16) != b"ping":
            return False
        server.sendall(b"pong")
        return own.recv(16) == b"pong"


def test_child_gets_fresh_clients_and_leaves_the_parents_alone() -> None:
    read_fd, write_fd = os.pipe()
    connector = ForkAwareConnector(write_fd)
    with Pool(connector, min_size=2, max_size=4) as pool:
        pool.wait(5)
        held = pool.getconn(timeout=2)  # leased across the fork, like a `with` block that forks
        with pool._inv.lock:
            parents = [record.client for record in pool._inv.idle] + [held]
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                if connector.after_fork_calls != 2:  # the idle one and the leased one
                    code = 10
                for _ in range(3):
                    with pool.connection(timeout=5) as client:
                        if client.pid != os.getpid():
                            code = 11
                pool.putconn(held)  # returning an inherited lease is quietly dropped
                pool.close(timeout=2)
                del client, held, parents
                gc.collect()  # a finaliser the pool let loose runs now, if not already
            except BaseException as error:  # pragma: no cover - reported through the exit code
                os.write(write_fd, f"child failed: {error!r}\n".encode())
                code = 12
            sys.stdout.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        os.close(write_fd)
        with os.fdopen(read_fd) as report:
            complaints = report.read()
        try:
            assert os.waitstatus_to_exitcode(status) == 0, complaints
            assert complaints == ""
            # The parent's clients were untouched, and their sessions still serve: nobody said goodbye on them.
            assert not held.closed
            assert all(connector.session_alive(client) for client in parents)
        finally:
            pool.putconn(held)
        with pool.connection(timeout=2) as client:
            assert client.pid == os.getpid()
            assert connector.session_alive(client)
        assert pool.stats()["size"] == 2
    for _, server in connector.sessions.values():
        server.close()


class _Echo:
    """A client whose calls a monitor=True pool records."""

    closed = False

    def call(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.closed = True


def test_forks_while_threads_lease_and_record_never_deadlock_a_child() -> None:
    """Threads lease a monitor=True pool and call its clients in tight loops while the main thread forks 40 children
    that each lease, call and exit: every lock the package owns (the pool's, the statistics', the histograms', the
    scheduler's, the registry's) may be held by one of those threads at a fork, and each child must still work."""
    import threading
    import time

    from syncpool import registry

    pool = Pool(_Echo, min_size=2, max_size=4, monitor=True, health_check_interval=0.01, name="forked")
    registry.register(pool)
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            with pool.connection(timeout=5) as client:
                client.call()
            pool.stats()
            registry.info()

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    failures: list[str] = []
    try:
        for _ in range(40):
            pid = os.fork()
            if pid == 0:  # the child: lease, call, read the statistics, exit; never return into pytest
                code = 1
                try:
                    with pool.connection(timeout=5) as client:
                        code = 0 if client.call() == os.getpid() else 2
                    if pool.stats()["clients"]["operations"] < 1 or registry.info()[0]["name"] != "forked":
                        code = 3
                    pool.close(timeout=2)
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 20
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if os.waitstatus_to_exitcode(status) != 0:
                        failures.append(f"child {pid} exited with {os.waitstatus_to_exitcode(status)}")
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    failures.append(f"child {pid} hung")
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        registry.unregister("forked")
        pool.close()
    assert not failures, failures
