"""Pool.connection()'s context manager, syncpool.Lease."""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any

import pytest

import syncpool
from syncpool import Pool, PoolError, PoolTimeout
from syncpool import pool as pool_module

from .fakes import FakeClient, FakeConnector, wait_until


@pytest.fixture
def lease_class() -> Any:
    return pool_module.Lease


def test_the_public_lease_is_the_one_lease_class() -> None:
    assert syncpool.Lease is pool_module.Lease
    assert syncpool.Lease[int] is not None  # usable in annotations at runtime too


def test_enter_leases_and_exit_returns(lease_class: Any) -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        lease = pool.connection(timeout=2)
        assert type(lease) is lease_class
        assert lease.member is None
        with lease as client:
            assert isinstance(client, FakeClient)
            assert lease.member.client is client
            assert pool.stats()["in_use"] == 1
        assert lease.member is None
        stats = pool.stats()
    assert stats["in_use"] == 0 and stats["idle"] == 1 and stats["leases_total"] == 1


def test_an_exception_in_the_block_propagates_unchanged_and_the_client_comes_back(lease_class: Any) -> None:
    error = ValueError("from the block")
    with Pool(FakeConnector(), max_size=1) as pool:
        with pytest.raises(ValueError) as raised:
            with pool.connection(timeout=2) as client:
                raise error
        assert raised.value is error
        assert client.resets == 1 and pool.stats()["in_use"] == 0


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_in_the_block_discard_the_client(lease_class: Any, exc_type: type[BaseException]) -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        with pytest.raises(exc_type):
            with pool.connection(timeout=2) as client:
                raise exc_type()
        assert pool.stats()["in_use"] == 0 and pool.stats()["discards"]["interrupted"] == 1
        assert client.resets == 0  # never talked to: it may have been cut off mid-exchange


def test_the_timeout_reaches_getconn_positionally_and_by_keyword(lease_class: Any) -> None:
    with Pool(FakeConnector(), max_size=1, timeout=30) as pool:
        held = pool.getconn(timeout=2)
        for lease in (pool.connection(0.05), pool.connection(timeout=0.05), lease_class(pool, timeout=0.05)):
            with pytest.raises(PoolTimeout, match="0.05"):
                with lease:
                    pytest.fail("entered without a client")
            assert lease.member is None and lease.waiter is None  # a failed enter leaves the lease as it was
        pool.putconn(held)
        with lease as client:  # and it can be entered once a client is free
            assert client is held


def test_a_second_enter_while_entered_raises_and_leaks_nothing(lease_class: Any) -> None:
    with Pool(FakeConnector(), max_size=2) as pool:
        lease = pool.connection(timeout=2)
        with lease as client:
            with pytest.raises(RuntimeError, match="already entered"):
                lease.__enter__()
            assert lease.member.client is client
            assert pool.stats()["in_use"] == 1  # no second client was leased
        assert pool.stats()["in_use"] == 0
        with lease as again:  # entering again after leaving is fine
            assert again is client


def test_exit_without_enter_raises(lease_class: Any) -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        lease = pool.connection()
        with pytest.raises(RuntimeError, match="not entered"):
            lease.__exit__(None, None, None)
        with lease:
            pass
        with pytest.raises(RuntimeError, match="not entered"):  # left twice
            lease.__exit__(None, None, None)
        assert pool.stats()["in_use"] == 0


def test_a_failing_putconn_still_leaves_the_lease(lease_class: Any) -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        lease = pool.connection(timeout=2)
        with pytest.raises(PoolError, match="not leased from this pool"):
            with lease as client:
                pool.putconn(client)  # returned by hand inside the block: the lease's return is the second
        assert lease.member is None
        assert pool.stats()["in_use"] == 0


def test_listeners_see_leases_made_through_connection_and_getconn(lease_class: Any) -> None:
    seen: list[str] = []
    with Pool(FakeConnector(), max_size=1) as pool:
        pool.add_listener("lease", lambda pool, wait: seen.append("lease"))
        pool.add_listener("return", lambda pool, use: seen.append("return"))
        with pool.connection(1.5):
            pass
        pool.putconn(pool.getconn(1.5))
    assert seen == ["lease", "return"] * 2  # the hook for every lease: connection() does not call getconn()


def test_a_lease_in_a_reference_cycle_is_collected(lease_class: Any) -> None:
    class Client:
        lease: Any = None

    with Pool(Client, max_size=1) as pool:  # a plain callable: no connector keeps clients around
        lease = pool.connection(timeout=2)
        client = lease.__enter__()
        client.lease = lease  # client -> lease -> client
        gone = weakref.ref(client)
        pool.putconn(client)  # returned behind the lease's back, which still refers to it
    del client, lease
    gc.collect()
    assert gone() is None


def test_the_leak_report_names_the_function_that_leased(
    lease_class: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="syncpool")
    with Pool(FakeConnector(), max_size=1, leak_threshold=0.05, name="leaky") as pool:
        with pool.connection(timeout=2):  # the line the warning must point at
            wait_until(lambda: pool.stats()["leaks_detected"] == 1, timeout=3)
    leaks = [r.getMessage() for r in caplog.records if "possible leak" in r.getMessage()]
    assert len(leaks) == 1
    assert "test_the_leak_report_names_the_function_that_leased" in leaks[0] and __file__ in leaks[0]


def test_bad_construction_is_a_type_error(lease_class: Any) -> None:
    with Pool(FakeConnector(), max_size=1) as pool:
        with pytest.raises(TypeError):
            lease_class()
        with pytest.raises(TypeError):
            lease_class(pool, 1.0, 2.0)
        with pytest.raises(TypeError, match="tmeout"):
            lease_class(pool, tmeout=1.0)


def test_a_connector_that_returns_none_is_a_connect_error() -> None:
    with Pool(lambda: None, min_size=1, max_size=1, open=False, name="forgetful") as pool:
        with pytest.raises(PoolTimeout) as raised:
            pool.open(wait=True, timeout=0.3)
    assert isinstance(raised.value.__cause__, TypeError)
    assert "returned None" in str(raised.value.__cause__)
