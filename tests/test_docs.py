"""The documentation: its code examples run, its reference tables match the code, and the site builds strictly.

Every ```python block in ``docs/*.md`` runs in its own subprocess, in a temporary directory, unless the line just
before its fence is a skip marker saying why::

    <!-- skip: installs a signal handler in the test process -->

A block that needs a server says so on that line instead; the test starts the server (the fixtures of
:mod:`syncpool.testing`) and hands it to the example through environment variables, the way a deployed application
gets its settings, so the example's code is exactly what readers see::

    <!-- needs: postgres -->
    <!-- needs: s3, elasticsearch -->
    <!-- needs: postgres; continues the previous block -->

The last form runs the page's previous block first, in the same process (for a block that uses its ``pool``).
What each server provides:

- ``postgres``: libpq's ``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD`` and ``PGDATABASE=app`` reach a database
  ``app``, created afresh for each block, holding the tables of :data:`POSTGRES_SCHEMA`; ``DB_PASSWORD_FILE`` names a
  file holding the same password.
- ``s3``: boto3's ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_DEFAULT_REGION``
  reach an S3 endpoint (moto) where the buckets of :data:`S3_BUCKETS` exist.
- ``elasticsearch``: ``ELASTICSEARCH_HOSTS`` holds the node's URL (a comma-separated list, in general) and
  ``ES_API_KEY_FILE`` names a file holding the API key the node then requires.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from syncpool import Backoff, Pool
from syncpool.pool import EVENTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Tables of the ``app`` database that ``needs: postgres`` blocks find.
POSTGRES_SCHEMA = (
    "CREATE TABLE jobs (id serial PRIMARY KEY, state text NOT NULL)",
    "CREATE TABLE t (x integer)",
)
#: Buckets that ``needs: s3`` blocks find.
S3_BUCKETS = ("uploads",)
SERVERS = ("postgres", "pgbouncer", "s3", "elasticsearch")

_FENCE = re.compile(r"^```python[^\n]*\n(?P<code>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>.+?)\s*-->\s*$")
_NEEDS = re.compile(r"<!--\s*needs:\s*(?P<servers>[^;]+?)\s*(?P<continues>;\s*continues the previous block)?\s*-->\s*$")


def _blocks() -> list[Any]:
    params = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        previous: tuple[str, tuple[str, ...]] | None = None  # the page's last block: code to run before, needs
        for number, match in enumerate(_FENCE.finditer(text), start=1):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            code, needs, marks = match.group("code"), (), []
            if skip := _SKIP.search(before):
                marks.append(pytest.mark.skip(reason=skip.group("reason")))
            elif needed := _NEEDS.search(before):
                needs = tuple(name.strip() for name in needed.group("servers").split(","))
                if needed.group("continues"):
                    assert previous is not None, f"docs/{page.name}:{line - 1}: no previous block to continue"
                    code = previous[0] + "\n" + code
                    needs = tuple(dict.fromkeys(previous[1] + needs))
            params.append(pytest.param(page.name, line, code, needs, marks=marks, id=f"{page.stem}-{number}"))
            previous = (code, needs)
    return params


def _postgres_environment(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    import psycopg

    server = request.getfixturevalue("postgres_server")
    server.execute("DROP DATABASE IF EXISTS app WITH (FORCE)")
    server.execute("CREATE DATABASE app")
    with psycopg.connect(server.dsn, dbname="app", autocommit=True) as conn:
        for statement in POSTGRES_SCHEMA:
            conn.execute(statement)
    password_file = tmp_path / "db-password"
    password_file.write_text(server.password + "\n", encoding="utf-8")
    return {
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": server.user,
        "PGPASSWORD": server.password,
        "PGDATABASE": "app",
        "DB_PASSWORD_FILE": str(password_file),
    }


def _s3_environment(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    import boto3.session

    server = request.getfixturevalue("s3_server")
    client = boto3.session.Session().client("s3", **server.client_kwargs())
    try:
        existing = {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
        for bucket in S3_BUCKETS:
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)
    finally:
        client.close()
    return {
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_DEFAULT_REGION": server.region,
        # Nothing from the machine's own AWS configuration: only the endpoint above.
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }


def _elasticsearch_environment(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    node = request.getfixturevalue("elasticsearch_node")
    api_key = secrets.token_urlsafe(24)
    node.set_auth(api_key=api_key)  # turned off again by the fixture after the test
    key_file = tmp_path / "es-api-key"
    key_file.write_text(api_key + "\n", encoding="utf-8")
    return {"ELASTICSEARCH_HOSTS": node.url, "ES_API_KEY_FILE": str(key_file)}


def _pgbouncer_environment(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """libpq's variables pointing at a PgBouncer (transaction mode) in front of the test PostgreSQL server."""
    bouncer = request.getfixturevalue("pgbouncer_server")
    password_file = tmp_path / "db-password"
    password_file.write_text(bouncer.password + "\n", encoding="utf-8")
    return {
        "PGHOST": bouncer.host,
        "PGPORT": str(bouncer.port),
        "PGUSER": bouncer.user,
        "PGPASSWORD": bouncer.password,
        "PGDATABASE": bouncer.dbname,
        "DB_PASSWORD_FILE": str(password_file),
    }


