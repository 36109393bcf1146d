"""Tests of syncpool.metrics.prometheus: a text exposition parsed back contains the documented metrics."""

from __future__ import annotations

from typing import Any

import pytest

from syncpool.histogram import Histogram
from syncpool.monitoring import ClientStats, MonitoredClient

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from syncpool.metrics import prometheus  # noqa: E402


class Boom(Exception):
    """A client error."""


class FakePool:
    """Duck-typed pool: name, stats(), histograms(), client_stats."""

    def __init__(self, name: str = "main", monitor: bool = True) -> None:
        self.name = name
        self.wait_time, self.use_time, self.connect_time = Histogram(), Histogram(), Histogram()
        for value in (0.0002, 0.003, 0.003, 2.0):
            self.wait_time.record(value)
        self.use_time.record(0.05)
        self.connect_time.record(0.2)
        self.client_stats = ClientStats(name) if monitor else None

    def histograms(self) -> dict[str, Histogram]:
        return {"wait_time": self.wait_time, "use_time": self.use_time, "connect_time": self.connect_time}

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "name": self.name, "size": 5, "idle": 3, "in_use": 2, "connecting": 0, "waiting": 1,
            "min_size": 2, "max_size": 10, "leases_total": 42, "lease_timeouts": 3, "wait_ms_total": 12.5,
            "connections_created": 7, "connections_discarded": 2, "connect_errors": 1, "leaks_detected": 0,
            "discards": {"broken": 1, "lifetime": 1, "idle": 0, "check_failed": 0, "reset_failed": 0, "closed": 0},
            "health_checks": {"ok": 9, "failed": 1}, "breaker": "half_open",
            "wait_time": self.wait_time.snapshot(), "use_time": self.use_time.snapshot(),
            "connect_time": self.connect_time.snapshot(),
        }  # fmt: skip
        if self.client_stats is not None:
            stats["clients"] = self.client_stats.stats()
        return stats


class Client:
    def get(self, key: str) -> str:
        return key

    def fail(self) -> None:
        raise Boom("secret-token")


def scrape(registry: Any) -> dict[str, Any]:
    text = generate_latest(registry).decode()
    assert "secret-token" not in text
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any, **labels: str) -> dict[str, float]:
    return {
        sample.name + repr(sorted(sample.labels.items())): sample.value
        for sample in family.samples
        if all(sample.labels.get(k) == v for k, v in labels.items())
    }


