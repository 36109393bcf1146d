"""``ConnectionPool[CT]`` and ``NullConnectionPool[CT]`` are generic as psycopg_pool's are, at run time and for mypy.

Run time: frameworks evaluate annotations (``typing.get_type_hints``, pydantic, FastAPI's dependencies), so
``ConnectionPool[MyConnection]`` must be a valid expression. Type checking: the connection class flows from
``connection_class`` to ``connection()`` and ``getconn()``; the same snippet is checked against psycopg_pool's
classes and ours, and mypy must reveal the same types.
"""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import pytest

import syncpool
import syncpool.postgres

MODULES = {"psycopg_pool": psycopg_pool, "syncpool": syncpool.postgres}


class MyConnection(psycopg.Connection[Any]):
    pass


@pytest.fixture(params=list(MODULES))
def module(request: pytest.FixtureRequest) -> Any:
    return MODULES[request.param]


def test_subscripted_pools_are_valid_annotations(module: Any) -> None:
    for cls in (module.ConnectionPool, module.NullConnectionPool):
        alias = cls[MyConnection]
        assert typing.get_origin(alias) is cls
        assert typing.get_args(alias) == (MyConnection,)

        def handler(pool: alias) -> alias:  # type: ignore[valid-type]
            return pool

        hints = typing.get_type_hints(handler, localns={"alias": alias})
        assert hints == {"pool": alias, "return": alias}

        @dataclass
        class Settings:
            pool: cls[MyConnection]  # type: ignore[valid-type]

        assert typing.get_type_hints(Settings, localns={"cls": cls, "MyConnection": MyConnection}) == {"pool": alias}


def test_syncpool_pools_are_generic_subclasses() -> None:
    from syncpool.postgres import ConnectionPool, NullConnectionPool

    assert issubclass(NullConnectionPool, ConnectionPool)
    assert issubclass(ConnectionPool, syncpool.Pool)
    pool: ConnectionPool[MyConnection] = ConnectionPool[MyConnection]("", connection_class=MyConnection, open=False)
    assert isinstance(pool, ConnectionPool) and pool.connection_class is MyConnection


def test_pydantic_validates_a_field_annotated_with_a_subscripted_pool(module: Any) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Resources(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
        pool: module.ConnectionPool[MyConnection]  # type: ignore[name-defined]
        null_pool: module.NullConnectionPool[MyConnection]  # type: ignore[name-defined]

    pool = module.ConnectionPool("", connection_class=MyConnection, open=False)
    null_pool = module.NullConnectionPool("", connection_class=MyConnection, open=False)
    assert Resources(pool=pool, null_pool=null_pool).pool is pool
    with pytest.raises(pydantic.ValidationError):
        Resources(pool=object(), null_pool=null_pool)


SNIPPET = """
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

from {module} import ConnectionPool, NullConnectionPool


class MyConnection(psycopg.Connection[Any]):
    pass


def configure(conn: MyConnection) -> None: ...


plain = ConnectionPool("", open=False)
with plain.connection() as conn:
    reveal_type(conn)  # 1
mine = ConnectionPool("", connection_class=MyConnection, configure=configure, check=configure, open=False)
reveal_type(mine.getconn())  # 2
with mine.connection() as conn2:
    reveal_type(conn2)  # 3
dicts = ConnectionPool("", connection_class=psycopg.Connection[DictRow], kwargs={{"row_factory": dict_row}}, open=False)
with dicts.connection() as conn3:
    reveal_type(conn3.execute("SELECT 1").fetchone())  # 4
null = NullConnectionPool("", connection_class=MyConnection, open=False)
with null.connection() as conn4:
    reveal_type(conn4)  # 5
annotated: ConnectionPool[MyConnection] = mine
wrong: ConnectionPool[MyConnection] = plain  # error: the connection class is part of the type
"""


def _mypy(tmp_path: Path, module: str) -> tuple[list[str], list[str]]:
    """Type-check the snippet against ``module``; return the revealed types and the error lines."""
    source = tmp_path / f"snippet_{module.replace('.', '_')}.py"
    source.write_text(SNIPPET.format(module=module))
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n")
    root = Path(syncpool.__file__).resolve().parents[1]  # the syncpool under test, ahead of any installed one
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
         str(source)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**_environment(), "MYPYPATH": str(root)},
    )
    lines = result.stdout.splitlines()
    revealed = [m.group(1) for line in lines if (m := re.search(r'Revealed type is "(.*)"', line))]
    errors = [line for line in lines if line.startswith(source.name) and ": error:" in line]
    return [re.sub(r"snippet_\w+\.", "", text) for text in revealed], errors


def _environment() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "MYPYPATH"}


@pytest.mark.slow
def test_mypy_sees_the_connection_class_as_with_psycopg_pool(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    theirs, their_errors = _mypy(tmp_path, "psycopg_pool")
    ours, our_errors = _mypy(tmp_path, "syncpool.postgres")
    assert ours == theirs
    assert len(ours) == 5
    assert ours[0].startswith("psycopg.connection.Connection[")  # the default: rows as tuples
    assert ours[1] == ours[2] == ours[4] == "MyConnection"
    assert ours[3].startswith("dict[str, Any]")  # the row type of Connection[DictRow]
    # One error each, on the line assigning a pool of plain connections to a pool of MyConnection.
    assert len(our_errors) == 1 and "Incompatible types in assignment" in our_errors[0], our_errors
    assert len(their_errors) == 1 and "Incompatible types in assignment" in their_errors[0], their_errors
