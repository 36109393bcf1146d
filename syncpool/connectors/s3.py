"""Amazon S3 (or any S3-compatible store) through boto3, imported on first connect."""

from __future__ import annotations

from typing import Any

from syncpool._secrets import mapping_secrets, mask_url, redact, scrub_exception
from syncpool.connector import Connector
from syncpool.errors import AuthError

__all__ = ["S3Connector"]

# Arguments of boto3.session.Session: credentials, profile and region belong to the per-client session.
_SESSION_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "region_name",
        "profile_name",
        "aws_account_id",
    }
)

DEFAULT_CONFIG: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 30,
    "retries": {"mode": "standard", "total_max_attempts": 3},
    "max_pool_connections": 2,
}
"""Defaults of the botocore ``Config`` every client gets; a ``config=`` passed to the connector overrides them.

- ``connect_timeout``/``read_timeout``: seconds per attempt, so that a dead endpoint fails fast.
- ``retries``: "standard" mode, 3 attempts in all, so that botocore's retries times the pool's retries stay short.
- ``max_pool_connections``: HTTP connections each client keeps open (per endpoint host). boto3's own default, 10,
  suits one client shared by many threads; a pooled client is used by one thread at a time, which needs one
  connection, or two when it reads a streamed ``get_object`` body while making another call. 10 per client would
  let a pool of ``max_size`` clients hold up to ``10 * max_size`` sockets. urllib3 still opens a connection beyond
  the cap when every kept one is busy, and closes it after use with a "Connection pool is full" warning: raise the
  cap for clients that run boto3's managed transfers (``upload_file``/``download_file``, 10 threads by default).
"""

# Error codes meaning the credentials are missing, wrong, expired or not allowed. HeadBucket has no response body,
# so a refusal there only shows as the HTTP status ("403").
_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "AuthFailure",
        "401",
        "403",
    }
)
_AUTH_EXCEPTION_NAMES = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "UnauthorizedSSOTokenError",
        "TokenRetrievalError",
        "SSOTokenLoadError",
        "NoAuthTokenError",
    }
)
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestThrottled",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
    }
)


def _resolve(value: Any) -> Any:
    return value() if callable(value) else value


