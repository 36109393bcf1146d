"""The documentation: its code examples run, its reference tables match the code, and the site builds strictly.

Every ```python block in ``docs/*.md`` runs in its own subprocess, in a temporary directory, unless the line just
before its fence is a skip marker saying why::

    <!-- skip: needs a PostgreSQL server -->
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syncpool import Backoff, Pool
from syncpool.pool import EVENTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Pages owned by others whose blocks do not carry skip markers yet (they need a PostgreSQL server).
_NOT_RUN = {"migrating-from-psycopg-pool.md"}

_FENCE = re.compile(r"^```python[^\n]*\n(?P<code>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>.+?)\s*-->\s*$")


def _blocks() -> list[pytest.param]:
    params = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(_FENCE.finditer(text), start=1):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            skip = _SKIP.search(before)
            marks = []
            if skip:
                marks.append(pytest.mark.skip(reason=skip.group("reason")))
            elif page.name in _NOT_RUN:
                marks.append(pytest.mark.skip(reason=f"{page.name} is not run (no skip markers)"))
            params.append(pytest.param(page.name, line, match.group("code"), marks=marks,
                                       id=f"{page.stem}-{number}"))
    return params


@pytest.mark.parametrize(("page", "line", "code"), _blocks())
def test_example_runs(page: str, line: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"docs/{page}, block at line {line} failed:\n{result.stderr[-3000:]}"


def test_every_skip_marker_precedes_a_block() -> None:
    for page in DOCS.glob("*.md"):
        lines = page.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if _SKIP.search(line):
                following = lines[index + 1] if index + 1 < len(lines) else ""
                assert following.startswith("```python"), f"docs/{page.name}:{index + 1}: skip marker without a block"


# -- reference tables against the code ----------------------------------------------------------------------------


def _tables(page: str, first_header: str) -> list[list[str]]:
    """Rows of every Markdown table in ``docs/<page>`` whose first header cell is ``first_header``."""
    rows: list[list[str]] = []
    inside = False
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not inside:
            inside = cells[0] == first_header
            continue  # a header row (of this table or of another)
        if not set(cells[0]) <= {"-", " "}:
            rows.append(cells)
    assert rows, f"no table headed {first_header!r} in docs/{page}"
    return rows


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected one `code` span, got {cell!r}"
    return match.group(1)


def test_documented_options_match_the_pool_signature() -> None:
    rows = _tables("options.md", "option")
    documented = {_code(row[0]): row[1] for row in rows}
    parameters = inspect.signature(Pool).parameters
    assert list(documented) == list(parameters), "options.md must list Pool's parameters in signature order"
    for name, default in documented.items():
        parameter = parameters[name]
        if default == "(required)":
            assert parameter.default is inspect.Parameter.empty, name
            continue
        expression = _code(default)
        ast.parse(expression, mode="eval")
        value = eval(expression, {"math": math, "Backoff": Backoff})  # noqa: S307 - our own docs
        assert value == parameter.default and type(value) is type(parameter.default), (
            f"options.md says {name} defaults to {expression}, the signature says {parameter.default!r}"
        )


def test_documented_events_match_pool_events() -> None:
    documented = {_code(row[0]): row[1] for row in _tables("options.md", "event")}
    assert list(documented) == list(EVENTS)


def test_documented_stats_keys_match_stats() -> None:
    keys = [_code(row[0]) for row in _tables("stats.md", "key")]
    reasons = [_code(row[0]) for row in _tables("stats.md", "reason")]
    with Pool(lambda: object(), name="docs-stats", monitor=True) as pool:
        stats = pool.stats()
    assert sorted(keys) == sorted(stats), "stats.md must document every key of Pool.stats(), and no other"
    assert len(keys) == len(set(keys))
    assert reasons == list(stats["discards"])
    assert list(stats["health_checks"]) == ["ok", "failed"]
    text = (DOCS / "stats.md").read_text(encoding="utf-8")
    for histogram in ("wait_time", "use_time", "connect_time"):
        assert all(f"`{field}`" in text for field in stats[histogram]), histogram


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    mkdocs = shutil.which("mkdocs")
    command = [mkdocs] if mkdocs else [sys.executable, "-m", "mkdocs"]
    result = subprocess.run(
        [*command, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "site" / "index.html").exists()
