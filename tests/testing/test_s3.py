"""S3Server: moto on a free port, used through a real boto3 client."""

from __future__ import annotations

import uuid

import pytest

boto3 = pytest.importorskip("boto3")

pytestmark = pytest.mark.s3


def test_put_and_get_object(s3_server):
    client = boto3.client("s3", **s3_server.client_kwargs())
    bucket = f"syncpool-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello world")
    assert client.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello world"
    client.close()


def test_client_kwargs_and_repr(s3_server):
    kwargs = s3_server.client_kwargs()
    assert kwargs["endpoint_url"] == s3_server.endpoint_url
    assert kwargs["region_name"] == s3_server.region == "us-east-1"
    assert kwargs["aws_access_key_id"] == s3_server.access_key
    assert "secret_key=***" in repr(s3_server)


def test_standalone_start_stop():
    from syncpool.testing import S3Server

    with S3Server(secret_key="very-secret") as server:
        assert server.endpoint_url.startswith("http://127.0.0.1:")
        assert "very-secret" not in repr(server)
        client = boto3.client("s3", **server.client_kwargs())
        assert "Buckets" in client.list_buckets()
        client.close()
    assert not server.is_running()
