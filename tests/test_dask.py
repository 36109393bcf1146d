"""syncpool.dask: pools opened in every Dask worker process, closed with it, reported together."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

from syncpool import processes, registry  # noqa: E402
from syncpool.dask import PoolPlugin, merge_stats, stats  # noqa: E402
from tests.scaling_helpers import backend_of, journal_line, read_journal  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

SQLITE = {"connector": "sqlite", "options": {"database": ":memory:"}, "pool": {"max_size": 2}}


def _registered() -> set[str]:
    return {entry["name"] for entry in registry.info() if entry["state"] != "closed"}


def _teardown(plugin: PoolPlugin, worker: Any) -> None:
    asyncio.run(plugin.teardown(worker))


# -- the plugin in this process ------------------------------------------------------------------------------------


def test_the_plugin_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="pools must be a mapping"):
        PoolPlugin([("db", SQLITE)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one pool"):
        PoolPlugin({})
    with pytest.raises(ValueError, match=r"^pools\.db\.pool\.max_sise: unknown option; did you mean max_size\?"):
        PoolPlugin({"db": {**SQLITE, "pool": {"max_sise": 2}}})
    with pytest.raises(ValueError, match="name must not be empty"):
        PoolPlugin({"db": SQLITE}, name="")
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        PoolPlugin({"db": SQLITE}, close_timeout=-1)


def test_repr_and_pickle_carry_the_configuration_and_no_secret_in_the_repr() -> None:
    pools = {
        "db": {"connector": "postgres", "options": {"conninfo": "host=db user=app password=hunter2"}},
        "url": {"connector": "postgres", "options": {"conninfo": "postgresql://app:hunter3@db/app"}},
        "es": {"connector": "elasticsearch", "options": {"hosts": ["http://elastic:hunter4@es:9200"]}},
        "s3": {"connector": "s3", "options": {"aws_access_key_id": "AKID", "aws_secret_access_key": "hunter5"}},
        "env": None,
    }
    plugin = PoolPlugin(pools, name="jobs")
    text = repr(plugin)
    for secret in ("hunter2", "hunter3", "hunter4", "hunter5"):
        assert secret not in text
    assert "PoolPlugin(name='jobs'" in text and "es:9200" in text and "AKID" in text
    clone = pickle.loads(pickle.dumps(plugin))
    assert clone.pools == plugin.pools and clone.name == "jobs" and clone.opened == []
    assert clone.pools["env"] is None


def test_setup_opens_the_pools_here_and_teardown_closes_them() -> None:
    plugin = PoolPlugin({"db": SQLITE, "cache": SQLITE})
    worker = SimpleNamespace(address="inproc://test")
    assert "db" not in _registered()  # building the plugin opens nothing
    plugin.setup(worker)  # type: ignore[arg-type]
    try:
        pool = registry.get_pool("db")
        assert pool.state == "open" and plugin.opened == ["db", "cache"]
        with pool.connection() as conn:
            assert conn.execute("SELECT 7").fetchone() == (7,)
        # Only the configuration is pickled, even from a plugin holding open pools.
        assert pickle.loads(pickle.dumps(plugin)).opened == []
    finally:
        _teardown(plugin, worker)
    assert pool.state == "closed"
    assert not {"db", "cache"} & _registered()
    assert plugin.opened == []


def test_workers_sharing_a_process_share_one_pool_closed_by_the_last() -> None:
    first, second = PoolPlugin({"db": SQLITE}), PoolPlugin({"db": SQLITE})
    workers = SimpleNamespace(address="inproc://1"), SimpleNamespace(address="inproc://2")
    first.setup(workers[0])  # type: ignore[arg-type]
    second.setup(workers[1])  # type: ignore[arg-type]
    pool = registry.get_pool("db")
    try:
        assert processes.held_pools()["db"] is pool
        _teardown(first, workers[0])
        assert pool.state == "open"  # the other worker still uses it
    finally:
        _teardown(second, workers[1])
    assert pool.state == "closed"


def test_a_pool_the_process_registered_itself_is_used_but_left_open() -> None:
    own = registry.get_pool("db", SQLITE)
    plugin = PoolPlugin({"db": SQLITE})
    worker = SimpleNamespace(address="inproc://1")
    try:
        plugin.setup(worker)  # type: ignore[arg-type]
        assert processes.held_pools()["db"] is own
        _teardown(plugin, worker)
        assert own.state == "open" and registry.get_pool("db") is own
    finally:
        own.close()


def test_a_conflicting_configuration_fails_the_setup_and_leaves_nothing_open() -> None:
    own = registry.get_pool("db", SQLITE)
    plugin = PoolPlugin({"cache": SQLITE, "db": {**SQLITE, "pool": {"max_size": 5}}})
    try:
        with pytest.raises(ValueError, match="already registered with a different configuration"):
            plugin.setup(SimpleNamespace(address="inproc://1"))  # type: ignore[arg-type]
        assert "cache" not in _registered()
    finally:
        own.close()


def test_merge_stats_sums_counts_and_bounds_percentiles() -> None:
    def snapshot(size: int, leases: int, state: str, wait: dict[str, float], ops: int, errors: int) -> dict[str, Any]:
        latency = {"count": ops, "sum": ops * 0.01, "min": 0.001, "max": 0.05, "mean": 0.01,
                   "p50": 0.01, "p90": 0.02, "p99": 0.04}
        return {
            "name": "db", "state": state, "size": size, "max_size": 4, "leases_total": leases,
            "discards": {"broken": 1, "idle": 0}, "wait_time": wait,
            "clients": {"name": "db", "operations": ops, "errors": errors, "error_rate": errors / ops,
                        "ops_per_sec": 10.0, "uptime": float(ops), "window": 60, "latency": latency,
                        "methods": {"execute": {"operations": ops, "errors": errors, "error_rate": errors / ops,
                                                "latency": latency}}},
        }

    empty = {"count": 0, "sum": 0.0, "min": 0.0, "max": 0.0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    waited = {"count": 3, "sum": 0.3, "min": 0.05, "max": 0.2, "mean": 0.1, "p50": 0.1, "p90": 0.2, "p99": 0.2}
    total = merge_stats([snapshot(2, 10, "open", empty, 10, 1), snapshot(3, 5, "closed", waited, 30, 0)])
    assert total["processes"] == 2
    assert (total["size"], total["max_size"], total["leases_total"]) == (5, 8, 15)
    assert total["state"] == "closed/open" and total["name"] == "db"
    assert total["discards"] == {"broken": 2, "idle": 0}
    assert total["wait_time"] == pytest.approx(waited)  # the empty histogram adds nothing, not even its zero min
    clients = total["clients"]
    assert (clients["operations"], clients["errors"], clients["ops_per_sec"]) == (40, 1, 20.0)
    assert clients["error_rate"] == pytest.approx(1 / 40)
    assert clients["uptime"] == 30.0 and clients["window"] == 60
    assert clients["latency"]["count"] == 40 and clients["latency"]["mean"] == pytest.approx(0.01)
    assert clients["methods"]["execute"]["operations"] == 40
    with pytest.raises(ValueError, match="at least one"):
        merge_stats([])


def test_stats_on_an_in_process_cluster_count_a_shared_pool_once() -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.register_plugin(PoolPlugin({"db": {**SQLITE, "pool": {"max_size": 2, "monitor": True}}}))
        assert client.gather(client.map(_select, range(10)))  == list(range(10))
        report = stats(client)
        assert len(report["workers"]) == 2
        assert {worker["pid"] for worker in report["workers"].values()} == {os.getpid()}
        total = report["total"]["db"]
        assert total["processes"] == 1 and total["max_size"] == 2 and total["leases_total"] == 10
        assert total["clients"]["operations"] == 10
        pool = registry.get_pool("db")
        client.unregister_worker_plugin("syncpool")
        assert pool.state == "closed" and "db" not in _registered()  # removing the plugin closes its pools


def _select(n: int) -> int:
    with registry.get_pool("db").connection() as conn:
        return int(conn.execute("SELECT ?", (n,)).fetchone()[0])


# -- worker processes against PostgreSQL ---------------------------------------------------------------------------


def _pools(dsn: str, journal: Path, application_name: str) -> dict[str, Any]:
    return {"db": {
        "connector": "callable:tests.scaling_helpers:JournalingPostgresConnector",
        "options": {"conninfo": dsn, "journal": str(journal), "application_name": application_name},
        "pool": {"max_size": 3, "timeout": 30.0, "monitor": True},
    }}


class PoolWatcher(WorkerPlugin):
    """A Dask worker plugin registered after :class:`syncpool.dask.PoolPlugin`, to see its teardown from inside.

    At the worker's shutdown it journals ``teardown <pid> <state>``: the pool's state once it is closed, or its
    state after 10 s if it is not. Teardowns run while the worker shuts down, before its process exits, so
    ``closed`` here means the plugin closed the pool, not an exit hook of the interpreter.
    """

    name = "pool-watcher"

    def __init__(self, journal: str, pool_name: str = "db") -> None:
        self.journal = journal
        self.pool_name = pool_name

    def setup(self, worker: Any) -> None:
        self.pool = registry.get_pool(self.pool_name)

    async def teardown(self, worker: Any) -> None:
        deadline = time.monotonic() + 10.0
        while self.pool.state != "closed" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        journal_line(self.journal, "teardown", self.pool.state)


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _sessions(postgres_server: Any, application_name: str) -> int:
    rows = postgres_server.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
    )
    return int(rows[0][0])


def _exercise_cluster(client: Any, plugin: PoolPlugin, journal: Path) -> tuple[int, set[int]]:
    """Run tasks on both workers, kill one, check the restarted one has fresh pools.

    Returns the killed worker's pid and every backend the tasks saw.
    """
    client.register_plugin(plugin)
    client.register_plugin(PoolWatcher(str(journal)))  # set up after the pools, on restarted workers too
    assert "db" not in _registered()  # nothing was opened in the client's process
    results = client.gather(client.map(backend_of, range(60), pure=False))
    results = [(n, pid, int(backend)) for n, pid, backend in results]
    pids = {pid for _, pid, _ in results}
    assert len(pids) == 2 and os.getpid() not in pids
    owners: dict[int, set[int]] = {}
    for _, pid, backend in results:
        owners.setdefault(backend, set()).add(pid)
    assert all(len(users) == 1 for users in owners.values()), owners  # no backend served two processes

    report = stats(client)
    assert {worker["pid"] for worker in report["workers"].values()} == pids
    total = report["total"]["db"]
    assert total["processes"] == 2 and total["max_size"] == 6 and total["leases_total"] == 60
    assert total["clients"]["operations"] >= 60
    for worker in report["workers"].values():
        assert worker["pools"]["db"]["state"] == "open" and worker["pools"]["db"]["size"] <= 3

    # Kill one worker process outright; its nanny starts a new one, which must build its own pools.
    by_address = client.run(os.getpid)
    victim_address, victim = sorted(by_address.items())[0]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> dict[str, int] | None:
        current = client.run(os.getpid)
        return current if len(current) == 2 and victim not in current.values() else None

    current = _wait_for(restarted, "the nanny to restart the killed worker")
    new_address, new_pid = next((a, p) for a, p in current.items() if p not in by_address.values())
    fresh = client.gather(client.map(backend_of, range(10), workers=[new_address], pure=False))
    assert {pid for _, pid, _ in fresh} == {new_pid}
    report = stats(client)
    new_pool = report["workers"][new_address]["pools"]["db"]
    assert new_pool["state"] == "open" and new_pool["leases_total"] == 10  # a new pool, not the dead one's
    return victim, {backend for _, _, backend in results + fresh}


def _check_journal(journal: Path, victim: int, backends: set[int]) -> None:
    events = read_journal(journal)
    owners: dict[int, list[int]] = {}
    for pid, seen in events.items():
        for backend in seen["open"]:
            owners.setdefault(int(backend), []).append(pid)
    assert all(len(pids) == 1 for pids in owners.values()), owners  # never opened by two processes
    assert backends <= set(owners)  # every backend a task used was opened by its own worker's pool
    assert len(events) == 3, events  # two workers, then the one restarted after the kill
    for pid, seen in events.items():
        if pid == victim:
            assert seen["open"] - seen["close"], "the killed worker could not close its connections"
            assert not seen["teardown"]
        else:
            # Closed by the plugin while the worker shut down, each connection by the process that opened it.
            assert seen["teardown"] == {"closed"}, (pid, seen)
            assert seen["close"] == seen["open"], (pid, seen)


@pytest.mark.slow
def test_local_cluster_worker_processes(postgres_server: Any, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    journal = tmp_path / "journal"
    application_name = f"syncpool-dask-{uuid.uuid4().hex[:8]}"
    plugin = PoolPlugin(_pools(postgres_server.dsn, journal, application_name))
    with LocalCluster(n_workers=2, threads_per_worker=3, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        victim, backends = _exercise_cluster(client, plugin, journal)
    _check_journal(journal, victim, backends)
    _wait_for(lambda: _sessions(postgres_server, application_name) == 0, "the server to see every session end", 15)


@pytest.fixture
def dask_cli(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``python -m dask ...`` processes in their own sessions; stop what is left at the end."""
    started: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def start(*args: str, log: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "dask", *args], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.mark.slow
