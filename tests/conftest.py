"""Project-wide fixtures: every test must leave no lease out and no pool thread alive."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest

from syncpool import pool as pool_module

# Every thread of the package (pools, checks, batches, the registry), but the servers of syncpool.testing, which the
# fixtures keep for the whole session, and the process-wide watcher of PostgreSQL checks' deadlines.
_POOL_THREAD = re.compile(r"^syncpool-(?!proxy-|es-node-|postgres-deadlines$)")


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if _POOL_THREAD.match(t.name) and t.is_alive()]


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a lease out or a pool thread running after it ends."""
    before = set(pool_module._all_pools)
    threads_before = set(_pool_threads())
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    created = [p for p in list(pool_module._all_pools) if p not in before]
    open_pools = [p.name for p in created if p.state == "open"]
    leased = {p.name: len(p._inv.leased) for p in created if p._inv.leased}
    for p in created:  # close what the test forgot, so one failure does not cascade
        if p.state == "open":
            p.close(timeout=0)
    deadline = time.monotonic() + 5.0
    while (alive := [t for t in _pool_threads() if t not in threads_before]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not open_pools, f"test left pools open: {open_pools}"
    assert not leased, f"test left leases out: {leased}"
    assert not alive, f"pool threads still alive after the test: {[t.name for t in alive]}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: the test checks leak handling itself")
