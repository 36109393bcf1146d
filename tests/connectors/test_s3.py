"""S3Connector against moto's server (``s3_server``), plus a tiny fake endpoint refusing credentials."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import boto3.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from syncpool import AuthError
from syncpool.connectors import S3Connector

SECRET = "wJalrXUtnFEMI-K7MDENG-secret"
TOKEN = "FwoGZXIvYXdzE-session-token"


def _client_error(code: str, status: int, operation: str = "GetObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


# -- without a server ------------------------------------------------------------------------------------------


def test_description_masks_secrets() -> None:
    connector = S3Connector(
        bucket="b",
        endpoint_url="http://user:urlpass@s3.local:9000",
        region_name="eu-west-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
    )
    for text in (connector.description, repr(connector)):
        assert SECRET not in text and TOKEN not in text and "urlpass" not in text
        assert "bucket=b" in text and "eu-west-1" in text and "s3.local:9000" in text


def test_is_auth_error_classification() -> None:
    connector = S3Connector()
    assert connector.is_auth_error(NoCredentialsError())
    for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"):
        assert connector.is_auth_error(_client_error(code, 403))
    assert connector.is_auth_error(_client_error("403", 403, "HeadBucket"))  # HeadBucket has no error body
    assert not connector.is_auth_error(_client_error("NoSuchBucket", 404))
    assert not connector.is_auth_error(ValueError("AccessDenied"))


def test_is_transient_classification() -> None:
    connector = S3Connector()
    assert connector.is_transient(EndpointConnectionError(endpoint_url="http://x"))
    assert connector.is_transient(ReadTimeoutError(endpoint_url="http://x"))
    assert connector.is_transient(_client_error("SlowDown", 503))
    assert connector.is_transient(_client_error("Throttling", 400))
    assert connector.is_transient(_client_error("InternalError", 500))
    assert connector.is_transient(_client_error("Whatever", 502))
    assert connector.is_transient(_client_error("TooManyRequests", 429))
    assert not connector.is_transient(_client_error("NoSuchKey", 404))
    assert not connector.is_transient(_client_error("AccessDenied", 403))
    assert not connector.is_transient(NoCredentialsError())
    assert not connector.is_transient(ValueError())


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# -- against moto ------------------------------------------------------------------------------------------------


@pytest.fixture
def bucket(s3_server: Any) -> str:
    name = f"syncpool-{uuid.uuid4().hex[:12]}"
    client = boto3.session.Session().client("s3", **s3_server.client_kwargs())
    client.create_bucket(Bucket=name)
    client.close()
    return name


@pytest.mark.s3
def test_connect_check_close(s3_server: Any, bucket: str) -> None:
    connector = S3Connector(bucket=bucket, **s3_server.client_kwargs())
    client = connector.connect()
    try:
        client.put_object(Bucket=bucket, Key="k", Body=b"v")
        connector.check(client)
        assert not connector.is_broken(client)
        connector.reset(client)
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    finally:
        connector.close(client)


@pytest.mark.s3
def test_check_without_bucket_lists_buckets(s3_server: Any, bucket: str) -> None:
    connector = S3Connector(**s3_server.client_kwargs())
    client = connector.connect()
    try:
        connector.check(client)
    finally:
        client.close()


@pytest.mark.s3
def test_explicit_config_defaults_and_merge(s3_server: Any) -> None:
    client = S3Connector(**s3_server.client_kwargs()).connect()
    try:
        config = client.meta.config
        assert config.connect_timeout == 5 and config.read_timeout == 30
        assert config.retries == {"mode": "standard", "total_max_attempts": 3}
        assert config.max_pool_connections == 2  # a pooled client is used by one thread at a time
    finally:
        client.close()
    custom = S3Connector(
        config=Config(read_timeout=7, retries={"mode": "adaptive", "max_attempts": 2}),
        **s3_server.client_kwargs(),
    )
    client = custom.connect()
    try:
        assert client.meta.config.read_timeout == 7
        assert client.meta.config.connect_timeout == 5
        assert client.meta.config.retries["mode"] == "adaptive"
        assert client.meta.config.max_pool_connections == 2  # a default the user's config did not set
    finally:
        client.close()


@pytest.mark.s3
def test_user_config_overrides_the_connection_cap_and_keeps_its_other_settings(s3_server: Any) -> None:
    user_config = Config(max_pool_connections=10, connect_timeout=2, user_agent_extra="app/1.0")
    client = S3Connector(config=user_config, **s3_server.client_kwargs()).connect()
    try:
        config = client.meta.config
        assert config.max_pool_connections == 10
        assert config.connect_timeout == 2 and config.user_agent_extra == "app/1.0"
        assert config.read_timeout == 30  # the defaults it left alone still apply
        client.list_buckets()
        # What urllib3 was actually given: the connection pool of the endpoint holds at most this many.
        pools = client._endpoint.http_session._manager.pools
        assert [pools[key].pool.maxsize for key in pools.keys()] == [10]
    finally:
        client.close()
    assert user_config.max_pool_connections == 10 and user_config.read_timeout == 60  # the user's object unchanged


@pytest.mark.s3
def test_each_client_has_its_own_session_never_the_default(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[Any] = []
    real_session = boto3.session.Session

    def recording_session(*args: Any, **kwargs: Any) -> Any:
        session = real_session(*args, **kwargs)
        sessions.append(session)
        return session

    monkeypatch.setattr(boto3.session, "Session", recording_session)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    connector = S3Connector(**s3_server.client_kwargs())
    clients = [connector.connect() for _ in range(2)]
    try:
        assert len(sessions) == 2 and sessions[0] is not sessions[1]
        assert boto3.DEFAULT_SESSION is None
    finally:
        for client in clients:
            client.close()


@pytest.mark.s3
def test_missing_bucket_is_not_an_auth_error(s3_server: Any) -> None:
    connector = S3Connector(bucket="no-such-bucket-here", **s3_server.client_kwargs())
    with pytest.raises(ClientError) as info:
        connector.connect()
    assert not connector.is_auth_error(info.value)


@pytest.mark.s3
def test_callable_credentials_resolved_at_each_connect(s3_server: Any) -> None:
    calls: list[int] = []

    def secret() -> str:
        calls.append(1)
        return s3_server.secret_key

    kwargs = {**s3_server.client_kwargs(), "aws_secret_access_key": secret}
    connector = S3Connector(verify_on_connect=False, **kwargs)
    for _ in range(2):
        connector.connect().close()
    assert len(calls) == 2


@pytest.mark.s3
def test_missing_credentials_raise_auth_error(s3_server: Any, no_aws_credentials: None) -> None:
    connector = S3Connector(endpoint_url=s3_server.endpoint_url, region_name=s3_server.region, bucket="b")
    with pytest.raises(AuthError) as info:
        connector.connect()
    assert isinstance(info.value.__cause__, NoCredentialsError)
    assert "bucket 'b'" in str(info.value) and s3_server.endpoint_url in str(info.value)


@pytest.mark.s3
def test_unreachable_endpoint_is_transient_not_auth() -> None:
    connector = S3Connector(
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key=SECRET,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    with pytest.raises(EndpointConnectionError) as info:
        connector.connect()
    assert connector.is_transient(info.value)
    assert SECRET not in str(info.value)




@pytest.mark.parametrize("bucket_name", [None, "mybucket"])
def test_refused_credentials_raise_auth_error_at_connect(
    refusing_s3_endpoint: str, bucket_name: str | None
) -> None:
    connector = S3Connector(
        bucket=bucket_name,
        endpoint_url=refusing_s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
    )
    with pytest.raises(AuthError) as info:
        connector.connect()
    cause = info.value.__cause__
    assert isinstance(cause, ClientError) and connector.is_auth_error(cause)
    assert not connector.is_transient(cause)
    message = str(info.value)
    assert refusing_s3_endpoint in message
    assert (f"bucket '{bucket_name}'" if bucket_name else "ListBuckets") in message
    for text in (message, str(cause), repr(connector)):
        assert SECRET not in text and TOKEN not in text
