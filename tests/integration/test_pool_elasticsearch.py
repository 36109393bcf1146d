"""syncpool.Pool + ElasticsearchConnector against the in-process node (``elasticsearch_node``)."""

from __future__ import annotations

import logging
import secrets
import time
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
