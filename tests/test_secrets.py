from __future__ import annotations

import pytest

from syncpool._secrets import (
    MASK,
    conninfo_secrets,
    mapping_secrets,
    mask_conninfo,
    mask_mapping,
    mask_url,
    redact,
    scrub_exception,
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
