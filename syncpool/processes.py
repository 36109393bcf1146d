"""Pools per process: open a process's pools from configuration when it starts, close them when it ends.

A pool never crosses a process boundary: its clients hold sockets that two processes must not share. A program
that spreads work over processes gives each one its own pools, built from the same configuration (the
[`syncpool.config`][] format), in the process, once it has started:

```python
from concurrent.futures import ProcessPoolExecutor
from syncpool import processes, registry

POOLS = {"db": {"connector": "postgres", "options": {"conninfo": DSN}, "pool": {"max_size": 4}}}

def task(n):
    with registry.get_pool("db").connection() as conn:
        ...

with ProcessPoolExecutor(4, initializer=processes.init_process, initargs=(POOLS,)) as executor:
    executor.map(task, range(100))
```

[`init_process`][] opens the pools in the process-wide [`registry`][] and arranges for
[`shutdown_process`][] to close them when the process ends, also in ``multiprocessing`` and
``concurrent.futures`` worker processes, which end with ``os._exit()`` and so skip ``atexit`` hooks (they run
``multiprocessing``'s own finalisers instead). It works under every start method: only the configuration is
pickled. Celery's ``worker_process_init`` / ``worker_process_shutdown`` signals and gunicorn's ``post_fork`` /
``worker_exit`` hooks call the same two functions (see ``docs/scaling.md``).

[`open_pools`][] and [`close_pools`][] are the reference-counted layer below, which
[`syncpool.dask.PoolPlugin`][] also uses: several users in one process (two Dask workers in one process, an
initializer and a plugin) share one pool per name, and the last one to let go closes it. A pool that was already in
the registry before [`open_pools`][] found it is used but never closed here: whoever registered it owns it. The
exception is a forked child, which owns every pool it inherited: the parent's pools are emptied copies there, and
nothing else in the child will close them.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any

from . import registry
from ._secrets import mask_conninfo
from .config import PoolConfig, _is_secret, parse_config
from .pool import Pool

__all__ = [
    "check_pools",
    "close_pools",
    "describe_pools",
    "held_pools",
    "init_process",
    "open_pools",
    "shutdown_process",
]

logger = logging.getLogger("syncpool")

#: Seconds [`shutdown_process`][] lets leases in flight come back, in all, before the pools close anyway.
CLOSE_TIMEOUT = 5.0


@dataclass
class _Held:
    pool: Pool[Any]
    users: int
    owned: bool  # built by open_pools, so closed by close_pools when the last user lets go


_lock = threading.Lock()
_held: dict[str, _Held] = {}
# What init_process opened in this process, and the pid whose exit hooks are registered.
_init_names: list[str] = []
_hooked_pid: int | None = None
_forked_child = False


def check_pools(pools: Any) -> dict[str, dict[str, Any] | None]:
    """Validate a mapping of pool name to configuration and return a plain copy of it.

    Each configuration is a mapping in the [`syncpool.config`][] format, a [`PoolConfig`][],
    or None to configure the pool from each process's own ``SYNCPOOL_<NAME>_*`` environment variables (so that
    secrets need not travel with the configuration).

    Raises:
        TypeError: ``pools`` is not a mapping.
        ValueError: A name is empty, or a configuration is invalid (the message starts with ``pools.<name>``).
    """
    if not isinstance(pools, Mapping):
        raise TypeError(f"pools must be a mapping of pool name to configuration, not {type(pools).__name__}")
    checked: dict[str, dict[str, Any] | None] = {}
    for name, config in pools.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"pools: pool names must be non-empty strings, got {name!r}")
        if isinstance(config, PoolConfig):
            config = {"connector": config.connector, "options": dict(config.options), "pool": dict(config.pool)}
        if config is not None:
            parse_config(config, path=f"pools.{name}")  # fail here, in the parent, rather than in every child
            config = {key: dict(value) if isinstance(value, Mapping) else value for key, value in config.items()}
        checked[name] = config
    return checked


def describe_pools(pools: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """Return a copy of a pools mapping fit for a repr or a log line: secret options masked, URLs' passwords
    masked, and connection strings' passwords masked."""
    return {name: None if config is None else _mask(config) for name, config in pools.items()}


def _mask(value: Any, key: str = "") -> Any:
    if key and _is_secret(key):
        return None if value is None else "***"
    if isinstance(value, Mapping):
        return {str(k): _mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(item) for item in value)
    if isinstance(value, str):
        return mask_conninfo(value)  # masks URLs' passwords as well as "password=..." pairs
    return value


