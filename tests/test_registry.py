"""The process-wide registry: one pool per name, reported and closed together, and at exit (signals: test_signals)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncpool import Pool, PoolClosed, registry
from tests.fakes import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _empty_registry() -> Iterator[None]:
    registry.close_all(timeout=1.0)
    yield
    registry.close_all(timeout=1.0)


def sqlite_config(**pool: Any) -> dict[str, Any]:
    return {"connector": "sqlite", "options": {"database": ":memory:"}, "pool": pool}


class Client:
    def close(self) -> None:
        pass


def test_same_name_and_config_give_the_same_pool() -> None:
    first = registry.get_pool("jobs", sqlite_config(max_size=2))
    assert registry.get_pool("jobs", sqlite_config(max_size=2)) is first
    assert registry.get_pool("jobs", sqlite_config(), max_size=2) is first  # kwargs merge over the pool section
    assert registry.get_pool("jobs") is first
    assert first.name == "jobs" and first.max_size == 2


def test_same_name_different_config_names_the_difference() -> None:
    registry.get_pool("jobs", {"connector": "postgres", "options": {"conninfo": "host=a password=hunter2"},
                               "pool": {"max_size": 2, "open": False}})
    with pytest.raises(ValueError, match=r"pool\.max_size: registered 2, requested 3") as info:
        registry.get_pool("jobs", {"connector": "postgres", "options": {"conninfo": "host=b password=s3cret"},
                                   "pool": {"max_size": 3, "open": False}})
    assert "options.conninfo differs" in str(info.value)
    assert "hunter2" not in str(info.value) and "s3cret" not in str(info.value)


def test_connector_objects_are_compared_by_identity() -> None:
    pool = registry.get_pool("objects", Client, max_size=1)
    assert registry.get_pool("objects", Client, max_size=1) is pool
    with pytest.raises(ValueError, match="connector"):
        registry.get_pool("objects", lambda: Client(), max_size=1)
    with pytest.raises(ValueError, match="pool.max_size: registered 1, requested 2"):
        registry.get_pool("objects", Client, max_size=2)


def test_concurrent_get_pool_builds_one_pool() -> None:
    results: list[Pool[Any]] = []
    barrier = threading.Barrier(8)

    def get() -> None:
        barrier.wait()
        results.append(registry.get_pool("shared", sqlite_config()))

    threads = [threading.Thread(target=get) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(pool) for pool in results}) == 1


def test_unknown_name_without_config() -> None:
    with pytest.raises(KeyError, match="SYNCPOOL_NOPE_CONNECTOR"):
        registry.get_pool("nope")


def test_get_pool_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCPOOL_ENVPOOL_CONNECTOR", "sqlite")
    monkeypatch.setenv("SYNCPOOL_ENVPOOL_DATABASE", ":memory:")
    monkeypatch.setenv("SYNCPOOL_ENVPOOL_MAX_SIZE", "3")
    pool = registry.get_pool("envpool")
    assert pool.max_size == 3 and registry.get_pool("envpool") is pool


def test_closed_pool_is_rebuilt() -> None:
    first = registry.get_pool("jobs", sqlite_config())
    first.close()
    second = registry.get_pool("jobs", sqlite_config())
    assert second is not first and not second.closed


def test_register_info_and_close_all() -> None:
    own = registry.register(Pool(Client, name="own", max_size=2))
    assert registry.register(own) is own
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Pool(Client, name="own", open=False))
    with pytest.raises(ValueError, match="register"):
        registry.get_pool("own", sqlite_config())
    registry.get_pool("jobs", {"connector": "postgres", "options": {"conninfo": "host=db password=hunter2"},
                               "pool": {"open": False}})
    with own.connection():
        report = {entry["name"]: entry for entry in registry.info()}
    assert set(report) == {"own", "jobs"}
    assert report["own"]["state"] == "open"
    assert report["own"]["stats"]["in_use"] == 1 and report["own"]["stats"]["max_size"] == 2
    assert "hunter2" not in repr(report)
    registry.close_all(timeout=1.0)
    assert own.closed and registry.info() == []
    with pytest.raises(PoolClosed):
        own.getconn()


def test_unregister_leaves_the_pool_open() -> None:
    pool = registry.get_pool("jobs", sqlite_config())
    assert registry.unregister("jobs") is pool and registry.unregister("jobs") is None
    assert not pool.closed
    pool.close()


def test_close_all_lets_leases_finish() -> None:
    pool = registry.get_pool("jobs", sqlite_config())
    returned = threading.Event()

    def hold() -> None:
        with pool.connection():
            time.sleep(0.3)
            returned.set()  # inside the block: after it, close_all may return before this thread runs again

    thread = threading.Thread(target=hold)
    thread.start()
    wait_until(lambda: pool.stats()["in_use"] == 1)
    registry.close_all(timeout=5.0)
    assert returned.is_set() and pool.closed
    thread.join()


@pytest.mark.slow
def test_atexit_closes_registered_pools() -> None:
    script = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        from syncpool import registry
        registry.get_pool("jobs", {"connector": "sqlite", "options": {"database": ":memory:"}})
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "pool 'jobs' closed" in result.stdout


def test_connector_sees_the_member_index() -> None:
    """Each member gets an index in [0, max_size), reused after a discard; None outside connect()."""
    from syncpool.connector import current_member_index

    assert current_member_index() is None
    pool = registry.get_pool("indexed", lambda: {"index": current_member_index()}, min_size=3, max_size=3)
    pool.wait(5)
    leased = [pool.getconn() for _ in range(3)]
    try:
        assert sorted(client["index"] for client in leased) == [0, 1, 2]
    finally:
        for client in leased:
            pool.putconn(client)
    pool.reload()  # every member replaced: the new ones take the freed indexes
    replaced = [pool.getconn(timeout=5) for _ in range(3)]
    try:
        assert sorted(client["index"] for client in replaced) == [0, 1, 2]
        assert not {id(client) for client in replaced} & {id(client) for client in leased}
    finally:
        for client in replaced:
            pool.putconn(client)


# -- fork ----------------------------------------------------------------------------------------------------------

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
ignore_fork_warning = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


def _wait_for_child(pid: int, timeout: float = 20.0) -> int:
    """The child's exit code; kill it and fail if it has not ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child was still running after {timeout}s: deadlocked?")


