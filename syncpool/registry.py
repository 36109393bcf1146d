"""A process-wide registry of named pools: one pool per name, reported together, closed together.

```python
from syncpool import registry

pool = registry.get_pool("jobs", {"connector": "sqlite", "options": {"database": "app.db"}}, max_size=4)
...                                    # anywhere else in the program:
pool = registry.get_pool("jobs")       # the same pool
```

Pools in the registry are closed when the interpreter exits (an ``atexit`` hook, registered with the first
pool), and on SIGTERM once [`install_signal_handlers`][] has been called. A pool closed by its owner is dropped
from the registry and built afresh on the next [`get_pool`][] that gives its configuration.

In a child made by ``os.fork()`` the registry has a lock of its own and lists the same pools, which in the child
hold none of the parent's clients (see ``syncpool.forking``): closing them there, at exit or by
[`close_all`][], closes only what the child made.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from time import monotonic
from types import FrameType
from typing import Any

from . import forking
from .config import PoolConfig, _is_secret, _show, config_from_env, env_prefix, parse_config
from .connector import Connector
from .pool import Pool
from .states import PoolState

__all__ = ["close_all", "get_pool", "info", "install_signal_handlers", "register", "unregister"]

logger = logging.getLogger("syncpool")

#: Seconds the atexit hook lets leases in flight finish before giving up on them (also the longest it waits at
#: exit for a close that a signal began; see [`install_signal_handlers`][]).
EXIT_TIMEOUT = 5.0


@dataclass(frozen=True)
class _Entry:
    pool: Pool[Any]
    # What built it: a PoolConfig, (connector object, pool kwargs) for an object, or None for register().
    config: PoolConfig | tuple[Any, dict[str, Any]] | None


# Re-entrant: a user's signal handler may call close_all() in the main thread while the frame it interrupted holds
# the lock. Our own handler never takes it (see _SignalHandler).
_lock = threading.RLock()
_entries: dict[str, _Entry] = {}
_atexit_registered = False


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
    shutdown = _shutdown
    if shutdown is not None:
        # A signal began closing the pools and the main thread got here first (the previous handler exited, or a
        # PoolClosed ended it): let that close finish, then end the process as the signal would have. At exit the
        # wait is EXIT_TIMEOUT at most, as for any exit: the main thread has left its `with` blocks, so a lease it
        # still holds (an exception that landed inside the lease machinery) will never come back.
        shutdown.wait(EXIT_TIMEOUT)
        shutdown.chain()
    close_all(timeout=EXIT_TIMEOUT)


def get_pool(name: str, config: Any = None, **pool_kwargs: Any) -> Pool[Any]:
    """Return the pool registered as ``name``, building and registering it on first use.

    Args:
        name: The registry key, also the pool's name.
        config: How to build the pool: a configuration mapping (see [`syncpool.config`][]), a
            [`PoolConfig`][], or a [`Connector`][] / zero-argument callable
            (compared by identity). None returns the registered pool; if there is none, the pool is configured
            from ``SYNCPOOL_<NAME>_*`` environment variables when ``SYNCPOOL_<NAME>_CONNECTOR`` is set.
        pool_kwargs: [`Pool`][] options, merged over the mapping's ``pool`` section.

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
    """Add a pool built elsewhere under its ``name``, so that [`close_all`][] and [`info`][] include it.

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
    pools close in parallel, so the timeout is not multiplied by their number); see [`Pool.close`][]. In an
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
    ``stats``, a summary of [`Pool.stats`][] (``size``, ``idle``, ``in_use``, ``connecting``, ``waiting``,
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
    """On each of ``signals``, close every registered pool in the background, then end as the previous handler would.

    The handler itself closes nothing: Python runs it in the main thread between two bytecodes, maybe while the
    frame it interrupted holds a pool's lock or a lease that closing would wait for. It starts a daemon thread
    (``syncpool-registry-signal-close``) that calls [`close_all`][] with ``timeout=grace`` (new leases fail
    with [`PoolClosed`][] at once, leases in flight have up to ``grace`` seconds to come back), and
    then chains to the handler that was installed before:

    - a Python callable (a handler of yours that calls ``sys.exit()``, or Python's default SIGINT handler, which
      raises ``KeyboardInterrupt``) is called at once, from the signal handler, with the same arguments. What it
      raises unwinds the main thread, whose ``with pool.connection()`` blocks give their clients back; at exit the
      ``atexit`` hook waits for the close to finish (within ``grace``, and ``EXIT_TIMEOUT`` at most) before
      the interpreter ends.
    - ``SIG_DFL`` (or a handler installed outside Python) is restored at once; once the pools are closed, or
      ``grace`` seconds (plus a second or two for the pools' threads) after the signal at the latest, the signal
      is sent again, so the process ends as if it had not been caught (exit status -15 / 143 for SIGTERM), even if
      the main thread never gives its lease back. Until then the main thread goes on; its new leases fail with
      [`PoolClosed`][], and if that ends it, the ``atexit`` hook still ends the process by the signal.
    - ``SIG_IGN``: the pools are closed in the background and the process goes on.

    A second signal while the pools are closing skips the wait and chains at once (with ``SIG_DFL``, the process
    ends there and then). A signal after the close has finished begins a new one, for pools registered since.
    Calling this again replaces the handlers it installed rather than stacking a second set.

    Args:
        grace: Seconds that leases in flight get to come back. Keep it below the orchestrator's kill timeout
            (30 s by default in Kubernetes). Defaults to 30.
        signals: The signals to handle. Defaults to SIGTERM alone.

    Raises:
        ValueError: Called from a thread other than the main thread, a negative or infinite ``grace``, or a signal
            that cannot be caught.
        TypeError: ``grace`` is not a number, or ``signals`` is not an iterable of signal numbers.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("install_signal_handlers() must be called from the main thread")
    if not isinstance(grace, (int, float)) or isinstance(grace, bool):
        raise TypeError(f"grace must be a number of seconds, not {type(grace).__name__}")
    if not 0 <= grace < math.inf:
        raise ValueError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
    if isinstance(signals, int):
        raise TypeError("signals must be an iterable of signal numbers, such as (signal.SIGTERM,), not one number")
    wanted = list(signals)
    for signum in wanted:
        if not isinstance(signum, int) or isinstance(signum, bool):
            raise TypeError(f"signals: expected signal numbers, got {type(signum).__name__}")
        if signum in _UNCATCHABLE or signum not in signal.valid_signals():
            raise ValueError(f"signals: {signum!r} cannot be caught")
    for signum in wanted:
        previous = signal.getsignal(signum)
        if isinstance(previous, _SignalHandler):  # installed before: replace it, do not chain to it
            previous = previous.previous
        signal.signal(signum, _SignalHandler(float(grace), previous))
    _ensure_atexit()  # so that a main thread ending during the close still waits for it and chains


_UNCATCHABLE = frozenset(getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name))