def value(family: Any, sample_name: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    assert len(found) == 1, (sample_name, labels, family.samples)
    return found[0]


def test_exposition_contains_documented_metrics() -> None:
    pool = FakePool()
    client = MonitoredClient(Client(), name="main", sink=pool.client_stats)
    client.get("a")
    client.get("b")
    with pytest.raises(Boom):
        client.fail()
    registry = CollectorRegistry()
    prometheus.instrument(pool, registry)
    families = scrape(registry)

    assert (
        value(families["syncpool_pool_connections"], "syncpool_pool_connections", pool="main", state="idle")
        == 3
    )
    assert (
        value(families["syncpool_pool_connections"], "syncpool_pool_connections", pool="main", state="in_use")
        == 2
    )
    assert value(families["syncpool_pool_size"], "syncpool_pool_size", pool="main") == 5
    assert value(families["syncpool_pool_max_size"], "syncpool_pool_max_size", pool="main") == 10
    assert value(families["syncpool_pool_waiting"], "syncpool_pool_waiting", pool="main") == 1
    assert families["syncpool_pool_leases"].type == "counter"
    assert value(families["syncpool_pool_leases"], "syncpool_pool_leases_total", pool="main") == 42
    assert (
        value(families["syncpool_pool_lease_timeouts"], "syncpool_pool_lease_timeouts_total", pool="main")
        == 3
    )
    assert (
        value(
            families["syncpool_pool_connections_created"],
            "syncpool_pool_connections_created_total",
            pool="main",
        )
        == 7
    )
    assert (
        value(families["syncpool_pool_connect_errors"], "syncpool_pool_connect_errors_total", pool="main")
        == 1
    )
    discards = families["syncpool_pool_discards"]
    assert value(discards, "syncpool_pool_discards_total", pool="main", reason="broken") == 1
    assert value(discards, "syncpool_pool_discards_total", pool="main", reason="lifetime") == 1
    checks = families["syncpool_pool_health_checks"]
    assert value(checks, "syncpool_pool_health_checks_total", pool="main", result="failed") == 1
    breaker = families["syncpool_pool_breaker_state"]
    assert value(breaker, "syncpool_pool_breaker_state", pool="main", state="half_open") == 1
    assert value(breaker, "syncpool_pool_breaker_state", pool="main", state="open") == 0

    wait = families["syncpool_pool_wait_seconds"]
    assert wait.type == "histogram"
    assert value(wait, "syncpool_pool_wait_seconds_count", pool="main") == 4
    assert value(wait, "syncpool_pool_wait_seconds_sum", pool="main") == pytest.approx(2.0062)
    assert value(wait, "syncpool_pool_wait_seconds_bucket", pool="main", le="0.00025") == 1
    assert value(wait, "syncpool_pool_wait_seconds_bucket", pool="main", le="0.005") == 3
    assert value(wait, "syncpool_pool_wait_seconds_bucket", pool="main", le="+Inf") == 4
    for name in ("syncpool_pool_use_seconds", "syncpool_pool_connect_seconds"):
        assert value(families[name], f"{name}_count", pool="main") == 1

    operations = families["syncpool_client_operations"]
    assert value(operations, "syncpool_client_operations_total", pool="main", method="get") == 2
    assert value(operations, "syncpool_client_operations_total", pool="main", method="fail") == 1
    errors = families["syncpool_client_errors"]
    assert value(errors, "syncpool_client_errors_total", pool="main", method="fail", error_type="Boom") == 1
    latency = families["syncpool_client_latency_seconds"]
    assert latency.type == "histogram"
    assert value(latency, "syncpool_client_latency_seconds_count", pool="main", method="get") == 2
    assert value(latency, "syncpool_client_latency_seconds_bucket", pool="main", method="get", le="+Inf") == 2


def test_two_pools_share_a_registry_by_label() -> None:
    registry = CollectorRegistry()
    first, second = FakePool("a", monitor=False), FakePool("b", monitor=False)
    assert prometheus.instrument(first, registry) is prometheus.instrument(second, registry)
    families = scrape(registry)
    pools = {s.labels["pool"] for s in families["syncpool_pool_size"].samples}
    assert pools == {"a", "b"}
    assert "syncpool_client_operations" not in families
    prometheus.uninstrument(first, registry)
    pools = {s.labels["pool"] for s in scrape(registry)["syncpool_pool_size"].samples}
    assert pools == {"b"}


def test_duplicate_pool_name_is_refused() -> None:
    registry = CollectorRegistry()
    keep = FakePool("same")
    prometheus.instrument(keep, registry)
    prometheus.instrument(keep, registry)  # the same pool again is harmless
    with pytest.raises(ValueError, match="same"):
        prometheus.instrument(FakePool("same"), registry)


def test_pool_without_histograms_method_exports_count_and_sum() -> None:
    class Minimal(FakePool):
        histograms = None  # type: ignore[assignment]

    pool = Minimal("mini", monitor=False)
    del Minimal.histograms
    registry = CollectorRegistry()
    prometheus.instrument(pool, registry)
    families = scrape(registry)
    wait = families["syncpool_pool_wait_seconds"]
    assert value(wait, "syncpool_pool_wait_seconds_count", pool="mini") == 4
    assert value(wait, "syncpool_pool_wait_seconds_bucket", pool="mini", le="+Inf") == 4


def test_collected_pool_disappears() -> None:
    registry = CollectorRegistry()
    pool = FakePool("gone", monitor=False)
    prometheus.instrument(pool, registry)
    del pool
    import gc

    gc.collect()
    assert "syncpool_pool_size" not in scrape(registry) or not scrape(registry)["syncpool_pool_size"].samples


def test_default_registry_is_used() -> None:
    pool = FakePool("default-registry-pool", monitor=False)
    prometheus.instrument(pool)
    try:
        text = generate_latest(prometheus_client.REGISTRY).decode()
        assert 'syncpool_pool_size{pool="default-registry-pool"}' in text
    finally:
        prometheus.uninstrument(pool)
