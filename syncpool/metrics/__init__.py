"""Exporters of pool and client statistics to metrics systems; each is an optional extra.

* [`syncpool.metrics.prometheus`][] (``pip install syncpool[prometheus]``): a custom collector that reads
  ``pool.stats()`` at scrape time.
* [`syncpool.metrics.otel`][] (``pip install syncpool[otel]``): OpenTelemetry instruments named after the
  semantic conventions for database client connection pools.

Importing this package imports neither client library; each module imports its own on first use.
"""

from __future__ import annotations

__all__: list[str] = []
