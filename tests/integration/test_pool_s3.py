"""syncpool.Pool + S3Connector against moto's S3 server (``s3_server``), through a ``fault_proxy`` for outages."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

import pytest

import syncpool
from syncpool import Pool
from syncpool.connectors import S3Connector
from syncpool.testing import KeepAliveFront

from . import Load, Sampler, assert_no_secret, outage_under_load, wait_until

boto3 = pytest.importorskip("boto3")
botocore_exceptions = pytest.importorskip("botocore.exceptions")

pytestmark = pytest.mark.s3

MAX_SIZE = 6


@pytest.fixture
def bucket(s3_server: Any) -> str:
    name = f"it-{secrets.token_hex(6)}"
    client = boto3.session.Session().client("s3", **s3_server.client_kwargs())
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return name


def _connector(s3_server: Any, bucket: str, endpoint: str | None = None, **overrides: Any) -> S3Connector:
    kwargs = {**s3_server.client_kwargs(), **overrides}
    if endpoint is not None:
        kwargs["endpoint_url"] = endpoint
    return S3Connector(bucket=bucket, **kwargs)


def test_many_threads_put_and_get(s3_server: Any, bucket: str) -> None:
    with Pool(
        _connector(s3_server, bucket), min_size=1, max_size=MAX_SIZE, timeout=10.0, name="it-s3"
    ) as pool:

        def put_get(index: int) -> None:
            key = f"k-{index}-{time.monotonic_ns()}"
            with pool.connection() as client:
                client.put_object(Bucket=bucket, Key=key, Body=key.encode())
                assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()

        load = Load(put_get, threads=12)
        with Sampler(lambda: pool.stats()["size"]) as sampler:
            load.start()
            wait_until(lambda: load.ok >= 120, timeout=30)
            load.stop()
        assert load.errors == []
        assert max(sampler.seen) <= MAX_SIZE
        assert pool.stats()["in_use"] == 0


def test_client_returned_after_an_error_answer_is_kept(s3_server: Any, bucket: str) -> None:
    with Pool(_connector(s3_server, bucket), min_size=1, max_size=1, name="it-s3-states") as pool:
        with pytest.raises(botocore_exceptions.ClientError), pool.connection() as client:
            client.get_object(Bucket=bucket, Key="missing")
        with pool.connection() as again:
            assert again is client
            again.put_object(Bucket=bucket, Key="present", Body=b"x")
        assert pool.stats()["connections_discarded"] == 0


# -- HTTP connections per pooled client --------------------------------------------------------------------------


def _lease_together(pool: Pool[Any], threads: int, work: Any) -> None:
    """Run ``work(client)`` in ``threads`` threads, each holding its own lease at the same time."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with pool.connection() as client:
                barrier.wait(30)  # every thread holds a lease: they use distinct clients
                work(client)
        except BaseException as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert not any(worker.is_alive() for worker in workers)


THREADS = 3


@pytest.mark.managed_servers("s3")  # the front speaks plain HTTP to moto
@pytest.mark.parametrize(("config", "kept"), [(None, 2), ({"max_pool_connections": 10}, 4)])
def test_each_pooled_client_keeps_at_most_its_connection_cap(
    s3_server: Any, bucket: str, config: dict[str, int] | None, kept: int
) -> None:
    """Each of ``THREADS`` clients streams 4 objects at once: afterwards it keeps 2 connections (its default cap)
    and closes the others, or keeps all 4 under a user's ``Config(max_pool_connections=10)``."""
    from botocore.config import Config

    with KeepAliveFront(s3_server.host, s3_server.port) as front:
        overrides = {"config": Config(**config)} if config else {}
        connector = _connector(s3_server, bucket, endpoint=front.url, **overrides)
        with Pool(connector, max_size=THREADS, timeout=30.0, name="it-s3-sockets") as pool:
            with pool.connection() as client:
                for key in range(4):
                    client.put_object(Bucket=bucket, Key=f"burst-{key}", Body=b"x" * 1000)
                assert client.meta.config.max_pool_connections == (config or {}).get("max_pool_connections", 2)

            def burst(client: Any) -> None:
                bodies = [client.get_object(Bucket=bucket, Key=f"burst-{key}")["Body"] for key in range(4)]
                assert [body.read() for body in bodies] == [b"x" * 1000] * 4

            _lease_together(pool, THREADS, burst)
            assert pool.stats()["size"] == THREADS
            # The clients are idle in the pool, each keeping what its urllib3 pool may hold.
            wait_until(lambda: front.open == THREADS * kept)
            time.sleep(0.2)  # a connection closed late would show now
            assert front.open == THREADS * kept
        wait_until(lambda: front.open == 0)  # closing the pool closed every client's connections


