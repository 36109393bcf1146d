"""Tests of syncpool.metrics.otel through the OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from syncpool.monitoring import ClientStats, MonitoredClient

pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from syncpool.metrics import otel  # noqa: E402

POOL = "db.client.connection.pool.name"


class Boom(Exception):
    """A client error."""


class Client:
    def get(self) -> int:
        return 1

    def fail(self) -> None:
        raise Boom("secret")


class FakePool:
    """Duck-typed pool with stats() and event listeners."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.listeners: dict[str, list[Callable[..., None]]] = defaultdict(list)
        self.client_stats = ClientStats(name)

    def add_listener(self, event: str, callback: Callable[..., None]) -> None:
        self.listeners[event].append(callback)

    def remove_listener(self, event: str, callback: Callable[..., None]) -> None:
        self.listeners[event].remove(callback)

    def fire(self, event: str, **info: Any) -> None:
        for callback in list(self.listeners[event]):
            callback(self, **info)

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name, "size": 5, "idle": 3, "in_use": 2, "connecting": 0, "waiting": 4,
            "min_size": 2, "max_size": 10, "leases_total": 42, "lease_timeouts": 3,
            "discards": {"broken": 1, "idle": 2}, "health_checks": {"ok": 9, "failed": 1}, "breaker": "open",
            "clients": self.client_stats.stats(),
        }  # fmt: skip


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    metrics: dict[str, Any] = {}
    if data is None:  # nothing at all to report
        return metrics
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "syncpool"
            for metric in scope_metrics.metrics:
                metrics[metric.name] = metric
    return metrics


def points(metric: Any) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(point.attributes.items())): point for point in metric.data.data_points}


@pytest.fixture
def setup() -> tuple[FakePool, InMemoryMetricReader, otel.Instrumentation]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    pool = FakePool()
    instrumentation = otel.instrument(pool, meter_provider=provider)
    yield pool, reader, instrumentation
    instrumentation.close()
    provider.shutdown()


def test_semantic_convention_names_and_values(setup: Any) -> None:
    pool, reader, _ = setup
    client = MonitoredClient(Client(), sink=pool.client_stats)
    client.get()
    with pytest.raises(Boom):
        client.fail()
    pool.fire("lease", wait=0.002)
    pool.fire("lease", wait=0.004)
    pool.fire("return", use=0.5)
    pool.fire("connect", duration=0.03)
    metrics = collect(reader)

    count = points(metrics["db.client.connection.count"])
    assert count[((POOL, "main"), ("db.client.connection.state", "idle"))].value == 3
    assert count[((POOL, "main"), ("db.client.connection.state", "used"))].value == 2
    assert metrics["db.client.connection.count"].unit == "{connection}"
    single = {
        "db.client.connection.idle.min": 2,
        "db.client.connection.idle.max": 10,
        "db.client.connection.max": 10,
        "db.client.connection.pending_requests": 4,
        "db.client.connection.timeouts": 3,
    }
    for name, expected in single.items():
        assert points(metrics[name])[((POOL, "main"),)].value == expected, name

    wait = points(metrics["db.client.connection.wait_time"])[((POOL, "main"),)]
    assert wait.count == 2 and wait.sum == pytest.approx(0.006)
    assert metrics["db.client.connection.wait_time"].unit == "s"
    assert points(metrics["db.client.connection.use_time"])[((POOL, "main"),)].sum == pytest.approx(0.5)
    assert points(metrics["db.client.connection.create_time"])[((POOL, "main"),)].count == 1

    discards = points(metrics["syncpool.pool.discards"])
    assert discards[((POOL, "main"), ("reason", "idle"))].value == 2
    checks = points(metrics["syncpool.pool.health_checks"])
    assert checks[((POOL, "main"), ("result", "failed"))].value == 1
    breaker = points(metrics["syncpool.pool.breaker.state"])
    assert breaker[((POOL, "main"), ("state", "open"))].value == 1
    assert breaker[((POOL, "main"), ("state", "closed"))].value == 0
    operations = points(metrics["syncpool.client.operations"])
    assert operations[((POOL, "main"), ("method", "get"))].value == 1
    errors = points(metrics["syncpool.client.errors"])
    assert errors[((POOL, "main"), ("error.type", "Boom"), ("method", "fail"))].value == 1


def test_close_removes_listeners_and_silences_callbacks(setup: Any) -> None:
    pool, reader, instrumentation = setup
    instrumentation.close()
    assert not any(pool.listeners.values())
    pool.fire("lease", wait=1.0)  # nobody listens any more
    metrics = collect(reader)
    for name in ("db.client.connection.count", "db.client.connection.wait_time"):
        assert name not in metrics or not metrics[name].data.data_points


def test_listener_ignores_missing_info(setup: Any) -> None:
    pool, reader, _ = setup
    pool.fire("lease")  # no "wait" key: nothing recorded, nothing raised
    assert "db.client.connection.wait_time" not in collect(reader)


def test_global_meter_provider_is_the_default() -> None:
    pool = FakePool("global")
    instrumentation = otel.instrument(pool)  # the API's no-op provider unless one is configured
    try:
        pool.fire("lease", wait=0.1)
    finally:
        instrumentation.close()
