"""Fake clients and connectors for testing pool logic without a server."""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

from syncpool import Connector


class FakeClient:
    """A client that knows whether it is open and who made it."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.pid = os.getpid()
        self.closed = False
        self.broken = False
        self.resets = 0
        self.dirty = False

    def __repr__(self) -> str:
        return f"<FakeClient {self.id}{' closed' if self.closed else ''}>"


class FakeConnector(Connector[FakeClient]):
    """A connector with knobs: slow or failing connects, failing resets, blocking checks, and counts of everything."""

    description = "fake"

    def __init__(self, *, connect_delay: float = 0.0) -> None:
        self.connect_delay = connect_delay
        self.lock = threading.Lock()
        self.fail_connects: BaseException | None = None  # raise this on every connect while set
        self.fail_next = 0  # fail this many connects, then succeed
        self.fail_reset = False
        self.check_error: BaseException | None = None
        self.check_gate: threading.Event | None = None  # checks block until it is set
        self.connects = 0
        self.connect_attempts = 0
        self.closes = 0
        self.live = 0
        self.max_live = 0
        self.in_flight = 0
        self.max_in_flight = 0  # live + connecting: what could exist at once
        self.attempt_times: list[float] = []
        self.closed_clients: list[FakeClient] = []
        self.auth_errors: tuple[type[BaseException], ...] = ()

    def connect(self) -> FakeClient:
        with self.lock:
            self.connect_attempts += 1
            self.attempt_times.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight + self.live)
            error = self.fail_connects
            if error is None and self.fail_next:
                self.fail_next -= 1
                error = ConnectionRefusedError("connection refused (fake)")
        try:
            if self.connect_delay:
                time.sleep(self.connect_delay)
            if error is not None:
                raise error
            client = FakeClient()
            with self.lock:
                self.connects += 1
                self.live += 1
                self.max_live = max(self.max_live, self.live)
            return client
        finally:
            with self.lock:
                self.in_flight -= 1

    def check(self, client: FakeClient) -> None:
        if self.check_gate is not None:
            self.check_gate.wait()
        if self.check_error is not None:
            raise self.check_error
        if client.broken:
            raise ConnectionError("broken (fake)")

    def is_broken(self, client: FakeClient) -> bool:
        return client.broken or client.closed

    def reset(self, client: FakeClient) -> None:
        client.resets += 1
        if self.fail_reset:
            raise RuntimeError("reset failed (fake)")
        client.dirty = False

    def close(self, client: FakeClient) -> None:
        assert not client.closed, f"{client!r} closed twice"
        client.closed = True
        with self.lock:
            self.closes += 1
            self.live -= 1
            self.closed_clients.append(client)

    def is_auth_error(self, error: BaseException) -> bool:
        return isinstance(error, self.auth_errors) if self.auth_errors else False


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.005) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)
