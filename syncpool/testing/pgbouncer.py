"""A real PgBouncer for tests, from Debian's ``pgbouncer`` package, in front of a PostgreSQL server.

[`PgBouncerServer`][] writes a configuration and an auth file into a fresh temporary directory and runs the
``pgbouncer`` binary (found in ``PATH`` or ``/usr/sbin``) in the foreground, listening on 127.0.0.1 only, on a TCP port
chosen at the first start and kept across stop/start. Clients log in with SCRAM (``auth_type = scram-sha-256``) as
the role the bouncer itself uses on the server: the auth file holds that role's password, so PgBouncer can both
check the client and log in to PostgreSQL with it, and the configuration file holds no secret at all.

PgBouncer refuses to run as root. When this process is root, the bouncer runs as the same unprivileged system user
as the embedded PostgreSQL (``embedded_postgres``, created with ``useradd`` if missing); its directory is chowned to
that user and readable by nobody else. As non-root, everything runs as the current user.

No ``pgbouncer`` process may outlive its owner: an ``atexit`` hook stops running bouncers, and each has a small
watchdog process that stops it and deletes its directory when the owning process dies without cleaning up.

When the binary is missing, [`PgBouncerServer.start`][] raises ``FileNotFoundError`` with
``INSTALL_HINT``, and the pytest fixtures skip with it.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Protocol

from syncpool._secrets import redact

from .postgres import (
    _Addresses,
    _allow_traversal,
    _chown_tree,
    _conninfo,
    _free_port,
    _run_as,
    _scratch_root,
)
from .watchdog import Watchdog

__all__ = ["INSTALL_HINT", "PgBouncerServer", "find_pgbouncer"]

logger = logging.getLogger("syncpool")

#: Why a test needing PgBouncer is skipped, and how to fix it.
INSTALL_HINT = "pgbouncer is not installed: apt-get install -y pgbouncer"

#: PgBouncer's pool modes: when a server connection goes back to the bouncer's pool.
POOL_MODES = ("session", "transaction", "statement")
_STOP_MODES = ("safe", "fast")
# Where Debian puts the binary; /usr/sbin is not in PATH for every user.
_SBIN_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer")
# Role and database names go unquoted into the configuration; anything fancier is not worth the quoting rules.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ADMIN_COMMANDS = frozenset({"CLIENTS", "SERVERS", "POOLS", "STATS", "DATABASES", "CONFIG", "LISTS", "USERS"})

_running: set[PgBouncerServer] = set()


class Upstream(Protocol):
    """What [`PgBouncerServer`][] needs to know of the PostgreSQL server behind it."""

    host: str
    port: int
    user: str
    password: str
    dbname: str


def find_pgbouncer() -> str | None:
    """Return the path of the ``pgbouncer`` binary (``PATH``, then ``/usr/sbin``), or None when it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in _SBIN_CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _ensure_run_as_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)


def _auth_file_quote(value: str) -> str:
    # PgBouncer's auth file format: fields in double quotes, a double quote inside doubled.
    return '"' + value.replace('"', '""') + '"'


