"""A process-wide registry of named pools: one pool per name, reported together, closed together.

::

    from syncpool import registry

    pool = registry.get_pool("jobs", {"connector": "sqlite", "options": {"database": "app.db"}}, max_size=4)
    ...                                    # anywhere else in the program:
    pool = registry.get_pool("jobs")       # the same pool

Pools in the registry are closed when the interpreter exits (an ``atexit`` hook, registered with the first
pool), and on SIGTERM once :func:`install_signal_handlers` has been called. A pool closed by its owner is dropped
from the registry and built afresh on the next :func:`get_pool` that gives its configuration.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from time import monotonic
from types import FrameType
from typing import Any

from .config import PoolConfig, _is_secret, _show, config_from_env, env_prefix, parse_config
from .connector import Connector
from .pool import Pool
from .states import PoolState

__all__ = ["close_all", "get_pool", "info", "install_signal_handlers", "register", "unregister"]

logger = logging.getLogger("syncpool")

#: Seconds the atexit hook lets leases in flight finish before giving up on them.
EXIT_TIMEOUT = 5.0


@dataclass(frozen=True)
class _Entry:
    pool: Pool[Any]
    # What built it: a PoolConfig, (connector object, pool kwargs) for an object, or None for register().
    config: PoolConfig | tuple[Any, dict[str, Any]] | None


_lock = threading.RLock()  # re-entrant: a signal handler may run close_all() in a thread that holds it
_entries: dict[str, _Entry] = {}
_atexit_registered = False
_shutting_down = False


def _normalise(name: str, config: Any, pool_kwargs: dict[str, Any]) -> PoolConfig | tuple[Any, dict[str, Any]]:
    if isinstance(config, PoolConfig):
        config = {"connector": config.connector, "options": config.options, "pool": config.pool}
    if isinstance(config, Mapping):
        pool_section = config.get("pool") or {}
        if not isinstance(pool_section, Mapping):
            raise ValueError(f"pool: expected a mapping of pool options, got {_show('pool', pool_section)}")
        merged = {**config, "pool": {**pool_section, **pool_kwargs}}
        parsed = parse_config(merged)
        if parsed.pool.get("name", name) != name:
            raise ValueError(f"pool.name: {parsed.pool['name']!r} differs from the registry name {name!r}")
        parsed.pool.pop("name", None)
        return parsed
    if isinstance(config, Connector) or callable(config):
        if pool_kwargs.get("name", name) != name:
            raise ValueError(f"name: {pool_kwargs['name']!r} differs from the registry name {name!r}")
        return config, {key: value for key, value in pool_kwargs.items() if key != "name"}
    raise TypeError(
        f"config must be a mapping, a syncpool.config.PoolConfig, a Connector or a zero-argument callable, not "
        f"{type(config).__name__}"
    )


def _differences(registered: Any, requested: Any) -> list[str]:
    """Describe how two normalised configurations differ, without showing secret values."""
    if isinstance(registered, PoolConfig) and isinstance(requested, PoolConfig):
        old, new = registered.flatten(), requested.flatten()
    elif isinstance(registered, tuple) and isinstance(requested, tuple):
        old = {"connector": registered[0], **{f"pool.{k}": v for k, v in registered[1].items()}}
        new = {"connector": requested[0], **{f"pool.{k}": v for k, v in requested[1].items()}}
        if old["connector"] is not new["connector"]:
            return [f"connector: {old.pop('connector')!r} is not {new.pop('connector')!r}"]
        old.pop("connector"), new.pop("connector")
    else:
        return ["connector: registered from a different kind of configuration"]
    missing = object()
    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, missing), new.get(key, missing)
        if before == after:
            continue
        if _is_secret(key):
            lines.append(f"{key} differs")
        else:
            shown_before = "(unset)" if before is missing else _show(key, before)
            shown_after = "(unset)" if after is missing else _show(key, after)
            lines.append(f"{key}: registered {shown_before}, requested {shown_after}")
    return lines


def _is_closed(pool: Pool[Any]) -> bool:
    # Not pool.closed, which is also true of a pool built with open=False and not opened yet. A closing pool is as
    # good as closed: it leases nothing, so get_pool() builds a new one.
    return pool.state in (PoolState.CLOSING, PoolState.CLOSED)


def _ensure_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_close_at_exit)
        _atexit_registered = True


def _close_at_exit() -> None:
    close_all(timeout=EXIT_TIMEOUT)


def get_pool(name: str, config: Any = None, **pool_kwargs: Any) -> Pool[Any]:
    """Return the pool registered as ``name``, building and registering it on first use.

    Args:
        name: The registry key, also the pool's name.
        config: How to build the pool: a configuration mapping (see :mod:`syncpool.config`), a
            :class:`~syncpool.config.PoolConfig`, or a :class:`~syncpool.Connector` / zero-argument callable
            (compared by identity). None returns the registered pool; if there is none, the pool is configured
            from ``SYNCPOOL_<NAME>_*`` environment variables when ``SYNCPOOL_<NAME>_CONNECTOR`` is set.
        pool_kwargs: :class:`~syncpool.Pool` options, merged over the mapping's ``pool`` section.

    Raises:
        ValueError: ``name`` is registered with a different configuration (the message lists the differences,
            never a secret value), or the configuration is invalid.
        KeyError: Nothing is registered as ``name``, no configuration was given and the environment has none.
    """
    with _lock:
        entry = _entries.get(name)
        if entry is not None and _is_closed(entry.pool):
            del _entries[name]  # closed by its owner: forget it, build afresh below if configured
            entry = None
        if config is None and not pool_kwargs:
            if entry is not None:
                return entry.pool
            from os import environ

            if env_prefix(name) + "CONNECTOR" not in environ:
                raise KeyError(f"no pool named {name!r} is registered, and {env_prefix(name)}CONNECTOR is not set")
            config = config_from_env(name)
        elif config is None:
            raise ValueError(f"get_pool({name!r}): pool options given without a configuration")
        wanted = _normalise(name, config, pool_kwargs)
        if entry is not None:
            if entry.config is None:
                raise ValueError(
                    f"pool {name!r} was registered with register(); get it with get_pool({name!r}) and no config"
                )
            differences = _differences(entry.config, wanted)
            if differences:
                raise ValueError(
                    f"pool {name!r} is already registered with a different configuration: " + "; ".join(differences)
                )
            return entry.pool
        # Built under the registry lock so that two threads cannot both build it; Pool() does no I/O (its
        # connects run on its own worker threads), so the lock is held briefly.
        if isinstance(wanted, PoolConfig):
            pool = wanted.create_pool(name=name)
        else:
            pool = Pool(wanted[0], name=name, **wanted[1])
        _entries[name] = _Entry(pool, wanted)
        _ensure_atexit()
        return pool


def register(pool: Pool[Any]) -> Pool[Any]:
    """Add a pool built elsewhere under its ``name``, so that :func:`close_all` and :func:`info` include it.

    Registering the same pool twice is harmless. Returns ``pool``.

    Raises:
        ValueError: Another open pool is registered under the same name.
    """
    if not isinstance(pool, Pool):
        raise TypeError(f"register() takes a syncpool.Pool, not {type(pool).__name__}")
    with _lock:
        entry = _entries.get(pool.name)
        if entry is not None and entry.pool is not pool and not _is_closed(entry.pool):
            raise ValueError(f"another pool is already registered as {pool.name!r}")
        if entry is None or entry.pool is not pool:
            _entries[pool.name] = _Entry(pool, None)
        _ensure_atexit()
    return pool


def unregister(name: str) -> Pool[Any] | None:
    """Remove ``name`` from the registry without closing its pool; return the pool, or None if there was none."""
    with _lock:
        entry = _entries.pop(name, None)
    return None if entry is None else entry.pool


def close_all(timeout: float = 5.0) -> None:
    """Close every registered pool and empty the registry.

    All pools stop leasing at once, then leases in flight get up to ``timeout`` seconds in all to come back (the
    pools close in parallel, so the timeout is not multiplied by their number); see :meth:`Pool.close`. In an
    ``atexit`` handler on Python 3.12, where no new thread may start, they close one after another within that
    same overall timeout. Safe to call more than once, from any thread.
    """
    with _lock:
        pools = [entry.pool for entry in _entries.values()]
        _entries.clear()
    if not pools:
        return
    deadline = monotonic() + timeout
    closers = [
        threading.Thread(target=_close_one, args=(pool, timeout), name=f"syncpool-registry-close-{pool.name}",
                         daemon=True)
        for pool in pools
    ]
    started: list[threading.Thread] = []
    inline: list[Pool[Any]] = []
    for pool, closer in zip(pools, closers, strict=True):
        try:
            closer.start()
            started.append(closer)
        except RuntimeError:  # in an atexit handler, Python 3.12 refuses new threads: close it here instead
            inline.append(pool)
    for pool in inline:
        _close_one(pool, max(0.0, deadline - monotonic()))
    for closer in started:
        # A little slack past the deadline for the pool's own thread joins to finish.
        closer.join(max(0.0, deadline - monotonic()) + 1.0)


def _close_one(pool: Pool[Any], timeout: float) -> None:
    try:
        pool.close(timeout=timeout)
    except Exception:
        logger.exception("pool %r: close failed", pool.name)


def info() -> list[dict[str, Any]]:
    """Describe every registered pool: ``name``, ``state``, ``connector`` (its description, secrets masked) and
    ``stats``, a summary of :meth:`Pool.stats` (``size``, ``idle``, ``in_use``, ``connecting``, ``waiting``,
    ``min_size``, ``max_size``, ``breaker``, ``leases_total``, ``lease_timeouts``, ``connect_errors``)."""
    with _lock:
        pools = [entry.pool for entry in _entries.values()]
    report = []
    for pool in pools:
        stats = pool.stats()
        report.append({
            "name": pool.name,
            "state": stats["state"],
            "connector": pool.connector.description,
            "stats": {key: stats[key] for key in _SUMMARY_KEYS},
        })
    return report


_SUMMARY_KEYS = (
    "size", "idle", "in_use", "connecting", "waiting", "min_size", "max_size", "breaker", "leases_total",
    "lease_timeouts", "connect_errors",
)


def install_signal_handlers(
    grace: float = 30.0, signals: Iterable[signal.Signals] = (signal.SIGTERM,)
) -> None:
    """On each of ``signals``, close every registered pool, letting leases in flight finish, then chain.

    The handler calls :func:`close_all` with ``timeout=grace``: new leases fail with
    :class:`~syncpool.PoolClosed` at once, leases in flight have up to ``grace`` seconds to come back. Then the
    handler that was installed before is called: a Python handler is called with the same arguments (it may
    exit with ``sys.exit()``); for ``SIG_DFL`` the default action is restored and the signal sent again, so the
    process ends as if it had not been caught (exit status -15 / 143 for SIGTERM); ``SIG_IGN`` does nothing more.
    A second signal while the pools are closing skips the wait and chains at once.

    Python runs signal handlers in the main thread only, between bytecodes: call this from the main thread, and
    note that a lease held by the main thread itself cannot come back while the handler waits (the wait then
    lasts the whole grace period).

    Raises:
        ValueError: Called from a thread other than the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("install_signal_handlers() must be called from the main thread")
    for signum in signals:
        previous = signal.getsignal(signum)
        signal.signal(signum, _make_handler(grace, previous))


def _make_handler(grace: float, previous: Any) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        global _shutting_down
        if not _shutting_down:
            _shutting_down = True
            logger.info("signal %d: closing %d pool(s), grace %.3gs", signum, len(_entries), grace)
            try:
                close_all(timeout=grace)
            finally:
                _shutting_down = False
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL or previous is None:
            import os

            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handle
