"""syncpool.Pool + ElasticsearchConnector against the in-process node (``elasticsearch_node``)."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import syncpool
from syncpool import Pool
from syncpool.connectors import ElasticsearchConnector

from . import Load, Sampler, assert_no_secret, outage_under_load, wait_until

elasticsearch = pytest.importorskip("elasticsearch")
elastic_transport = pytest.importorskip("elastic_transport")

pytestmark = pytest.mark.elasticsearch

MAX_SIZE = 6


def test_many_threads_index_and_get(elasticsearch_node: Any) -> None:
    index = f"it-{secrets.token_hex(6)}"
    connector = ElasticsearchConnector(elasticsearch_node.url)
    with Pool(connector, min_size=1, max_size=MAX_SIZE, timeout=10.0, name="it-es") as pool:

        def index_and_get(worker: int) -> None:
            doc_id = f"{worker}-{time.monotonic_ns()}"
            with pool.connection() as client:
                client.index(index=index, id=doc_id, document={"worker": worker})
                assert client.get(index=index, id=doc_id)["_source"] == {"worker": worker}

        load = Load(index_and_get, threads=12)
        with Sampler(lambda: pool.stats()["size"]) as sampler:
            load.start()
            wait_until(lambda: load.ok >= 200, timeout=30)
            load.stop()
        assert load.errors == []
        assert max(sampler.seen) <= MAX_SIZE
        assert pool.stats()["in_use"] == 0


def test_client_returned_after_an_error_answer_is_kept(elasticsearch_node: Any) -> None:
    with Pool(ElasticsearchConnector(elasticsearch_node.url), max_size=1, name="it-es-states") as pool:
        with pytest.raises(elasticsearch.NotFoundError), pool.connection() as client:
            client.get(index=f"missing-{secrets.token_hex(4)}", id="1")
        with pool.connection() as again:
            assert again is client
            assert again.info()
        assert pool.stats()["connections_discarded"] == 0


# -- HTTP connections per pooled client --------------------------------------------------------------------------


class _Threads:
    """``count`` threads running ``work`` once each; :meth:`join` fails the test if any of them failed."""

    def __init__(self, count: int, work: Callable[[], object]) -> None:
        self.errors: list[BaseException] = []
        self._work = work
        self._threads = [threading.Thread(target=self._run) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # reported by join()
            self.errors.append(error)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads)
        assert self.errors == []


THREADS = 3


@pytest.mark.managed_servers("elasticsearch")  # the node is told to answer late
def test_pooled_clients_hold_one_connection_each_even_when_shared(elasticsearch_node: Any, fault_proxy: Any) -> None:
    """``THREADS`` threads each lease a client and, inside the lease, make 3 calls at once on it (as
    ``helpers.parallel_bulk`` would): each client still keeps to its single connection."""
    proxy = fault_proxy(elasticsearch_node.host, elasticsearch_node.port)
    connector = ElasticsearchConnector(f"http://{proxy.host}:{proxy.port}")
    with Pool(connector, max_size=THREADS, timeout=30.0, name="it-es-sockets") as pool:
        barrier = threading.Barrier(THREADS)

        def lease_and_share() -> None:
            with pool.connection() as client:
                barrier.wait(30)  # every thread holds a lease: they use distinct clients
                _Threads(3, client.info).join()

        elasticsearch_node.set_behaviour(delay=0.1)  # so that the 3 calls on one client would overlap
        with Sampler(lambda: proxy.connections, interval=0.01) as sampler:
            _Threads(THREADS, lease_and_share).join()
        elasticsearch_node.set_behaviour()
        assert pool.stats()["size"] == THREADS
        assert max(sampler.seen) <= THREADS
        assert proxy.connections == THREADS  # kept for the next lease, one per client
    wait_until(lambda: proxy.connections == 0)


@pytest.mark.managed_servers("elasticsearch")
@pytest.mark.parametrize("connections_per_node", [None, 4])
def test_the_connection_cap_is_strict_and_overridable(
    elasticsearch_node: Any, fault_proxy: Any, connections_per_node: int | None
) -> None:
    """4 threads call one client while the node holds every request: by default one request reaches the node and
    the others wait for its connection; with ``connections_per_node=4`` all 4 do, over 4 connections."""
    proxy = fault_proxy(elasticsearch_node.host, elasticsearch_node.port)
    overrides = {} if connections_per_node is None else {"connections_per_node": connections_per_node}
    connector = ElasticsearchConnector(f"http://{proxy.host}:{proxy.port}", **overrides)
    cap = connections_per_node or 1
    client = connector.connect()
    try:
        before = elasticsearch_node.requests_seen
        elasticsearch_node.set_behaviour(hang=True)
        threads = _Threads(4, client.info)
        try:
            wait_until(lambda: elasticsearch_node.requests_seen == before + cap and proxy.connections == cap)
            time.sleep(0.3)  # a request or a connection beyond the cap would show now
            assert elasticsearch_node.requests_seen == before + cap
            assert proxy.connections == cap
        finally:
            elasticsearch_node.set_behaviour()  # the held requests fail, and the client retries them
            threads.join()
    finally:
        connector.close(client)


# What a caller may see while the node is down: no client in time, or the transport's connection errors on a
# request in flight (a request cut mid-answer surfaces as a ConnectionError too).
ALLOWED = (syncpool.PoolTimeout, elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout)


@pytest.mark.slow
@pytest.mark.managed_servers("elasticsearch")
def test_node_restarted_under_load(elasticsearch_node: Any) -> None:
    connector = ElasticsearchConnector(elasticsearch_node.url, request_timeout=2)
    pool = Pool(
        connector,
        min_size=2,
        max_size=MAX_SIZE,
        timeout=1.0,
        name="it-es-restart",
        reconnect_backoff=syncpool.Backoff(initial=0.05, maximum=0.5),
    )

    def info(worker: int) -> None:
        with pool.connection() as client:
            client.info()

    load = Load(info, threads=8)
    try:
        with Sampler(lambda: pool.stats()["size"]) as sampler:
            recovery = outage_under_load(load, elasticsearch_node.stop, elasticsearch_node.start)
        assert recovery < 5.0
        assert load.unexpected(ALLOWED) == []
        assert load.errors, "the outage went unnoticed: the test did not test anything"
        assert max(sampler.seen) <= MAX_SIZE
        assert pool.stats()["in_use"] == 0
    finally:
        load.stop()
        pool.close()


@pytest.mark.managed_servers("elasticsearch")
@pytest.mark.parametrize("scheme", ["basic_auth", "api_key"])
def test_refused_credentials_raise_auth_error_fast_and_leak_nothing(
    elasticsearch_node: Any, scheme: str, caplog: Any
) -> None:
    right = f"Right{secrets.token_hex(10)}"
    wrong = f"Wrong{secrets.token_hex(10)}"
    if scheme == "basic_auth":
        elasticsearch_node.set_auth(username="elastic", password=right)
        good_kwargs: dict[str, Any] = {"basic_auth": ("elastic", right)}
        bad_kwargs: dict[str, Any] = {"basic_auth": ("elastic", wrong)}
    else:
        elasticsearch_node.set_auth(api_key=right)
        good_kwargs, bad_kwargs = {"api_key": right}, {"api_key": wrong}
    caplog.set_level(logging.DEBUG, logger="syncpool")

    bad = Pool(
        ElasticsearchConnector(elasticsearch_node.url, **bad_kwargs),
        min_size=1,
        max_size=2,
        timeout=20.0,
        name="it-es-auth",
    )
    try:
        started = time.monotonic()
        with pytest.raises(syncpool.AuthError) as caught:
            bad.getconn()
        assert time.monotonic() - started < 5.0
        assert_no_secret([right, wrong], pool=bad, errors=[caught.value], records=caplog.records)
    finally:
        bad.close()

    with Pool(
        ElasticsearchConnector(elasticsearch_node.url, **good_kwargs), max_size=2, name="it-es-good"
    ) as good:
        with pytest.raises(elasticsearch.NotFoundError) as missing, good.connection() as client:
            client.get(index=f"missing-{secrets.token_hex(4)}", id="1")
        assert_no_secret([right], pool=good, errors=[missing.value], records=caplog.records)


def test_password_in_url_is_masked(elasticsearch_node: Any, caplog: Any) -> None:
    password = f"UrlPw{secrets.token_hex(10)}"
    elasticsearch_node.set_auth(username="elastic", password=password)
    url = elasticsearch_node.url.replace("http://", f"http://elastic:{password}@")
    caplog.set_level(logging.DEBUG, logger="syncpool")
    with Pool(ElasticsearchConnector(url), max_size=2, name="it-es-url") as pool:
        with pool.connection() as client:
            assert client.info()
        assert_no_secret([password], pool=pool, records=caplog.records)