_ENVIRONMENTS = {
    "postgres": _postgres_environment,
    "pgbouncer": _pgbouncer_environment,
    "s3": _s3_environment,
    "elasticsearch": _elasticsearch_environment,
}


@pytest.mark.parametrize(("page", "line", "code", "needs"), _blocks())
def test_example_runs(
    page: str, line: int, code: str, needs: tuple[str, ...], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for server in needs:
        assert server in _ENVIRONMENTS, f"docs/{page}:{line - 1}: unknown server {server!r}, not one of {SERVERS}"
        env.update(_ENVIRONMENTS[server](request, tmp_path))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"docs/{page}, block at line {line} failed:\n{result.stderr[-3000:]}"


def test_every_marker_precedes_a_block() -> None:
    for page in DOCS.glob("*.md"):
        lines = page.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if _SKIP.search(line) or _NEEDS.search(line):
                following = lines[index + 1] if index + 1 < len(lines) else ""
                assert following.startswith("```python"), f"docs/{page.name}:{index + 1}: marker without a block"
            elif re.search(r"<!--\s*(skip|needs)\b", line):
                raise AssertionError(f"docs/{page.name}:{index + 1}: malformed marker {line.strip()!r}")


def test_no_example_is_skipped_for_want_of_a_server() -> None:
    for param in _blocks():
        for mark in param.marks:
            reason = mark.kwargs.get("reason", "")
            assert not re.search(r"postgres|s3|elasticsearch", reason, re.IGNORECASE), (
                f"docs/{param.values[0]}:{param.values[1]} is skipped ({reason}): say what it needs instead"
            )


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


# -- the site and its API pages ----------------------------------------------------------------------------------

# A Sphinx role (``:class:`Pool```) is raw text on a mkdocstrings page; cross-references are written
# [`Pool.close`][] (resolved in the docstring's scope: mkdocs.yml's scoped_crossrefs) or [`close`][Pool.close].
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|const|mod|exc|obj|ref|term):`")
_RAW_ROLE_IN_HTML = re.compile(r":(?:class|meth|func|attr|data|const|mod|exc|obj):")
# A cross-reference, or a code span (which may hold brackets that are not one: ``rows[0][1]``).
_LINK_OR_CODE = re.compile(
    r"(?P<link>\[(?P<title>`[^`\n]+`|[^\]`\[\n]+)\]\[(?P<identifier>[\w.]*)\])|``.*?``|`[^`\n]*`", re.DOTALL
)
_FENCED = re.compile(r"^\s*```.*?^\s*```", re.MULTILINE | re.DOTALL)

# Modules with no API entry: the pool's own parts (docs/design.md describes them), the demo and the command line.
_INTERNAL_MODULES = frozenset({
    "syncpool.__main__", "syncpool._secrets", "syncpool.breaker", "syncpool.checks", "syncpool.demo",
    "syncpool.demo_dask", "syncpool.events", "syncpool.forking", "syncpool.growth", "syncpool.inventory",
    "syncpool.leasing", "syncpool.maintenance", "syncpool.members", "syncpool.options", "syncpool.pool_stats",
    "syncpool.scheduler", "syncpool.testing.external", "syncpool.waiters",
    "syncpool.connectors.postgres_compat",  # the connector of syncpool.postgres.ConnectionPool, not used alone
    "syncpool.testing.watchdog",  # how the test servers stop when their owner dies
})
# Names that public modules export for syncpool's own use (the pool's argument handling, the pytest plugin).
_INTERNAL_NAMES = frozenset({
    "syncpool.connector.as_connector", "syncpool.testing.pgbouncer.INSTALL_HINT",
    "syncpool.testing.pgbouncer.find_pgbouncer",
})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built once per module by ``mkdocs build --strict``."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    mkdocs = shutil.which("mkdocs")
    command = [mkdocs] if mkdocs else [sys.executable, "-m", "mkdocs"]
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [*command, "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    if result.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed:\n{result.stderr[-5000:]}")
    return site_dir


def _inventory(site: Path) -> set[str]:
    """Every identifier the site's cross-references can resolve (objects.inv, aliases included)."""
    header, _, _, _, body = (site / "objects.inv").read_bytes().split(b"\n", 4)
    assert header == b"# Sphinx inventory version 2"
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def _python_files() -> list[Path]:
    return sorted((ROOT / "syncpool").rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _links(text: str) -> list[tuple[str, str]]:
    """The ``(title, identifier)`` of each cross-reference in Markdown text, outside code."""
    text = _FENCED.sub("", text)
    return [
        (match["title"], match["identifier"]) for match in _LINK_OR_CODE.finditer(text) if match["link"]
    ]


def test_mkdocs_builds_strictly(site: Path) -> None:
    assert (site / "index.html").exists()
    assert (site / "api" / "pool" / "index.html").exists()


def test_no_sphinx_role_in_docstrings() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _python_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if _SPHINX_ROLE.search(line)
    ]
    assert not found, "Sphinx roles show as raw text on the API pages; write [`Name`][] instead:\n" + "\n".join(found)


def test_no_rest_literal_block_in_docstrings() -> None:
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}"
                          for line in node.value.value.splitlines() if line.rstrip().endswith("::")]
    assert not found, "'text::' shows as written on the API pages; use a ``` fence:\n" + "\n".join(found)