@contextlib.contextmanager
def _registry_lock_held_by_another_thread() -> Iterator[None]:
    """Hold the registry's lock in another thread for the duration, as a get_pool() under way would."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with registry._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        yield
    finally:
        release.set()
        holder.join()


@needs_fork
@ignore_fork_warning
def test_forked_child_has_a_registry_lock_of_its_own() -> None:
    """A thread held the lock at the fork: the child, where that thread does not exist, can still use the registry."""
    pool = registry.get_pool("jobs", Client, min_size=1, max_size=2)
    pool.wait(5)
    with _registry_lock_held_by_another_thread():
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code, and never return into pytest
            code = 1
            try:
                assert registry.get_pool("jobs") is pool
                with pool.connection(timeout=5):
                    pass
                assert [entry["name"] for entry in registry.info()] == ["jobs"]
                registry.close_all(timeout=2.0)
                assert pool.closed and registry.info() == []
                code = 0
            finally:
                os._exit(code)
    assert _wait_for_child(pid) == 0
    assert registry.get_pool("jobs") is pool and not pool.closed  # the child's close was its own


_FORK_AND_RETURN = """
    import os, sys, threading, time
    from syncpool import registry

    report = sys.argv[1]


    class Client:
        def __init__(self):
            self.creator = os.getpid()

        def close(self):
            with open(report, "a") as file:
                file.write(f"{os.getpid()} closed a client made by {self.creator}\\n")


    pool = registry.get_pool("jobs", Client, min_size=2, max_size=3)
    pool.wait(5)
    leased = pool.getconn()
    held, release = threading.Event(), threading.Event()

    def hold():
        with registry._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:
        # The child uses the pool and then simply ends: the registry's atexit hook runs here, as in the parent.
        with pool.connection(timeout=5) as client:
            assert client.creator == os.getpid()
        print("child done", flush=True)
    else:
        release.set()
        holder.join()
        deadline = time.monotonic() + 20
        while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        if not done[0]:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("child stuck", flush=True)
        else:
            print("child exit code", os.waitstatus_to_exitcode(done[1]), flush=True)
        print("parent", os.getpid(), "still has", pool.stats()["size"], "clients", flush=True)
        pool.putconn(leased)
"""


@needs_fork
@pytest.mark.slow
def test_forked_child_that_exits_normally_closes_only_its_own_clients(tmp_path: Path) -> None:
    report = tmp_path / "closes.txt"
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", textwrap.dedent(_FORK_AND_RETURN), str(report)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["child done", "child exit code 0"], result.stdout + result.stderr
    parent = int(lines[2].split()[1])
    assert lines[2] == f"parent {parent} still has 2 clients", result.stdout
    closes = [line.split() for line in report.read_text().splitlines()]
    by_child = [(int(words[0]), int(words[-1])) for words in closes if int(words[0]) != parent]
    by_parent = [int(words[-1]) for words in closes if int(words[0]) == parent]
    # At its exit the child closed the clients it made (it refilled to min_size), and none of the parent's.
    assert by_child and all(closer == creator for closer, creator in by_child), closes
    assert by_parent == [parent, parent], closes  # the parent closed its own two at its exit
