"""Helpers the scaling tests send to other processes (Dask workers, process pools): importable by reference there.

:class:`JournalingPostgresConnector` appends a line to a journal file for every connection it opens and closes, in the
process that does it, so that a test can prove from outside that each process closed its own connections (a killed
process closes none: the operating system drops its sockets).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from syncpool import registry
from syncpool.connectors import PostgresConnector


class JournalingPostgresConnector(PostgresConnector):
    """A PostgresConnector that journals ``open <pid> <backend pid>`` and ``close <pid> <backend pid>`` lines."""

    def __init__(self, conninfo: str, *, journal: str, **kwargs: Any) -> None:
        super().__init__(conninfo, **kwargs)
        self.journal = journal

    def _write(self, event: str, backend: int) -> None:
        journal_line(self.journal, event, backend)

    def connect(self) -> Any:
        conn = super().connect()
        self._write("open", conn.info.backend_pid)
        return conn

    def close(self, client: Any) -> None:
        try:
            backend = client.info.backend_pid
        except Exception:  # a connection already broken has none
            backend = 0
        self._write("close", backend)
        super().close(client)


def read_journal(path: str | Path) -> dict[int, defaultdict[str, set[str]]]:
    """Return ``{pid: {event: {value, ...}}}`` from a journal file: ``open`` and ``close`` hold backend pids, other
    events what the tests wrote (an event never written reads as an empty set)."""
    events: dict[int, defaultdict[str, set[str]]] = {}
    if not Path(path).exists():
        return events
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        event, pid, value = line.split()
        events.setdefault(int(pid), defaultdict(set))[event].add(value)
    return events


def journal_line(journal: str, event: str, value: object) -> None:
    """Append ``<event> <pid> <value>`` to ``journal`` (one short write in append mode: lines from several processes
    do not interleave)."""
    with open(journal, "a", encoding="utf-8") as file:
        file.write(f"{event} {os.getpid()} {value}\n")


def backend_of(n: int, pool_name: str = "db", hold: float = 0.005) -> tuple[int, int, int]:
    """A task: lease from this process's pool, return ``(n, os.getpid(), pg_backend_pid())``.

    ``hold`` keeps the lease a moment so that concurrent tasks need several connections.
    """
    with registry.get_pool(pool_name).connection() as conn:
        (backend,) = conn.execute("SELECT pg_backend_pid()").fetchone()
        time.sleep(hold)
    return n, os.getpid(), int(backend)


def pool_state(pool_name: str = "db") -> str:
    """A task: the state of this process's pool."""
    return str(registry.get_pool(pool_name).state)


def square_or_fail(conn: Any, n: int) -> int:
    """An operation for :class:`syncpool.demo_dask.DaskEngine`: fails on multiples of 7, with a secret in the
    message."""
    if n % 7 == 0:
        raise ValueError(f"item {n} refused by host=db password=hunter2")
    return int(conn.execute("SELECT ? * ?", (n, n)).fetchone()[0])
