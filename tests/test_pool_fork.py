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