class S3Connector(Connector[Any]):
    """Makes S3 clients, each from its own ``boto3.session.Session``.

    boto3 sessions are not thread-safe, so no client is ever made from the shared default session.

    Args:
        bucket: A bucket the clients will use. [`check`][] calls ``head_bucket`` on it (cheap, and it needs only
            the permissions the application has anyway); without one it calls ``list_buckets``.
        config: A ``botocore.config.Config`` merged over [`DEFAULT_CONFIG`][] (connect timeout 5 s, read timeout
            30 s, standard retry mode with 3 attempts in all, 2 HTTP connections kept per client): the settings
            it gives win, the others keep their defaults. ``Config(max_pool_connections=10)`` restores boto3's
            own connection count, e.g. for clients that run managed transfers.
        verify_on_connect: Whether [`connect`][] makes the [`check`][] call once. boto3 clients connect lazily,
            so without it wrong credentials would only show on first use. Defaults to True.
        client_kwargs: ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``region_name``,
            ``profile_name`` go to the session; the rest (``endpoint_url``, ``verify``...) to
            ``session.client("s3", ...)``. Any of them may be a zero-argument callable, resolved at every connect
            (rotated credentials).
    """

    def __init__(
        self,
        *,
        bucket: str | None = None,
        config: Any = None,
        verify_on_connect: bool = True,
        **client_kwargs: Any,
    ) -> None:
        self.bucket = bucket
        self._user_config = config
        self.verify_on_connect = verify_on_connect
        self._session_kwargs = {key: value for key, value in client_kwargs.items() if key in _SESSION_KEYS}
        self._client_kwargs = {key: value for key, value in client_kwargs.items() if key not in _SESSION_KEYS}
        self.description = self._describe()

    def _describe(self) -> str:
        endpoint = self._client_kwargs.get("endpoint_url")
        parts = ["s3"]
        parts.append(
            f"endpoint={'<callable>' if callable(endpoint) else mask_url(str(endpoint)) if endpoint else 'aws'}"
        )
        region = self._session_kwargs.get("region_name")
        if region is not None:
            parts.append(f"region={'<callable>' if callable(region) else region}")
        profile = self._session_kwargs.get("profile_name")
        if profile is not None and not callable(profile):
            parts.append(f"profile={profile}")
        if self.bucket:
            parts.append(f"bucket={self.bucket}")
        return " ".join(parts)

    def _config(self) -> Any:
        from botocore.config import Config

        config = Config(**DEFAULT_CONFIG)
        if self._user_config is not None:
            config = config.merge(self._user_config)
        return config

    def connect(self) -> Any:
        """Make a session and a client, then (``verify_on_connect``) make the [`check`][] call once.

        Raises [`AuthError`][] when the credentials are missing or refused; other errors are re-raised
        as botocore raised them, with any secret removed from their message.
        """
        import boto3.session

        session_kwargs = {key: _resolve(value) for key, value in self._session_kwargs.items()}
        client_kwargs = {key: _resolve(value) for key, value in self._client_kwargs.items()}
        secrets = mapping_secrets(session_kwargs) + mapping_secrets(client_kwargs)
        try:
            session = boto3.session.Session(**session_kwargs)
            client = session.client("s3", config=self._config(), **client_kwargs)
        except Exception as error:
            if self.is_auth_error(error):
                raise self._auth_error(error, secrets, client_kwargs.get("endpoint_url")) from error
            raise scrub_exception(error, secrets) from None
        if self.verify_on_connect:
            try:
                self.check(client)
            except Exception as error:
                client.close()
                if self.is_auth_error(error):
                    raise self._auth_error(error, secrets, client.meta.endpoint_url) from error
                raise scrub_exception(error, secrets) from None
        return client

    def _auth_error(self, error: BaseException, secrets: list[str], endpoint: str | None) -> AuthError:
        scrub_exception(error, secrets)
        target = f"bucket {self.bucket!r}" if self.bucket else "ListBuckets"
        where = mask_url(endpoint) if endpoint else "AWS"
        message = redact(f"{type(error).__name__}: {error}", secrets)
        return AuthError(f"S3 at {where} refused the credentials ({target}): {message}")

    def check(self, client: Any) -> None:
        """``head_bucket`` on the configured bucket, else ``list_buckets``: one cheap request.

        Bounded by the client's connect and read timeouts and retry attempts (see [`DEFAULT_CONFIG`][]).
        """
        if self.bucket:
            client.head_bucket(Bucket=self.bucket)
        else:
            client.list_buckets()

    def close(self, client: Any) -> None:
        """Close the client's HTTP connection pool."""
        client.close()

    def monitor_options(self) -> dict[str, Any]:
        """Record the requests made by paginators and waiters too, in a ``monitor=True`` pool.

        Each page that a paginator's ``paginate()`` fetches is one ``get_paginator.paginate`` operation, timed from
        request to response (``paginate()`` itself sends nothing), and ``build_full_result()`` on it one
        ``get_paginator.paginate.build_full_result``. A waiter's ``wait()`` is one ``get_waiter.wait``, however
        many polls it makes. Making a paginator or a waiter sends nothing and is not recorded.
        """
        from syncpool.monitoring import WrapResult

        return {
            "results": {
                "get_paginator": WrapResult(methods=(), measure=None),
                "get_paginator.paginate": WrapResult(measure="iteration", methods=("build_full_result",)),
                "get_waiter": WrapResult(methods=("wait",), measure=None),
            }
        }

    def is_auth_error(self, error: BaseException) -> bool:
        """True for missing or refused credentials: botocore's credential errors, and ``ClientError`` with an
        access-denied, invalid-key, bad-signature or expired-token code, or HTTP status 401/403."""
        if type(error).__name__ in _AUTH_EXCEPTION_NAMES and type(error).__module__.startswith("botocore"):
            return True
        code, status = _client_error_code(error)
        return code in _AUTH_CODES or status in (401, 403)

    def is_transient(self, error: BaseException) -> bool:
        """True for connection failures and timeouts (botocore's ``ConnectionError``/``HTTPClientError`` family),
        throttling and HTTP 5xx/429 answers."""
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        try:
            from botocore.exceptions import ConnectionError as BotoConnectionError
            from botocore.exceptions import HTTPClientError
        except ImportError:  # pragma: no cover
            return False
        if isinstance(error, (BotoConnectionError, HTTPClientError)):
            return True
        code, status = _client_error_code(error)
        if code is None and status is None:
            return False
        return code in _THROTTLING_CODES or status == 429 or (status is not None and status >= 500)


def _client_error_code(error: BaseException) -> tuple[str | None, int | None]:
    """Return the error code and HTTP status of a botocore ``ClientError`` (None, None for anything else)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None, None
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return (str(code) if code is not None else None), (int(status) if status is not None else None)
