"""ElasticsearchNode, driven by the real elasticsearch client."""

from __future__ import annotations

import time
import uuid

import pytest

elasticsearch = pytest.importorskip("elasticsearch")
from elasticsearch import helpers  # noqa: E402

pytestmark = pytest.mark.elasticsearch


@pytest.fixture
def es(elasticsearch_node):
    client = elasticsearch.Elasticsearch(elasticsearch_node.url, request_timeout=5)
    yield client
    client.close()


@pytest.fixture
def index():
    return f"idx-{uuid.uuid4().hex[:8]}"


def test_info_and_health(es):
    assert es.info()["version"]["number"].startswith("9.")
    assert es.cluster.health()["status"] == "green"
    assert es.ping()


def test_index_get_and_missing(es, index):
    created = es.index(index=index, id="1", document={"name": "ada"})
    assert created["result"] == "created"
    assert es.index(index=index, id="1", document={"name": "ada2"})["result"] == "updated"
    doc = es.get(index=index, id="1")
    assert doc["found"] and doc["_source"] == {"name": "ada2"} and doc["_version"] == 2
    with pytest.raises(elasticsearch.NotFoundError):
        es.get(index=index, id="missing")
    generated = es.index(index=index, document={"name": "auto"})
    assert es.get(index=index, id=generated["_id"])["_source"] == {"name": "auto"}


def test_bulk_helpers_and_search_term(es, index):
    ok, errors = helpers.bulk(
        es,
        ({"_index": index, "_id": str(n), "n": n, "tag": "even" if n % 2 == 0 else "odd"} for n in range(10)),
    )
    assert (ok, errors) == (10, [])
    result = es.bulk(
        operations=[
            {"create": {"_index": index, "_id": "0"}},
            {"n": 0},
            {"delete": {"_index": index, "_id": "9"}},
        ]
    )
    assert result["errors"] is True
    assert result["items"][0]["create"]["status"] == 409
    assert result["items"][1]["delete"]["result"] == "deleted"
    es.indices.refresh(index=index)
    hits = es.search(index=index, query={"term": {"tag": "even"}}, size=3)["hits"]
    assert hits["total"]["value"] == 5
    assert [hit["_source"]["n"] for hit in hits["hits"]] == [0, 2, 4]
    assert es.search(index=index, query={"match_all": {}})["hits"]["total"]["value"] == 9
    assert es.count(index=index)["count"] == 9


def test_index_create_delete(es, index):
    es.indices.create(index=index)
    assert es.indices.exists(index=index)
    es.indices.delete(index=index)
    assert not es.indices.exists(index=index)


@pytest.mark.managed_servers("elasticsearch")
def test_auth_basic_and_api_key(elasticsearch_node):
    elasticsearch_node.set_auth(username="elastic", password="changeme")
    with elasticsearch.Elasticsearch(elasticsearch_node.url, basic_auth=("elastic", "wrong")) as es:
        with pytest.raises(elasticsearch.AuthenticationException):
            es.info()
    with elasticsearch.Elasticsearch(elasticsearch_node.url) as es:
        with pytest.raises(elasticsearch.AuthenticationException):
            es.info()
    with elasticsearch.Elasticsearch(elasticsearch_node.url, basic_auth=("elastic", "changeme")) as es:
        assert es.info()["tagline"]
    elasticsearch_node.set_auth(api_key=("key-id", "key-secret"))
    with elasticsearch.Elasticsearch(elasticsearch_node.url, api_key=("key-id", "key-secret")) as es:
        assert es.info()["tagline"]


@pytest.mark.managed_servers("elasticsearch")
def test_status_503(elasticsearch_node):
    elasticsearch_node.set_behaviour(status=503)
    with elasticsearch.Elasticsearch(elasticsearch_node.url, max_retries=0) as es:
        with pytest.raises(elasticsearch.ApiError) as info:
            es.info()
    assert info.value.meta.status == 503


@pytest.mark.managed_servers("elasticsearch")
def test_delay(elasticsearch_node, es):
    elasticsearch_node.set_behaviour(delay=0.3)
    started = time.monotonic()
    es.info()
    assert time.monotonic() - started >= 0.3


@pytest.mark.managed_servers("elasticsearch")
def test_hang_times_out_and_counts_requests(elasticsearch_node):
    before = elasticsearch_node.requests_seen
    elasticsearch_node.set_behaviour(hang=True)
    with elasticsearch.Elasticsearch(elasticsearch_node.url, request_timeout=0.5, max_retries=0) as es:
        started = time.monotonic()
        with pytest.raises(elasticsearch.ConnectionTimeout):
            es.info()
    assert 0.4 < time.monotonic() - started < 3
    assert elasticsearch_node.requests_seen == before + 1


def test_standalone_node_stop_releases_hung_requests():
    import threading

    from syncpool.testing import ElasticsearchNode

    node = ElasticsearchNode(username="u", password="p").start()
    node.set_behaviour(hang=True)
    errors = []

    def call():
        with elasticsearch.Elasticsearch(
            node.url, basic_auth=("u", "p"), request_timeout=10, max_retries=0
        ) as es:
            try:
                es.info()
            except elasticsearch.TransportError as exc:
                errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while node.requests_seen == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    node.stop()
    thread.join(5)
    assert time.monotonic() - started < 2
    assert errors and not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith(f"syncpool-es-node-{node.port}")]
