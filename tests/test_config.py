"""Pools built from configuration mappings and environment variables."""

from __future__ import annotations

import inspect
import math
import sqlite3
from typing import Any

import pytest

from syncpool import Backoff, CallableConnector, Pool
from syncpool.config import (
    POOL_OPTIONS,
    PoolConfig,
    config_from_env,
    parse_config,
    pool_from_config,
    pool_from_env,
    pools_from_config,
)
from syncpool.connectors import PostgresConnector, SQLiteConnector


class Client:
    """A client made by ``make_client``, for ``callable:`` connectors."""

    def __init__(self, label: str = "default") -> None:
        self.label = label
        self.closed = False

    def close(self) -> None:
        self.closed = True


def make_client(label: str = "default") -> Client:
    return Client(label)


def make_token_client(token_timeout: float = 1.0) -> Client:
    return Client(str(token_timeout))


def on_outage(pool: Pool[Any]) -> None:
    """A reconnect_failed callback named in configurations."""


def sqlite_config(**pool: Any) -> dict[str, Any]:
    return {"connector": "sqlite", "options": {"database": ":memory:"}, "pool": pool}


def test_pool_options_cover_every_pool_parameter() -> None:
    parameters = set(inspect.signature(Pool).parameters) - {"connector"}
    assert set(POOL_OPTIONS) == parameters


def test_pool_from_mapping_sqlite() -> None:
    pool = pool_from_config(sqlite_config(min_size=1, max_size=3, timeout=2, max_lifetime="inf"), name="cfg")
    try:
        assert pool.name == "cfg"
        assert isinstance(pool.connector, SQLiteConnector)
        assert (pool.min_size, pool.max_size, pool.timeout) == (1, 3, 2.0)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_name_from_pool_section_and_open_false() -> None:
    pool = pool_from_config(sqlite_config(name="from-section", open=False))
    assert pool.name == "from-section"
    assert pool.closed
    pool.close()


def test_callable_connector_with_options() -> None:
    config = {"connector": f"callable:{__name__}:make_client", "options": {"label": "x"}, "pool": {"max_size": 1}}
    with pool_from_config(config, name="callable") as pool:
        assert isinstance(pool.connector, CallableConnector)
        with pool.connection() as client:
            assert isinstance(client, Client) and client.label == "x"


def test_callable_connector_without_options() -> None:
    with pool_from_config({"connector": f"callable:{__name__}:Client"}, name="callable-bare") as pool:
        with pool.connection() as client:
            assert client.label == "default"


def test_backoff_and_callback_from_mapping() -> None:
    config = parse_config(
        {
            "connector": "sqlite",
            "options": {"database": ":memory:"},
            "pool": {
                "reconnect_backoff": {"initial": 0.5, "maximum": 4},
                "reconnect_failed": f"{__name__}:on_outage",
                "leak_threshold": None,
                "breaker_threshold": None,
                "max_idle": math.inf,
            },
        }
    )
    assert config.pool["reconnect_backoff"] == Backoff(initial=0.5, maximum=4)
    assert config.pool["reconnect_failed"] is on_outage
    assert config.pool["max_idle"] == math.inf


def test_unknown_pool_key_is_named_with_a_suggestion() -> None:
    document = {"pools": {"jobs": {"connector": "sqlite", "options": {"database": ":memory:"},
                                   "pool": {"max_sise": 3}}}}
    with pytest.raises(ValueError, match=r"^pools\.jobs\.pool\.max_sise: unknown option; did you mean max_size\?$"):
        pools_from_config(document)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"connecter": "sqlite"}, r"^connecter: unknown option; did you mean connector\?"),
        ({"options": {}}, r"^connector: required"),
        ({"connector": "postgress"}, r"^connector: unknown connector 'postgress'.*did you mean postgres\?"),
        ({"connector": "sqlite"}, r"^options\.database: required by SQLiteConnector"),
        ({"connector": "sqlite", "options": {"database": ":memory:"}, "pool": {"max_size": "ten"}},
         r"^pool\.max_size: expected an integer, got 'ten'$"),
        ({"connector": "sqlite", "options": {"database": ":memory:"}, "pool": {"max_size": True}},
         r"^pool\.max_size: expected an integer, got True$"),
        ({"connector": "sqlite", "options": {"database": ":memory:"}, "pool": {"timeout": "soon"}},
         r"^pool\.timeout: expected a number of seconds >= 0, got 'soon'$"),
        ({"connector": "sqlite", "options": {"database": ":memory:"}, "pool": {"open": "yes"}},
         r"^pool\.open: expected a boolean"),
        ({"connector": "sqlite", "options": {"database": ":memory:"}, "pool": {"reconnect_backoff": {"start": 1}}},
         r"^pool\.reconnect_backoff\.start: unknown option"),
        ({"connector": "sqlite", "options": {"database": ":memory:"}, "pool": {"reconnect_failed": "nomodule"}},
         r"^pool\.reconnect_failed: expected 'module:attribute'"),
        ({"connector": "sqlite", "options": {"database": ":memory:"}, "pool": []},
         r"^pool: expected a mapping"),
        ({"connector": "callable:no_such_module_xyz:f"}, r"^connector: cannot import"),
        ({"connector": f"callable:{__name__}:make_client", "options": {"lable": "x"}},
         r"^options\.lable: unknown option; did you mean label\?"),
    ],
)
def test_invalid_mappings_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_config(config)


