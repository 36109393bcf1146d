"""benchmarks/bench_scale.py builds its command line and its configurations without a server (it is never run here)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_scale.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.path[:] = path  # the script puts the repository first in sys.path, as scripts run from anywhere must


def test_defaults_and_quick(bench: ModuleType) -> None:
    full = bench.parse_args([])
    quick = bench.parse_args(["--quick"])
    assert (full.rounds, full.items, full.threads, full.splits) == (7, 10000, 8, ["total", "per-process"])
    assert (quick.rounds, quick.items) == (3, 4000)
    assert bench.parse_args(["--quick", "--rounds", "1", "--items", "50"]).rounds == 3  # medians need rounds
    assert bench.parse_args(["--split", "total"]).splits == ["total"]


def test_same_threads_in_all_are_split_evenly(bench: ModuleType) -> None:
    setups = bench.split_setups("total", threads=8, pgbouncer=True)
    assert [(s.label, s.processes, s.threads) for s in setups] == [
        ("threads, direct", 1, 8), ("threads, pgbouncer", 1, 8),
        ("dask x1, direct", 1, 8), ("dask x1, pgbouncer", 1, 8),
        ("dask x2, direct", 2, 4), ("dask x2, pgbouncer", 2, 4),
        ("dask x4, direct", 4, 2), ("dask x4, pgbouncer", 4, 2),
    ]
    assert {s.total_threads for s in setups} == {8}
    assert [s.route for s in bench.split_setups("total", threads=8, pgbouncer=False)] == ["direct"] * 4


def test_per_process_threads_grow_with_the_processes(bench: ModuleType) -> None:
    setups = bench.split_setups("per-process", threads=8, pgbouncer=False)
    assert [(s.processes, s.total_threads) for s in setups] == [(1, 8), (1, 8), (2, 16), (4, 32)]


def test_both_tables_share_their_one_process_rows(bench: ModuleType) -> None:
    matrix = bench.build_matrix(["total", "per-process"], threads=8, pgbouncer=True)
    distinct = bench.distinct(matrix)
    assert len(distinct) == 12  # 16 rows, of which 4 (threads and dask x1, both routes) are the same configuration
    assert distinct[:8] == matrix["total"]


def test_the_configuration_checks(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="threads must split evenly"):
        bench.split_setups("total", threads=6, pgbouncer=True)
    assert bench.split_setups("per-process", threads=6, pgbouncer=True)[-1].total_threads == 24
    with pytest.raises(ValueError, match="split must be one of"):
        bench.split_setups("sideways", threads=8, pgbouncer=True)
    with pytest.raises(SystemExit):
        bench.parse_args(["--threads", "6"])  # both tables by default: 6 does not split over 4 processes
    with pytest.raises(SystemExit):
        bench.parse_args(["--bouncer-pool", "0"])


def test_pool_config_is_valid_and_behind_pgbouncer_says_so(bench: ModuleType) -> None:
    from syncpool.config import parse_config

    direct = parse_config(bench.pool_config("host=db user=app", threads=4, pgbouncer=False))
    behind = parse_config(bench.pool_config("host=bouncer user=app", threads=2, pgbouncer=True))
    assert "pgbouncer" not in direct.options and behind.options["pgbouncer"] is True
    assert (behind.pool["min_size"], behind.pool["max_size"]) == (2, 2)
