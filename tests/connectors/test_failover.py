"""FailoverConnector with fake members (and one real PostgreSQL case)."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from syncpool import AuthError, ConnectError
from syncpool.connector import Connector
from syncpool.connectors import FailoverConnector, PostgresConnector


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Client:
    def __init__(self, member: str) -> None:
        self.member = member
        self.closed = False


class FakeMember(Connector[Client]):
    def __init__(self, name: str) -> None:
        self.description = name
        self.down = False
        self.refuse_credentials = False
        self.attempts = 0
        self.calls: list[str] = []

    def connect(self) -> Client:
        self.attempts += 1
        if self.refuse_credentials:
            raise AuthError(f"{self.description} refused")
        if self.down:
            raise ConnectionRefusedError(f"{self.description} down")
        return Client(self.description)

    def check(self, client: Client) -> None:
        self.calls.append("check")

    def is_broken(self, client: Client) -> bool:
        self.calls.append("is_broken")
        return client.closed

    def reset(self, client: Client) -> None:
        self.calls.append("reset")

    def close(self, client: Client) -> None:
        self.calls.append("close")
        client.closed = True

    def after_fork(self, client: Client) -> None:
        self.calls.append("after_fork")

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, ConnectionError)


@pytest.fixture
def setup() -> tuple[FailoverConnector[Client], FakeMember, FakeMember, Clock]:
    clock = Clock()
    a, b = FakeMember("a"), FakeMember("b")
    return FailoverConnector([a, b], backoff=1.0, max_backoff=4.0, clock=clock), a, b, clock


def test_prefers_the_first_member(setup: Any) -> None:
    failover, a, b, _ = setup
    assert failover.connect().member == "a"
    assert b.attempts == 0
    assert failover.description == "failover(a, b)"


def test_skips_a_failed_member_until_its_backoff_expires(setup: Any) -> None:
    failover, a, b, clock = setup
    a.down = True
    assert failover.connect().member == "b"
    assert a.attempts == 1
    assert failover.connect().member == "b"
    assert a.attempts == 1  # skipped while backing off
    a.down = False
    clock.now += 1.0
    assert failover.connect().member == "a"  # back to the preferred member
    assert failover.status()[0]["failures"] == 0


def test_backoff_doubles_and_is_capped(setup: Any) -> None:
    failover, a, b, clock = setup
    a.down = True
    delays = []
    for _ in range(5):
        failover.connect()
        delays.append(failover.status()[0]["retry_in"])
        clock.now += delays[-1]
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_all_failing_raises_connect_error_chaining_the_last(setup: Any) -> None:
    failover, a, b, clock = setup
    a.down = b.down = True
    with pytest.raises(ConnectError) as info:
        failover.connect()
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert "b down" in str(info.value.__cause__)
    assert "a: ConnectionRefusedError" in str(info.value)
    # Everyone backing off: the member whose backoff ends first is still tried, not none.
    a.down = False
    assert failover.connect().member == "a"


def test_auth_error_is_raised_at_once(setup: Any) -> None:
    failover, a, b, _ = setup
    a.refuse_credentials = True
    with pytest.raises(AuthError):
        failover.connect()
    assert b.attempts == 0
    assert failover.status()[0]["failures"] == 0  # not a node failure


def test_delegates_to_the_member_that_made_the_client(setup: Any) -> None:
    failover, a, b, clock = setup
    a.down = True
    client = failover.connect()
    failover.check(client)
    assert not failover.is_broken(client)
    failover.reset(client)
    failover.after_fork(client)
    failover.close(client)
    assert b.calls == ["check", "is_broken", "reset", "after_fork", "close"]
    assert a.calls == []
    with pytest.raises(ValueError):
        failover.check(client)  # forgotten once closed
    assert failover.is_broken(Client("stranger"))


def test_is_transient_and_is_auth_error(setup: Any) -> None:
    failover, *_ = setup
    assert failover.is_transient(ConnectionResetError())
    assert failover.is_transient(ConnectError("x"))
    assert not failover.is_transient(ValueError())
    assert failover.is_auth_error(AuthError("x"))


def test_validation() -> None:
    with pytest.raises(ValueError):
        FailoverConnector([])
    with pytest.raises(ValueError, match="max_backoff"):
        FailoverConnector([FakeMember("a")], backoff=5, max_backoff=1)
    with pytest.raises(TypeError):
        FailoverConnector([object()])  # type: ignore[list-item]


def test_concurrent_connects(setup: Any) -> None:
    failover, a, b, _ = setup
    a.down = True
    clients: list[Client] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            client = failover.connect()
            with lock:
                clients.append(client)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(clients) == 200 and {c.member for c in clients} == {"b"}
    for client in clients:
        failover.close(client)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_a_working_lock(setup: Any) -> None:
    failover, a, b, clock = setup
    in_lock, release = threading.Event(), threading.Event()

    class BlockingClock(Clock):
        """Blocks the "holder" thread when it reads the clock while recording a failure, i.e. under the lock."""

        def __call__(self) -> float:
            if threading.current_thread().name == "holder" and failover._lock.locked():
                in_lock.set()
                release.wait(10)
            return self.now

    failover._clock = BlockingClock()
    a.down = True
    holder = threading.Thread(target=failover.connect, name="holder")
    holder.start()
    try:
        assert in_lock.wait(10), "the holder thread never reached the lock"
        pid = os.fork()
        if pid == 0:  # the child: a lock inherited held would hang here; the alarm turns a hang into a failure
            signal.alarm(10)
            code = 0
            try:
                client = failover.connect()
                code = 0 if client.member == "b" and failover.status()[0]["failures"] >= 1 else 10
                failover.close(client)
            except BaseException:  # pragma: no cover - reported through the exit code
                code = 11
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join(10)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not failover._lock.locked()  # the parent's own lock was released by its holder as usual
    assert failover.connect().member == "b"


@pytest.mark.postgres
def test_postgres_members_with_one_dead_node(postgres_server: Any) -> None:
    s = postgres_server
    dead = PostgresConnector(f"host={s.host} port=1 connect_timeout=2", user=s.user, password=s.password)
    alive = PostgresConnector(s.dsn)
    failover = FailoverConnector([dead, alive])
    assert s.password not in repr(failover)
    conn = failover.connect()
    try:
        failover.check(conn)
        assert not failover.is_broken(conn)
        assert failover.status()[0]["failures"] == 1
    finally:
        failover.close(conn)
    assert conn.closed


@pytest.mark.postgres
def test_postgres_auth_error_stops_failover(postgres_server: Any) -> None:
    s = postgres_server
    refused = PostgresConnector(s.dsn, password="wrong-pass")
    failover = FailoverConnector([refused, PostgresConnector(s.dsn)])
    with pytest.raises(AuthError) as info:
        failover.connect()
    assert "wrong-pass" not in str(info.value)
