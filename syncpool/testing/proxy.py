"""A TCP proxy that breaks connections on demand, to put in front of any server in tests.

[`FaultProxy`][] listens on 127.0.0.1 (a free port, kept for its whole life) and forwards each accepted
connection to the target. Its mode can be switched at any time and applies to *new* connections; ``latency``
also applies to established ones, and [`FaultProxy.cut`][] acts on established ones only:

============== =====================================================================================
pass_through   forward bytes both ways (the default)
refuse         stop listening: connects fail with ECONNREFUSED; ``pass_through()`` listens again on the same port
reset          accept, then close with SO_LINGER 0: the client sees a TCP RST (ECONNRESET), on connect or on I/O
blackhole      accept and never forward or answer: reads time out
latency(s)     forward, sleeping ``s`` seconds before passing on each chunk, in each direction
cut()          RST every established connection at once (both sides); the mode does not change
============== =====================================================================================

Threads: one accept thread, plus two pump threads per forwarded connection (one per direction). All are daemon
threads named ``syncpool-proxy-...`` and joined by [`FaultProxy.close`][].
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading

__all__ = ["FaultProxy"]

logger = logging.getLogger("syncpool")

_CHUNK = 64 * 1024
_POLL = 0.05  # how often blocked threads look at their stop flags


def _wait(sock: socket.socket, *, write: bool) -> bool:
    """Wait up to ``_POLL`` seconds for ``sock`` to be readable (or writable); return True if it is."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(_POLL * 1000))


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        # Wakes up a pump thread blocked in poll()/recv() on this socket; sends nothing to the peer.
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One proxied connection: a client socket, an upstream socket and the two pump threads between them."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.lock = threading.Lock()
        self.closed = False
        self.pumps_left = 2
        self.threads = [
            threading.Thread(
                target=self._pump, args=(client, upstream), name="syncpool-proxy-up", daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(upstream, client), name="syncpool-proxy-down", daemon=True
            ),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def abort(self) -> None:
        """RST both sides now; idempotent."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        _abort(self.client)
        _abort(self.upstream)
        self.proxy._forget(self)

    def _finish(self) -> None:
        """Called by each pump when it ends; the last one closes both sockets gracefully."""
        with self.lock:
            self.pumps_left -= 1
            if self.pumps_left or self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()
        self.proxy._forget(self)

    def _pump(self, source: socket.socket, destination: socket.socket) -> None:
        try:
            while not self.closed:
                if not _wait(source, write=False):
                    continue
                data = source.recv(_CHUNK)
                if not data:
                    if self.closed:
                        break  # woken by abort(): the peer gets a RST, not a FIN
                    # Half-close: pass the FIN on and let the other direction finish on its own.
                    with contextlib.suppress(OSError):
                        destination.shutdown(socket.SHUT_WR)
                    break
                delay = self.proxy._latency
                if delay and self.proxy._stopping.wait(delay):
                    break
                self._send_all(destination, data)
        except (OSError, ValueError):
            # A reset on one side is passed on as a reset to the other.
            self.abort()
        finally:
            self._finish()

    def _send_all(self, destination: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed:
            if _wait(destination, write=True):
                view = view[destination.send(view) :]


class FaultProxy:
    """A threaded TCP proxy to ``target_host:target_port`` whose failure mode can be switched at any time.

    Args:
        target_host: Host to forward to.
        target_port: Port to forward to.
        listen_host: Address to listen on. The port is a free one, chosen by [`start`][] and kept until
            [`close`][].
        connect_timeout: Timeout of the proxy's own connect to the target, in seconds. Defaults to 5.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        connect_timeout: float = 5.0,
    ) -> None:
        if not 0 < target_port <= 65535:
            raise ValueError(f"target_port must be between 1 and 65535, not {target_port}")
        self.target_host = target_host
        self.target_port = target_port
        self.host = listen_host
        self.port = 0
        self.connect_timeout = connect_timeout
        self._mode = "pass_through"
        self._latency = 0.0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._links: set[_Link] = set()
        self._held: set[socket.socket] = set()  # blackholed connections
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._started = False

    # -- addresses and state -----------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` clients should connect to."""
        return (self.host, self.port)

    @property
    def mode(self) -> str:
        """The current mode: ``pass_through``, ``refuse``, ``reset`` or ``blackhole``."""
        return self._mode

    @property
    def connections(self) -> int:
        """How many proxied (forwarded) connections are open right now."""
        with self._lock:
            return len(self._links)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start listening and accepting. Returns ``self``."""
        with self._lock:
            if self._started:
                return self
            self._started = True
            self._stopping.clear()
            self._listen()
            self._accept_thread = threading.Thread(
                target=self._accept_loop, name="syncpool-proxy-accept", daemon=True
            )
            self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop listening, RST every connection and join every thread."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping.set()
            links, held = list(self._links), list(self._held)
            self._held.clear()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5.0)
        with self._lock:
            self._close_listener()
        for link in links:
            link.abort()
        for sock in held:
            _abort(sock)
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5.0)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<FaultProxy {self.host}:{self.port} -> {self.target_host}:{self.target_port} mode={self._mode} "
            f"latency={self._latency} connections={self.connections}>"
        )

    # -- modes -------------------------------------------------------------------------------------------------

    def pass_through(self) -> None:
        """Forward new connections normally (listening again on the same port after [`refuse`][]); no latency."""
        with self._lock:
            self._mode = "pass_through"
            self._latency = 0.0
            if self._started and self._listener is None:
                self._listen()

    def refuse(self) -> None:
        """Stop listening, so that connects fail with ECONNREFUSED. Established connections are untouched."""
        with self._lock:
            self._mode = "refuse"
            self._close_listener()

    def reset(self) -> None:
        """Accept new connections and RST them at once."""
        self._set_mode("reset")

    def blackhole(self) -> None:
        """Accept new connections and never forward or answer anything on them."""
        self._set_mode("blackhole")

    def latency(self, seconds: float) -> None:
        """Forward new and established connections, delaying each chunk by ``seconds`` in each direction."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, not {seconds}")
        self._set_mode("pass_through")
        self._latency = float(seconds)

    def cut(self) -> None:
        """RST every established connection (forwarded or blackholed) at once; the mode stays as it is."""
        with self._lock:
            links, held = list(self._links), list(self._held)
            self._held.clear()
        for link in links:
            link.abort()
        for sock in held:
            _abort(sock)

    # -- internals ---------------------------------------------------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        with self._lock:
            self._mode = mode
            if self._started and self._listener is None:
                self._listen()

    def _listen(self) -> None:
        """Open the listening socket (lock held); on the same port as before after a refuse()."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError:
            listener.close()
            raise
        listener.listen(128)
        listener.setblocking(False)  # accept() only after poll() said so; never block holding the lock
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _close_listener(self) -> None:
        """Close the listening socket (lock held). Pending, not yet accepted connects are reset by the kernel."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() stops listening at once on Linux; close() alone would wait for the accept thread's poll()
            # to drop its reference, and connects in between would be accepted by the kernel.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                self._stopping.wait(_POLL)
                continue
            try:
                if not _wait(listener, write=False):
                    continue
                # Decided under the lock: refuse() cannot close the listener between our check and accept().
                with self._lock:
                    if self._listener is not listener:
                        continue
                    client, _ = listener.accept()
                    mode = self._mode
            except (BlockingIOError, InterruptedError):
                continue
            except (OSError, ValueError):
                continue  # the listener was closed under us by refuse()/close()
            client.setblocking(True)
            try:
                self._dispatch(client, mode)
            except Exception:  # noqa: BLE001 - the accept thread must survive anything
                logger.exception("FaultProxy %s:%d could not handle a connection", self.host, self.port)
                _abort(client)

    def _dispatch(self, client: socket.socket, mode: str) -> None:
        if mode == "reset":
            _abort(client)
            return
        if mode == "blackhole":
            with self._lock:
                self._held.add(client)
            return
        try:
            upstream = socket.create_connection(
                (self.target_host, self.target_port), timeout=self.connect_timeout
            )
        except OSError:
            _abort(client)  # the target is down: the client sees a reset, like a real proxy in front of it
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(self, client, upstream)
        with self._lock:
            if self._stopping.is_set():
                link.closed = True
            else:
                self._links.add(link)
        if link.closed:
            _abort(client)
            _abort(upstream)
            return
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + link.threads
        link.start()