class PgBouncerServer(_Addresses):
    """A throw-away PgBouncer on 127.0.0.1 in front of a PostgreSQL server.

    Clients connect with [`dsn`][syncpool.testing.PgBouncerServer.dsn] (or
    [`url`][syncpool.testing.PgBouncerServer.url]): the same role, password and database name as the upstream, on the
    bouncer's ``host`` and ``port``. PgBouncer keeps at most ``default_pool_size`` server connections for that role
    and database (no reserve pool, no minimum), whatever the number of clients, up to ``max_client_conn``.

    Args:
        upstream: The PostgreSQL server to put the bouncer in front of: anything with ``host``, ``port``, ``user``,
            ``password`` and ``dbname`` (a [`PostgresServer`][], an
            [`ExternalPostgres`][]). Its address is read at every start, so a server whose
            port is picked at its first start may be given before it starts.
        user: Role the clients and the bouncer log in as. Defaults to ``upstream.user``.
        password: Password of ``user``. Defaults to ``upstream.password``.
        pool_mode: ``"transaction"`` (a server connection per transaction), ``"session"`` (one per client
            connection, for its whole life) or ``"statement"``. Defaults to ``"transaction"``.
        default_pool_size: Server connections per role and database. Defaults to 4.
        max_client_conn: Client connections the bouncer accepts. Defaults to 100.
        port: TCP port; 0 picks a free one at the first start.
        binary: Path of the ``pgbouncer`` executable. Defaults to ``find_pgbouncer``'s answer.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        upstream: Upstream,
        *,
        user: str | None = None,
        password: str | None = None,
        pool_mode: str = "transaction",
        default_pool_size: int = 4,
        max_client_conn: int = 100,
        port: int = 0,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {POOL_MODES}, not {pool_mode!r}")
        for name, value in (("default_pool_size", default_pool_size), ("max_client_conn", max_client_conn)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int between 0 and 65535, not {port!r}")
        self.user = upstream.user if user is None else user
        self.password = upstream.password if password is None else password
        self.dbname = upstream.dbname
        for label, name in (("user", self.user), ("dbname", self.dbname)):
            if not _NAME.match(name):
                raise ValueError(f"{label} must be a plain identifier (letters, digits, _ . -), not {name!r}")
        if any(c in self.password for c in "\r\n\0"):
            raise ValueError("password must not contain a line break or a NUL character")  # never echo it
        self.upstream = upstream
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self.max_client_conn = max_client_conn
        self._fixed_port = port
        self.port = port
        self._binary = os.fspath(binary) if binary is not None else None
        self._dir: Path | None = None
        self._remove_dir: weakref.finalize[Any, Any] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: Watchdog | None = None
        self._lock = threading.RLock()

    # -- files -------------------------------------------------------------------------------------------------

    @property
    def log_file(self) -> Path | None:
        """PgBouncer's log (its standard output and error), or None before the first start."""
        return self._dir / "pgbouncer.log" if self._dir is not None else None

    def log_text(self) -> str:
        """Return the bouncer's log so far (empty before the first start)."""
        log = self.log_file
        if log is None or not log.exists():
            return ""
        return redact(log.read_text(errors="replace"), [self.password])

    def _config(self, port: int) -> str:
        upstream_port = int(self.upstream.port)
        if upstream_port == 0:
            raise RuntimeError("the upstream PostgreSQL server has no port yet: start it first")
        assert self._dir is not None
        # No password here: PgBouncer logs in to the server with the one in the auth file.
        return "\n".join(
            [
                "[databases]",
                f"{self.dbname} = host={self.upstream.host} port={upstream_port} dbname={self.dbname}",
                "",
                "[pgbouncer]",
                f"listen_addr = {self.host}",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = scram-sha-256",
                f"auth_file = {self._dir / 'userlist.txt'}",
                f"admin_users = {self.user}",
                f"pool_mode = {self.pool_mode}",
                f"default_pool_size = {self.default_pool_size}",
                "min_pool_size = 0",
                "reserve_pool_size = 0",
                f"max_client_conn = {self.max_client_conn}",
                "server_round_robin = 0",
                "",
            ]
        )

    def _write_files(self, port: int) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="syncpool-pgbouncer-", dir=_scratch_root()))
            # A bouncer stopped but never closed still leaves no directory behind (at collection or exit).
            self._remove_dir = weakref.finalize(self, shutil.rmtree, self._dir, True)
        auth_file = self._dir / "userlist.txt"
        # Created 0600 before the secret goes in, so that it is never readable by others, even for an instant.
        descriptor = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{_auth_file_quote(self.user)} {_auth_file_quote(self.password)}\n")
        (self._dir / "pgbouncer.ini").write_text(self._config(port))
        run_as = _run_as()
        if run_as:
            _ensure_run_as_user(run_as)
            _allow_traversal(self._dir)
            _chown_tree(self._dir, run_as)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Return True if the bouncer process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> PgBouncerServer:
        """Start the bouncer and wait until it accepts TCP connections; does nothing if it is running.

        Raises:
            FileNotFoundError: ``pgbouncer`` is not installed (the message is ``INSTALL_HINT``).
            RuntimeError: It did not start; the message ends with its log.
        """
        with self._lock:
            if self.is_running():
                return self
            binary = self._binary or find_pgbouncer()
            if binary is None or not os.access(binary, os.X_OK):
                raise FileNotFoundError(INSTALL_HINT)
            attempts = 3 if self._fixed_port == 0 and self.port == 0 else 1
            for attempt in range(attempts):
                port = self.port or _free_port(self.host)
                try:
                    self._spawn(binary, port, timeout)
                except RuntimeError:
                    # Another process may have taken the free port between our probe and the bouncer's bind.
                    if attempt == attempts - 1:
                        raise
                    continue
                self.port = port
                break
            self._start_watchdog()
            _running.add(self)
            self._started_by = os.getpid()
            return self

    def _spawn(self, binary: str, port: int, timeout: float) -> None:
        self._write_files(port)
        assert self._dir is not None and self.log_file is not None
        kwargs: dict[str, Any] = {}
        run_as = _run_as()
        if run_as:
            import pwd

            entry = pwd.getpwnam(run_as)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with open(self.log_file, "ab") as log:
            log_start = log.tell()
            # Its own session: a Ctrl-C meant for the test run must not reach it; stop() and the watchdog stop it.
            process = subprocess.Popen(
                [binary, str(self._dir / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                **kwargs,
            )
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            # Something answering on the port is not proof enough (another process may hold it): PgBouncer says
            # "process up" once it listens, and exits if it cannot.
            if self._logged_since(log_start, "process up"):
                try:
                    with socket.create_connection((self.host, port), timeout=1.0):
                        pass
                except OSError:
                    pass
                else:
                    self._process = process
                    logger.debug("PgBouncer (%s) listening on %s:%d", self.pool_mode, self.host, port)
                    return
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
        process.wait()
        raise RuntimeError(
            f"pgbouncer did not start on port {port} (exit {process.returncode}):\n{self.log_text()[-4000:]}"
        )

    def _logged_since(self, offset: int, text: str) -> bool:
        assert self.log_file is not None
        with open(self.log_file, "rb") as log:
            log.seek(offset)
            return text.encode() in log.read()

    def stop(self, mode: str = "safe", timeout: float = 5.0) -> None:
        """Stop the bouncer and wait for it to be gone. The port is kept for the next [`start`][].

        Args:
            mode: ``"safe"`` (SIGINT: PgBouncer waits for the server connections in use to be released, then exits;
                ``"fast"`` after ``timeout`` seconds) or ``"fast"`` (SIGTERM: closes every connection at once).
            timeout: Seconds to wait for each signal to take effect before the next, harder one.
        """
        if mode not in _STOP_MODES:
            raise ValueError(f"mode must be one of {_STOP_MODES}, not {mode!r}")
        with self._lock:
            process, self._process = self._process, None
            if process is not None and process.poll() is None:
                signals = [signal.SIGINT, signal.SIGTERM] if mode == "safe" else [signal.SIGTERM]
                for signum in [*signals, signal.SIGKILL]:
                    process.send_signal(signum)
                    try:
                        process.wait(timeout)
                        break
                    except subprocess.TimeoutExpired:
                        logger.warning("pgbouncer on port %d ignored signal %d", self.port, signum)
            if process is not None:
                process.wait()
            _running.discard(self)
            self._stop_watchdog()

    def restart(self, mode: str = "safe") -> None:
        """Stop (with ``mode``) and start again on the same port."""
        with self._lock:
            self.stop(mode)
            self.start()

    def close(self) -> None:
        """Stop the bouncer (fast) and delete its directory."""
        with self._lock:
            try:
                self.stop("fast")
            finally:
                if self._remove_dir is not None:
                    self._remove_dir()
                    self._remove_dir = None
                self._dir = None

    def __enter__(self) -> PgBouncerServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return (
            f"<PgBouncerServer {self.pool_mode} pool of {self.default_pool_size} on {self.host}:{self.port}"
            f" -> {self.upstream.host}:{self.upstream.port}/{self.dbname} {state}>"
        )

    # -- admin console -----------------------------------------------------------------------------------------

    def show(self, what: str) -> list[dict[str, Any]]:
        """Run ``SHOW <what>`` on PgBouncer's admin console and return its rows as dicts.

        ``what`` is one of ``CLIENTS``, ``SERVERS``, ``POOLS``, ``STATS``, ``DATABASES``, ``CONFIG``, ``LISTS`` or
        ``USERS`` (case-insensitive). ``SHOW CLIENTS`` lists the console's own connection too, under the
        ``pgbouncer`` database.
        """
        command = what.upper()
        if command not in _ADMIN_COMMANDS:
            raise ValueError(f"what must be one of {sorted(_ADMIN_COMMANDS)}, not {what!r}")
        import psycopg
        from psycopg.rows import dict_row

        admin = _conninfo(host=self.host, port=self.port, user=self.user, password=self.password, dbname="pgbouncer")
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=10, row_factory=dict_row) as conn:
                return conn.execute(f"SHOW {command}").fetchall()
        except psycopg.Error as error:
            raise RuntimeError(redact(f"SHOW {command} failed: {error}", [self.password])) from None

    # -- internals ---------------------------------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        self._stop_watchdog()
        if self._process is None or self._dir is None:
            return
        self._watchdog = Watchdog(self._process.pid, stop_signal=signal.SIGTERM, grace=5.0, directory=str(self._dir))

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.dismiss()


@atexit.register
def _stop_all() -> None:
    """Backstop for interrupted runs: no pgbouncer process may outlive the interpreter (in the process that started
    them only: a forked child must not stop its parent's bouncers at its own exit)."""
    here = os.getpid()
    for bouncer in list(_running):
        if getattr(bouncer, "_started_by", here) != here:
            continue
        try:
            bouncer.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            logger.warning("could not stop %r at exit", bouncer, exc_info=True)
