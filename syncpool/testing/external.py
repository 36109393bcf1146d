"""What the test servers do when tests run against real, externally managed services.

Setting ``SYNCPOOL_TEST_POSTGRES_DSN``, ``SYNCPOOL_TEST_S3_ENDPOINT`` or ``SYNCPOOL_TEST_ELASTICSEARCH_URL`` makes the
pytest fixtures yield lightweight stand-ins ([`ExternalPostgres`][],
[`ExternalS3`][], [`ExternalElasticsearch`][]) instead of
starting servers. What cannot be done to a service the tests do not own (stopping it, injecting faults) raises
[`NotSupportedExternally`][], which the pytest plugin turns into a skip.
"""

from __future__ import annotations

import os

__all__ = ["ENV_VARS", "NotSupportedExternally", "external_override", "require_managed"]

#: Environment variable that points each kind of server at an external service.
ENV_VARS = {
    "postgres": "SYNCPOOL_TEST_POSTGRES_DSN",
    "s3": "SYNCPOOL_TEST_S3_ENDPOINT",
    "elasticsearch": "SYNCPOOL_TEST_ELASTICSEARCH_URL",
}


class NotSupportedExternally(NotImplementedError):
    """The operation needs a server the tests manage themselves; the pytest plugin skips the test."""


def external_override(kind: str) -> str | None:
    """Return the external address configured for ``kind`` (``postgres``, ``s3``, ``elasticsearch``), or None."""
    if kind not in ENV_VARS:
        raise ValueError(f"kind must be one of {sorted(ENV_VARS)}, not {kind!r}")
    return os.environ.get(ENV_VARS[kind]) or None


def require_managed(server: object) -> None:
    """Skip the calling test unless ``server`` is one the tests started themselves (not an external service)."""
    if type(server).__name__.startswith("External"):
        import pytest

        pytest.skip(f"needs a server managed by the tests, not {server!r}")
