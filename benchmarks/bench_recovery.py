"""Recovery after an outage: syncpool against psycopg_pool, on one embedded PostgreSQL.

Usage::

    python benchmarks/bench_recovery.py [--rounds 3] [--outage 3.0]

Each round, for each pool in turn (order alternating between rounds): open a pool of 4 connections, run 8 threads
leasing and running ``SELECT 1`` in a loop (1 s lease timeout, errors counted and slept off for 10 ms), stop the
server (fast mode), keep it down for ``--outage`` seconds (long enough for reconnect backoff to grow), start it
again, and measure from the moment the server accepts connections to (a) the first successful lease of any thread
and (b) the moment every thread has succeeded again, and the rate of failed connect attempts during the outage
(the load the pool puts on a server that is trying to come back). Medians over the rounds.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


from syncpool import Pool  # noqa: E402
from syncpool.connectors import PostgresConnector  # noqa: E402

Made = tuple[Callable[[], AbstractContextManager[Any]], Callable[[], int], Callable[[], None]]


def make_syncpool(dsn: str) -> Made:
    pool = Pool(PostgresConnector(dsn, autocommit=True), min_size=4, max_size=4, timeout=1.0, name="recovery")
    pool.wait(30)
    return pool.connection, lambda: pool.stats()["connect_errors"], lambda: pool.close(timeout=2)


def make_psycopg_pool(dsn: str) -> Made:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(dsn, min_size=4, max_size=4, timeout=1.0, kwargs={"autocommit": True}, open=True)
    pool.wait(30)
    return pool.connection, lambda: pool.get_stats().get("connections_errors", 0), lambda: pool.close(timeout=2)


POOLS = {"syncpool": make_syncpool, "psycopg_pool": make_psycopg_pool}


def one_round(server: Any, make: Callable[[str], Made], outage: float) -> tuple[float, float, float]:
    lease, connect_errors, close = make(server.dsn)
    threads_n = 8
    successes = [0.0] * threads_n
    stop = threading.Event()

    def work(index: int) -> None:
        while not stop.is_set():
            try:
                with lease() as conn:
                    conn.execute("SELECT 1").fetchone()
                successes[index] = time.monotonic()
            except Exception:
                time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        server.stop("fast")
        errors_before = connect_errors()
        time.sleep(outage)
        attempts_per_second = (connect_errors() - errors_before) / outage
        server.start()
        back = time.monotonic()
        deadline = back + 30
        while min(successes) <= back and time.monotonic() < deadline:
            time.sleep(0.002)
        first = min(s for s in successes if s > back) - back if max(successes) > back else float("inf")
        every = min(successes) - back if min(successes) > back else float("inf")
    finally:
        stop.set()
        for t in threads:
            t.join()
        close()
    return first, every, attempts_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--outage", type=float, default=3.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # both pools log every failed attempt during the outage
    from syncpool.testing import PostgresServer

    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in POOLS}
    with PostgresServer() as server:
        server.start()
        for round_number in range(args.rounds):
            order = list(POOLS) if round_number % 2 == 0 else list(reversed(POOLS))
            for name in order:
                results[name].append(one_round(server, POOLS[name], args.outage))
                first, every, rate = results[name][-1]
                print(f"  round {round_number + 1} {name}: first {first:.3f}s, all threads {every:.3f}s, "
                      f"{rate:.0f} failed connects/s during the outage", file=sys.stderr)
    print(f"\nRecovery after a {args.outage}s outage, 8 threads, pool of 4; median of {args.rounds} rounds")
    print(f"{'pool':>14} {'first lease':>12} {'every thread':>13} {'failed connects/s in outage':>28}")
    for name, runs in results.items():
        first = statistics.median(f for f, _, _ in runs)
        every = statistics.median(e for _, e, _ in runs)
        rate = statistics.median(r for _, _, r in runs)
        print(f"{name:>14} {first:>11.3f}s {every:>12.3f}s {rate:>28.1f}")
    print("(psycopg_pool's connections_errors counts only the attempts its workers make)")


if __name__ == "__main__":
    main()
