"""Added cost of a :class:`~syncpool.monitoring.MonitoredClient` call, in nanoseconds and in lock pairs.

Run: ``python benchmarks/bench_monitor.py [--rounds 9] [--calls 100000]``

For 1 and 8 threads, each round runs, one after the other (interleaved, so machine noise hits all alike):

* ``empty``: the bare loop, subtracted from the lock figures;
* ``bare``: ``client.ping()`` on a trivial method (attribute lookup included);
* ``monitored``: the same through ``MonitoredClient`` (attribute lookup included), every call timed, on the C
  accelerator (``syncpool._speedups``) when it is built, as it is wherever a C compiler was at hand at install;
* ``pure``: the same on the pure-Python call path (what ``SYNCPOOL_NO_SPEEDUPS=1`` or a build without a
  compiler gives);
* ``sampled``: pure Python with ``ClientStats(latency_sample=8)``: counts exact, one call in eight timed;
* ``lock``: ``lock.acquire(); lock.release()`` on an uncontended ``threading.Lock`` (one per thread);
* ``with``: ``with lock: pass``, the idiomatic spelling, for reference.

With N threads every thread runs its own loop at the same time, and a figure is wall time divided by the
total number of calls (throughput cost under the GIL). The added cost is ``monitored - bare`` per round;
reported figures are medians over rounds. The target: added cost <= 3 acquire+release pairs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncpool import monitoring  # noqa: E402
from syncpool.monitoring import ClientStats, MonitoredClient  # noqa: E402


class Trivial:
    """A client whose method does nothing."""

    def ping(self) -> None:
        """Do nothing."""


def loop_empty(n: int) -> None:
    for _ in range(n):
        pass


def loop_call(client: object, n: int) -> None:
    ping = None  # keep the attribute lookup inside the loop, as real code does
    del ping
    for _ in range(n):
        client.ping()  # type: ignore[attr-defined]


def loop_lock(lock: threading.Lock, n: int) -> None:
    for _ in range(n):
        lock.acquire()
        lock.release()


def loop_with(lock: threading.Lock, n: int) -> None:
    for _ in range(n):
        with lock:
            pass


def run(threads: int, calls: int, make_job: Callable[[], Callable[[], None]]) -> float:
    """Run ``threads`` jobs at once; return wall nanoseconds per call."""
    jobs = [make_job() for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(job: Callable[[], None]) -> None:
        barrier.wait()
        job()

    workers = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for worker_thread in workers:
        worker_thread.start()
    barrier.wait()
    start = time.perf_counter()
    for worker_thread in workers:
        worker_thread.join()
    return (time.perf_counter() - start) * 1e9 / (threads * calls)


def bench(threads: int, rounds: int, calls: int) -> dict[str, float]:
    raw = Trivial()
    monitored = MonitoredClient(Trivial(), name="bench")
    monitored.ping()  # warm the wrapper cache
    accelerator, monitoring._speedups = monitoring._speedups, None  # recorders pick their path when created
    try:
        pure = MonitoredClient(Trivial(), name="bench-pure")
        pure.ping()
        sampled = MonitoredClient(Trivial(), sink=ClientStats("bench-sampled", latency_sample=8))
        sampled.ping()
    finally:
        monitoring._speedups = accelerator
    variants: dict[str, Callable[[], Callable[[], None]]] = {
        "empty": lambda: lambda: loop_empty(calls),
        "bare": lambda: lambda: loop_call(raw, calls),
        "monitored": lambda: lambda: loop_call(monitored, calls),
        "pure": lambda: lambda: loop_call(pure, calls),
        "sampled": lambda: lambda: loop_call(sampled, calls),
        "lock": lambda: (lambda lock: lambda: loop_lock(lock, calls))(threading.Lock()),
        "with": lambda: (lambda lock: lambda: loop_with(lock, calls))(threading.Lock()),
    }
    samples: dict[str, list[float]] = {
        key: [] for key in (*variants, "added", "added_pure", "added_sampled", "lock_pair", "with_pair")
    }
    for _ in range(rounds):
        figures = {key: run(threads, calls, make) for key, make in variants.items()}
        for key, value in figures.items():
            samples[key].append(value)
        samples["added"].append(figures["monitored"] - figures["bare"])
        samples["added_pure"].append(figures["pure"] - figures["bare"])
        samples["added_sampled"].append(figures["sampled"] - figures["bare"])
        samples["lock_pair"].append(figures["lock"] - figures["empty"])
        samples["with_pair"].append(figures["with"] - figures["empty"])
    result = {key: statistics.median(values) for key, values in samples.items()}
    result["ratio"] = result["added"] / result["lock_pair"]
    result["ratio_with"] = result["added"] / result["with_pair"]
    result["ratio_pure"] = result["added_pure"] / result["lock_pair"]
    result["ratio_sampled"] = result["added_sampled"] / result["lock_pair"]
    for client in (monitored, pure, sampled):
        ops = client.stats()["operations"]
        assert ops == 1 + rounds * threads * calls, ops  # the monitor counted every call exactly
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=100_000, help="calls per thread per round")
    args = parser.parse_args()
    path = "C accelerator" if monitoring._speedups is not None else "pure Python (accelerator not built)"
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds, {args.calls} calls per thread per round;"
          f" monitored = {path}")
    print("threads  bare  lock-pair  with-lock | monitored added  /lock  /with | pure added  /lock"
          " | sampled added  /lock")
    for threads in (1, 8):
        r = bench(threads, args.rounds, args.calls)
        print(
            f"{threads:7d}  {r['bare']:4.0f}  {r['lock_pair']:9.1f}  {r['with_pair']:9.1f}"
            f" | {r['monitored']:9.1f} {r['added']:5.1f}  {r['ratio']:5.2f}  {r['ratio_with']:5.2f}"
            f" | {r['pure']:4.0f} {r['added_pure']:5.1f}  {r['ratio_pure']:5.2f}"
            f" | {r['sampled']:7.0f} {r['added_sampled']:5.1f}  {r['ratio_sampled']:5.2f}"
        )
    print("(ns per call, medians; lock = acquire()+release(); target: monitored added/lock <= 3)")


if __name__ == "__main__":
    main()
