"""Ready-made connectors for common clients.

Importing this package imports none of the client libraries: each connector imports psycopg, boto3 or
elasticsearch the first time it connects (or classifies an error), so only the clients you use need be installed.

- [`PostgresConnector`][]: PostgreSQL through psycopg 3.
- [`S3Connector`][]: S3 through boto3, one session per client.
- [`ElasticsearchConnector`][]: Elasticsearch through elasticsearch-py 8 or 9.
- [`SQLiteConnector`][]: SQLite through the standard library.
- [`FailoverConnector`][]: several addresses for one service, tried in order with a backoff for failed ones.
"""

from __future__ import annotations

from syncpool.connectors.elasticsearch import ElasticsearchConnector
from syncpool.connectors.failover import FailoverConnector
from syncpool.connectors.postgres import PostgresConnector
from syncpool.connectors.s3 import S3Connector
from syncpool.connectors.sqlite import SQLiteConnector

__all__ = [
    "ElasticsearchConnector",
    "FailoverConnector",
    "PostgresConnector",
    "S3Connector",
    "SQLiteConnector",
]
