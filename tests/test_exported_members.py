import subprocess
import sys

import syncpool


def test_all_is_sorted_and_complete() -> None:
    assert syncpool.__all__ == sorted(syncpool.__all__)
    public = {name for name in dir(syncpool) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(syncpool, name)).__name__ == "module"}
    assert public - modules - {"annotations"} == set(syncpool.__all__)


def test_every_exported_name_is_documented() -> None:
    for name in syncpool.__all__:
        assert getattr(syncpool, name).__doc__, name


def test_import_needs_no_client_library() -> None:
    code = (
        "import sys, syncpool, syncpool.connectors\n"
        "heavy = [m for m in ('psycopg', 'boto3', 'botocore', 'elasticsearch', 'moto', 'prometheus_client',"
        " 'opentelemetry') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
