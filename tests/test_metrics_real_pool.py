"""The exporters against a real Pool (the other metrics tests use a duck-typed pool)."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest

from syncpool import Pool

prometheus_client = pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from syncpool.metrics import otel, prometheus  # noqa: E402


def sqlite_pool(name: str) -> Pool[Any]:
    return Pool(lambda: sqlite3.connect(":memory:", check_same_thread=False), min_size=1, max_size=2,
                monitor=True, name=name)


def exercise(pool: Pool[Any]) -> None:
    held = pool.getconn(timeout=2)
    other = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=2)))
    other.start()
    other.join()
    pool.putconn(held)
    for _ in range(5):
        with pool.connection(timeout=2) as conn:
            conn.execute("select 1")


def test_prometheus_exposition_of_a_real_pool() -> None:
    registry = CollectorRegistry()
    with sqlite_pool("orders") as pool:
        pool.wait(5)
        prometheus.instrument(pool, registry=registry)
        exercise(pool)
        stats = pool.stats()
        text = generate_latest(registry).decode()
        prometheus.uninstrument(pool, registry=registry)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    names = {name for name, _ in samples}
    assert any(name.startswith("syncpool_pool_") for name in names), sorted(names)[:20]
    lease_samples = [value for (name, labels), value in samples.items()
                     if "leases" in name and ("pool", "orders") in labels and name.endswith("_total")]
    assert stats["leases_total"] in lease_samples, sorted(n for n in names if "lease" in n)
    assert any("client" in name and "operations" in name for name in names)
    assert "orders" in text and "select" not in text  # labels carry names, never SQL or secrets


def test_otel_metrics_of_a_real_pool() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with sqlite_pool("otel-orders") as pool:
        pool.wait(5)
        instrumentation = otel.instrument(pool, meter_provider=provider)
        exercise(pool)
        data = reader.get_metrics_data()
        instrumentation.close()
    provider.shutdown()
    metrics = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    for name in ("db.client.connection.count", "db.client.connection.wait_time", "db.client.connection.use_time",
                 "db.client.connection.timeouts", "db.client.connection.pending_requests",
                 "db.client.connection.idle.min", "db.client.connection.max"):
        assert name in metrics, sorted(metrics)
    use = metrics["db.client.connection.use_time"].data.data_points[0]
    assert use.count == 7  # two explicit leases and five with-blocks
    wait = metrics["db.client.connection.wait_time"].data.data_points[0]
    assert wait.count == 7


def _prometheus_samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_pop_stats_never_turns_an_exported_counter_back() -> None:
    """Five leases, one pop_stats(), one more lease: the exported counters read 5, then 6; never 0 or 1."""
    registry = CollectorRegistry()
    with sqlite_pool("popped") as pool:
        pool.wait(5)
        prometheus.instrument(pool, registry=registry)
        for _ in range(5):
            with pool.connection(timeout=2) as conn:
                conn.execute("select 1")
        before = _prometheus_samples(registry)
        popped = pool.pop_stats()
        with pool.connection(timeout=2) as conn:
            conn.execute("select 1")
        after = _prometheus_samples(registry)
        prometheus.uninstrument(pool, registry=registry)
    assert popped["leases_total"] == 5 and popped["clients"]["operations"] == 5
    key = next(k for k in before if k[0] == "syncpool_pool_leases_total" and ("pool", "popped") in k[1])
    assert before[key] == 5 and after[key] == 6
    for sample, value in after.items():
        if sample[0].endswith("_total") and sample in before:
            assert value >= before[sample], sample  # every counter the exporter publishes only goes up
