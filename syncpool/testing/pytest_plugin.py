"""pytest fixtures that start the servers tests need (registered as the ``syncpool`` pytest11 plugin).

Fixtures:

- ``postgres_server``: a [`PostgresServer`][], one per session and per xdist worker, started
  at the first test that asks for it and guaranteed running at the start of every test (a test may stop it).
- ``s3_server``: a [`S3Server`][] (session).
- ``elasticsearch_node``: an [`ElasticsearchNode`][] (session), running, behaving normally and
  with authentication off at the start of every test. Indices are kept between tests: use unique names.
- ``fault_proxy``: a factory, ``fault_proxy(host, port) -> FaultProxy`` (started); every proxy made by a test is
  closed when it ends.
- ``pgbouncer_server``: a running [`PgBouncerServer`][] in front of ``postgres_server``, in the
  pool mode named by the ``pgbouncer_mode`` fixture (``"transaction"``; parametrize ``pgbouncer_mode`` to get
  ``"session"``), with [`PGBOUNCER_POOL_SIZES`][] server connections. One bouncer per mode, per session and per
  xdist worker, started at the first test that asks for it. On a managed server each bouncer logs in as a role of
  its own (``syncpool_bouncer_<mode>``, not a superuser), so the ``pg_stat_activity`` rows of ``bouncer.user`` are
  that bouncer's server connections. Tests are skipped when the ``pgbouncer`` binary is missing.

Servers start lazily (only when a test asks) under a per-worker directory from ``tmp_path_factory`` and stop at the
end of the session; an ``atexit`` hook also stops PostgreSQL when the run is interrupted.

External services: set ``SYNCPOOL_TEST_POSTGRES_DSN`` (libpq conninfo or URL), ``SYNCPOOL_TEST_S3_ENDPOINT``
(credentials from the standard ``AWS_*`` variables) or ``SYNCPOOL_TEST_ELASTICSEARCH_URL`` (credentials may be
embedded in the URL) and the matching fixture yields an ``External*`` object with the same connection attributes
instead of starting a server. Operations such a service does not allow (stop/start, fault injection) raise
[`NotSupportedExternally`][], a ``NotImplementedError``; a test that raises it is reported
as skipped. To skip before doing any work, mark the test ``@pytest.mark.managed_servers("postgres", ...)`` or call
[`require_managed`][] with the fixture's value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .elasticsearch import ElasticsearchNode, ExternalElasticsearch
from .external import ENV_VARS, NotSupportedExternally, external_override
from .pgbouncer import INSTALL_HINT, PgBouncerServer, find_pgbouncer
from .postgres import ExternalPostgres, PostgresServer, _quote_literal, _run_as
from .proxy import FaultProxy
from .s3 import ExternalS3, RefusingS3Endpoint, S3Server

__all__ = [
    "PGBOUNCER_POOL_SIZES",
    "elasticsearch_node",
    "fault_proxy",
    "pgbouncer_mode",
    "pgbouncer_server",
    "postgres_server",
    "require_pgbouncer",
    "s3_server",
]

PGBOUNCER_POOL_SIZES = {"transaction": 4, "session": 8}
"""``default_pool_size`` of the fixtures' bouncers, by pool mode. In session mode a server connection serves one client
connection for its whole life, so the pool must cover every client the test opens at once.
"""
#: Prefix of the roles the fixtures' bouncers log in as on a managed PostgreSQL server (the mode follows).
PGBOUNCER_ROLE_PREFIX = "syncpool_bouncer_"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``managed_servers`` marker."""
    config.addinivalue_line(
        "markers",
        "managed_servers(*kinds): the test stops or breaks these servers ('postgres', 's3', 'elasticsearch'), "
        "so it is skipped when they are external services (SYNCPOOL_TEST_* variables)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``managed_servers`` whose servers are external."""
    for marker in item.iter_markers("managed_servers"):
        kinds = marker.args or tuple(ENV_VARS)
        for kind in kinds:
            if external_override(kind):
                pytest.skip(f"needs a {kind} server managed by the tests ({ENV_VARS[kind]} is set)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Report a test as skipped when it asks an external service for something only a managed server can do."""
    try:
        return (yield)
    except NotSupportedExternally as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def _syncpool_servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per-session (so per xdist worker) directory holding the servers' data."""
    return tmp_path_factory.mktemp("syncpool-servers")


@pytest.fixture(scope="session")
def _syncpool_postgres_session(_syncpool_servers_dir: Path) -> Iterator[PostgresServer | ExternalPostgres]:
    dsn = external_override("postgres")
    if dsn:
        yield ExternalPostgres(dsn)
        return
    # As root the server runs as another user, who must reach its data directory; pytest resets its base temp
    # directory to mode 0700 whenever a pytest process starts, so root's servers keep their data in their own
    # temporary directory instead (deleted by close(), or at exit).
    data_dir = None if _run_as() else _syncpool_servers_dir / "postgres"
    server = PostgresServer(data_dir=data_dir)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_server(
    _syncpool_postgres_session: PostgresServer | ExternalPostgres,
) -> PostgresServer | ExternalPostgres:
    """A running PostgreSQL server (restarted if an earlier test stopped it)."""
    _syncpool_postgres_session.start()
    return _syncpool_postgres_session


@pytest.fixture
def refusing_s3_endpoint() -> Iterator[str]:
    """The URL of an S3-shaped endpoint that refuses every request with 403 ``InvalidAccessKeyId``."""
    with RefusingS3Endpoint() as endpoint:
        yield endpoint.endpoint_url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server | ExternalS3]:
    """An S3 endpoint (moto) for the whole session."""
    endpoint = external_override("s3")
    if endpoint:
        yield ExternalS3(endpoint)
        return
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _syncpool_elasticsearch_session() -> Iterator[ElasticsearchNode | ExternalElasticsearch]:
    url = external_override("elasticsearch")
    if url:
        yield ExternalElasticsearch(url)
        return
    node = ElasticsearchNode()
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def elasticsearch_node(
    _syncpool_elasticsearch_session: ElasticsearchNode | ExternalElasticsearch,
) -> Iterator[ElasticsearchNode | ExternalElasticsearch]:
    """A running Elasticsearch node behaving normally, with authentication off (also after the test)."""
    node = _syncpool_elasticsearch_session
    node.start()
    node.set_behaviour()
    node.set_auth()
    yield node
    if isinstance(node, ElasticsearchNode):
        # Release requests a test left hanging before the next test (or session teardown) runs.
        node.set_behaviour()
        node.set_auth()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Factory of started [`FaultProxy`][] objects, all closed when the test ends."""
    proxies: list[FaultProxy] = []

    def make(host: str, port: int, **kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(host, port, **kwargs)
        proxies.append(proxy)
        return proxy.start()

    yield make
    for proxy in proxies:
        proxy.close()


def require_pgbouncer() -> str:
    """Return the path of the ``pgbouncer`` binary, or skip the calling test with ``INSTALL_HINT``."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    return binary


@pytest.fixture(scope="session")
def _syncpool_pgbouncer_sessions(
    _syncpool_postgres_session: PostgresServer | ExternalPostgres,
) -> Iterator[dict[str, PgBouncerServer]]:
    """The bouncers started so far in this session (so in this xdist worker), by pool mode; closed at the end,
    before the PostgreSQL server they stand in front of."""
    bouncers: dict[str, PgBouncerServer] = {}
    try:
        yield bouncers
    finally:
        for bouncer in bouncers.values():
            bouncer.close()


@pytest.fixture
def pgbouncer_mode() -> str:
    """Pool mode of ``pgbouncer_server``: ``"transaction"``. Parametrize it to choose: the bouncers are kept per mode."""
    return "transaction"


@pytest.fixture
def pgbouncer_server(
    pgbouncer_mode: str,
    _syncpool_pgbouncer_sessions: dict[str, PgBouncerServer],
    _syncpool_postgres_session: PostgresServer | ExternalPostgres,
) -> PgBouncerServer:
    """A running PgBouncer in ``pgbouncer_mode`` in front of ``postgres_server`` (both restarted if stopped)."""
    binary = require_pgbouncer()
    if pgbouncer_mode not in PGBOUNCER_POOL_SIZES:
        raise ValueError(f"pgbouncer_mode must be one of {sorted(PGBOUNCER_POOL_SIZES)}, not {pgbouncer_mode!r}")
    postgres = _syncpool_postgres_session.start()
    bouncer = _syncpool_pgbouncer_sessions.get(pgbouncer_mode)
    if bouncer is None:
        user, password = _pgbouncer_role(postgres, pgbouncer_mode)
        bouncer = PgBouncerServer(
            postgres,
            user=user,
            password=password,
            pool_mode=pgbouncer_mode,
            default_pool_size=PGBOUNCER_POOL_SIZES[pgbouncer_mode],
            binary=binary,
        )
        _syncpool_pgbouncer_sessions[pgbouncer_mode] = bouncer
    return bouncer.start()


def _pgbouncer_role(postgres: PostgresServer | ExternalPostgres, mode: str) -> tuple[str, str]:
    """The role and password a bouncer uses: a role per mode on a managed server, else the server's own."""
    if isinstance(postgres, ExternalPostgres):
        return postgres.user, postgres.password
    import secrets

    role, password = PGBOUNCER_ROLE_PREFIX + mode, secrets.token_urlsafe(18)
    if postgres.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
        # A utility statement takes no bound parameters: the password goes in as a quoted literal.
        postgres.execute(f"ALTER ROLE {role} PASSWORD {_quote_literal(password)}")
    else:
        postgres.create_role(role, password)
    return role, password
