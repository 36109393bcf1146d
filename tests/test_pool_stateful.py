"""A stateful test: the pool's accounting holds whatever happens, from several threads at once."""

from __future__ import annotations

import threading

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from syncpool import Pool, PoolClosed, PoolTimeout

from .fakes import FakeClient, FakeConnector


class PoolMachine(RuleBasedStateMachine):
    """Leases, returns, breaks, resizes, failing connects and close, while two threads hammer the same pool."""

    def __init__(self) -> None:
        super().__init__()
        self.connector = FakeConnector()
        self.pool: Pool[FakeClient] = Pool(self.connector, min_size=1, max_size=4, timeout=1.0, max_lifetime=0.3,
                                           max_idle=0.2, name="stateful")
        self.held: list[FakeClient] = []
        self.bound = self.pool.max_size
        self.stop = threading.Event()
        self.hammers = [threading.Thread(target=self.hammer, daemon=True) for _ in range(2)]
        for thread in self.hammers:
            thread.start()

    def hammer(self) -> None:
        while not self.stop.is_set():
            try:
                with self.pool.connection(timeout=0.01):
                    pass
            except (PoolTimeout, PoolClosed):
                pass

    @rule()
    def lease(self) -> None:
        try:
            self.held.append(self.pool.getconn(timeout=0.01))
        except (PoolTimeout, PoolClosed):
            pass

    # Whether a lease succeeded depends on thread timing, so draws must not depend on what is held: the index is
    # drawn from a fixed range, and the rule does nothing when nothing is held.
    @rule(index=st.integers(0, 15), broken=st.booleans())
    def give_back(self, index: int, broken: bool) -> None:
        if not self.held:
            return
        client = self.held.pop(index % len(self.held))
        client.broken = broken
        self.pool.putconn(client)

    @rule(min_size=st.integers(0, 3), extra=st.integers(0, 3))
    def resize(self, min_size: int, extra: int) -> None:
        self.pool.resize(min_size=min_size, max_size=max(1, min_size + extra))
        # Leases and connects already under way may keep the pool above a new, smaller max_size for a while; it
        # must never grow from there, and once back under the bound it must stay under it.
        self.bound = max(self.pool.max_size, self.pool.stats()["size"])

    @rule(failing=st.booleans())
    def connects_fail(self, failing: bool) -> None:
        self.connector.fail_connects = ConnectionRefusedError("down") if failing else None

    @rule(fail_reset=st.booleans())
    def resets_fail(self, fail_reset: bool) -> None:
        self.connector.fail_reset = fail_reset

    @rule()
    def close(self) -> None:
        self.pool.close(timeout=0)

    @invariant()
    def accounting_adds_up(self) -> None:
        stats = self.pool.stats()
        assert stats["size"] == stats["idle"] + stats["in_use"] + stats["connecting"]
        assert stats["size"] <= self.bound
        if stats["size"] <= stats["max_size"]:
            self.bound = stats["max_size"]
        assert stats["in_use"] >= len(self.held)
        assert stats["waiting"] <= 2

    def teardown(self) -> None:
        self.stop.set()
        for thread in self.hammers:
            thread.join()
        for client in self.held:
            self.pool.putconn(client)
        self.pool.close(timeout=2)
        stats = self.pool.stats()
        assert stats["size"] == stats["connecting"], stats  # nothing idle or leased survives a close
        # Every waiter handed a client was woken and passed its share of the wake budget on.
        assert self.pool._waking == 0 and not self.pool._handed
        assert self.connector.live == 0, "a client was never closed"


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
