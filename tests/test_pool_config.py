"""Construction-time validation: every bad option is refused with an error naming it."""

import math
import sqlite3

import pytest

from syncpool import Connector, Pool, PoolClosed

from .fakes import FakeConnector


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"min_size": 3, "max_size": 2}, ValueError, "min_size (3) must not be greater than max_size (2)"),
        ({"max_size": 0}, ValueError, "max_size must be >= 1"),
        ({"min_size": -1}, ValueError, "min_size must be >= 0"),
        ({"max_size": 2.5}, TypeError, "max_size must be an int"),
        ({"max_size": True}, TypeError, "max_size must be an int"),
        ({"timeout": -1}, ValueError, "timeout must be >= 0"),
        ({"timeout": math.nan}, ValueError, "timeout must be a number of seconds, got NaN"),
        ({"timeout": math.inf}, ValueError, "timeout must be finite"),
        ({"timeout": "5"}, TypeError, "timeout must be a number of seconds"),
        ({"max_waiting": -2}, ValueError, "max_waiting must be >= 0"),
        ({"max_lifetime": 0}, ValueError, "max_lifetime must be > 0"),
        ({"max_lifetime": math.nan}, ValueError, "max_lifetime must be a number of seconds, got NaN"),
        ({"max_idle": -5}, ValueError, "max_idle must be > 0"),
        ({"leak_threshold": 0}, ValueError, "leak_threshold must be > 0"),
        ({"leak_threshold": math.inf}, ValueError, "leak_threshold must be finite"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"name": 7}, TypeError, "name must be a str, not int"),
        ({"open": "yes"}, TypeError, "open must be a bool"),
        ({"num_workers": 0}, ValueError, "num_workers must be >= 1"),
    ],
)
def test_bad_options_name_the_parameter(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        Pool(FakeConnector(), open=False, **kwargs) if "open" not in kwargs else Pool(FakeConnector(), **kwargs)
    assert words in str(info.value)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Pool(FakeConnector(), 1, 2)  # type: ignore[misc]


def test_connector_must_be_connector_or_callable() -> None:
    with pytest.raises(TypeError, match="zero-argument callable"):
        Pool("postgresql://localhost", open=False)  # type: ignore[arg-type]


def test_infinite_lifetime_and_idle_are_allowed() -> None:
    pool = Pool(FakeConnector(), max_lifetime=math.inf, max_idle=math.inf, open=False)
    assert pool.closed


@pytest.mark.parametrize("busy", [False, True], ids=["client idle", "pool busy"])
def test_lease_timeout_argument_is_validated(busy: bool) -> None:
    """The same bad timeout fails the same way whether or not a client happens to be free."""
    with Pool(FakeConnector(), min_size=1, max_size=1) as pool:
        pool.wait(5)
        held = pool.getconn() if busy else None
        try:
            for timeout, error, words in [
                (-0.5, ValueError, "timeout must be >= 0"),
                (math.inf, ValueError, "timeout must be finite"),
                (math.nan, ValueError, "got NaN"),
                ("5", TypeError, "timeout must be a number of seconds"),
                (True, TypeError, "timeout must be a number of seconds"),
            ]:
                with pytest.raises(error, match=words):
                    pool.getconn(timeout=timeout)  # type: ignore[arg-type]
                with pytest.raises(error, match=words):
                    with pool.connection(timeout=timeout):  # type: ignore[arg-type]
                        pass
            assert pool.stats()["in_use"] == (1 if busy else 0)
        finally:
            if held is not None:
                pool.putconn(held)
        pool.putconn(pool.getconn(timeout=2))  # an int is a number of seconds too


def test_open_arguments_are_validated() -> None:
    pool = Pool(FakeConnector(), open=False)
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        pool.open(wait=True, timeout=-1)
    with pytest.raises(TypeError, match="wait must be a bool"):
        pool.open(wait="yes")  # type: ignore[arg-type]
    assert pool.stats()["state"] == "new"
    pool.close()


def test_a_plain_callable_is_wrapped() -> None:
    with Pool(lambda: sqlite3.connect(":memory:", check_same_thread=False), max_size=2) as pool:
        assert isinstance(pool.connector, Connector)
        with pool.connection() as conn:
            assert conn.execute("select 41 + 1").fetchone() == (42,)


def test_not_open_pool_refuses_leases() -> None:
    pool = Pool(FakeConnector(), open=False)
    with pytest.raises(PoolClosed, match="not open yet"):
        pool.getconn(timeout=0)
    pool.open()
    with pool.connection(timeout=2):
        pass
    pool.close()
    with pytest.raises(PoolClosed, match="cannot be reopened"):
        pool.open()
