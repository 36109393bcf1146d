"""Publish pool statistics through the OpenTelemetry metrics API (``pip install syncpool[otel]``).

Instrument names follow the semantic conventions for database client connection pools, with the attribute
``db.client.connection.pool.name`` set to the pool name:

=========================================  ====================  ==============================================
``db.client.connection.count``             UpDownCounter (obs.)  by ``db.client.connection.state`` = idle|used
``db.client.connection.idle.min``          UpDownCounter (obs.)  the pool's ``min_size``
``db.client.connection.idle.max``          UpDownCounter (obs.)  the pool's ``max_size`` (idle is never capped
                                                                 below it)
``db.client.connection.max``               UpDownCounter (obs.)  the pool's ``max_size``
``db.client.connection.pending_requests``  UpDownCounter (obs.)  callers waiting for a lease
``db.client.connection.timeouts``          Counter (obs.)        lease timeouts since the pool was created
``db.client.connection.wait_time``         Histogram (s)         recorded at each ``lease`` event
``db.client.connection.use_time``          Histogram (s)         recorded at each ``return`` event
``db.client.connection.create_time``       Histogram (s)         recorded at each ``connect`` event
=========================================  ====================  ==============================================

and, outside the conventions, ``syncpool.pool.discards`` (by ``reason``), ``syncpool.pool.health_checks``
(by ``result``), ``syncpool.pool.breaker.state`` (1 for the current ``state``), and for pools with
``monitor=True`` ``syncpool.client.operations`` / ``syncpool.client.errors`` (by ``method`` and
``error.type``).

Why two mechanisms: observable instruments read ``pool.stats()`` when the SDK collects, which is exact and
costs nothing in between. OpenTelemetry histograms, though, can only be fed one measurement at a time, and a
pool's [`Histogram`][syncpool.histogram.Histogram] cannot be replayed into them, so the three time histograms are
fed by pool events: [`instrument`][] subscribes with ``pool.add_listener("lease"|"return"|"connect", cb)``
and records ``info["wait"]``, ``info["use"]`` and ``info["duration"]``. They therefore cover the events that
happen after [`instrument`][]. The listeners only call ``Histogram.record`` (no I/O, no lock of ours).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Instrumentation", "instrument"]

logger = logging.getLogger("syncpool")

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"


def _require_otel() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "syncpool.metrics.otel needs opentelemetry-api: pip install syncpool[otel]"
        ) from error
    return metrics


class Instrumentation:
    """What [`instrument`][] set up for one pool; call [`close`][] to stop publishing.

    Observable instruments cannot be removed from a meter, so after [`close`][] their callbacks report
    nothing; the pool listeners are removed.
    """

    def __init__(self, pool: Any, meter: Any) -> None:
        """Create the instruments and subscribe to the pool's events (use [`instrument`][])."""
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self._pool_ref = _reference(pool)
        self._name = str(pool.name)
        self._attributes = {POOL_NAME: self._name}
        self.closed = False

        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
        )
        self.use_time = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description="The time between borrowing a connection and returning it to the pool.",
        )
        self.create_time = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection.",
        )
        gauges: list[tuple[str, str, str, Callable[[dict[str, Any]], Iterator[tuple[float, dict[str, str]]]]]] = [
            ("db.client.connection.count", "{connection}", "The number of connections that are currently in state described by the state attribute.", self._count),
            ("db.client.connection.idle.min", "{connection}", "The minimum number of idle open connections allowed.", self._field("min_size")),
            ("db.client.connection.idle.max", "{connection}", "The maximum number of idle open connections allowed.", self._field("max_size")),
            ("db.client.connection.max", "{connection}", "The maximum number of open connections allowed.", self._field("max_size")),
            ("db.client.connection.pending_requests", "{request}", "The number of current pending requests for an open connection.", self._field("waiting")),
        ]  # fmt: skip
        for name, unit, description, read in gauges:
            meter.create_observable_up_down_counter(
                name, callbacks=[self._callback(read)], unit=unit, description=description
            )
        counters: list[tuple[str, str, str, Callable[[dict[str, Any]], Iterator[tuple[float, dict[str, str]]]]]] = [
            ("db.client.connection.timeouts", "{timeout}", "The number of connection timeouts that have occurred trying to obtain a connection from the pool.", self._field("lease_timeouts")),
            ("syncpool.pool.discards", "{connection}", "Connections discarded, by reason.", self._by("discards", "reason")),
            ("syncpool.pool.health_checks", "{check}", "Health checks, by result.", self._by("health_checks", "result")),
            ("syncpool.client.operations", "{operation}", "Client method calls, by method.", self._client_operations),
            ("syncpool.client.errors", "{error}", "Client method calls that raised, by method and error type.", self._client_errors),
        ]  # fmt: skip
        for name, unit, description, read in counters:
            meter.create_observable_counter(
                name, callbacks=[self._callback(read)], unit=unit, description=description
            )
        meter.create_observable_gauge(
            "syncpool.pool.breaker.state",
            callbacks=[self._callback(self._breaker)],
            unit="1",
            description="Circuit breaker state: 1 for the current state, 0 for the others.",
        )

        self._listeners = {"lease": self._on_lease, "return": self._on_return, "connect": self._on_connect}
        for event, callback in self._listeners.items():
            pool.add_listener(event, callback)

    # -- event listeners: run on pool threads, must be quick and never raise ------------------------------

    def _on_lease(self, pool: Any, **info: Any) -> None:
        self._record(self.wait_time, info.get("wait"))

    def _on_return(self, pool: Any, **info: Any) -> None:
        self._record(self.use_time, info.get("use"))

    def _on_connect(self, pool: Any, **info: Any) -> None:
        self._record(self.create_time, info.get("duration"))

    def _record(self, histogram: Any, seconds: Any) -> None:
        if self.closed or seconds is None:
            return
        try:
            histogram.record(float(seconds), self._attributes)
        except Exception:  # a metrics failure must never break a lease
            logger.exception("pool %r: could not record an OpenTelemetry measurement", self._name)

    # -- observable callbacks -------------------------------------------------------------------------------

    def _callback(
        self, read: Callable[[dict[str, Any]], Iterator[tuple[float, dict[str, str]]]]
    ) -> Callable[[Any], list[Any]]:
        def callback(options: Any) -> list[Any]:
            pool = self._pool_ref()
            if self.closed or pool is None:
                return []
            stats = pool.stats()
            return [self._observation(value, {**self._attributes, **extra}) for value, extra in read(stats)]

        return callback

    @staticmethod
    def _count(stats: dict[str, Any]) -> Iterator[tuple[float, dict[str, str]]]:
        yield float(stats.get("idle", 0)), {STATE: "idle"}
        yield float(stats.get("in_use", 0)), {STATE: "used"}

    @staticmethod
    def _field(key: str) -> Callable[[dict[str, Any]], Iterator[tuple[float, dict[str, str]]]]:
        def read(stats: dict[str, Any]) -> Iterator[tuple[float, dict[str, str]]]:
            yield float(stats.get(key, 0)), {}

        return read

    @staticmethod
    def _by(key: str, attribute: str) -> Callable[[dict[str, Any]], Iterator[tuple[float, dict[str, str]]]]:
        def read(stats: dict[str, Any]) -> Iterator[tuple[float, dict[str, str]]]:
            for label, count in sorted(stats.get(key, {}).items()):
                yield float(count), {attribute: str(label)}

        return read

    @staticmethod
    def _breaker(stats: dict[str, Any]) -> Iterator[tuple[float, dict[str, str]]]:
        current = stats.get("breaker", "closed")
        for state in ("closed", "open", "half_open"):
            yield (1.0 if state == current else 0.0), {"state": state}

    @staticmethod
    def _client_operations(stats: dict[str, Any]) -> Iterator[tuple[float, dict[str, str]]]:
        for method, method_stats in sorted((stats.get("clients") or {}).get("methods", {}).items()):
            yield float(method_stats["operations"]), {"method": method}

    @staticmethod
    def _client_errors(stats: dict[str, Any]) -> Iterator[tuple[float, dict[str, str]]]:
        for method, method_stats in sorted((stats.get("clients") or {}).get("methods", {}).items()):
            for error_type, count in sorted(method_stats.get("errors_by_type", {}).items()):
                yield float(count), {"method": method, "error.type": error_type}

    def close(self) -> None:
        """Stop publishing: remove the pool listeners; observable callbacks report nothing from now on.

        Calling it again does nothing.
        """
        if self.closed:
            return
        self.closed = True
        pool = self._pool_ref()
        if pool is not None:
            for event, callback in self._listeners.items():
                pool.remove_listener(event, callback)


def _reference(pool: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(pool)
    except TypeError:
        return lambda: pool


def instrument(pool: Any, meter_provider: Any = None) -> Instrumentation:
    """Publish ``pool``'s statistics through OpenTelemetry (see the module docstring for the instruments).

    Args:
        pool: A syncpool pool (``name``, ``stats()``, ``add_listener()``/``remove_listener()``).
        meter_provider: The ``MeterProvider`` to use. Defaults to the global one
            (``opentelemetry.metrics.get_meter_provider()``).

    Returns:
        An [`Instrumentation`][]; call its ``close()`` to stop.

    Raises:
        ImportError: If opentelemetry-api is not installed (``pip install syncpool[otel]``).
    """
    metrics = _require_otel()
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    import syncpool

    meter = provider.get_meter("syncpool", getattr(syncpool, "__version__", None))
    return Instrumentation(pool, meter)
