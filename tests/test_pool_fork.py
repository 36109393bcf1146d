"""Fork safety: a child never uses, closes or finalises a client it inherited."""

from __future__ import annotations

import os
import sys

import pytest

from syncpool import Pool

from .fakes import FakeClient, FakeConnector

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


class ForkAwareConnector(FakeConnector):
    """Records, in a pipe the parent reads, any close of a client made by another process."""

    def __init__(self, report_fd: int) -> None:
        super().__init__()
        self.report_fd = report_fd
        self.after_fork_calls = 0

    def close(self, client: FakeClient) -> None:
        if client.pid != os.getpid():
            os.write(self.report_fd, b"closed an inherited client\n")
        super().close(client)

    def after_fork(self, client: FakeClient) -> None:
        self.after_fork_calls += 1


def test_child_gets_fresh_clients_and_leaves_the_parents_alone() -> None:
    read_fd, write_fd = os.pipe()
    connector = ForkAwareConnector(write_fd)
    with Pool(connector, min_size=2, max_size=4) as pool:
        pool.wait(5)
        held = pool.getconn(timeout=2)  # leased across the fork, like a `with` block that forks
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
            except BaseException as error:  # pragma: no cover - reported through the exit code
                os.write(write_fd, f"child failed: {error!r}\n".encode())
                code = 12
            sys.stdout.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        os.close(write_fd)
        with os.fdopen(read_fd) as report:
            complaints = report.read()
        assert os.waitstatus_to_exitcode(status) == 0, complaints
        assert complaints == ""
        # The parent's clients were untouched and still serve.
        assert not held.closed
        pool.putconn(held)
        with pool.connection(timeout=2) as client:
            assert client.pid == os.getpid()
        assert pool.stats()["size"] == 2
