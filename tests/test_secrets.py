from __future__ import annotations

import logging
import traceback

import pytest

from syncpool import ConnectRejected, Pool
from syncpool._secrets import (
    MASK,
    conninfo_secrets,
    mapping_secrets,
    mask_conninfo,
    mask_mapping,
    mask_url,
    redact,
    scrub_exception,
    url_secrets,
)


@pytest.mark.parametrize(
    ("conninfo", "expected"),
    [
        ("host=db password=hunter2 user=app", "host=db password=*** user=app"),
        ("host=db password = hunter2", "host=db password=***"),
        ("password='with space' dbname=x", "password=*** dbname=x"),
        (r"password='it\'s secret' dbname=x", "password=*** dbname=x"),
        ("sslpassword=keypass sslkey=/k", "sslpassword=*** sslkey=/k"),
        (
            "host=a,b port=1,2 target_session_attrs=read-write",
            "host=a,b port=1,2 target_session_attrs=read-write",
        ),
        ("password='unterminated quote and more", "password=***"),
        ("", ""),
    ],
)
def test_mask_conninfo_key_value(conninfo: str, expected: str) -> None:
    assert mask_conninfo(conninfo) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:hunter2@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgres://app@db/x", "postgres://app@db/x"),
        ("postgresql://app:p%40ss@db/x?sslmode=require", "postgresql://app:***@db/x?sslmode=require"),
        ("postgresql:///x?user=app&password=hunter2", "postgresql:///x?user=app&password=***"),
    ],
)
def test_mask_conninfo_url(url: str, expected: str) -> None:
    assert mask_conninfo(url) == expected


def test_conninfo_secrets_finds_quoted_and_url_values() -> None:
    assert "it's secret" in conninfo_secrets(r"password='it\'s secret'")
    assert "p@ss" in conninfo_secrets("postgresql://u:p%40ss@h/db")
    assert "qq" in conninfo_secrets("postgresql://u@h/db?password=qq")
    assert conninfo_secrets("host=a user=b") == []


def test_mask_url() -> None:
    assert mask_url("https://elastic:changeme@es:9200") == "https://elastic:***@es:9200"
    assert mask_url("https://es:9200/?api_key=abc&x=1") == "https://es:9200/?api_key=***&x=1"
    assert mask_url("not a url password=x") == "not a url password=x"  # not a URL: left to mask_conninfo


def test_mask_mapping() -> None:
    masked = mask_mapping(
        {
            "aws_access_key_id": "AKIAEXAMPLE",
            "aws_secret_access_key": "wJalrXUtnFEMI",
            "aws_session_token": "FwoGZXIvYXdzEtoken",
            "api_key": ("key-id", "key-secret"),
            "basic_auth": ("elastic", "changeme"),
            "http_auth": "user:pw",
            "hosts": ["https://u:pw2@es:9200"],
            "region_name": "eu-west-1",
            "nested": {"password": "deep"},
        }
    )
    assert masked["aws_access_key_id"] == "AKIAEXAMPLE"  # a key id is not a secret
    assert masked["aws_secret_access_key"] == MASK
    assert masked["aws_session_token"] == MASK
    assert masked["api_key"] == ("key-id", MASK)
    assert masked["basic_auth"] == ("elastic", MASK)
    assert masked["http_auth"] == MASK
    assert masked["hosts"] == ["https://u:***@es:9200"]
    assert masked["region_name"] == "eu-west-1"
    assert masked["nested"] == {"password": MASK}
    text = repr(masked)
    for secret in ("wJalrXUtnFEMI", "FwoGZXIvYXdzEtoken", "key-secret", "changeme", "user:pw", "pw2", "deep"):
        assert secret not in text


def test_mapping_secrets_include_basic_auth_header_form() -> None:
    found = mapping_secrets({"basic_auth": ("elastic", "changeme"), "hosts": "http://a:b@h"})
    assert "changeme" in found
    assert "ZWxhc3RpYzpjaGFuZ2VtZQ==" in found  # base64("elastic:changeme")
    assert "b" in found


def test_redact_longest_first() -> None:
    assert redact("pw=abc and abcdef", ["abc", "abcdef", None, ""]) == "pw=*** and ***"
    assert redact("nothing here", []) == "nothing here"


def test_scrub_exception_in_place_through_the_chain() -> None:
    try:
        try:
            raise ValueError("inner hunter2")
        except ValueError as inner:
            raise RuntimeError("outer hunter2", 3) from inner
    except RuntimeError as caught:
        error = caught
    assert scrub_exception(error, ["hunter2"]) is error
    assert error.args == ("outer ***", 3)
    assert str(error.__cause__) == "inner ***"


