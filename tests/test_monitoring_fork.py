"""A child forked while other threads record or read client statistics can use them: no inherited lock is held."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from typing import Any

import pytest

from syncpool.monitoring import MonitoredClient, WrapResult

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")

CHILDREN = 40
CHILD_DEADLINE = 60.0  # seconds for all children together; a deadlocked child never ends on its own


class Boom(Exception):
    """A client error."""


class Cursor:
    def execute(self, query: str) -> None:
        pass


class Client:
    def get(self, key: int) -> int:
        return key

    def fail(self) -> None:
        raise Boom

    def cursor(self) -> Cursor:
        return Cursor()


def _child(client: Any) -> int:
    """What each child does; its exit status (0: the statistics work, and count the child's own calls exactly)."""
    before = client.stats()["methods"]
    client.get(1)
    try:
        client.fail()
    except Boom:
        pass
    client.cursor().execute("SELECT 1")
    stats = client.stats()
    after = stats["methods"]

    def added(method: str, key: str = "operations") -> int:
        return int(after[method][key] - before.get(method, {}).get(key, 0))

    ok = added("get") == added("fail") == added("fail", "errors") == added("cursor.execute") == 1
    return 0 if ok and stats["latency"]["count"] == stats["operations"] else 3


def _wait(pids: list[int]) -> dict[int, int | None]:
    """Wait for every child until the deadline; kill those still running. Returns pid -> exit code (None: hung)."""
    codes: dict[int, int | None] = {}
    deadline = time.monotonic() + CHILD_DEADLINE
    waiting = list(pids)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
                waiting.remove(pid)
        time.sleep(0.01)
    for pid in waiting:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        codes[pid] = None
    return codes


def test_children_forked_while_threads_hammer_the_statistics_can_use_them() -> None:
    client = MonitoredClient(Client(), name="forked", results={"cursor": WrapResult(methods=("execute",))})
    stop = threading.Event()

    def hammer(worker: int) -> None:
        # Failed calls and stats() hold the recorder, ClientStats and histogram locks as often as possible.
        calls = 0
        while not stop.is_set():
            calls += 1
            try:
                client.fail()
            except Boom:
                pass
            client.get(calls)
            client.cursor().execute("SELECT 1")
            if calls % 4 == worker % 4:
                client.stats()

    threads = [threading.Thread(target=hammer, args=(n,), name=f"hammer-{n}") for n in range(4)]
    for thread in threads:
        thread.start()
    pids = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "fork() in a multi-threaded process"
            for _ in range(CHILDREN):
                time.sleep(0.005)  # let the hammers run into their locks
                pid = os.fork()
                if pid == 0:  # the child: never return into pytest
                    code = 1
                    try:
                        code = _child(client)
                    finally:
                        os._exit(code)
                pids.append(pid)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        codes = _wait(pids)
    hung = [pid for pid, code in codes.items() if code is None]
    failed = {pid: code for pid, code in codes.items() if code not in (0, None)}
    assert not hung, f"{len(hung)} of {CHILDREN} children deadlocked"
    assert not failed, f"children failed: {failed}"
    assert client.stats()["operations"] > 0


def _lock_of(client: Any, which: str) -> Any:
    recorder = client.monitor.method_stats("get")
    return {
        "client stats": client.monitor._lock,
        "method recorder": recorder._lock,
        "method histogram": recorder._histogram._lock,
    }[which]


@pytest.mark.parametrize("which", ["client stats", "method recorder", "method histogram"])
def test_a_child_forked_while_another_thread_holds_a_statistics_lock_can_use_them(which: str) -> None:
    client = MonitoredClient(Client(), name="held", results={"cursor": WrapResult(methods=("execute",))})
    client.get(1)
    lock = _lock_of(client, which)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold, name="holder")
    holder.start()
    try:
        assert held.wait(10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    client.get(2)
                    code = _child(client)
                finally:
                    os._exit(code)
    finally:
        release.set()
        holder.join()
    assert _wait([pid]) == {pid: 0}