@pytest.mark.managed_servers("s3")
def test_a_client_reading_a_stream_while_calling_again_reuses_its_two_connections(
    s3_server: Any, bucket: str, caplog: Any
) -> None:
    """The common case the default cap of 2 is for: no connection opened beyond the first two, none discarded."""
    caplog.set_level(logging.WARNING, logger="urllib3")
    with KeepAliveFront(s3_server.host, s3_server.port) as front:
        connector = _connector(s3_server, bucket, endpoint=front.url)
        with Pool(connector, max_size=THREADS, timeout=30.0, name="it-s3-stream") as pool:

            def stream_and_call(client: Any) -> None:
                key = f"stream-{threading.get_ident()}"
                client.put_object(Bucket=bucket, Key=key, Body=b"y" * 1000)
                for _ in range(5):
                    body = client.get_object(Bucket=bucket, Key=key)["Body"]  # holds its connection until read
                    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == 1000
                    assert body.read() == b"y" * 1000

            _lease_together(pool, THREADS, stream_and_call)
            wait_until(lambda: front.open == THREADS * 2)
            assert front.opened == THREADS * 2  # 5 rounds each, and still only the first two connections
        assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


# What a caller may see while the endpoint is down: no client in time, or botocore's connection errors (after its
# own retries) on a request in flight.
ALLOWED = (
    syncpool.PoolTimeout,
    botocore_exceptions.ConnectionError,
    botocore_exceptions.HTTPClientError,
)


@pytest.mark.slow
@pytest.mark.managed_servers("s3")
def test_endpoint_outage_under_load(s3_server: Any, bucket: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(s3_server.host, s3_server.port)
    endpoint = f"http://{proxy.host}:{proxy.port}"
    connector = _connector(s3_server, bucket, endpoint=endpoint)
    pool = Pool(
        connector,
        min_size=2,
        max_size=MAX_SIZE,
        timeout=1.0,
        name="it-s3-outage",
        reconnect_backoff=syncpool.Backoff(initial=0.05, maximum=0.5),
    )

    def head(index: int) -> None:
        with pool.connection() as client:
            client.head_bucket(Bucket=bucket)

    load = Load(head, threads=8)
    try:
        with Sampler(lambda: proxy.connections) as sampler:
            # Behaviour, not timing: the load recovers once the endpoint is back (outage_under_load waits for a
            # success after it, and for 30 more), whatever the machine's load makes the recovery take.
            outage_under_load(
                load, lambda: (proxy.refuse(), proxy.cut()), proxy.pass_through, warm_up=30, down_for=1.0, after=30
            )
        assert load.unexpected(ALLOWED) == []
        # Bounded: each pooled client keeps at most its own HTTP connections (S3Connector's default of 2).
        assert max(sampler.seen) <= 2 * MAX_SIZE
        assert pool.stats()["in_use"] == 0
    finally:
        load.stop()
        pool.close()


# -- authentication and secrets ------------------------------------------------------------------------------------




def test_refused_credentials_raise_auth_error_fast_and_leak_nothing(
    s3_server: Any, refusing_s3_endpoint: str, caplog: Any
) -> None:
    secret_key = f"SECRET{secrets.token_hex(12)}"
    token = f"TOKEN{secrets.token_hex(12)}"
    caplog.set_level(logging.DEBUG, logger="syncpool")
    connector = S3Connector(
        bucket="it-refused",
        endpoint_url=refusing_s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key=secret_key,
        aws_session_token=token,
    )
    with Pool(connector, min_size=1, max_size=2, timeout=20.0, name="it-s3-auth") as pool:
        started = time.monotonic()
        with pytest.raises(syncpool.AuthError) as caught:
            pool.getconn()
        assert time.monotonic() - started < 5.0
        assert_no_secret([secret_key, token], pool=pool, errors=[caught.value], records=caplog.records)


def test_secret_key_is_masked_in_normal_use(s3_server: Any, bucket: str, caplog: Any) -> None:
    secret_key = f"SECRET{secrets.token_hex(12)}"  # moto accepts any key
    caplog.set_level(logging.DEBUG, logger="syncpool")
    connector = _connector(s3_server, bucket, aws_secret_access_key=secret_key)
    with Pool(connector, min_size=1, max_size=2, name="it-s3-masked") as pool:
        with pytest.raises(botocore_exceptions.ClientError) as missing, pool.connection() as client:
            client.get_object(Bucket=bucket, Key="missing")
        assert_no_secret([secret_key], pool=pool, errors=[missing.value], records=caplog.records)
