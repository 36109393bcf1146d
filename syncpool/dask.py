"""Pools on Dask distributed workers: one set per worker process, opened and closed with the worker.

```python
from distributed import Client
from syncpool import registry
from syncpool.dask import PoolPlugin, stats

POOLS = {"db": {"connector": "postgres", "options": {"conninfo": DSN}, "pool": {"max_size": 4}}}

def load(rows):
    with registry.get_pool("db").connection() as conn:   # this worker process's own pool
        ...

client = Client("tcp://scheduler:8786")
client.register_plugin(PoolPlugin(POOLS))    # every worker now, and every worker that joins later
client.gather(client.map(load, partitions))
print(stats(client)["total"]["db"]["leases_total"])
```

[`PoolPlugin`][] carries nothing but the configuration to the workers; each worker process builds its own pools
from it (connections never cross a process boundary) and closes them when the worker shuts down. A worker that dies
and is restarted by its nanny gets fresh pools. Needs the ``dask`` extra (``pip install "syncpool[dask]"``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError('syncpool.dask needs Dask distributed: pip install "syncpool[dask]"') from error

from . import processes

if TYPE_CHECKING:
    from distributed import Client, Worker

__all__ = ["PoolPlugin", "merge_stats", "stats"]

logger = logging.getLogger("syncpool")


class PoolPlugin(WorkerPlugin):
    """A Dask worker plugin that opens pools in every worker process and closes them when the worker shuts down.

    Register it with ``client.register_plugin(PoolPlugin(pools))``: workers running at that moment open the pools
    at once, workers that join later (or are restarted by their nanny) when they start. Tasks get a pool with
    [`syncpool.registry.get_pool`][] by its name. Registering another plugin of the same ``name`` replaces this one
    (its pools are closed first); ``client.unregister_worker_plugin(name)`` closes them.

    Only the configuration is pickled and sent to the workers: each worker process builds its own pools from it.
    Workers sharing one process (``LocalCluster(processes=False)``) share one pool per name, closed when the last
    of them shuts down. A pool that the process had registered before the plugin came is used but left open.

    Connection strings and other secrets travel inside the configuration (the scheduler keeps it, pickled, to hand
    to new workers); to keep them off the wire, give None as a pool's configuration and set its
    ``SYNCPOOL_<NAME>_*`` variables ([`syncpool.config`][]) in the workers' environment instead. The plugin's
    repr and log lines mask them either way.

    Args:
        pools: Pool name -> configuration: a [`syncpool.config`][] mapping, a
            [`PoolConfig`][syncpool.config.PoolConfig], or None for the worker's environment variables. Validated here.
        name: The plugin's name on the cluster. Defaults to ``"syncpool"``.
        close_timeout: Seconds leases in flight get to come back when the worker shuts down, for all the pools
            together. Defaults to 5.0.

    Raises:
        TypeError: ``pools`` is not a mapping, ``name`` not a string or ``close_timeout`` not a number.
        ValueError: ``pools`` is empty or a configuration is invalid (the message names the key), ``name`` is
            empty or ``close_timeout`` negative.
    """

    def __init__(
        self, pools: Mapping[str, Any], *, name: str = "syncpool", close_timeout: float = processes.CLOSE_TIMEOUT
    ) -> None:
        checked = processes.check_pools(pools)
        if not checked:
            raise ValueError("pools: expected at least one pool")
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, not {type(name).__name__}")
        if not name:
            raise ValueError("name must not be empty")
        processes._check_timeout(close_timeout)
        self.pools = checked
        self.name = name
        self.close_timeout = float(close_timeout)
        self._opened: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        # What travels to the scheduler and the workers: the configuration, never a pool or a client.
        return {"pools": self.pools, "name": self.name, "close_timeout": self.close_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.pools = state["pools"]
        self.name = state["name"]
        self.close_timeout = state["close_timeout"]
        self._opened = []

    def setup(self, worker: Worker) -> None:
        """Open the pools in the worker's process (called by the worker when the plugin is attached to it)."""
        self._opened = processes.open_pools(self.pools)
        logger.info(
            "dask worker %s: pools %s open in pid %d", worker.address, ", ".join(map(repr, self._opened)), os.getpid()
        )

    async def teardown(self, worker: Worker) -> None:
        """Close the pools (called by the worker when it shuts down or the plugin is removed)."""
        names, self._opened = self._opened, []
        # Closing waits for leases in flight: do it off the worker's event loop, which keeps serving meanwhile.
        await asyncio.get_running_loop().run_in_executor(
            None, partial(processes.close_pools, names, timeout=self.close_timeout)
        )
        logger.info("dask worker %s: pools %s closed", worker.address, ", ".join(map(repr, names)))

    @property
    def opened(self) -> list[str]:
        """Names of the pools this plugin holds in the current worker (empty outside a worker)."""
        return list(self._opened)

    def __repr__(self) -> str:
        return f"PoolPlugin(name={self.name!r}, pools={processes.describe_pools(self.pools)!r})"


