"""Elasticsearch through elasticsearch-py 8 or 9, imported on first connect."""

from __future__ import annotations

from typing import Any

from syncpool._secrets import mapping_secrets, mask_url, redact, scrub_exception
from syncpool.connector import Connector
from syncpool.errors import AuthError

__all__ = ["ElasticsearchConnector"]

DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "request_timeout": 10,
    "max_retries": 1,
    "retry_on_timeout": False,
    "connections_per_node": 1,
}
"""Defaults passed to ``Elasticsearch(...)`` unless given.

- ``request_timeout``: seconds per request.
- ``max_retries``, ``retry_on_timeout``: one retry on another node for connection errors and 429/502/503/504, none
  on timeouts: the pool's own retries (``pool.run``) already repeat a failed unit of work, and retries at both
  levels multiply (3 x 3 attempts of a 10 s timeout is minutes).
- ``connections_per_node``: HTTP connections each client keeps to each node. elastic_transport's default, 10, suits
  one client shared by many threads; a pooled client is used by one thread at a time and reads every response
  whole, so one connection per node is all it uses, and 10 would let a pool of ``max_size`` clients hold up to
  ``10 * max_size`` sockets per node. The cap is strict (a request waits for the connection rather than opening
  another): raise it for clients that ``helpers.parallel_bulk`` shares between threads.
"""

# Client options that may be zero-argument callables resolved at every connect (rotated keys and passwords).
# Other options can legitimately be callables or classes (node_selector_class, serializer...) and pass as they are.
_RESOLVED_OPTIONS = frozenset({"api_key", "basic_auth", "bearer_auth", "http_auth", "cloud_id"})
_TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


def _resolve(value: Any) -> Any:
    return value() if callable(value) else value


class ElasticsearchConnector(Connector[Any]):
    """Makes ``elasticsearch.Elasticsearch`` clients.

    Args:
        hosts: One node URL or a list of them (the client spreads requests over them and skips dead ones), or a
            zero-argument callable returning either. User info in a URL (``https://user:pw@host``) is masked in
            descriptions and messages.
        verify_on_connect: Whether [`connect`][] calls ``info()`` once, so that wrong credentials or an
            unreachable cluster show at connect time rather than on first use. Defaults to True.
        client_kwargs: Passed to ``Elasticsearch``; [`DEFAULT_CLIENT_OPTIONS`][] fill in ``request_timeout``
            (10 s), ``max_retries`` (1), ``retry_on_timeout`` (False) and ``connections_per_node`` (1 HTTP
            connection per node and client; ``NodeConfig`` hosts keep their own). ``api_key``, ``basic_auth``,
            ``bearer_auth`` and ``http_auth`` may be zero-argument callables, resolved at every connect.

    [`check`][] calls ``info()`` (``GET /``), which needs the ``cluster:monitor/main`` privilege. It does not use
    ``ping()``, which answers False both for a dead cluster and for refused credentials.
    """

    def __init__(
        self, hosts: str | list[str] | Any, *, verify_on_connect: bool = True, **client_kwargs: Any
    ) -> None:
        if isinstance(hosts, (list, tuple)) and not hosts:
            raise ValueError("hosts must name at least one node")
        self._hosts = hosts
        self.verify_on_connect = verify_on_connect
        self._user_options = frozenset(client_kwargs)
        self._client_kwargs = {**DEFAULT_CLIENT_OPTIONS, **client_kwargs}
        self.description = self._describe()

    def _describe(self) -> str:
        if callable(self._hosts):
            nodes = "<hosts from callable>"
        elif isinstance(self._hosts, str):
            nodes = mask_url(self._hosts)
        elif isinstance(self._hosts, (list, tuple)):
            nodes = ",".join(mask_url(h) if isinstance(h, str) else "<node>" for h in self._hosts)
        else:
            nodes = "<node>"
        return f"elasticsearch {nodes}"

    def connect(self) -> Any:
        """Make a client and (``verify_on_connect``) call ``info()`` once.

        Raises [`AuthError`][] on 401/403; other errors are re-raised as the client raised them, with
        any secret removed from their message.
        """
        from elasticsearch import Elasticsearch

        hosts = _resolve(self._hosts)
        kwargs = {
            key: _resolve(value) if key in _RESOLVED_OPTIONS else value
            for key, value in self._client_kwargs.items()
        }
        if "connections_per_node" not in self._user_options and _has_node_configs(hosts):
            # The client would override the connections_per_node each NodeConfig carries with our default.
            del kwargs["connections_per_node"]
        secrets = mapping_secrets({"hosts": hosts, **kwargs})
        try:
            client = Elasticsearch(hosts, **kwargs)
        except Exception as error:
            raise scrub_exception(error, secrets) from None
        if self.verify_on_connect:
            try:
                self.check(client)
            except Exception as error:
                client.close()
                if self.is_auth_error(error):
                    scrub_exception(error, secrets)
                    message = redact(str(error), secrets)
                    raise AuthError(
                        f"Elasticsearch at {self.description[len('elasticsearch ') :]} refused the "
                        f"credentials: {message}"
                    ) from error
                raise scrub_exception(error, secrets) from None
        return client

    def check(self, client: Any) -> None:
        """Call ``info()``: one ``GET /``, bounded by ``request_timeout`` and ``max_retries``."""
        client.info()

    def monitor_options(self) -> dict[str, Any]:
        """Record the requests made through ``client.options(...)`` copies too, in a ``monitor=True`` pool.

        ``es.options(request_timeout=3).search(...)`` is recorded as ``search``, and the requests that
        ``elasticsearch.helpers.bulk`` sends through such a copy as ``bulk``: ``options()`` itself does no I/O and is
        not recorded.
        """
        from syncpool.monitoring import WrapResult

        return {"results": {"options": WrapResult(prefix="", measure=None)}}

    def close(self, client: Any) -> None:
        """Close the client's HTTP connections."""
        client.close()

    def is_auth_error(self, error: BaseException) -> bool:
        """True for HTTP 401 (``AuthenticationException``) and 403 (``AuthorizationException``)."""
        return _status_of(error) in (401, 403)

    def is_transient(self, error: BaseException) -> bool:
        """True for connection errors and timeouts (not TLS errors, which a retry will not fix) and for answers
        429, 502, 503 and 504."""
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        try:
            from elastic_transport import ConnectionError as TransportConnectionError
            from elastic_transport import ConnectionTimeout, TlsError
        except ImportError:  # pragma: no cover
            return False
        if isinstance(error, TlsError):
            return False
        if isinstance(error, (TransportConnectionError, ConnectionTimeout)):
            return True
        return _status_of(error) in _TRANSIENT_STATUSES


def _has_node_configs(hosts: Any) -> bool:
    """True if ``hosts`` holds elastic_transport ``NodeConfig`` objects (rather than URLs or dicts)."""
    from elastic_transport import NodeConfig

    nodes = hosts if isinstance(hosts, (list, tuple)) else [hosts]
    return any(isinstance(node, NodeConfig) for node in nodes)


def _status_of(error: BaseException) -> int | None:
    """The HTTP status of an ``elasticsearch.ApiError`` (8.x and 9.x keep it in ``meta.status``), else None."""
    meta = getattr(error, "meta", None)
    status = getattr(meta, "status", None)
    if isinstance(status, int):
        return status
    status = getattr(error, "status_code", None)  # 7.x-style errors
    return status if isinstance(status, int) else None
