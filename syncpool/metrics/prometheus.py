"""Expose pool and client statistics as Prometheus metrics (``pip install syncpool[prometheus]``).

``instrument(pool)`` registers, once per registry, a custom collector that reads ``pool.stats()`` (and the
live histograms from ``pool.histograms()``) at scrape time, so nothing is recorded twice and nothing runs
between scrapes. Several pools can share a registry: they are told apart by the ``pool`` label.

Metric families (all labelled ``pool``; other labels only ``state``, ``reason``, ``result``, ``method`` and
``error_type``, never anything from a connection string):

```text
syncpool_pool_connections{state="idle|in_use|connecting"}     gauge
syncpool_pool_size / _min_size / _max_size / _waiting           gauge
syncpool_pool_leases_total                                      counter
syncpool_pool_lease_timeouts_total                              counter
syncpool_pool_connections_created_total                         counter
syncpool_pool_connect_errors_total                              counter
syncpool_pool_leaks_detected_total                              counter
syncpool_pool_discards_total{reason}                            counter
syncpool_pool_health_checks_total{result="ok|failed"}           counter
syncpool_pool_breaker_state{state="closed|open|half_open"}      gauge, 1 for the current state
syncpool_pool_wait_seconds / _use_seconds / _connect_seconds    histogram
syncpool_client_operations_total{method}                        counter   (pools with monitor=True)
syncpool_client_errors_total{method,error_type}                 counter
syncpool_client_latency_seconds{method}                         histogram (only a +Inf bucket if the
                                                                 pool exposes no client_stats)
```
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

__all__ = ["PoolCollector", "instrument", "uninstrument"]

_BREAKER_STATES = ("closed", "open", "half_open")
_POOL_HISTOGRAMS = (
    ("wait_time", "syncpool_pool_wait_seconds", "Time spent waiting for a lease."),
    ("use_time", "syncpool_pool_use_seconds", "Time a client stayed leased."),
    ("connect_time", "syncpool_pool_connect_seconds", "Time taken to create a connection."),
)
_POOL_COUNTERS = (
    ("leases_total", "syncpool_pool_leases", "Leases granted."),
    ("lease_timeouts", "syncpool_pool_lease_timeouts", "Lease attempts that timed out."),
    ("connections_created", "syncpool_pool_connections_created", "Connections created."),
    ("connect_errors", "syncpool_pool_connect_errors", "Failed connection attempts."),
    ("leaks_detected", "syncpool_pool_leaks_detected", "Leases held past the leak threshold."),
)
_POOL_GAUGES = (
    ("size", "syncpool_pool_size", "Connections open or being opened."),
    ("min_size", "syncpool_pool_min_size", "Configured minimum size."),
    ("max_size", "syncpool_pool_max_size", "Configured maximum size."),
    ("waiting", "syncpool_pool_waiting", "Callers waiting for a lease."),
)


def _require_prometheus() -> Any:
    try:
        import prometheus_client.core as core
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "syncpool.metrics.prometheus needs prometheus_client: pip install syncpool[prometheus]"
        ) from error
    return core


def _bucket_list(pairs: list[tuple[float, int]]) -> list[tuple[str, float]]:
    from prometheus_client.utils import floatToGoString

    return [(floatToGoString(bound), float(count)) for bound, count in pairs]  # type: ignore[no-untyped-call]


class PoolCollector:
    """A Prometheus collector for any number of pools (one instance per registry).

    Pools are held by weak reference when they allow it, so instrumenting does not keep a pool alive; a
    collected pool simply disappears from the output.
    """

    def __init__(self) -> None:
        """Create a collector with no pools."""
        self._lock = threading.Lock()
        self._pools: dict[str, Any] = {}

    def add(self, pool: Any) -> None:
        """Start exporting ``pool``.

        Raises:
            ValueError: If a pool with the same name is already exported through this collector.
        """
        try:
            ref: Any = weakref.ref(pool)
        except TypeError:
            ref = lambda: pool  # noqa: E731 - pools without weakref support are held strongly
        with self._lock:
            existing = self._pools.get(pool.name)
            if existing is not None and existing() is not None and existing() is not pool:
                raise ValueError(f"a pool named {pool.name!r} is already exported to this registry")
            self._pools[pool.name] = ref

    def remove(self, pool: Any) -> None:
        """Stop exporting ``pool`` (no error if it was not exported)."""
        with self._lock:
            ref = self._pools.get(pool.name)
            if ref is not None and ref() in (pool, None):
                del self._pools[pool.name]

    def describe(self) -> list[Any]:
        """Return nothing: the metric set depends on the pools, so the registry must not pre-check names."""
        return []

    def collect(self) -> Iterator[Any]:
        """Read every exported pool's statistics and yield the metric families."""
        core = _require_prometheus()
        with self._lock:
            pools = [pool for pool in (ref() for ref in self._pools.values()) if pool is not None]
        families = _Families(core)
        for pool in pools:
            families.add_pool(pool)
        yield from families.all()