# URLs that urlsplit() rejects (an unbalanced "[", a bracketed host that is no IPv6 address, a "[" in a password), or
# reads differently from libpq (a "#" or "?" in a password, which libpq accepts), with the secret each one holds.
_MALFORMED = [
    ("postgresql://app:hunter2@[127.0.0.1:1/x", "hunter2"),
    ("postgresql://app:hunter2@[db]:5432/x", "hunter2"),
    ("postgresql://app:hun[ter2@db/x", "hun[ter2"),
    ("postgresql://app:hun%5Bter2@[::1/x", "hun[ter2"),
    ("postgresql://app@[::1/x?sslmode=require&sslpassword=keypass#frag", "keypass"),
    ("https://elastic:changeme@[es:9200/?x=1", "changeme"),
    ("postgresql://app:hun#ter2@db/x", "hun#ter2"),
    ("postgres://app:hun?ter2@[::1/x", "hun?ter2"),
]


@pytest.mark.parametrize(("url", "secret"), _MALFORMED)
def test_secrets_of_a_malformed_url_are_still_found_and_masked(url: str, secret: str) -> None:
    assert secret in url_secrets(url)
    assert secret in conninfo_secrets(f"  {url} ")
    assert secret not in mask_url(url)
    assert secret not in redact(f'invalid URI: "{url}"', url_secrets(url))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Nothing secret in a malformed URL: nothing found.
        ("postgresql://app@[::1/x", []),
        ("postgresql://[::1/x?sslmode=require&application_name=a:b", []),
        ("postgresql://app@[::1/x?password=", []),
        # An "@" in the query or fragment of a URL that is not libpq's is no user info.
        ("https://es:9200?q=a:b@c", []),
        ("https://es:9200/#a:b@c", []),
        ("postgresql://db/x?application_name=a:b@c", []),
        # Well-formed URLs read as before.
        ("postgresql://app:p%40ss@db/x?sslmode=require", ["p%40ss", "p@ss"]),
        ("postgresql://app:a:b@db/x", ["a:b", "a:b"]),
        ("postgresql://app:a@b@db/x", ["a@b", "a@b"]),
        ("postgresql:///x?user=app&password=hunter2", ["hunter2", "hunter2"]),
        ("https://es:9200/?api_key=a%20b", ["a b", "a%20b"]),
        ("not a url password=x", []),
    ],
)
def test_url_secrets_finds_no_more_than_the_secrets(url: str, expected: list[str]) -> None:
    assert url_secrets(url) == expected


def test_mask_url_masks_a_libpq_password_holding_a_hash_or_question_mark() -> None:
    assert mask_url("postgresql://app:p#ss@db/x") == "postgresql://app:***@db/x"
    assert mask_url("postgresql://app:p?ss@db/x?password=q") == "postgresql://app:***@db/x?password=***"
    assert mask_url("postgresql://app:pa[ss@db/x") == "postgresql://app:***@db/x"
    assert mask_url("postgresql://app:hunter2@[127.0.0.1:1/x") == "postgresql://***"
    assert mask_url("https://es:9200?q=a:b@c") == "https://es:9200?q=a:b@c"  # not libpq's: a query


def _error_chain_texts(error: BaseException | None) -> list[str]:
    texts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts.extend((str(error), repr(error)))
        error = error.__cause__ or error.__context__
    return texts


def test_a_malformed_postgres_url_leaks_its_password_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    """libpq echoes the whole URI it cannot parse; PostgresConnector must redact it even so (audit 1.1)."""
    pytest.importorskip("psycopg")
    from syncpool.connectors import PostgresConnector

    caplog.set_level(logging.DEBUG, logger="syncpool")
    connector = PostgresConnector("postgresql://app:hunter2@[127.0.0.1:1/x")
    with Pool(connector, max_size=1, name="malformed", breaker_threshold=None) as pool:
        with pytest.raises(ConnectRejected) as info:  # a URL that cannot parse fails at once
            pool.getconn(timeout=30)
        texts = [repr(pool), str(pool.stats())]
    error = info.value
    assert error.__cause__ is not None and "IPv6" in str(error.__cause__)  # the error the pool saw is libpq's
    assert MASK in str(error.__cause__)
    texts += _error_chain_texts(error)
    texts.append("".join(traceback.format_exception(error)))
    formatter = logging.Formatter()
    assert any("IPv6" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
    leaks = [text for text in texts if "hunter2" in text]
    assert not leaks, leaks