def test_docstring_cross_references_resolve(site: Path) -> None:
    """Every cross-reference in a docstring, rendered on the site or not, names an object the site documents.

    The strict build checks the docstrings it renders; this checks the others too (private names, the pool's parts),
    resolving each identifier the way mkdocstrings-python's ``scoped_crossrefs`` does: its first name as Python
    would see it from the docstring's object.
    """
    griffe = pytest.importorskip("griffe")
    inventory = _inventory(site)
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)])
    package = loader.load("syncpool")

    def expand(obj: Any, identifier: str) -> str:
        first, dot, rest = identifier.partition(".")
        try:
            first = obj.resolve(first)
        except Exception:  # noqa: BLE001 - unresolved names stay as written, as mkdocstrings leaves them
            pass
        return first + dot + rest

    def objects(obj: Any) -> Any:
        yield obj
        for member in obj.members.values():
            if not member.is_alias:
                yield from objects(member)

    unresolved, checked = [], 0
    for obj in objects(package):
        for title, identifier in _links(obj.docstring.value if obj.docstring else ""):
            checked += 1
            expanded = expand(obj, identifier or title.strip("`"))
            if expanded not in inventory:
                unresolved.append(f"{obj.path}: [{title}][{identifier}] -> {expanded}")
    for path in _python_files():  # attribute documentation left in ``#:`` comments, resolved in its module
        module = loader.modules_collection[_module_name(path)]
        comments = "\n".join(line.strip()[2:] for line in path.read_text(encoding="utf-8").splitlines()
                             if line.strip().startswith("#:"))
        for title, identifier in _links(comments):
            checked += 1
            expanded = expand(module, identifier or title.strip("`"))
            if expanded not in inventory:
                unresolved.append(f"{path.relative_to(ROOT)} (#: comment): [{title}][{identifier}] -> {expanded}")
    assert checked > 100, f"only {checked} cross-references found: is the pattern still right?"
    assert not unresolved, "cross-references to nothing on the site:\n" + "\n".join(unresolved)


def test_api_pages_show_no_raw_markup(site: Path) -> None:
    pages = sorted((site / "api").glob("*/index.html"))
    assert len(pages) >= 10
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not _RAW_ROLE_IN_HTML.search(text), f"{page.relative_to(site)} shows a Sphinx role as text"
        assert not re.search(r"\w::</p>", text), f"{page.relative_to(site)} shows a reST literal-block marker"


def test_api_pool_page_links_to_other_api_pages(site: Path) -> None:
    text = (site / "api" / "pool" / "index.html").read_text(encoding="utf-8")
    assert not _RAW_ROLE_IN_HTML.search(text)
    targets = set(re.findall(r'<a class="autorefs autorefs-internal"[^>]* href="\.\./(\w+)/#syncpool\.', text))
    assert {"connectors", "errors", "monitoring"} <= targets, targets


def test_every_public_name_is_on_the_api_pages(site: Path) -> None:
    """What ``import syncpool`` exports, and every name a public module exports, has an entry on the API pages."""
    import syncpool

    inventory = _inventory(site)
    missing = [f"syncpool.{name}" for name in syncpool.__all__ if f"syncpool.{name}" not in inventory]
    for path in _python_files():
        module = _module_name(path)
        if module in _INTERNAL_MODULES:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "__all__" for target in node.targets):
                names = ast.literal_eval(node.value)
                missing += [f"{module}.{name}" for name in names
                            if f"{module}.{name}" not in inventory and f"{module}.{name}" not in _INTERNAL_NAMES]
    assert not missing, "public names with no API entry (add them to a docs/api page):\n" + "\n".join(missing)
