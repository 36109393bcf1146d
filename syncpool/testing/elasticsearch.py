"""A small in-memory Elasticsearch node that the real ``elasticsearch`` client (8.x and 9.x) talks to.

[`ElasticsearchNode`][] is a threaded HTTP/1.1 server (keep-alive, like a real node) implementing the handful of
endpoints pool tests need: info, document index/get/delete, ``_bulk``, ``_search`` and ``_count`` with ``match_all``
and ``term`` queries, index create/delete/refresh/exists and ``_cluster/health``. Every response carries
``X-Elastic-Product: Elasticsearch`` (the client's product check) and a JSON content type matching what the client
asked for (``application/vnd.elasticsearch+json; compatible-with=N`` in compatibility mode).

It can also misbehave on demand ([`ElasticsearchNode.set_behaviour`][]): answer every request with a fixed error
status, answer late, or accept requests and never answer. Authentication is enforced when credentials are given.

To run the same tests against a real cluster, set ``SYNCPOOL_TEST_ELASTICSEARCH_URL`` (credentials may be embedded
in the URL); the pytest fixtures then yield an [`ExternalElasticsearch`][], whose fault controls raise
``NotImplementedError``.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .external import NotSupportedExternally

__all__ = ["ElasticsearchNode", "ExternalElasticsearch"]

VERSION = "9.0.0"

_ERROR_TYPES = {
    400: "illegal_argument_exception",
    401: "security_exception",
    403: "security_exception",
    404: "resource_not_found_exception",
    409: "version_conflict_engine_exception",
    429: "es_rejected_execution_exception",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "unavailable_shards_exception",
    504: "timeout_exception",
}
_SHARDS = {"total": 2, "successful": 1, "failed": 0}


def _error_body(status: int, reason: str, error_type: str | None = None, **extra: Any) -> dict[str, Any]:
    """Return the JSON body Elasticsearch sends with an error status."""
    cause = {"type": error_type or _ERROR_TYPES.get(status, "exception"), "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


class _Behaviour:
    """What the node does with the next request; replaced as a whole so that readers see a consistent value."""

    def __init__(self, status: int | None = None, delay: float = 0.0, hang: bool = False) -> None:
        self.status = status
        self.delay = delay
        self.hang = hang
        self.released = threading.Event()  # set when this behaviour is replaced: hung requests give up


class _Store:
    """Indices and documents, guarded by one lock (the node is a test fake: contention does not matter)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}
        self.seq_no = itertools.count()

    def index_doc(
        self, index: str, doc_id: str | None, source: Any, *, create: bool = False
    ) -> tuple[int, dict[str, Any]]:
        """Index (or with ``create``, only create) a document; return (status, result) as ES reports them."""
        with self.lock:  # decides created/updated/conflict atomically
            docs = self.indices.setdefault(index, {})
            if doc_id is None:
                doc_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:15]).decode()
            existing = docs.get(doc_id)
            if existing is not None and create:
                reason = f"[{doc_id}]: version conflict, document already exists (current version [{existing['_version']}])"
                return 409, {
                    "_index": index,
                    "_id": doc_id,
                    "status": 409,
                    "error": {"type": "version_conflict_engine_exception", "reason": reason, "index": index},
                }
            version = existing["_version"] + 1 if existing else 1
            seq_no = next(self.seq_no)
            docs[doc_id] = {"_version": version, "_seq_no": seq_no, "_source": source}
        result = "updated" if existing else "created"
        status = 200 if existing else 201
        return status, {
            "_index": index,
            "_id": doc_id,
            "_version": version,
            "result": result,
            "_shards": dict(_SHARDS),
            "_seq_no": seq_no,
            "_primary_term": 1,
        }

    def delete_doc(self, index: str, doc_id: str) -> tuple[int, dict[str, Any]]:
        """Delete a document; return (status, result)."""
        with self.lock:
            docs = self.indices.get(index, {})
            existing = docs.pop(doc_id, None)
            seq_no = next(self.seq_no)
        version = existing["_version"] + 1 if existing else 1
        return (200 if existing else 404), {
            "_index": index,
            "_id": doc_id,
            "_version": version,
            "result": "deleted" if existing else "not_found",
            "_shards": dict(_SHARDS),
            "_seq_no": seq_no,
            "_primary_term": 1,
        }

    def get_doc(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """Return a copy of the stored document record, or None."""
        with self.lock:
            record = self.indices.get(index, {}).get(doc_id)
            return copy.deepcopy(record) if record else None

    def matching(self, names: list[str], query: dict[str, Any] | None) -> list[tuple[str, str, Any]]:
        """Return (index, id, source) of every document matching ``query``, in indexing order."""
        with self.lock:
            found = [
                (name, doc_id, copy.deepcopy(record["_source"]), record["_seq_no"])
                for name in names
                for doc_id, record in self.indices.get(name, {}).items()
            ]
        found.sort(key=lambda hit: hit[3])
        return [(name, doc_id, source) for name, doc_id, source, _ in found if _matches(source, query)]


def _field_values(source: Any, field: str) -> list[Any]:
    if field.endswith(".keyword"):
        field = field[: -len(".keyword")]
    value: Any = source
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return []
        value = value[part]
    return value if isinstance(value, list) else [value]


def _matches(source: Any, query: dict[str, Any] | None) -> bool:
    if not query or "match_all" in query:
        return True
    if "term" in query:
        ((field, wanted),) = query["term"].items()
        if isinstance(wanted, dict):
            wanted = wanted.get("value")
        return wanted in _field_values(source, field)
    if "terms" in query:
        ((field, wanted),) = query["terms"].items()
        return any(value in wanted for value in _field_values(source, field))
    raise ValueError(f"unsupported query {sorted(query)}: only match_all, term and terms are implemented")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's delayed ACK and
    # every request took about 44 ms on loopback instead of under 1 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Keep test output quiet."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        node = self.server.node
        node._count_request()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        behaviour = node._behaviour
        if behaviour.hang:
            # Hold the request until the behaviour changes or the node stops, then drop the connection unanswered.
            behaviour.released.wait()
            self.close_connection = True
            return
        if behaviour.delay and node._stopping.wait(behaviour.delay):
            self.close_connection = True
            return
        if behaviour.status is not None:
            self._send(behaviour.status, _error_body(behaviour.status, "fault injected by ElasticsearchNode"))
            return
        if not node._authorized(self.headers.get("Authorization")):
            reason = f"missing authentication credentials for REST request [{self.path}]"
            if self.headers.get("Authorization"):
                reason = f"unable to authenticate user for REST request [{self.path}]"
            www = {"WWW-Authenticate": ['Basic realm="security", charset="UTF-8"', "ApiKey"]}
            self._send(
                401,
                _error_body(401, reason, header=www),
                {"WWW-Authenticate": 'Basic realm="security", charset="UTF-8"'},
            )
            return
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.split("/") if part]
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        try:
            status, payload = node._route(self.command, parts, query, body)
        except ValueError as exc:
            status, payload = 400, _error_body(400, str(exc), "parsing_exception")
        except Exception as exc:  # noqa: BLE001 - report like a server would, never kill the handler
            status, payload = 500, _error_body(500, f"{type(exc).__name__}: {exc}")
        self._send(status, payload)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        accept = self.headers.get("Accept") or ""
        content_type = "application/json"
        if "vnd.elasticsearch+json" in accept:
            content_type = accept.split(",")[0].strip()
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins the handler threads itself, after unblocking them
    node: ElasticsearchNode

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._handle,
            args=(request, client_address),
            name=f"syncpool-es-node-{self.node.port}-handler",
            daemon=True,
        )
        self.node._track(request, thread)
        thread.start()

    def _handle(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except OSError:
            pass  # the client (or stop()) closed the connection
        except Exception:  # noqa: BLE001
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.node._untrack(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow handler errors instead of printing them to stderr."""


class ElasticsearchNode:
    """An in-memory, thread-safe fake Elasticsearch node on 127.0.0.1 and a free port.

    Args:
        username: With ``password``, require HTTP Basic authentication.
        password: See ``username``.
        api_key: Require ``Authorization: ApiKey <key>``; either the encoded key or an ``(id, key)`` pair.
        host: Address to listen on.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        api_key: str | tuple[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = 0
        self._allowed: set[str] = set()
        self.set_auth(username=username, password=password, api_key=api_key)
        self._behaviour = _Behaviour()
        self._store = _Store()
        self._count_lock = threading.Lock()
        self._requests_seen = 0
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()

    # -- public API --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``; only valid once started."""
        return f"http://{self.host}:{self.port}"

    @property
    def requests_seen(self) -> int:
        """How many HTTP requests the node has received (including failed, delayed and hung ones)."""
        with self._count_lock:
            return self._requests_seen

    def set_auth(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        api_key: str | tuple[str, str] | None = None,
    ) -> None:
        """Change the required credentials; with no arguments, authentication is turned off."""
        allowed = set()
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            allowed.add(f"Basic {token}")
        if api_key is not None:
            if isinstance(api_key, tuple):
                api_key = base64.b64encode(":".join(api_key).encode()).decode()
            allowed.add(f"ApiKey {api_key}")
        self._allowed = allowed

    def set_behaviour(self, status: int | None = None, delay: float = 0.0, hang: bool = False) -> None:
        """Make the node misbehave; with no arguments, behave normally again.

        Args:
            status: Answer every request with this HTTP status and an ES-shaped error body (e.g. 401, 429, 503).
            delay: Seconds to wait before answering each request.
            hang: Accept requests and never answer them, until the behaviour is changed again or the node stops
                (then the connection is closed without an answer).
        """
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, not {delay}")
        previous, self._behaviour = self._behaviour, _Behaviour(status, delay, hang)
        previous.released.set()

    def reset(self) -> None:
        """Behave normally, turn authentication off and delete every index."""
        self.set_behaviour()
        self.set_auth()
        with self._store.lock:
            self._store.indices.clear()

    def is_running(self) -> bool:
        """Return True between [`start`][] and [`stop`][]."""
        return self._server is not None

    def start(self) -> ElasticsearchNode:
        """Start serving in a background thread (on the previous port after a [`stop`][]). Returns ``self``."""
        with self._lock:
            if self._server is not None:
                return self
            self._stopping.clear()
            server = _Server((self.host, self.port), _Handler)
            server.node = self
            self.port = server.server_address[1]
            self._server = server
            self._serve_thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"syncpool-es-node-{self.port}",
                daemon=True,
            )
            self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: close the listener and every client connection, release hung requests, join threads."""
        with self._lock:
            server, self._server = self._server, None
            if server is None:
                return
            self._stopping.set()
            self._behaviour.released.set()
            server.shutdown()
            server.server_close()
            with self._count_lock:
                connections = dict(self._connections)
            for sock in connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for thread in connections.values():
                thread.join(timeout=5.0)
            if self._serve_thread is not None:
                self._serve_thread.join(timeout=5.0)
            # The behaviour survives a restart, but with a fresh event: the one set above released the old requests.
            old = self._behaviour
            self._behaviour = _Behaviour(old.status, old.delay, old.hang)

    def close(self) -> None:
        """Same as [`stop`][]."""
        self.stop()

    def __enter__(self) -> ElasticsearchNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        auth = "auth" if self._allowed else "no-auth"
        return f"<ElasticsearchNode {self.url} {auth} requests_seen={self.requests_seen}>"

    # -- internals ---------------------------------------------------------------------------------------------

    def _count_request(self) -> None:
        with self._count_lock:
            self._requests_seen += 1

    def _track(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._count_lock:
            self._connections[sock] = thread

    def _untrack(self, sock: socket.socket) -> None:
        with self._count_lock:
            self._connections.pop(sock, None)

    def _authorized(self, header: str | None) -> bool:
        allowed = self._allowed
        return not allowed or (header or "").strip() in allowed

    def _route(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> tuple[int, Any]:
        store = self._store
        if not parts:
            return (200, None) if method == "HEAD" else (200, self._info())
        if parts == ["_cluster", "health"] and method == "GET":
            return 200, self._health()
        if parts[-1] == "_bulk" and len(parts) <= 2 and method in ("POST", "PUT"):
            return 200, self._bulk(parts[0] if len(parts) == 2 else None, body)
        if parts[-1] in ("_search", "_count") and len(parts) <= 2 and method in ("GET", "POST"):
            names = self._resolve(parts[0] if len(parts) == 2 else "_all")
            if names is None:
                return 404, self._index_missing(parts[0])
            request = json.loads(body) if body else {}
            hits = store.matching(names, request.get("query"))
            if parts[-1] == "_count":
                return 200, {"count": len(hits), "_shards": {**_SHARDS, "skipped": 0}}
            return 200, self._search(hits, request, query)
        index = parts[0]
        if index.startswith("_"):
            return 400, _error_body(
                400, f"no handler found for uri [/{'/'.join(parts)}] and method [{method}]"
            )
        if len(parts) == 1:
            return self._index_op(method, index, body)
        if parts[1] == "_refresh" and len(parts) == 2 and method in ("GET", "POST"):
            if self._resolve(index) is None:
                return 404, self._index_missing(index)
            return 200, {"_shards": dict(_SHARDS)}
        if parts[1] in ("_doc", "_create") and len(parts) in (2, 3):
            doc_id = parts[2] if len(parts) == 3 else None
            if method in ("PUT", "POST") and (doc_id is not None or method == "POST"):
                create = parts[1] == "_create" or query.get("op_type") == "create"
                status, result = store.index_doc(
                    index, doc_id, json.loads(body) if body else {}, create=create
                )
                if status == 409:
                    return 409, _error_body(
                        409, result["error"]["reason"], result["error"]["type"], index=index
                    )
                return status, result
            if doc_id is not None and method in ("GET", "HEAD"):
                with store.lock:
                    exists = index in store.indices
                if not exists:
                    return 404, self._index_missing(index)
                record = store.get_doc(index, doc_id)
                if record is None:
                    return 404, {"_index": index, "_id": doc_id, "found": False}
                return 200, {
                    "_index": index,
                    "_id": doc_id,
                    "_version": record["_version"],
                    "_seq_no": record["_seq_no"],
                    "_primary_term": 1,
                    "found": True,
                    "_source": record["_source"],
                }
            if doc_id is not None and method == "DELETE":
                return store.delete_doc(index, doc_id)
        return 405, _error_body(
            405, f"Incorrect HTTP method for uri [/{'/'.join(parts)}] and method [{method}]"
        )

    def _index_op(self, method: str, index: str, body: bytes) -> tuple[int, Any]:
        store = self._store
        with store.lock:  # decides exists/created/deleted atomically
            exists = index in store.indices
            if method == "PUT" and not exists:
                store.indices[index] = {}
            elif method == "DELETE" and exists:
                del store.indices[index]
        if method == "HEAD":
            return (200 if exists else 404), None
        if method == "PUT":
            if exists:
                return 400, _error_body(
                    400, f"index [{index}] already exists", "resource_already_exists_exception", index=index
                )
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}
        if method == "DELETE":
            return (200, {"acknowledged": True}) if exists else (404, self._index_missing(index))
        if method == "GET":
            if not exists:
                return 404, self._index_missing(index)
            return 200, {
                index: {"aliases": {}, "mappings": {}, "settings": {"index": {"number_of_shards": "1"}}}
            }
        return 405, _error_body(405, f"Incorrect HTTP method for uri [/{index}] and method [{method}]")

    def _resolve(self, expression: str) -> list[str] | None:
        with self._store.lock:
            existing = list(self._store.indices)
        if expression in ("_all", "*"):
            return existing
        names = expression.split(",")
        if any(name not in existing for name in names):
            return None
        return names

    def _bulk(self, default_index: str | None, body: bytes) -> dict[str, Any]:
        started = time.monotonic()
        lines = [line for line in body.decode().splitlines() if line.strip()]
        items: list[dict[str, Any]] = []
        position = 0
        while position < len(lines):
            ((action, meta),) = json.loads(lines[position]).items()
            position += 1
            index = meta.get("_index", default_index)
            doc_id = meta.get("_id")
            if index is None:
                raise ValueError("bulk action without _index and no index in the URL")
            if action in ("index", "create"):
                source = json.loads(lines[position])
                position += 1
                status, result = self._store.index_doc(index, doc_id, source, create=action == "create")
            elif action == "delete":
                status, result = self._store.delete_doc(index, doc_id)
            else:
                raise ValueError(
                    f"unsupported bulk action [{action}]: only index, create and delete are implemented"
                )
            result["status"] = status
            items.append({action: result})
        errors = any(next(iter(item.values())).get("error") for item in items)
        return {"took": int((time.monotonic() - started) * 1000), "errors": errors, "items": items}

    @staticmethod
    def _search(
        hits: list[tuple[str, str, Any]], request: dict[str, Any], query: dict[str, str]
    ) -> dict[str, Any]:
        size = int(request.get("size", query.get("size", 10)))
        start = int(request.get("from", query.get("from", 0)))
        page = hits[start : start + size]
        return {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": len(hits), "relation": "eq"},
                "max_score": 1.0 if page else None,
                "hits": [
                    {"_index": name, "_id": doc_id, "_score": 1.0, "_source": source}
                    for name, doc_id, source in page
                ],
            },
        }

    @staticmethod
    def _index_missing(index: str) -> dict[str, Any]:
        return _error_body(
            404,
            f"no such index [{index}]",
            "index_not_found_exception",
            index=index,
            **{"resource.type": "index_or_alias", "resource.id": index},
        )

    def _info(self) -> dict[str, Any]:
        return {
            "name": "syncpool-node",
            "cluster_name": "syncpool-test",
            "cluster_uuid": "c2luY3Bvb2wtdGVzdC1jbHVzdGVy",
            "version": {
                "number": VERSION,
                "build_flavor": "default",
                "build_type": "docker",
                "build_hash": "0000000000000000000000000000000000000000",
                "build_date": "2025-01-01T00:00:00.000Z",
                "build_snapshot": False,
                "lucene_version": "10.1.0",
                "minimum_wire_compatibility_version": "8.18.0",
                "minimum_index_compatibility_version": "8.0.0",
            },
            "tagline": "You Know, for Search",
        }

    def _health(self) -> dict[str, Any]:
        with self._store.lock:
            shards = len(self._store.indices)
        return {
            "cluster_name": "syncpool-test",
            "status": "green",
            "timed_out": False,
            "number_of_nodes": 1,
            "number_of_data_nodes": 1,
            "active_primary_shards": shards,
            "active_shards": shards,
            "relocating_shards": 0,
            "initializing_shards": 0,
            "unassigned_shards": 0,
            "unassigned_primary_shards": 0,
            "delayed_unassigned_shards": 0,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": 100.0,
        }


class ExternalElasticsearch:
    """A real cluster (``SYNCPOOL_TEST_ELASTICSEARCH_URL``) with the attributes of [`ElasticsearchNode`][].

    Fault controls and stop/start raise ``NotImplementedError``.

    Args:
        url: The cluster URL, optionally with ``user:password@`` in it.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 9200)
        self.url = f"{parts.scheme}://{self.host}:{self.port}"

    def is_running(self) -> bool:
        """Always True: an external cluster is assumed to be up."""
        return True

    def start(self) -> ExternalElasticsearch:
        """Do nothing."""
        return self

    def stop(self) -> None:
        """Raise ``NotImplementedError``: an external cluster cannot be stopped by tests."""
        raise NotSupportedExternally(
            "cannot stop an external Elasticsearch (SYNCPOOL_TEST_ELASTICSEARCH_URL is set)"
        )

    def close(self) -> None:
        """Do nothing."""

    def set_behaviour(self, status: int | None = None, delay: float = 0.0, hang: bool = False) -> None:
        """Accept the normal behaviour (no arguments); raise ``NotImplementedError`` for any fault."""
        if status is not None or delay or hang:
            raise NotSupportedExternally("cannot inject faults into an external Elasticsearch")

    def set_auth(self, **credentials: Any) -> None:
        """Accept "no change" (no arguments); raise ``NotImplementedError`` otherwise."""
        if any(value is not None for value in credentials.values()):
            raise NotSupportedExternally("cannot change the credentials of an external Elasticsearch")

    def reset(self) -> None:
        """Do nothing: an external cluster always behaves normally."""

    @property
    def requests_seen(self) -> int:
        """Raise ``NotImplementedError``: requests to an external cluster are not counted."""
        raise NotSupportedExternally("requests to an external Elasticsearch are not counted")

    def __repr__(self) -> str:
        return f"<ExternalElasticsearch {self.url} user={self.username}>"
