"""syncpool.processes: each worker process of a process pool, Celery or gunicorn opens its own pools and closes them.

Every test proves the same three things from outside the worker processes, with a journal the connector writes
(see tests/scaling_helpers.py): each process opens its own connections, no PostgreSQL backend is used by two
processes, and each process closes every connection it opened before it ends.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from syncpool import processes, registry
from tests.scaling_helpers import backend_of, journal_line, read_journal

ROOT = Path(__file__).resolve().parent.parent
START_METHODS = [method for method in ("fork", "spawn", "forkserver") if method in multiprocessing.get_all_start_methods()]


def _pools(dsn: str, journal: Path, application_name: str) -> dict[str, Any]:
    return {"db": {
        "connector": "callable:tests.scaling_helpers:JournalingPostgresConnector",
        "options": {"conninfo": dsn, "journal": str(journal), "application_name": application_name},
        "pool": {"max_size": 2, "timeout": 30.0},
    }}


def _check(journal: Path, results: list[tuple[int, int, int]], postgres_server: Any, application_name: str,
           *, parent_backends: frozenset[int] = frozenset()) -> None:
    events = read_journal(journal)
    task_pids = {pid for _, pid, _ in results}
    assert os.getpid() not in task_pids
    owners: dict[int, set[int]] = {}
    for pid, seen in events.items():
        for backend in seen["open"]:
            owners.setdefault(int(backend), set()).add(pid)
    assert all(len(pids) == 1 for pids in owners.values()), owners  # no backend opened by two processes
    for _, pid, backend in results:
        assert owners.get(backend) == {pid}, (pid, backend)  # each task used its own process's connection
        assert backend not in parent_backends
    for pid in task_pids:
        assert events[pid]["close"] == events[pid]["open"], events[pid]  # all closed by the process itself
    # A backend leaves pg_stat_activity a moment after its client said goodbye.
    deadline = time.monotonic() + 15.0
    while (sessions := _sessions(postgres_server, application_name)) != len(parent_backends):
        assert time.monotonic() < deadline, f"{sessions} sessions left, expected {len(parent_backends)}"
        time.sleep(0.05)


def _sessions(postgres_server: Any, application_name: str) -> int:
    rows = postgres_server.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
    )
    return int(rows[0][0])


def _run_in_processes(kind: str, method: str, pools: dict[str, Any]) -> list[tuple[int, int, int]]:
    context = multiprocessing.get_context(method)
    if kind == "executor":
        with ProcessPoolExecutor(2, mp_context=context, initializer=processes.init_process,
                                 initargs=(pools,)) as executor:
            return list(executor.map(backend_of, range(30)))
    pool = context.Pool(2, initializer=processes.init_process, initargs=(pools,))
    try:
        return pool.map(backend_of, range(30), chunksize=1)
    finally:
        pool.close()  # not terminate(), which kills the workers before they can close anything
        pool.join()


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("kind", ["executor", "multiprocessing"])
def test_the_initializer_gives_each_worker_process_its_own_pools(
    kind: str, method: str, postgres_server: Any, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    application_name = f"syncpool-procs-{uuid.uuid4().hex[:8]}"
    results = _run_in_processes(kind, method, _pools(postgres_server.dsn, journal, application_name))
    assert sorted(n for n, _, _ in results) == list(range(30))
    _check(journal, results, postgres_server, application_name)


@pytest.mark.parametrize("kind", ["executor", "multiprocessing"])
def test_forked_workers_take_over_the_parents_pools_and_never_touch_its_connections(
    kind: str, postgres_server: Any, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    application_name = f"syncpool-procs-{uuid.uuid4().hex[:8]}"
    pools = _pools(postgres_server.dsn, journal, application_name)
    # The parent uses the same pool, from the registry, and forks with one connection idle in it.
    pool = registry.get_pool("db", pools["db"])
    try:
        _, _, parent_backend = backend_of(0)
        results = _run_in_processes(kind, "fork", pools)
        # Each child closed the copy it inherited (emptied at the fork), with the connections it opened itself.
        _check(journal, results, postgres_server, application_name, parent_backends=frozenset({parent_backend}))
        assert backend_of(1)[2] == parent_backend  # still open and usable: no child closed it
    finally:
        pool.close()
    assert read_journal(journal)[os.getpid()]["close"] == {str(parent_backend)}


# -- server hooks ----------------------------------------------------------------------------------------------------
# The recipes of docs/scaling.md, as written there (the configuration is set by each test).

POOLS: dict[str, Any] = {}


def open_pools(**kwargs: Any) -> None:  # Celery: @worker_process_init.connect
    processes.init_process(POOLS)


def close_pools(**kwargs: Any) -> None:  # Celery: @worker_process_shutdown.connect
    processes.shutdown_process()


def post_fork(server: Any, worker: Any) -> None:  # gunicorn.conf.py
    processes.init_process(POOLS)


def worker_exit(server: Any, worker: Any) -> None:  # gunicorn.conf.py
    processes.shutdown_process()


def _forked_worker(journal: Path, start: Any, work: Any, stop: Any) -> int:
    """Fork a child that calls ``start()``, runs tasks, calls ``stop()`` and then ends without any exit hook
    (``os._exit``), so that only the server's hook can have closed its pools. Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        start()
        pool = registry.get_pool("db")
        for n in range(5):
            _, _, backend = work(n)
            journal_line(str(journal), "task", backend)
        stop()
        journal_line(str(journal), "teardown", pool.state)
        status = 0
    finally:
        os._exit(status)