def test_dask_scheduler_and_workers_started_from_the_command_line(
    postgres_server: Any, tmp_path: Path, dask_cli: Callable[..., subprocess.Popen[bytes]]
) -> None:
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    scheduler = dask_cli("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                         "--scheduler-file", str(scheduler_file), log="scheduler.log")
    workers = [
        dask_cli("worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--nworkers", "1",
                 "--nthreads", "3", "--no-dashboard", "--name", f"worker-{n}", log=f"worker-{n}.log")
        for n in range(2)
    ]
    _wait_for(lambda: scheduler_file.exists() and json.loads(scheduler_file.read_text())["address"], "the scheduler")
    journal = tmp_path / "journal"
    application_name = f"syncpool-dask-{uuid.uuid4().hex[:8]}"
    plugin = PoolPlugin(_pools(postgres_server.dsn, journal, application_name))
    with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        assert all(address.startswith("tcp://127.0.0.1:") for address in client.scheduler_info()["workers"])
        victim, backends = _exercise_cluster(client, plugin, journal)
    # Stop the workers the way a service manager does: SIGTERM, and they shut down gracefully.
    for process in workers:
        process.send_signal(signal.SIGTERM)
    for n, process in enumerate(workers):
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dask worker did not stop:\n{(tmp_path / f'worker-{n}.log').read_text()[-3000:]}")
    scheduler.send_signal(signal.SIGTERM)
    scheduler.wait(30)
    _check_journal(journal, victim, backends)
    _wait_for(lambda: _sessions(postgres_server, application_name) == 0, "the server to see every session end", 15)
    logs = "".join((tmp_path / f"worker-{n}.log").read_text() for n in range(2))
    assert postgres_server.password not in logs


def test_the_demo_engine_partitions_a_batch_over_worker_processes(tmp_path: Path) -> None:
    from syncpool.demo_dask import DaskEngine
    from tests.scaling_helpers import square_or_fail

    database = tmp_path / "engine.db"
    with DaskEngine(processes=2) as engine:
        pids = engine.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids.values()
        engine.open_pools({"db": {"connector": "sqlite", "options": {"database": str(database)},
                                  "pool": {"max_size": 2}}})
        result = engine.map("db", square_or_fail, list(range(1, 51)), workers=2)
        assert [p.items for p in result.partitions] == [25, 25]
        assert {(p.worker, p.pid) for p in result.partitions} == set(pids.items())  # one partition per process
        assert (result.succeeded, result.failed) == (43, 7)
        index, message = result.first_error  # type: ignore[misc]
        assert index == 6  # the item 7, counted over the whole batch
        assert message.startswith("ValueError: item 7 refused") and "hunter2" not in message
        report = engine.stats()
        assert report["total"]["db"]["leases_total"] == 50 and report["total"]["db"]["processes"] == 2
        engine.close_pools()
        assert engine.stats()["total"] == {}  # the plugin is gone, and with it the pools
