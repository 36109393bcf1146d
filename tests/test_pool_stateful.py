"""A stateful test: the pool's accounting holds whatever happens, from several threads at once."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from syncpool import Backoff, Pool, PoolClosed, PoolTimeout, PoolUnavailable

from .fakes import FakeClient, FakeConnector, wait_until


class CountingConnector(FakeConnector):
    """Also counts what exists for real: connect attempts under way plus open clients, exact at every moment.

    (``live + in_flight`` counts a connect twice for a moment: it is live before it stops being in flight.) The count
    goes up before the pool can count the attempt out of ``connecting``, and down before the pool counts a close as
    done, so that it never runs ahead of what the pool claims.
    """

    def __init__(self) -> None:
        super().__init__()
        self.existing = 0

    def connect(self) -> FakeClient:
        with self.lock:
            self.existing += 1
        try:
            return super().connect()
        except BaseException:
            with self.lock:
                self.existing -= 1
            raise

    def close(self, client: FakeClient) -> None:
        with self.lock:
            self.existing -= 1
        super().close(client)


class PoolMachine(RuleBasedStateMachine):
    """Leases, returns, breaks, resizes, reloads, slow or failing connects, failing checks and resets, health passes
    and close, while two threads hammer the same pool; the pool's counts are checked against what the connector
    saw."""

    def __init__(self) -> None:
        super().__init__()
        self.connector = CountingConnector()
        # Short backoffs and probe intervals, so that failing connects open the breaker and probes close it again
        # within an example's few milliseconds, and so that retries end soon after connects recover (see teardown).
        self.pool: Pool[FakeClient] = Pool(self.connector, min_size=1, max_size=4, timeout=1.0, max_lifetime=0.3,
                                           max_idle=0.2, reconnect_backoff=Backoff(initial=0.001, maximum=0.01),
                                           breaker_probe_interval=0.01, name="stateful")
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

    # Half the examples start in an outage, with up to three clients to fill: connects fail from the first step.
    @initialize(failing=st.booleans(), min_size=st.integers(0, 3))
    def start(self, failing: bool, min_size: int) -> None:
        self.connects_fail(failing)
        self.pool.resize(min_size=min_size)

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
        stats = self.pool.stats()
        self.bound = max(self.pool.max_size, stats["size"] + stats["closing"])

    @rule(failing=st.booleans())
    def connects_fail(self, failing: bool) -> None:
        self.connector.fail_connects = ConnectionRefusedError("down") if failing else None

    # A slow connect outlives the 10 ms leases that asked for it: it then ends, or fails, when nobody waits any more.
    @rule(slow=st.booleans())
    def connects_slow(self, slow: bool) -> None:
        self.connector.connect_delay = 0.02 if slow else 0.0

    @rule(fail_reset=st.booleans())
    def resets_fail(self, fail_reset: bool) -> None:
        self.connector.fail_reset = fail_reset

    @rule(failing=st.booleans())
    def health_pass(self, failing: bool) -> None:
        self.connector.check_error = ConnectionResetError("gone") if failing else None
        self.pool.check()

    @rule()
    def reload(self) -> None:
        try:
            self.pool.reload()
        except PoolClosed:
            pass

    @rule()
    def pause(self) -> None:
        time.sleep(0.02)  # let the hammers, retries and maintenance run on their own for a while

    # Nothing much happens after a close: draw it a quarter as often as the other rules.
    @rule(now=st.integers(0, 3))
    def close(self, now: int) -> None:
        if now == 0:
            self.pool.close(timeout=0)

    @invariant()
    def accounting_adds_up(self) -> None:
        # The pool's counts and the connector's, read together under the pool's lock: there the pool's stand still,
        # and the connector's can only move in the direction that keeps the comparisons below true.
        with self.pool._inv.lock, self.connector.lock:
            stats = {**self.pool._gauges_locked(), **self.pool._stats.counters()}
            live, in_flight, existing, closes = (
                self.connector.live, self.connector.in_flight, self.connector.existing, self.connector.closes
            )
        counted = stats["size"] + stats["closing"]  # what counts against max_size
        assert stats["size"] == stats["idle"] + stats["in_use"] + stats["connecting"]
        assert counted <= self.bound, stats
        if counted <= stats["max_size"]:
            self.bound = stats["max_size"]
        assert stats["in_use"] >= len(self.held)
        assert stats["waiting"] <= 2
        # Against the connector's ground truth: every client the pool holds is open; every connect under way is
        # counted as connecting; every client closed was counted as discarded, and is counted as closing until its
        # close returns; and whatever exists (open, or being created) is counted against max_size.
        assert stats["idle"] + stats["in_use"] <= live, (stats, live)
        assert in_flight <= stats["connecting"], (stats, in_flight)
        assert 0 <= stats["connections_discarded"] - closes <= stats["closing"], (stats, closes)
        assert existing <= counted, (stats, existing)

    def teardown(self) -> None:
        self.stop.set()
        for thread in self.hammers:
            thread.join()
        for client in self.held:
            self.pool.putconn(client)
        if self.connector.fail_connects is not None:
            time.sleep(0.03)  # connects under way fail with nobody waiting for them any more
        self.connector.fail_connects = None
        self.connector.fail_reset = False
        self.connector.check_error = None
        self.connector.connect_delay = 0.0
        try:
            if not self.pool.closed:
                self.recovers()
        finally:
            self.pool.close(timeout=2)
        # A close(timeout=0) by the close rule did not wait for connects and closes under way: let them end.
        wait_until(lambda: self.connector.existing == 0 and self.pool.stats()["closing"] == 0, timeout=2.0)
        stats = self.pool.stats()
        assert stats["size"] == stats["connecting"], stats  # nothing idle or leased survives a close
        assert self.connector.live == 0, "a client was never closed"
        assert self.connector.closes == stats["connections_discarded"]

    def recovers(self) -> None:
        """Once connects succeed again, a lease is served and no connect stays counted for ever."""
        # Not wedged: a lease is served (after a probe, if the breaker is open) within a few backoffs.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                with self.pool.connection(timeout=0.2):
                    break
            except PoolTimeout:
                assert time.monotonic() < deadline, f"no lease served after connects recovered: {self.pool.stats()}"
                time.sleep(0.01)  # PoolUnavailable comes at once
        # Every connect counted ends, soon.
        wait_until(lambda: self.pool.stats()["connecting"] == 0, timeout=0.5)


TestPoolMachine = PoolMachine.TestCase
# No shrinking: what this machine finds depends on thread timing, so shrinking mostly replays examples that no longer
# fail, at up to a second and a half each, for minutes; an example of at most 25 steps is readable as it is.
TestPoolMachine.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, database=None, phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_probe_nobody_waits_for_any_more_leaves_the_breaker_able_to_close() -> None:
    """Found by the machine above: a lease starts the breaker's probe, and leaves before the probe runs."""
    connector = FakeConnector()
    connector.fail_connects = ConnectionRefusedError("down")
    with Pool(connector, max_size=2, num_workers=1, breaker_threshold=1, breaker_probe_interval=0.0) as pool:
        with pytest.raises(PoolUnavailable):
            pool.getconn(timeout=1)  # its connect fails: the breaker opens
        busy = threading.Event()
        pool._scheduler.submit(busy.wait)  # keep the only worker busy: the probe waits in the queue
        try:
            with pytest.raises(PoolTimeout):
                pool.getconn(timeout=0.05)  # starts the probe, and gives up before it runs
        finally:
            busy.set()
        wait_until(lambda: pool.stats()["connecting"] == 0)  # the probe ran, or was dropped
        connector.fail_connects = None  # the backend is back
        deadline = time.monotonic() + 0.5
        while True:
            try:
                with pool.connection(timeout=0.2):
                    break
            except PoolUnavailable:
                assert time.monotonic() < deadline, f"the breaker never closed again: {pool.stats()}"
                time.sleep(0.02)


def test_a_lease_failed_fast_does_not_lose_the_expired_clients_it_found() -> None:
    """Found by the machine above: the expired clients a lease takes off the idle stack are neither closed nor counted
    when the lease then fails fast with PoolUnavailable."""
    connector = FakeConnector()
    with Pool(connector, max_size=2, max_lifetime=0.2, breaker_threshold=1, breaker_probe_interval=60.0,
              open=False) as pool:
        pool._options = dataclasses.replace(pool._options, max_lifetime=60 * 20.0)  # only a lease notices expiry
        pool.open()
        held = pool.getconn(timeout=2)
        connector.fail_connects = ConnectionRefusedError("down")
        with pytest.raises(PoolUnavailable):
            pool.getconn(timeout=2)  # its connect fails: the breaker opens
        pool.putconn(held)
        time.sleep(0.25)  # the client expires on the idle stack
        with pytest.raises(PoolUnavailable):
            pool.getconn(timeout=2)  # takes the expired client off the stack, then fails fast
        wait_until(lambda: held.closed, timeout=0.5)
        assert pool.stats()["discards"]["lifetime"] == 1
