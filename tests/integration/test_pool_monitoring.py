"""``monitor=True`` pools record the real work: cursors on PostgreSQL, pages on S3, helpers on Elasticsearch."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from syncpool import Pool
from syncpool.connectors import ElasticsearchConnector, PostgresConnector, S3Connector
from syncpool.monitoring import MonitoredClient, WrapResult, unwrap


def _methods(pool: Pool[Any]) -> dict[str, Any]:
    return pool.stats()["clients"]["methods"]  # type: ignore[no-any-return]


# -- PostgreSQL ----------------------------------------------------------------------------------------------------


@pytest.fixture
def table(postgres_server: Any) -> str:
    name = f"mon_{time.monotonic_ns()}"
    postgres_server.execute(f"CREATE TABLE {name} (id int)")
    postgres_server.execute(f"GRANT ALL ON {name} TO {postgres_server.user}")
    return name


@pytest.fixture
def pg_pool(postgres_server: Any) -> Any:
    with Pool(PostgresConnector(postgres_server.dsn), max_size=2, name="mon-pg", monitor=True) as pool:
        yield pool


@pytest.mark.postgres
def test_cursor_execute_executemany_and_copy_are_recorded(pg_pool: Pool[Any], table: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    with pg_pool.connection() as conn:
        with conn.cursor() as cur:
            assert isinstance(cur, psycopg.Cursor) and isinstance(unwrap(cur), psycopg.Cursor)
            cur.execute("SELECT pg_sleep(0.05)")
            cur.fetchone()
            cur.executemany(f"INSERT INTO {table} VALUES (%s)", [(1,), (2,), (3,)])
            with cur.copy(f"COPY {table} (id) FROM STDIN") as copy:
                copy.write_row((4,))
                copy.write_row((5,))
            cur.execute(f"SELECT id FROM {table} ORDER BY id")
            assert [row[0] for row in cur] == [1, 2, 3, 4, 5]  # iterating the monitored cursor
        conn.commit()
    methods = _methods(pg_pool)
    assert "cursor" not in methods  # making a cursor is no round trip
    assert methods["cursor.execute"]["operations"] == 2
    assert methods["cursor.execute"]["latency"]["max"] >= 0.05 * 0.99
    assert methods["cursor.executemany"]["operations"] == 1
    assert methods["cursor.copy"]["operations"] == 1 and methods["cursor.copy"]["errors"] == 0
    assert methods["cursor.copy"]["latency"]["count"] == 1
    assert not [name for name in methods if "fetch" in name]  # fetches read rows already received


@pytest.mark.postgres
def test_failed_statements_and_copies_are_counted_by_type(pg_pool: Pool[Any], table: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    with pg_pool.connection() as conn:
        with conn.cursor() as cur:
            with pytest.raises(psycopg.errors.UndefinedTable):
                cur.execute("SELECT * FROM no_such_table_here")
        conn.rollback()
        cur = conn.cursor()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):  # noqa: SIM117 - the block is what fails
            with cur.copy(f"COPY {table} (id) FROM STDIN") as copy:
                copy.write_row(("not a number",))
        conn.rollback()
    methods = _methods(pg_pool)
    assert methods["cursor.execute"]["errors_by_type"] == {"UndefinedTable": 1}
    assert methods["cursor.copy"]["errors_by_type"] == {"InvalidTextRepresentation": 1}


@pytest.mark.postgres
def test_connection_execute_is_one_round_trip_and_its_cursor_is_plain(pg_pool: Pool[Any]) -> None:
    psycopg = pytest.importorskip("psycopg")
    with pg_pool.connection() as conn:
        assert isinstance(conn, psycopg.Connection)
        cur = conn.execute("SELECT 1")
        assert type(cur) is psycopg.Cursor  # not wrapped: its fetches are local
        assert cur.fetchone() == (1,)
    methods = _methods(pg_pool)
    assert methods["execute"]["operations"] == 1
    assert not [name for name in methods if name.startswith("execute.")]


# -- S3 ------------------------------------------------------------------------------------------------------------


@pytest.mark.s3
def test_each_page_of_a_paginator_and_each_wait_are_recorded(s3_server: Any) -> None:
    pytest.importorskip("boto3")
    bucket = f"mon-{secrets.token_hex(6)}"
    connector = S3Connector(verify_on_connect=False, **s3_server.client_kwargs())
    with Pool(connector, max_size=1, name="mon-s3", monitor=True) as pool:
        with pool.connection() as s3:
            s3.create_bucket(Bucket=bucket)
            for number in range(5):
                s3.put_object(Bucket=bucket, Key=f"k{number}", Body=b"x")
            paginator = s3.get_paginator("list_objects_v2")
            pages = list(paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}))
            assert [len(page["Contents"]) for page in pages] == [2, 2, 1]
            full = paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}).build_full_result()
            assert len(full["Contents"]) == 5
            s3.get_waiter("object_exists").wait(Bucket=bucket, Key="k0")
        methods = _methods(pool)
    assert methods["get_paginator.paginate"]["operations"] == 3
    assert methods["get_paginator.paginate"]["latency"]["count"] == 3
    assert methods["get_paginator.paginate.build_full_result"]["operations"] == 1
    assert methods["get_waiter.wait"]["operations"] == 1
    assert "get_paginator" not in methods and "get_waiter" not in methods  # making them sends nothing
    assert methods["put_object"]["operations"] == 5


@pytest.mark.s3
def test_a_page_that_fails_is_counted_by_its_error_type(s3_server: Any) -> None:
    botocore_exceptions = pytest.importorskip("botocore.exceptions")
    connector = S3Connector(verify_on_connect=False, **s3_server.client_kwargs())
    with Pool(connector, max_size=1, name="mon-s3-errors", monitor=True) as pool:
        with pool.connection() as s3:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=f"missing-{secrets.token_hex(6)}")
            with pytest.raises(botocore_exceptions.ClientError) as caught:
                list(pages)
            assert caught.value.response["Error"]["Code"] == "NoSuchBucket"
        methods = _methods(pool)
    assert methods["get_paginator.paginate"]["errors_by_type"] == {"NoSuchBucket": 1}


# -- Elasticsearch -------------------------------------------------------------------------------------------------


@pytest.mark.elasticsearch
def test_bulk_helper_works_through_a_monitored_pool_client(elasticsearch_node: Any) -> None:
    elasticsearch = pytest.importorskip("elasticsearch")
    from elasticsearch import helpers

    index = f"mon-{secrets.token_hex(6)}"
    with Pool(ElasticsearchConnector(elasticsearch_node.url), max_size=1, name="mon-es", monitor=True) as pool:
        with pool.connection() as es:
            assert isinstance(es, elasticsearch.Elasticsearch)
            ok, errors = helpers.bulk(es, ({"_index": index, "_id": str(n), "n": n} for n in range(10)))
            assert (ok, errors) == (10, [])
            assert es.count(index=index)["count"] == 10
        methods = _methods(pool)
        assert methods["count"]["operations"] == 1
        assert methods["bulk"]["operations"] == 1  # the request bulk() sent through an options() copy
        assert "options" not in methods


@pytest.mark.elasticsearch
def test_options_copies_followed_with_an_empty_prefix_record_the_bulk_requests(elasticsearch_node: Any) -> None:
    elasticsearch = pytest.importorskip("elasticsearch")
    from elasticsearch import helpers

    index = f"mon-{secrets.token_hex(6)}"
    raw = elasticsearch.Elasticsearch(elasticsearch_node.url, request_timeout=5)
    es = MonitoredClient(raw, name="es", results={"options": WrapResult(prefix="")})
    try:
        ok, _ = helpers.bulk(es, ({"_index": index, "_id": str(n), "n": n} for n in range(10)), chunk_size=4)
        assert ok == 10
        es.options(request_timeout=3).indices.refresh(index=index)
    finally:
        raw.close()
    methods = es.stats()["methods"]
    assert methods["bulk"]["operations"] == 3  # chunks of 4, 4 and 2, each a request on an options() copy
    assert methods["indices.refresh"]["operations"] == 1