def test_pool_range_errors_name_the_section() -> None:
    with pytest.raises(ValueError, match=r"^pool: min_size \(5\) must not be greater than max_size \(2\)"):
        pool_from_config(sqlite_config(min_size=5, max_size=2))


def test_pools_from_config_validates_everything_before_building() -> None:
    document = {"pools": {"a": sqlite_config(), "b": sqlite_config(max_size="x")}}
    with pytest.raises(ValueError, match=r"^pools\.b\.pool\.max_size"):
        pools_from_config(document)
    pools = pools_from_config({"pools": {"a": sqlite_config(), "b": sqlite_config(max_size=2)}})
    try:
        assert sorted(pools) == ["a", "b"] and pools["b"].max_size == 2 and pools["b"].name == "b"
    finally:
        for pool in pools.values():
            pool.close()


def test_secret_values_are_never_shown() -> None:
    config = {"connector": "postgres", "options": {"conninfo": 42}}
    with pytest.raises(ValueError) as info:
        pool_from_config(config)
    assert "42" not in str(info.value)
    config = {"connector": "postgres", "options": {"password": "hunter2"}}
    assert "hunter2" not in repr(parse_config(config))


def test_postgres_config_builds_postgres_connector() -> None:
    config = parse_config({"connector": "postgres", "options": {"conninfo": "host=db password=hunter2",
                                                                "application_name": "jobs"}})
    connector = config.make_connector()
    assert isinstance(connector, PostgresConnector)
    assert "hunter2" not in connector.description


# -- environment ---------------------------------------------------------------------------------------------------


def test_pool_from_env_sqlite(tmp_path: Any) -> None:
    environ = {
        "SYNCPOOL_JOBS_DB_CONNECTOR": "sqlite",
        "SYNCPOOL_JOBS_DB_DATABASE": str(tmp_path / "jobs.db"),
        "SYNCPOOL_JOBS_DB_MAX_SIZE": "4",
        "SYNCPOOL_JOBS_DB_TIMEOUT": "2.5",
        "SYNCPOOL_JOBS_DB_MAX_LIFETIME": "inf",
        "SYNCPOOL_JOBS_DB_LEAK_THRESHOLD": "none",
        "SYNCPOOL_JOBS_DB_MONITOR": "yes",
        "SYNCPOOL_JOBS_DB_RECONNECT_BACKOFF": "0.2,5",
        "SYNCPOOL_JOBS_DB_OPTION_ISOLATION_LEVEL": "IMMEDIATE",  # passed as a string
        "SYNCPOOL_OTHER_MAX_SIZE": "x",  # another pool's variable: ignored
    }
    pool = pool_from_env("jobs-db", environ=environ)
    try:
        assert pool.name == "jobs-db"
        assert (pool.max_size, pool.timeout) == (4, 2.5)
        assert pool.client_stats is not None
        with pool.connection() as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)
            assert conn.isolation_level == "IMMEDIATE"
    finally:
        pool.close()


def test_env_postgres_dsn_and_options() -> None:
    config = config_from_env("main", environ={
        "APP_MAIN_CONNECTOR": "postgres",
        "APP_MAIN_DSN": "host=db password=hunter2",
        "APP_MAIN_CHECK_TIMEOUT": "2",
        "APP_MAIN_RETRY_SERIALIZATION": "true",
        "APP_MAIN_OPTION_APPLICATION_NAME": "main",
        "APP_MAIN_HEALTH_CHECK_INTERVAL": "none",
    }, prefix="APP_")
    assert config == PoolConfig(
        "postgres",
        {"conninfo": "host=db password=hunter2", "check_timeout": 2.0, "retry_serialization": True,
         "application_name": "main"},
        {"health_check_interval": None},
    )