def open_pools(pools: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Open each pool of ``pools`` in this process's registry (or join the pool already open under its name) and
    return the names, to give back to [`close_pools`][].

    Args:
        pools: Pool name -> configuration, as [`check_pools`][] accepts.

    Raises:
        ValueError: A configuration is invalid, or a pool of that name is registered with another configuration.
            Pools opened by this call before the error are let go again.
        KeyError: A configuration is None and the environment does not configure that pool.
    """
    opened: list[str] = []
    try:
        for name, config in check_pools(pools).items():
            _acquire(name, config)
            opened.append(name)
    except BaseException:
        close_pools(opened, timeout=0)
        raise
    return opened


def _acquire(name: str, config: Mapping[str, Any] | None) -> None:
    with _lock:
        held = _held.get(name)
        if held is not None and held.pool.state == "closed":
            del _held[name]  # closed behind our back: build it afresh
            held = None
        existing = {entry["name"] for entry in registry.info() if entry["state"] != "closed"}
        # get_pool returns the registered pool when the configuration matches and raises ValueError when it does
        # not, so two users of one name always agree on what it is.
        pool = registry.get_pool(name, config) if config is not None else registry.get_pool(name)
        if held is not None and held.pool is pool:
            held.users += 1
        else:
            _held[name] = _Held(pool, users=1, owned=_forked_child or name not in existing)
            logger.info("pool %r: opened for this process (pid %d)", name, os.getpid())


def close_pools(names: list[str], *, timeout: float = CLOSE_TIMEOUT) -> None:
    """Let go of pools [`open_pools`][] returned; close each one whose last user this was.

    Closing stops new leases at once and gives leases in flight up to ``timeout`` seconds in all to come back (the
    pools close one after another within that overall time). Pools that were registered by someone else before
    [`open_pools`][] found them are left open. Names this process does not hold are ignored.
    """
    to_close: list[Pool[Any]] = []
    with _lock:
        for name in names:
            held = _held.get(name)
            if held is None:
                continue
            held.users -= 1
            if held.users > 0:
                continue
            del _held[name]
            if held.owned:
                to_close.append(held.pool)
                removed = registry.unregister(name)
                if removed is not None and removed is not held.pool:
                    registry.register(removed)  # a newer pool under the same name is not ours to drop
    deadline = monotonic() + timeout
    for pool in to_close:
        try:
            pool.close(timeout=max(0.0, deadline - monotonic()))
        except Exception:
            logger.exception("pool %r: close failed", pool.name)
        else:
            logger.info("pool %r: closed for this process (pid %d)", pool.name, os.getpid())


def held_pools() -> dict[str, Pool[Any]]:
    """Return the pools [`open_pools`][] holds in this process, by name."""
    with _lock:
        return {name: held.pool for name, held in _held.items()}


def init_process(pools: Mapping[str, Mapping[str, Any] | None], *, close_timeout: float = CLOSE_TIMEOUT) -> None:
    """Open this process's pools from configuration, and close them when the process ends.

    Meant as the ``initializer`` of ``concurrent.futures.ProcessPoolExecutor`` and
    ``multiprocessing.pool.Pool`` (``initargs=(pools,)``), and for the process start hooks of Celery
    (``worker_process_init``) and gunicorn (``post_fork``). Tasks then use [`syncpool.registry.get_pool`][].
    It does no I/O: the pools connect in the background, so a server that is down does not stall the start.

    The pools are closed by [`shutdown_process`][] at the end of the process: by ``multiprocessing``'s exit
    finalisers in its worker processes (which end without running ``atexit`` hooks), else by an ``atexit`` hook.
    Calling it again in the same process adds pools; a pool already opened by it is left as it is.

    Args:
        pools: Pool name -> configuration (a [`syncpool.config`][] mapping, a
            [`PoolConfig`][], or None for the process's ``SYNCPOOL_<NAME>_*`` variables).
        close_timeout: Seconds leases in flight get to come back when the process ends. Defaults to 5.0.

    Raises:
        ValueError: A configuration is invalid or conflicts with a pool already registered under its name.
    """
    global _hooked_pid
    _check_timeout(close_timeout)
    with _lock:
        already = set(_init_names)
    wanted = {name: config for name, config in check_pools(pools).items() if name not in already}
    opened = open_pools(wanted)
    with _lock:
        _init_names.extend(opened)
        pid = os.getpid()
        if _hooked_pid == pid:
            return
        _hooked_pid = pid
    # Both hooks may run; the second finds nothing left to close.
    atexit.register(shutdown_process, timeout=close_timeout)
    import multiprocessing.util

    # A positive exit priority runs it in the first round of multiprocessing's exit finalisers, before the ones
    # that join feeder threads and tear down queues.
    multiprocessing.util.Finalize(None, shutdown_process, kwargs={"timeout": close_timeout}, exitpriority=10)


def shutdown_process(*, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close the pools [`init_process`][] opened in this process; safe to call more than once.

    Meant for the process exit hooks of Celery (``worker_process_shutdown``) and gunicorn (``worker_exit``);
    [`init_process`][] already arranges for it to run when a ``multiprocessing`` worker or the interpreter ends.

    Args:
        timeout: Seconds leases in flight get to come back, for all the pools together. Defaults to 5.0.
    """
    _check_timeout(timeout)
    with _lock:
        names = list(_init_names)
        _init_names.clear()
    close_pools(names, timeout=timeout)


def _check_timeout(timeout: Any) -> None:
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")


def _after_fork_in_child() -> None:
    """In a forked child, the parent's users do not exist: the child owns its copies of the parent's pools (empty,
    never touching the parent's clients), to be closed by whatever in the child opens and then closes them."""
    global _lock, _hooked_pid, _forked_child
    _lock = threading.Lock()  # it may have been held by another thread of the parent
    for held in _held.values():
        held.users = 0
        held.owned = True
    _init_names.clear()
    _hooked_pid = None
    _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
