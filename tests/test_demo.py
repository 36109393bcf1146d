"""``python -m syncpool demo``: the batch job on embedded defaults, and its command line."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import syncpool.demo
from syncpool.demo import DemoConfig, DemoError, format_client_stats, format_pool_stats, run_demo

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "syncpool", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_help() -> None:
    result = _run("--help")
    assert result.returncode == 0 and "demo" in result.stdout
    result = _run("demo", "--help")
    assert result.returncode == 0
    for option in ("--records", "--workers", "--pool-size", "--postgres", "--s3-endpoint", "--elasticsearch"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--records", "-5"], "--records"),
        (["--workers", "abc"], "--workers"),
        (["--pool-size", "0"], "--pool-size"),
        (["--s3-endpoint", "localhost:9000"], "--s3-endpoint"),
        (["--postgres", "host=db password=secret 'oops"], "--postgres"),
        (["--no-such-option"], "no-such-option"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(args: list[str], fragment: str) -> None:
    result = _run("demo", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and fragment in lines[0], result.stderr
    assert "secret" not in result.stderr + result.stdout
    _no_traceback(result)


def test_no_command_is_an_error() -> None:
    result = _run()
    assert result.returncode == 2
    _no_traceback(result)


def test_unreachable_postgres_fails_fast_in_one_line() -> None:
    started = time.monotonic()
    result = _run("demo", "--postgres", "host=127.0.0.1 port=1 user=x password=secret dbname=x", timeout=30)
    assert time.monotonic() - started < 15
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == ["error: cannot reach PostgreSQL at 127.0.0.1:1: connection refused"], result.stderr
    assert "secret" not in result.stdout + result.stderr
    _no_traceback(result)


def test_unreachable_elasticsearch_fails_fast_in_one_line() -> None:
    result = _run("demo", "--elasticsearch", "http://user:hunter2@127.0.0.1:1", timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot reach Elasticsearch at http://"), result.stderr
    assert errors[0].endswith("127.0.0.1:1: connection refused"), result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    _no_traceback(result)


def test_a_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "moto" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DemoError, match=r'needs moto: pip install "syncpool\[demo\]"'):
        run_demo(DemoConfig(records=1))
    run_demo_config = DemoConfig(s3_endpoint="http://127.0.0.1:1", postgres="host=x")  # moto not needed then
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(DemoError, match="psycopg, boto3, elasticsearch:"):
        run_demo(run_demo_config)


@pytest.mark.slow
def test_the_demo_loads_everything_and_prints_the_tables() -> None:
    result = _run("demo", "--records", "200", "--workers", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "Pool stats" in out and "Client stats" in out
    for line in ("postgres rows", "s3 objects", "elasticsearch docs"):
        assert any(row.startswith(line) and row.split()[-3:] == ["200", "200", "yes"] for row in out.splitlines())
    for pool in ("postgres", "s3", "elasticsearch"):
        assert any(row.split()[:1] == [pool] for row in out.splitlines())
    assert "put_object" in out and "execute" in out and "index" in out
    _no_traceback(result)


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.elasticsearch
def test_a_store_with_failures_is_reported_and_the_others_still_load(
    postgres_server: Any, s3_server: Any, elasticsearch_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = postgres_server.password
    real_index = syncpool.demo._index_document

    def index_or_fail(es: Any, order: dict[str, Any]) -> None:
        if order["order_id"] in (3, 9):
            raise ValueError(f"rejected order {order['order_id']} (password={password})")
        real_index(es, order)

    monkeypatch.setattr(syncpool.demo, "_index_document", index_or_fail)
    credentials = s3_server.client_kwargs()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials.get("aws_access_key_id", "testing"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials.get("aws_secret_access_key", "testing"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", credentials.get("region_name") or "us-east-1")
    out, err = io.StringIO(), io.StringIO()
    config = DemoConfig(
        records=20, workers=2, postgres=postgres_server.dsn, s3_endpoint=s3_server.endpoint_url,
        elasticsearch=elasticsearch_node.url, bucket="syncpool-demo-failures",
    )
    assert run_demo(config, out=out, err=err) == 1
    lines = err.getvalue().splitlines()
    assert any(line.split()[:4] == ["postgres", "20", "ok,", "0"] for line in lines), lines
    assert any(line.split()[:4] == ["s3", "20", "ok,", "0"] for line in lines), lines
    assert any(line.split()[:4] == ["elasticsearch", "18", "ok,", "2"] for line in lines), lines
    assert any(
        line.split(None, 1)[1] == "pool 'elasticsearch': 2 of 20 items failed (18 succeeded); first failure at "
        "index 2: ValueError: rejected order 3 (password=***)"
        for line in lines if line.strip().startswith("elasticsearch")
    ), lines
    assert lines[-1] == "error: some orders did not arrive (see above)"
    assert password not in out.getvalue() + err.getvalue()


def test_tables_format_stats() -> None:
    pool_stats = {
        "name": "pg", "size": 2, "idle": 1, "in_use": 1, "max_size": 4, "leases_total": 10, "leases_waited": 2,
        "wait_time": {"count": 2, "p50": 0.001, "p99": 0.002}, "connections_discarded": 0, "connect_errors": 1,
    }
    table = format_pool_stats([pool_stats]).splitlines()
    assert table[0].split()[:3] == ["pool", "size", "idle"]
    assert table[2].split() == ["pg", "2", "1", "1", "4", "10", "2", "1.00", "2.00", "0", "1"]
    latency = {"count": 3, "p50": 0.0005, "p99": 0.004}
    method = {"operations": 3, "errors": 1, "ops_per_sec": 1.5, "latency": latency}
    client_stats = {"name": "pg", **method, "methods": {"execute": method}}
    rows = format_client_stats([client_stats, {}]).splitlines()
    assert rows[2].split() == ["pg", "(all)", "3", "1", "1.5", "0.50", "4.00"]
    assert rows[3].split()[1] == "execute"


# -- the dask engine ---------------------------------------------------------------------------------------------------


def test_engine_options_are_listed() -> None:
    result = _run("demo", "--help")
    assert result.returncode == 0
    for option in ("--engine", "--processes", "--scheduler"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--engine", "spark"], "--engine"),
        (["--processes", "2"], "--engine dask"),
        (["--scheduler", "tcp://127.0.0.1:8786"], "--engine dask"),
        (["--engine", "dask", "--processes", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
        (["--engine", "dask", "--processes", "0"], "--processes"),
    ],
)
def test_bad_engine_arguments_give_one_line_and_status_2(args: list[str], fragment: str) -> None:
    result = _run("demo", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and fragment in lines[0], result.stderr
    _no_traceback(result)


def test_demo_config_checks_the_engine() -> None:
    with pytest.raises(ValueError, match="engine must be one of threads, dask"):
        DemoConfig(engine="spark")
    with pytest.raises(ValueError, match="processes must be >= 1"):
        DemoConfig(engine="dask", processes=0)
    with pytest.raises(ValueError, match="scheduler needs engine='dask'"):
        DemoConfig(scheduler="tcp://127.0.0.1:8786")


def test_an_unreachable_dask_scheduler_fails_fast_in_one_line() -> None:
    pytest.importorskip("distributed")
    started = time.monotonic()
    result = _run("demo", "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1", timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == ["error: cannot reach the Dask scheduler at tcp://127.0.0.1:1: connection refused"], result.stderr
    assert "PostgreSQL" not in result.stderr  # no server was started for nothing
    _no_traceback(result)


@pytest.mark.slow
def test_the_demo_on_dask_worker_processes() -> None:
    pytest.importorskip("distributed")
    result = _run("demo", "--engine", "dask", "--processes", "2", "--records", "200", "--workers", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout.splitlines()
    for line in ("postgres rows", "s3 objects", "elasticsearch docs"):
        assert any(row.startswith(line) and row.split()[-3:] == ["200", "200", "yes"] for row in out)
    assert "2 worker processes" in result.stderr
    first = next(n for n, row in enumerate(out) if row.startswith("Pool stats"))
    last = next(n for n, row in enumerate(out) if row.startswith("Client stats"))
    pool_rows = [row.split() for row in out[first:last]]
    for pool in ("postgres", "s3", "elasticsearch"):
        workers = [row for row in pool_rows if row and row[0].endswith(f"/{pool}") and row[0].startswith("127.0.0.1:")]
        assert len({row[0] for row in workers}) == 2, workers  # one row per worker process
        assert sum(int(row[5]) for row in workers) == 200  # the leases column: every order, once
        total = next(row for row in pool_rows if row and row[0] == f"total/{pool}")
        assert total[4] == "4" and total[5] == "200"  # max: 2 processes x pool size 2
    assert any(row.split()[:2] == ["total/s3", "put_object"] for row in out)
    _no_traceback(result)
