"""``import syncpool.connectors`` (and building connectors) must not import any client library."""

from __future__ import annotations

import subprocess
import sys

import syncpool.connectors

_SCRIPT = """
import sys
from syncpool.connectors import (
    ElasticsearchConnector, FailoverConnector, PostgresConnector, S3Connector, SQLiteConnector,
)
connectors = [
    PostgresConnector("host=db password=x"),
    S3Connector(bucket="b"),
    ElasticsearchConnector("http://es:9200"),
    SQLiteConnector(":memory:"),
]
FailoverConnector(connectors[:1])
for connector in connectors:
    connector.is_broken  # attribute access only
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {"psycopg", "psycopg_c", "psycopg_binary", "boto3", "botocore", "elasticsearch", "elastic_transport"}
)
print(",".join(loaded))
"""


def test_no_client_library_is_imported() -> None:
    result = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_all_is_sorted_and_complete() -> None:
    assert syncpool.connectors.__all__ == sorted(syncpool.connectors.__all__)
    for name in syncpool.connectors.__all__:
        assert getattr(syncpool.connectors, name).__doc__
