"""ElasticsearchConnector against syncpool.testing's Elasticsearch node (``elasticsearch_node``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import elastic_transport
import elasticsearch
import pytest

from syncpool import AuthError
from syncpool.connectors import ElasticsearchConnector
from syncpool.testing import ElasticsearchNode

PASSWORD = "es-hunter2-password"
API_KEY = "c2VjcmV0LWFwaS1rZXktdmFsdWU="


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- without a server ------------------------------------------------------------------------------------------


def test_description_masks_url_credentials() -> None:
    connector = ElasticsearchConnector(
        ["https://elastic:hunter2@es1:9200", "https://es2:9200"], api_key=API_KEY
    )
    for text in (connector.description, repr(connector)):
        assert "hunter2" not in text and API_KEY not in text
        assert "es1:9200" in text and "es2:9200" in text


def test_defaults_are_explicit() -> None:
    connector = ElasticsearchConnector("http://es:9200", max_retries=3)
    assert connector._client_kwargs["request_timeout"] == 10
    assert connector._client_kwargs["retry_on_timeout"] is False
    assert connector._client_kwargs["max_retries"] == 3
    assert connector._client_kwargs["connections_per_node"] == 1
    with pytest.raises(ValueError):
        ElasticsearchConnector([])


def _node_pool_sizes(client: Any) -> list[int]:
    """The size of each node's urllib3 connection pool, as elastic_transport made it."""
    return [node.pool.pool.maxsize for node in client.transport.node_pool.all()]


def test_one_connection_per_node_by_default_overridable() -> None:
    hosts = ["http://es1:9200", "http://es2:9200"]
    for kwargs, expected in (({}, [1, 1]), ({"connections_per_node": 4}, [4, 4])):
        client = ElasticsearchConnector(hosts, verify_on_connect=False, **kwargs).connect()
        try:
            assert _node_pool_sizes(client) == expected
            assert all(node.pool.block for node in client.transport.node_pool.all())  # a strict cap
        finally:
            client.close()


def test_node_configs_keep_their_own_connections_per_node() -> None:
    node = elastic_transport.NodeConfig("http", "es1", 9200, connections_per_node=3)
    client = ElasticsearchConnector([node], verify_on_connect=False).connect()
    try:
        assert _node_pool_sizes(client) == [3]
    finally:
        client.close()
    client = ElasticsearchConnector([node], verify_on_connect=False, connections_per_node=2).connect()
    try:
        assert _node_pool_sizes(client) == [2]  # an explicit option applies to every node, as in the client
    finally:
        client.close()


# -- against the node --------------------------------------------------------------------------------------------


@pytest.mark.elasticsearch
def test_connect_check_close(elasticsearch_node: Any) -> None:
    connector = ElasticsearchConnector(elasticsearch_node.url)
    client = connector.connect()
    try:
        connector.check(client)
        assert not connector.is_broken(client)
        client.index(index="docs", id="1", document={"a": 1})
        assert client.get(index="docs", id="1")["_source"] == {"a": 1}
    finally:
        connector.close(client)


@pytest.mark.elasticsearch
def test_several_hosts(elasticsearch_node: Any) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    connector = ElasticsearchConnector([dead, elasticsearch_node.url], max_retries=2)
    client = connector.connect()
    try:
        for _ in range(3):  # the client skips the dead node
            connector.check(client)
    finally:
        client.close()


@pytest.mark.elasticsearch
@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_overload_answers_are_transient(elasticsearch_node: Any, status: int) -> None:
    connector = ElasticsearchConnector(elasticsearch_node.url, verify_on_connect=False)
    client = connector.connect()
    try:
        elasticsearch_node.set_behaviour(status=status)
        with pytest.raises(elasticsearch.ApiError) as info:
            connector.check(client)
        assert connector.is_transient(info.value)
        assert not connector.is_auth_error(info.value)
    finally:
        elasticsearch_node.set_behaviour()
        client.close()


@pytest.mark.elasticsearch
def test_unavailable_node_at_connect_is_raised_as_is(elasticsearch_node: Any) -> None:
    elasticsearch_node.set_behaviour(status=503)
    try:
        with pytest.raises(elasticsearch.ApiError) as info:
            ElasticsearchConnector(elasticsearch_node.url).connect()
        assert not isinstance(info.value, AuthError)
    finally:
        elasticsearch_node.set_behaviour()


@pytest.mark.elasticsearch
@pytest.mark.slow
def test_hung_node_times_out_without_retry(elasticsearch_node: Any) -> None:
    connector = ElasticsearchConnector(elasticsearch_node.url, request_timeout=0.5, verify_on_connect=False)
    client = connector.connect()
    elasticsearch_node.set_behaviour(hang=True)
    try:
        started = time.monotonic()
        with pytest.raises(elastic_transport.ConnectionTimeout) as info:
            connector.check(client)
        assert time.monotonic() - started < 1.5  # retry_on_timeout=False: one attempt only
        assert connector.is_transient(info.value)
    finally:
        elasticsearch_node.set_behaviour()
        client.close()


def test_refused_connection_is_transient() -> None:
    connector = ElasticsearchConnector(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(elastic_transport.ConnectionError) as info:
        connector.connect()
    assert connector.is_transient(info.value)
    assert not connector.is_auth_error(info.value)


@pytest.fixture
def secured_node() -> Iterator[ElasticsearchNode]:
    node = ElasticsearchNode(username="elastic", password=PASSWORD, api_key=API_KEY).start()
    yield node
    node.close()


@pytest.mark.elasticsearch
@pytest.mark.parametrize(
    "credentials",
    [
        {"basic_auth": ("elastic", PASSWORD)},
        {"api_key": API_KEY},
        {"basic_auth": lambda: ("elastic", PASSWORD)},
        {"url_userinfo": True},
    ],
    ids=["basic", "api_key", "callable", "url"],
)
def test_good_credentials(secured_node: ElasticsearchNode, credentials: dict[str, Any]) -> None:
    if credentials.pop("url_userinfo", False):
        hosts = secured_node.url.replace("http://", f"http://elastic:{PASSWORD}@")
    else:
        hosts = secured_node.url
    connector = ElasticsearchConnector(hosts, **credentials)
    assert PASSWORD not in repr(connector)
    connector.connect().close()


@pytest.mark.elasticsearch
@pytest.mark.parametrize(
    "credentials",
    [{"basic_auth": ("elastic", "wrong-" + PASSWORD)}, {"api_key": "d3JvbmctYXBpLWtleQ=="}, {}],
    ids=["wrong-password", "wrong-api-key", "none"],
)
def test_refused_credentials_raise_auth_error(
    secured_node: ElasticsearchNode, credentials: dict[str, Any]
) -> None:
    connector = ElasticsearchConnector(secured_node.url, **credentials)
    with pytest.raises(AuthError) as info:
        connector.connect()
    cause = info.value.__cause__
    assert isinstance(cause, elasticsearch.AuthenticationException)
    assert connector.is_auth_error(cause) and not connector.is_transient(cause)
    assert secured_node.url in str(info.value)
    for text in (str(info.value), str(cause), repr(connector)):
        assert PASSWORD not in text and "d3JvbmctYXBpLWtleQ==" not in text


@pytest.mark.elasticsearch
def test_forbidden_is_an_auth_error(elasticsearch_node: Any) -> None:
    elasticsearch_node.set_behaviour(status=403)
    try:
        with pytest.raises(AuthError) as info:
            ElasticsearchConnector(elasticsearch_node.url).connect()
        assert isinstance(info.value.__cause__, elasticsearch.AuthorizationException)
    finally:
        elasticsearch_node.set_behaviour()