def _wait(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _check_forked(journal: Path, children: list[int], postgres_server: Any, application_name: str) -> None:
    events = read_journal(journal)
    results = [(0, pid, int(backend)) for pid in children for backend in events[pid]["task"]]
    for pid in children:
        assert events[pid]["teardown"] == {"closed"}  # the hook closed them, before the process ended
    _check(journal, results, postgres_server, application_name)


@pytest.fixture
def hook_config(postgres_server: Any, tmp_path: Path) -> Any:
    application_name = f"syncpool-hooks-{uuid.uuid4().hex[:8]}"
    journal = tmp_path / "journal"
    POOLS.clear()
    POOLS.update(_pools(postgres_server.dsn, journal, application_name))
    yield SimpleNamespace(journal=journal, application_name=application_name)
    POOLS.clear()


def test_celery_worker_process_signals(hook_config: Any, postgres_server: Any) -> None:
    # Celery's prefork pool forks each child, sends worker_process_init in it (sender=None), runs tasks, and sends
    # worker_process_shutdown (sender=None, pid, exitcode) in it before it exits. Receivers get signal= too.
    signal = SimpleNamespace(name="celery.signals.worker_process_init")
    children = [
        _forked_worker(
            hook_config.journal,
            lambda: open_pools(signal=signal, sender=None),
            backend_of,
            lambda: close_pools(signal=signal, sender=None, pid=os.getpid(), exitcode=0),
        )
        for _ in range(2)
    ]
    for pid in children:
        _wait(pid)
    _check_forked(hook_config.journal, children, postgres_server, hook_config.application_name)


def test_gunicorn_post_fork_and_worker_exit(hook_config: Any, postgres_server: Any) -> None:
    # gunicorn's arbiter forks each worker and calls post_fork(arbiter, worker) in the child; when the worker
    # stops, worker_exit(arbiter, worker) runs in the child as it exits.
    arbiter = SimpleNamespace(pid=os.getpid(), num_workers=2)
    children = []
    for age in range(2):
        worker = SimpleNamespace(age=age, ppid=os.getpid())
        children.append(_forked_worker(
            hook_config.journal,
            lambda worker=worker: post_fork(arbiter, worker),
            backend_of,
            lambda worker=worker: worker_exit(arbiter, worker),
        ))
    for pid in children:
        _wait(pid)
    _check_forked(hook_config.journal, children, postgres_server, hook_config.application_name)


# -- the helpers themselves ------------------------------------------------------------------------------------------


SQLITE = {"connector": "sqlite", "options": {"database": ":memory:"}, "pool": {"max_size": 1}}


def test_init_process_opens_once_and_shutdown_closes_what_it_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks: list[Any] = []
    monkeypatch.setattr("atexit.register", lambda *args, **kwargs: hooks.append(("atexit", args, kwargs)))
    monkeypatch.setattr("multiprocessing.util.Finalize", lambda *args, **kwargs: hooks.append(("finalize", args)))
    monkeypatch.setattr(processes, "_hooked_pid", None)
    processes.init_process({"db": SQLITE})
    pool = registry.get_pool("db")
    processes.init_process({"db": SQLITE, "cache": SQLITE})  # adds "cache"; "db" is already open
    assert registry.get_pool("db") is pool and pool.state == "open"
    assert [kind for kind, *_ in hooks] == ["atexit", "finalize"]  # registered once per process
    processes.shutdown_process()
    assert pool.state == "closed" and not processes.held_pools()
    processes.shutdown_process()  # a second call finds nothing to do


def test_init_process_checks_the_configuration_in_the_parent() -> None:
    with pytest.raises(ValueError, match=r"^pools\.db\.connector: unknown connector 'sqlit'"):
        processes.init_process({"db": {"connector": "sqlit"}})
    with pytest.raises(TypeError, match="pools must be a mapping"):
        processes.init_process(["db"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        processes.init_process({"db": SQLITE}, close_timeout=-1.0)
    assert not processes.held_pools()


def test_a_pool_configured_by_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNCPOOL_JOBS_CONNECTOR", "sqlite")
    monkeypatch.setenv("SYNCPOOL_JOBS_DATABASE", str(tmp_path / "jobs.db"))
    names = processes.open_pools({"jobs": None})
    try:
        with registry.get_pool("jobs").connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        processes.close_pools(names)
    assert not processes.held_pools()


def test_describe_pools_masks_secrets() -> None:
    described = processes.describe_pools({
        "db": {"connector": "postgres", "options": {"conninfo": "host=db password=hunter2"}},
        "other": {"connector": "callable:x:y", "options": {"target": "host=db password=hunter3",
                                                              "urls": ["https://u:hunter4@h"]}},
    })
    assert "hunter" not in repr(described)
    assert described["other"]["options"]["urls"] == ["https://u:***@h"]


def test_nothing_but_syncpool_dask_needs_distributed() -> None:
    code = (
        "import sys\n"
        "sys.modules['distributed'] = None  # as if it were not installed\n"
        "import syncpool, syncpool.processes, syncpool.demo, syncpool.demo_dask\n"
        "try:\n"
        "    import syncpool.dask\n"
        "except ImportError as error:\n"
        "    assert 'pip install \"syncpool[dask]\"' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('syncpool.dask imported without distributed')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
