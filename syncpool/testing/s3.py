"""An S3 endpoint for tests: moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port.

moto keeps its state in memory, per process; every [`S3Server`][] in one process therefore shares buckets.
Tests should use bucket names of their own (e.g. from ``tmp_path.name`` or a uuid).

To run the same tests against a real endpoint, set ``SYNCPOOL_TEST_S3_ENDPOINT``; credentials and region then come
from the standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` variables, and the
pytest fixtures yield an [`ExternalS3`][] whose [`stop`][ExternalS3.stop] raises ``NotImplementedError``.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .external import NotSupportedExternally

__all__ = ["ExternalS3", "KeepAliveFront", "RefusingS3Endpoint", "S3Server"]


def _mask(secret: str) -> str:
    return "***" if secret else ""


class S3Server:
    """moto's S3 server running in a background thread of this process.

    Args:
        host: Address to listen on.
        access_key: Fake access key id clients should use.
        secret_key: Fake secret key clients should use.
        region: Region clients should use.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        access_key: str = "testing",
        secret_key: str = "testing",
        region: str = "us-east-1",
    ) -> None:
        self.host = host
        self.port = 0
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self._server: Any = None
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:port``; only valid once started."""
        return f"http://{self.host}:{self.port}"

    def client_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments for ``boto3.client("s3", **kwargs)`` pointing at this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }

    def is_running(self) -> bool:
        """Return True between [`start`][] and [`stop`][]."""
        return self._server is not None

    def start(self) -> S3Server:
        """Start the server on a free port (or the previous port after a [`stop`][]). Returns ``self``."""
        from moto.server import ThreadedMotoServer

        with self._lock:
            if self._server is None:
                server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
                server.start()
                self.port = server.get_host_and_port()[1]
                self._server = server
        return self

    def stop(self) -> None:
        """Stop the server and join its thread. moto's in-memory state survives until the process ends."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()

    def close(self) -> None:
        """Same as [`stop`][]."""
        self.stop()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<S3Server {self.endpoint_url} region={self.region} access_key={self.access_key} "
            f"secret_key={_mask(self.secret_key)}>"
        )


class ExternalS3:
    """A real S3-compatible endpoint (``SYNCPOOL_TEST_S3_ENDPOINT``) with the attributes of [`S3Server`][].

    Credentials come from ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_DEFAULT_REGION`` (or
    ``AWS_REGION``; defaults to ``us-east-1``).

    Args:
        endpoint_url: The endpoint, e.g. ``http://minio:9000``.
    """

    def __init__(self, endpoint_url: str) -> None:
        from urllib.parse import urlsplit

        self.endpoint_url = endpoint_url.rstrip("/")
        parts = urlsplit(self.endpoint_url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.access_key = os.environ.get("AWS_ACCESS_KEY_ID", "")
        self.secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        self.region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"

    def client_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments for ``boto3.client("s3", **kwargs)``."""
        kwargs: dict[str, Any] = {"endpoint_url": self.endpoint_url, "region_name": self.region}
        if self.access_key:
            kwargs["aws_access_key_id"] = self.access_key
            kwargs["aws_secret_access_key"] = self.secret_key
        return kwargs

    def is_running(self) -> bool:
        """Always True: an external endpoint is assumed to be up."""
        return True

    def start(self) -> ExternalS3:
        """Do nothing."""
        return self

    def stop(self) -> None:
        """Raise ``NotImplementedError``: an external endpoint cannot be stopped by tests."""
        raise NotSupportedExternally("cannot stop an external S3 endpoint (SYNCPOOL_TEST_S3_ENDPOINT is set)")

    def close(self) -> None:
        """Do nothing."""

    def __repr__(self) -> str:
        return f"<ExternalS3 {self.endpoint_url} region={self.region} secret_key={_mask(self.secret_key)}>"


class RefusingS3Endpoint:
    """An S3-shaped HTTP endpoint that refuses every request's credentials with 403 and an AWS error code.

    moto accepts any credentials, so this is how a test sees what a real S3 does with a wrong or revoked key.

    Args:
        code: The AWS error code to answer with. Defaults to ``"InvalidAccessKeyId"``.
        host: Address to listen on.
    """

    def __init__(self, *, code: str = "InvalidAccessKeyId", host: str = "127.0.0.1") -> None:
        self.code = code
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the running endpoint."""
        if self._server is None:
            raise RuntimeError("RefusingS3Endpoint is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> RefusingS3Endpoint:
        """Listen on a free port, answering from a daemon thread."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        code = self.code

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                """Keep test output quiet."""

            def _refuse(self, body: bool) -> None:
                payload = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    "<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>"
                ).encode()
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload) if body else 0))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                self._refuse(body=True)

            def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
                self._refuse(body=True)

            def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
                self._refuse(body=False)

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="refusing-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and join the serving thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> RefusingS3Endpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class KeepAliveFront:
    """An HTTP/1.1 front for moto that keeps client connections open, as S3 does, and counts them.

    moto's werkzeug server answers every request with ``Connection: close``, so behind it no client keeps a
    connection and a client's connection cap cannot show. The front answers on the client's connection and keeps
    it open, forwarding each request to moto over a connection of its own.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        """Front ``upstream_host:upstream_port`` (moto's server) on a free port of 127.0.0.1."""
        front = self
        self.open = 0
        """Client connections open now."""
        self.opened = 0
        """Client connections accepted since the start."""
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with front._lock:
                    front.open += 1
                    front.opened += 1
                    front._sockets.add(self.request)

            def finish(self) -> None:
                with front._lock:
                    front.open -= 1
                    front._sockets.discard(self.request)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                """Keep test output quiet."""

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                skipped = {"connection", "keep-alive", "expect"}
                headers = {name: value for name, value in self.headers.items() if name.lower() not in skipped}
                upstream = http.client.HTTPConnection(upstream_host, upstream_port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in {"connection", "keep-alive", "transfer-encoding", "content-length"}:
                        self.send_header(name, value)
                length_header = response.getheader("Content-Length", "0") if self.command == "HEAD" else len(data)
                self.send_header("Content-Length", str(length_header))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="keep-alive-front", daemon=True)

    @property
    def port(self) -> int:
        """The port the front listens on (127.0.0.1)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The endpoint URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KeepAliveFront:
        """Start serving on a thread of its own; returns the front."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close every client connection still open."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # unblock handler threads still waiting for a next request
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(10)

    def __enter__(self) -> KeepAliveFront:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