#: Seconds past ``grace`` a signal's close may take (the pools stopping their threads) before SIG_DFL is chained
#: anyway.
_GRACE_SLACK = 2.0

_Previous = Callable[[int, FrameType | None], Any] | int | None


class _SignalHandler:
    """The handler [`install_signal_handlers`][] puts on one signal.

    It runs in the main thread between two bytecodes, so it takes no lock, closes nothing and waits for nothing: it
    starts (or hurries) a ``_SignalShutdown`` and chains to the previous handler.
    """

    def __init__(self, grace: float, previous: _Previous) -> None:
        self.grace = grace
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        global _shutdown
        default = self.previous is None or self.previous == signal.SIG_DFL
        shutdown = _shutdown
        if shutdown is None or shutdown.closed.is_set():
            if default:
                # Restored now, before the close: the closing side re-sends this signal when done, and a second
                # one sent meanwhile ends the process at once.
                signal.signal(signum, signal.SIG_DFL)
            shutdown = _shutdown = _SignalShutdown(signum, self.grace, exit_signal=signum if default else None)
            started = shutdown.start()
        else:
            shutdown.released.set()  # a second signal while closing: nobody waits any longer
            started = False
        if callable(self.previous):
            self.previous(signum, frame)
        elif default and not started:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


class _SignalShutdown:
    """One close of every registered pool after a signal, on threads of its own, ending the process if it must.

    With ``exit_signal`` set (the signal's default action was to end the process), a second thread sends that
    signal again once the close is done, or at its deadline: the process then ends on time even if the close is
    stuck (behind a lease the main thread never gives back, or the registry lock).
    """

    def __init__(self, signum: int, grace: float, *, exit_signal: int | None) -> None:
        self.signum = signum
        self.grace = grace
        self.exit_signal = exit_signal
        self.deadline = monotonic() + grace + _GRACE_SLACK
        self.closed = threading.Event()  # close_all() has returned
        self.released = threading.Event()  # closed, or a second signal said to stop waiting

    def start(self) -> bool:
        """Start the threads; False if they could not start (at interpreter exit), and then nobody waits."""
        threads = [threading.Thread(target=self._close, name="syncpool-registry-signal-close", daemon=True)]
        if self.exit_signal is not None:
            threads.append(threading.Thread(target=self._exit, name="syncpool-registry-signal-exit", daemon=True))
        try:
            for thread in threads:
                thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown", or out of threads
            self.released.set()
            return False
        return True

    def _close(self) -> None:
        logger.info("signal %d: closing the registered pools, grace %.3gs", self.signum, self.grace)
        try:
            close_all(timeout=self.grace)
        except BaseException:  # a daemon thread has no one to raise to: log it, and still let the process end
            logger.exception("signal %d: closing the registered pools failed", self.signum)
        finally:
            self.closed.set()
            self.released.set()

    def _exit(self) -> None:
        self.wait()
        self.chain()

    def wait(self, limit: float = math.inf) -> None:
        """Block until the close is done, a second signal arrives, the deadline passes or ``limit`` seconds do."""
        self.released.wait(max(0.0, min(self.deadline - monotonic(), limit)))

    def chain(self) -> None:
        """End the process by the signal, if its default action was to end it; else do nothing."""
        if self.exit_signal is not None:
            os.kill(os.getpid(), self.exit_signal)


# The close a signal began, if any; read by the atexit hook. Set only by the signal handler, in the main thread.
_shutdown: _SignalShutdown | None = None


class _ForkedChild:
    """Resets the registry's process-wide state in a child made by ``os.fork()``."""

    def _after_fork_in_child(self) -> None:
        global _lock, _shutdown
        # Another thread of the parent may have held the lock at the fork; it does not exist here to release it.
        _lock = threading.RLock()
        # The parent's signal close, if any, runs on threads the child does not have.
        _shutdown = None


_forked_child = _ForkedChild()  # forking keeps a weak reference only
forking.register(_forked_child)
