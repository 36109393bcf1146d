# mypy: disallow-untyped-calls=False
# (much of distributed is not annotated)
"""The demo's Dask engine: a batch load partitioned across Dask worker processes.

``DaskEngine`` starts a local cluster of worker processes (or joins a running scheduler), opens the same pools
in every worker process with [`PoolPlugin`][syncpool.dask.PoolPlugin], and runs [`map_pool`][] on one
partition of the items per worker process:

```python
with DaskEngine(processes=4) as engine:
    engine.open_pools({"postgres": {"connector": "postgres", "options": {"conninfo": dsn}}})
    result = engine.map("postgres", insert_row, rows, workers=8)   # 4 processes x 8 threads
    print(result.succeeded, engine.stats()["total"]["postgres"]["size"])
```

``python -m syncpool demo --engine dask`` is built on it, and so can a benchmark be: ``fn`` and the items are
pickled to the workers (a module-level function travels by reference), the pools' configuration through the
plugin; nothing else crosses a process boundary.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import registry
from ._secrets import describe_failure
from .batch import map_pool

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

__all__ = ["DaskEngine", "PartitionResult", "PhaseResult"]

#: Seconds to wait for a scheduler to answer and for the first worker to be there.
CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True)
class PartitionResult:
    """What one worker process did with its partition.

    Attributes:
        worker: The worker's address.
        pid: The worker's process id.
        items: Items in the partition.
        succeeded: Items whose function returned.
        failed: Items whose function raised.
        elapsed: Seconds the partition took on the worker.
        first_error: ``(index in the whole batch, "module.Type: message")`` of the first failed item (secrets
            masked), or None.
    """

    worker: str
    pid: int
    items: int
    succeeded: int
    failed: int
    elapsed: float
    first_error: tuple[int, str] | None


@dataclass(frozen=True)
class PhaseResult:
    """One ``DaskEngine.map`` over every worker process.

    Attributes:
        partitions: One result per worker process, in partition order.
        elapsed: Wall-clock seconds from submitting the partitions to having every result back.
    """

    partitions: list[PartitionResult]
    elapsed: float

    @property
    def succeeded(self) -> int:
        """Items that succeeded, over all partitions."""
        return sum(partition.succeeded for partition in self.partitions)

    @property
    def failed(self) -> int:
        """Items that failed, over all partitions."""
        return sum(partition.failed for partition in self.partitions)

    @property
    def first_error(self) -> tuple[int, str] | None:
        """The failure with the lowest index in the whole batch, or None."""
        errors = [partition.first_error for partition in self.partitions if partition.first_error is not None]
        return min(errors) if errors else None


class DaskEngine:
    """Runs [`map_pool`][] partitions on Dask worker processes, each with its own pools.

    Args:
        processes: Worker processes of the local cluster (one thread each: the partition's own ``map_pool``
            threads do the work). Ignored with ``scheduler``. Defaults to 2.
        scheduler: Address of a running Dask scheduler (``tcp://host:8786``) whose workers to use instead of a
            local cluster; the pools must be reachable from those workers.
        plugin_name: Name of the [`PoolPlugin`][syncpool.dask.PoolPlugin] on the cluster. Defaults to
            ``"syncpool-demo"``.
        connect_timeout: Seconds to wait for the scheduler and for a first worker. Defaults to 30.0.

    Raises:
        ValueError: ``processes`` is below 1 or ``connect_timeout`` not positive.
    """

    def __init__(
        self,
        *,
        processes: int = 2,
        scheduler: str | None = None,
        plugin_name: str = "syncpool-demo",
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
            raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout!r}")
        self.processes = processes
        self.scheduler = scheduler
        self.plugin_name = plugin_name
        self.connect_timeout = connect_timeout
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._pools_open = False

    def start(self) -> DaskEngine:
        """Start the local cluster, or connect to the scheduler; wait for a first worker. Returns ``self``.

        Raises:
            OSError: The scheduler cannot be reached (``ConnectionRefusedError`` at once when nothing listens).
            TimeoutError: No scheduler answered or no worker joined within ``connect_timeout``.
        """
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            _probe(self.scheduler, self.connect_timeout)
            self._client = Client(self.scheduler, timeout=self.connect_timeout)
        else:
            self._cluster = LocalCluster(
                n_workers=self.processes, threads_per_worker=1, processes=True, host="127.0.0.1",
                # A free port of its own: distributed starts the dashboard's HTTP server even when told None, and
                # on the default port it warns whenever another cluster on the machine holds it.
                dashboard_address="127.0.0.1:0",
            )
            self._client = Client(self._cluster)
        self._client.wait_for_workers(1, timeout=self.connect_timeout)
        if self._cluster is not None:
            self._client.wait_for_workers(self.processes, timeout=self.connect_timeout)
        return self

    @property
    def client(self) -> Client:
        """The ``distributed.Client`` (after ``start``)."""
        if self._client is None:
            raise RuntimeError("DaskEngine: call start() first")
        return self._client

    def worker_pids(self) -> dict[str, int]:
        """Each worker's address and process id, sorted by address."""
        return dict(sorted(self.client.run(os.getpid).items()))

    def open_pools(self, pools: Mapping[str, Any]) -> None:
        """Open ``pools`` (name -> [`syncpool.config`][] mapping) in every worker process, now and as they join."""
        from .dask import PoolPlugin

        self.client.register_plugin(PoolPlugin(pools, name=self.plugin_name))
        self._pools_open = True

    def close_pools(self) -> None:
        """Close the workers' pools (removes the plugin); safe to call more than once."""
        if self._pools_open and self._client is not None:
            self._pools_open = False
            self._client.unregister_worker_plugin(self.plugin_name)

    def map(self, pool_name: str, fn: Callable[[Any, Any], Any], items: Sequence[Any], *, workers: int) -> PhaseResult:
        """Split ``items`` into one contiguous partition per worker process and run ``fn(client, item)`` on each
        item with ``map_pool(registry.get_pool(pool_name), fn, partition, workers=workers)`` in that process.

        A partition is pinned to its worker but may move to another if that worker dies.
        """
        addresses = sorted(self.client.nthreads())
        started = time.monotonic()
        futures = []
        offset = 0
        for address, partition in zip(addresses, _split(list(items), len(addresses)), strict=True):
            futures.append(self.client.submit(
                _run_partition, pool_name, fn, partition, workers, offset,
                workers=[address], allow_other_workers=True, pure=False,
            ))
            offset += len(partition)
        partitions: list[PartitionResult] = self.client.gather(futures)
        return PhaseResult(partitions, time.monotonic() - started)

    def stats(self) -> dict[str, Any]:
        """[`syncpool.dask.stats`][] of the cluster: each worker's pools and their total."""
        from .dask import stats

        return stats(self.client)

    def close(self) -> None:
        """Close the workers' pools, the client and the local cluster, if any."""
        try:
            self.close_pools()
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None

    def __enter__(self) -> DaskEngine:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """``parts`` contiguous slices whose lengths differ by at most one."""
    size, extra = divmod(len(items), parts)
    slices = []
    start = 0
    for n in range(parts):
        end = start + size + (1 if n < extra else 0)
        slices.append(items[start:end])
        start = end
    return slices


def _probe(address: str, timeout: float) -> None:
    """Fail at once when nothing listens at ``address`` (the client would retry until its timeout)."""
    from distributed.comm.addressing import get_address_host_port

    host, port = get_address_host_port(address)
    with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
        pass


def _run_partition(
    pool_name: str, fn: Callable[[Any, Any], Any], items: list[Any], workers: int, offset: int
) -> PartitionResult:
    """Run on a worker: one partition through this process's pool."""
    from distributed import get_worker

    result = map_pool(registry.get_pool(pool_name), fn, items, workers=workers, progress=False, on_error="collect")
    first_error = None
    if result.errors:
        index, _, error = result.errors[0]
        # Described as a BatchError would describe it: one line, what looks like a secret masked.
        first_error = (offset + index, describe_failure(error))
    return PartitionResult(
        worker=get_worker().address, pid=os.getpid(), items=len(items), succeeded=result.succeeded,
        failed=result.failed, elapsed=result.elapsed, first_error=first_error,
    )