def test_env_elasticsearch_hosts_are_split() -> None:
    config = config_from_env("search", environ={
        "SYNCPOOL_SEARCH_CONNECTOR": "elasticsearch", "SYNCPOOL_SEARCH_HOSTS": "http://a:9200, http://b:9200",
    })
    assert config.options == {"hosts": ["http://a:9200", "http://b:9200"]}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, r"^SYNCPOOL_JOBS_CONNECTOR: not set"),
        ({"SYNCPOOL_JOBS_CONNECTOR": "sqlite", "SYNCPOOL_JOBS_DATABASE": "x", "SYNCPOOL_JOBS_MAX_SIZE": "ten"},
         r"^SYNCPOOL_JOBS_MAX_SIZE: expected an integer, got 'ten'$"),
        ({"SYNCPOOL_JOBS_CONNECTOR": "sqlite", "SYNCPOOL_JOBS_DATABASE": "x", "SYNCPOOL_JOBS_MAX_SISE": "3"},
         r"^SYNCPOOL_JOBS_MAX_SISE: unknown option; did you mean SYNCPOOL_JOBS_MAX_SIZE\?$"),
        ({"SYNCPOOL_JOBS_CONNECTOR": "sqlite", "SYNCPOOL_JOBS_DATABASE": "x", "SYNCPOOL_JOBS_OPEN": "maybe"},
         r"^SYNCPOOL_JOBS_OPEN: expected a boolean"),
        ({"SYNCPOOL_JOBS_CONNECTOR": "sqlite", "SYNCPOOL_JOBS_DSN": "x"},
         r"^SYNCPOOL_JOBS_DSN: only the postgres connector"),
        ({"SYNCPOOL_JOBS_CONNECTOR": "sqlite", "SYNCPOOL_JOBS_DATABASE": "x", "SYNCPOOL_JOBS_MAX_IDLE": "-inf"},
         r"^SYNCPOOL_JOBS_MAX_IDLE"),
    ],
)
def test_env_errors_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pool_from_env("jobs", environ=environ)


def test_env_secret_values_are_never_shown() -> None:
    environ = {
        "SYNCPOOL_JOBS_CONNECTOR": "postgres",
        "SYNCPOOL_JOBS_DSN": "host=db password=hunter2",
        "SYNCPOOL_JOBS_CHECK_TIMEOUT": "hunter2",
    }
    with pytest.raises(ValueError, match="SYNCPOOL_JOBS_CHECK_TIMEOUT") as info:
        config_from_env("jobs", environ=environ)
    assert "hunter2" in str(info.value)  # not a secret variable: its value helps
    environ = {"SYNCPOOL_JOBS_CONNECTOR": "postgres", "SYNCPOOL_JOBS_OPTION_PASSWORD": "x",
               "SYNCPOOL_JOBS_SECRET_TOKEN": "hunter2"}
    with pytest.raises(ValueError, match="^SYNCPOOL_JOBS_SECRET_TOKEN: unknown option") as info:
        config_from_env("jobs", environ=environ)
    assert "hunter2" not in str(info.value)


def test_env_secret_variable_with_a_bad_value_is_described_without_it() -> None:
    environ = {"SYNCPOOL_JOBS_CONNECTOR": f"callable:{__name__}:make_token_client",
               "SYNCPOOL_JOBS_TOKEN_TIMEOUT": "hunter2"}
    with pytest.raises(ValueError, match=r"^SYNCPOOL_JOBS_TOKEN_TIMEOUT: expected a number of seconds") as info:
        config_from_env("jobs", environ=environ)
    assert "hunter2" not in str(info.value) and "secret" in str(info.value)


def test_reload_replaces_every_connection() -> None:
    """After a credential rotation, reload() replaces idle clients now and leased ones on return."""
    pool = pool_from_config(sqlite_config(min_size=2, max_size=2), name="reload")
    try:
        pool.wait(5)
        with pool.connection() as leased:
            pool.reload()
            pool.wait(5)
        assert isinstance(leased, sqlite3.Connection)
        stats = pool.stats()
        assert stats["discards"]["reload"] == 2
    finally:
        pool.close()