class _Families:
    """The metric families of one scrape, filled pool by pool."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.families: dict[str, Any] = {}

    def _get(self, kind: str, name: str, documentation: str, labels: list[str], **extra: Any) -> Any:
        family = self.families.get(name)
        if family is None:
            factory = {
                "gauge": self.core.GaugeMetricFamily,
                "counter": self.core.CounterMetricFamily,
                "histogram": self.core.HistogramMetricFamily,
            }[kind]
            family = self.families[name] = factory(name, documentation, labels=labels, **extra)
        return family

    def all(self) -> Iterator[Any]:
        yield from self.families.values()

    def add_pool(self, pool: Any) -> None:
        stats = pool.stats()
        name = str(stats.get("name", pool.name))
        pool_label = ["pool"]
        connections = self._get(
            "gauge", "syncpool_pool_connections", "Connections by state.", ["pool", "state"]
        )
        for state in ("idle", "in_use", "connecting"):
            connections.add_metric([name, state], float(stats.get(state, 0)))
        for key, metric, documentation in _POOL_GAUGES:
            self._get("gauge", metric, documentation, pool_label).add_metric([name], float(stats.get(key, 0)))
        for key, metric, documentation in _POOL_COUNTERS:
            self._get("counter", metric, documentation, pool_label).add_metric(
                [name], float(stats.get(key, 0))
            )
        discards = self._get(
            "counter", "syncpool_pool_discards", "Connections discarded, by reason.", ["pool", "reason"]
        )
        for reason, count in sorted(stats.get("discards", {}).items()):
            discards.add_metric([name, str(reason)], float(count))
        checks = self._get(
            "counter", "syncpool_pool_health_checks", "Health checks, by result.", ["pool", "result"]
        )
        for result, count in sorted(stats.get("health_checks", {}).items()):
            checks.add_metric([name, str(result)], float(count))
        breaker = self._get(
            "gauge", "syncpool_pool_breaker_state", "Circuit breaker state (1 = current).", ["pool", "state"]
        )
        current = stats.get("breaker", "closed")
        for state in _BREAKER_STATES:
            breaker.add_metric([name, state], 1.0 if state == current else 0.0)

        live = pool.histograms() if hasattr(pool, "histograms") else {}
        for key, metric, documentation in _POOL_HISTOGRAMS:
            histogram = live.get(key)
            family = self._get("histogram", metric, documentation, pool_label, unit="")
            if histogram is not None:
                buckets = histogram.buckets()
                family.add_metric([name], _bucket_list(buckets), histogram.snapshot()["sum"])
            elif key in stats:  # no live histogram: export count and sum with a single +Inf bucket
                snap = stats[key]
                family.add_metric([name], [("+Inf", float(snap["count"]))], snap["sum"])

        clients = stats.get("clients")
        if clients:
            self._add_clients(name, clients, getattr(pool, "client_stats", None))

    def _add_clients(self, name: str, clients: dict[str, Any], client_stats: Any) -> None:
        operations = self._get(
            "counter", "syncpool_client_operations", "Client method calls, by method.", ["pool", "method"]
        )
        errors = self._get(
            "counter",
            "syncpool_client_errors",
            "Client method calls that raised, by method and exception type.",
            ["pool", "method", "error_type"],
        )
        histograms = client_stats.histograms() if hasattr(client_stats, "histograms") else None
        for method, method_stats in sorted(clients.get("methods", {}).items()):
            operations.add_metric([name, method], float(method_stats["operations"]))
            for error_type, count in sorted(method_stats.get("errors_by_type", {}).items()):
                errors.add_metric([name, method, error_type], float(count))
            family = self._get(
                "histogram", "syncpool_client_latency_seconds", "Client call latency.", ["pool", "method"]
            )
            if histograms is not None and method in histograms:
                histogram = histograms[method]
                family.add_metric(
                    [name, method], _bucket_list(histogram.buckets()), histogram.snapshot()["sum"]
                )
            else:  # only the stats dict: count and sum under a single +Inf bucket
                latency = method_stats["latency"]
                family.add_metric([name, method], [("+Inf", float(latency["count"]))], latency["sum"])


_collectors: weakref.WeakKeyDictionary[Any, PoolCollector] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def instrument(pool: Any, registry: Any = None) -> PoolCollector:
    """Export ``pool``'s statistics through a Prometheus registry.

    Args:
        pool: A syncpool pool (anything with ``name``, ``stats()`` and, optionally, ``histograms()`` and
            ``client_stats``).
        registry: A ``prometheus_client.CollectorRegistry``. Defaults to the global ``REGISTRY``.

    Returns:
        The registry's [`PoolCollector`][] (shared by every pool instrumented on that registry).

    Raises:
        ImportError: If prometheus_client is not installed (``pip install syncpool[prometheus]``).
        ValueError: If another pool with the same name is already exported to that registry.
    """
    core = _require_prometheus()
    if registry is None:
        registry = core.REGISTRY
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _collectors[registry] = PoolCollector()
            registry.register(collector)
    collector.add(pool)
    return collector


def uninstrument(pool: Any, registry: Any = None) -> None:
    """Stop exporting ``pool`` to ``registry`` (the global ``REGISTRY`` by default)."""
    core = _require_prometheus()
    with _collectors_lock:
        collector = _collectors.get(core.REGISTRY if registry is None else registry)
    if collector is not None:
        collector.remove(pool)