def stats(client: Client) -> dict[str, Any]:
    """Collect the statistics of the pools [`PoolPlugin`][] opened, from every worker of ``client``'s cluster.

    Args:
        client: A synchronous ``distributed.Client``.

    Returns:
        ``{"workers": {address: {"pid": ..., "host": ..., "pools": {name: Pool.stats()}}}, "total": {name: ...}}``.
        Each ``Pool.stats()`` includes ``clients``, the client statistics, for pools with ``monitor=True``.
        ``total`` merges each pool's statistics over the worker processes with [`merge_stats`][] (workers
        sharing one process are counted once).
    """
    reports: dict[str, dict[str, Any]] = client.run(_worker_report)
    workers = dict(sorted(reports.items()))
    by_process: dict[tuple[str, int], dict[str, Any]] = {}
    for report in workers.values():
        by_process.setdefault((report["host"], report["pid"]), report["pools"])
    names = list(dict.fromkeys(name for pools in by_process.values() for name in pools))
    total = {name: merge_stats([pools[name] for pools in by_process.values() if name in pools]) for name in names}
    return {"workers": workers, "total": total}


def _worker_report(dask_worker: Worker) -> dict[str, Any]:
    """Run on each worker by [`stats`][]: the statistics of the pools its [`PoolPlugin`][] instances hold."""
    names = [
        name for plugin in dask_worker.plugins.values() if isinstance(plugin, PoolPlugin) for name in plugin.opened
    ]
    held = processes.held_pools()
    pools = {name: _plain(held[name].stats()) for name in dict.fromkeys(names) if name in held}
    return {"pid": os.getpid(), "host": socket.gethostname(), "pools": pools}


def _plain(value: Any) -> Any:
    """Plain data only, so that a client without syncpool's enums installed can read the report."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# -- merging statistics --------------------------------------------------------------------------------------------

_HISTOGRAM_KEYS = frozenset({"count", "sum", "min", "max", "mean", "p50", "p90", "p99"})
_LONGEST = frozenset({"uptime"})  # a duration shared by all: the longest, not the sum
_SETTINGS = frozenset({"window"})  # the same setting everywhere, not a quantity


def merge_stats(snapshots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge the ``Pool.stats()`` of one pool in several processes into one, as if it were one pool.

    Gauges (``size``, ``idle``, ``in_use``, ``max_size``...) and counters (``leases_total``,
    ``connections_created``, ``discards``...) are summed, so ``size`` is the connections the processes hold
    together and ``max_size`` the most they may open. Client statistics (``clients``) are merged the same way:
    operations, errors and rates are summed, ``error_rate`` is recomputed, ``uptime`` is the longest. States that
    differ are joined (``"closed/open"``). Histograms keep an exact ``count``, ``sum``, ``min``, ``max`` and
    ``mean``; their percentiles are the highest of the processes', an upper bound of the true percentile (the
    processes' raw histograms are not shipped). The result has one more key, ``processes``: how many were merged.

    Raises:
        ValueError: ``snapshots`` is empty.
    """
    if not snapshots:
        raise ValueError("snapshots: expected at least one Pool.stats() snapshot")
    merged = _merge_mapping(list(snapshots))
    merged["processes"] = len(snapshots)
    return merged


def _merge_mapping(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    keys = list(dict.fromkeys(key for item in items for key in item))
    if "count" in keys and _HISTOGRAM_KEYS.issuperset(keys):
        return _merge_histogram(items)
    merged = {key: _merge_values([item[key] for item in items if key in item], key) for key in keys}
    if {"operations", "errors", "error_rate"} <= merged.keys():
        operations = merged["operations"]
        merged["error_rate"] = merged["errors"] / operations if operations else 0.0
    return merged


def _merge_values(values: list[Any], key: str) -> Any:
    if all(isinstance(value, Mapping) for value in values):
        return _merge_mapping(values)
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        if key in _LONGEST or key in _SETTINGS:
            return max(values)
        return sum(values)
    distinct = sorted({str(value) for value in values})
    return values[0] if len(distinct) == 1 else "/".join(distinct)


def _merge_histogram(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    filled = [item for item in items if item.get("count")]
    if not filled:
        return dict(items[0])
    count = sum(item["count"] for item in filled)
    total = sum(item.get("sum", 0.0) for item in filled)
    merged: dict[str, Any] = {}
    for key in items[0]:
        if key == "count":
            merged[key] = count
        elif key == "sum":
            merged[key] = total
        elif key == "min":
            merged[key] = min(item["min"] for item in filled)
        elif key == "mean":
            merged[key] = total / count
        else:  # max and the percentiles
            merged[key] = max(item[key] for item in filled)
    return merged
