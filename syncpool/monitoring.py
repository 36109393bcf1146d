"""Count, time and classify the calls made on any blocking client.

:class:`MonitoredClient` wraps an object (a boto3 client, a psycopg connection, an ``Elasticsearch``
instance, ...) and behaves like it, while every public method call is counted, timed and, when it raises,
classified by exception type; the exception itself reaches the caller unchanged. Statistics live in a
:class:`ClientStats`, which many wrappers may share: a pool created with ``monitor=True`` owns one and
wraps every member with ``MonitoredClient(raw, name=pool.name, sink=pool.client_stats,
**connector.monitor_options())``, so the pool reports its members' calls aggregated.

Recording
---------
Each method name has a recorder: a list of pending durations, a latency :class:`~syncpool.histogram.Histogram`,
counters and a lock. A call reads ``time.perf_counter()`` before and after and appends the difference to the
pending list without taking any lock: ``list.append`` is atomic (under the GIL, and under the per-object lock of
free-threaded builds), so counts stay exact under any number of threads. Time is cut into 50 ms slots, and every
pending duration belongs to a call that ended in the current slot. Under the recorder's lock, the first call that
ends in a later slot, every failed call and :meth:`ClientStats.stats` fold the pending durations into the histogram
in one batch and count them against the second their slot lies in. That gives the per-second counts behind
``ops_per_sec_recent`` without a timestamp per call, and bounds the pending list to one slot's calls. What this
costs per call is measured by ``benchmarks/bench_monitor.py``.

Hazards, and why each is harmless:

* A fold copies a prefix of the pending list, then deletes exactly that prefix, and only lock holders delete. An
  append that races with a fold lands after the prefix and is folded the next time: never lost, never counted twice.
* The slot boundary (``rollover``) is read without the lock. A stale read only sends one call through the locked
  path; a thread preempted between its clock reading and its append has its call counted in a later slot. The
  recent rate may move a call by a slot; the totals stay exact.
* Call wrappers keep the bound ``append`` of their recorder's list, so :meth:`ClientStats.reset` empties the lists
  in place and never replaces them.
* ``os.fork()`` copies the forking thread only: a lock that another thread held stays held forever in the child.
  Each :class:`ClientStats` registers with :mod:`syncpool.forking` and, in a child, replaces its own lock and those
  of its recorders and their histograms. The child starts from the parent's figures, less the calls that a fold
  was moving at that instant.
* Statistics hold exception class names, never messages (which may quote a query, a key or a password).

Wrapping rules
--------------
* Public callables (names not starting with ``_``, classes excluded) are wrapped on first access, and the
  wrapper is cached on the proxy, so later lookups are plain instance-dict hits. A cached wrapper keeps
  calling the bound method it was created for: replace methods through the proxy (which drops the cache
  entry), not on the wrapped object behind its back.
* Nested API namespaces return a nested proxy whose calls are recorded as ``"namespace.method"``
  (``es.indices.create`` -> ``indices.create``). A non-callable attribute is a namespace when its name is
  listed in ``namespaces=``, or, by default (``namespaces=None``), when its class name ends in ``Client``
  (the elasticsearch-py ``NamespacedClient`` convention; ``s3.meta`` stays a plain attribute).
* Values returned by calls are returned as they are, except for the calls named in ``results=``: their result
  is wrapped too, because it is what does the work (a cursor, a paginator's pages, a ``COPY``), and
  :class:`WrapResult` says what to record on it. ``with conn.cursor() as cur: cur.execute(...)`` is then recorded
  as ``cursor`` and ``cursor.execute``. A pool takes these rules from its connector's
  ``Connector.monitor_options()``; the PostgreSQL and S3 connectors set them (see ``docs/monitoring.md``).
* Everything else (data attributes, ``_private`` names, classes such as ``s3.exceptions.NoSuchKey``) passes
  through untouched; attribute assignment and deletion go to the wrapped object.
* ``with MonitoredClient(x) as c`` enters ``x`` if it is a context manager and gives back the wrapper
  (or whatever ``x.__enter__`` returned, if that is not ``x`` itself); it also works if ``x`` is not one.
* ``stats``, ``reset``, ``monitor``, ``wrapped`` and ``__wrapped__`` are the wrapper's own names; reach a
  wrapped attribute of the same name through ``client.wrapped``.

isinstance
----------
The documented way is :func:`unwrap` (or the ``wrapped`` attribute): ``isinstance(unwrap(c), Cls)``.
In addition the proxies report the wrapped object's class through ``__class__`` (the ``wrapt`` /
``unittest.mock`` technique), so ``isinstance(c, type(raw))`` is also true for code you do not control
(``elasticsearch.helpers.bulk(c, ...)``, a cursor passed to a library); ``type(c)`` still tells the truth
(:class:`MonitoredClient`) and ``isinstance(c, MonitoredClient)`` holds.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from . import forking
from .histogram import Histogram

__all__ = ["ClientStats", "MonitoredClient", "WrapResult", "monitor_of", "monitored", "unwrap"]

_SLOTS_PER_SECOND = 20  # 50 ms fold slots
_MONITOR_ATTRIBUTE = "__syncpool_monitor__"
_MEASURES = ("call", "iteration", "block")

F = TypeVar("F", bound=Callable[..., Any])


class _MethodStats:
    """Counters of one method name inside a :class:`ClientStats` (internal).

    Invariant: every duration in ``pending`` belongs to a call that ended before ``rollover``, i.e. inside the slot
    ``_slot`` (modulo a thread preempted between its clock read and its append, which can only push a call into a
    later slot). Only holders of ``_lock`` delete from ``pending``.
    """

    __slots__ = (
        "pending", "rollover", "clock", "_slot", "_lock", "_histogram", "_operations", "_errors", "_window", "_keep",
    )  # fmt: skip

    def __init__(self, clock: Callable[[], float], window: int) -> None:
        self.clock = clock
        self.pending: list[float] = []
        self._lock = threading.Lock()
        self._histogram = Histogram()
        self._operations = 0
        self._errors: dict[str, int] = {}
        self._window: dict[int, int] = {}  # whole second -> calls that ended in it
        self._keep = window + 1
        self._slot = math.floor(clock() * _SLOTS_PER_SECOND)
        self.rollover = (self._slot + 1) / _SLOTS_PER_SECOND

    def _count_locked(self, second: int, calls: int) -> None:
        self._operations += calls
        self._window[second] = self._window.get(second, 0) + calls

    def _fold_locked(self) -> None:
        # Appends that race with us land after the copied prefix; only lock holders delete.
        pending = self.pending
        batch = pending[:]
        if batch:
            del pending[: len(batch)]
            self._histogram.add_many(batch)
            self._count_locked(self._slot // _SLOTS_PER_SECOND, len(batch))

    def _record_locked(self, end: float, elapsed: float) -> None:
        # Decides which slot is current; pending calls belong to the old one, so fold them first.
        self._fold_locked()
        slot = math.floor(end * _SLOTS_PER_SECOND)
        if slot > self._slot:
            old_second = self._slot // _SLOTS_PER_SECOND
            self._slot = slot
            self.rollover = (slot + 1) / _SLOTS_PER_SECOND
            second = slot // _SLOTS_PER_SECOND
            if second != old_second:
                oldest = second - self._keep
                for stale in [s for s in self._window if s < oldest]:
                    del self._window[stale]
        self._histogram.add(elapsed if elapsed > 0.0 else 0.0)
        self._count_locked(math.floor(end), 1)

    def record(self, start: float, end: float) -> None:
        """Record a successful operation that ran from ``start`` to ``end`` (clock readings)."""
        if end < self.rollover:
            self.pending.append(end - start)
        else:
            with self._lock:
                self._record_locked(end, end - start)

    def record_error(self, start: float, error: BaseException) -> None:
        """Record an operation that started at ``start`` and has just raised ``error``."""
        end = self.clock()
        key = type(error).__name__
        with self._lock:
            self._record_locked(end, end - start)
            self._errors[key] = self._errors.get(key, 0) + 1

    def collect(self, now_second: int, window: int) -> tuple[int, Histogram, dict[str, int], int]:
        """Fold and return (operations, latency copy, errors by type, calls in the recent window)."""
        with self._lock:
            self._fold_locked()
            recent = sum(n for second, n in self._window.items() if second > now_second - window)
            return self._operations, self._histogram.copy(), dict(self._errors), recent

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            del self.pending[:]  # in place: call wrappers hold this list's bound append
            self._histogram = Histogram()
            self._operations = 0
            self._errors = {}
            self._window = {}

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._histogram._after_fork_in_child()


def _summary(operations: int, errors: int, recent: int, uptime: float, window: int) -> dict[str, Any]:
    return {
        "operations": operations,
        "errors": errors,
        "ops_per_sec": operations / uptime if uptime > 0 else 0.0,
        "error_rate": errors / operations if operations else 0.0,
        "ops_per_sec_recent": recent / min(float(window), uptime) if uptime > 0 else 0.0,
    }


class ClientStats:
    """Call statistics shared by any number of :class:`MonitoredClient` wrappers.

    A pool with ``monitor=True`` owns one and passes it as ``sink=`` to the wrapper of every member, so its
    :meth:`stats` aggregate the calls of all members, past and present. Recording is lock-free (see the module
    docstring); :meth:`stats` folds each method's pending calls under that method's lock and builds the
    result from one pass, so within a method ``errors <= operations`` and the latency count equals
    ``operations``. Safe to use in a child process forked while other threads were recording.

    Args:
        name: Reported as ``name`` in :meth:`stats` (a pool name, ``"s3"``...). Never put a secret in it.
        window: Length in whole seconds of the recent-rate window (``ops_per_sec_recent``). Defaults to 60.
        clock: Monotonic clock in seconds, injectable for tests. Defaults to ``time.perf_counter``.

    Raises:
        ValueError: If ``window`` is not a whole number of seconds >= 1.
    """

    def __init__(
        self,
        name: str = "client",
        *,
        window: int = 60,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a whole number of seconds >= 1, got {window!r}")
        self.name = name
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._methods: dict[str, _MethodStats] = {}
        self._started = clock()
        forking.register(self)

    def method_stats(self, method: str) -> _MethodStats:
        """Return the recorder of one method name, creating it on first use (called once per wrapper and name).

        Args:
            method: The qualified method name, e.g. ``"put_object"`` or ``"indices.create"``.

        Returns:
            The internal per-method recorder that call wrappers write to.
        """
        recorder = self._methods.get(method)
        if recorder is None:
            with self._lock:
                recorder = self._methods.get(method)
                if recorder is None:
                    recorder = self._methods[method] = _MethodStats(self._clock, self.window)
        return recorder

    def stats(self) -> dict[str, Any]:
        """Return a snapshot of the statistics.

        Returns:
            A dict with ``name``; ``operations``, ``errors``, ``ops_per_sec`` (since start or reset),
            ``error_rate`` (errors / operations) and ``ops_per_sec_recent`` (over the last ``window``
            seconds, at one-second resolution; over the uptime while that is shorter); ``window``;
            ``uptime`` (seconds); ``errors_by_type`` (exception class name -> count); ``latency`` (a
            :meth:`Histogram.snapshot` of every call, failed ones included); and ``methods``, mapping each
            method name to a dict with the same keys except ``name``, ``window``, ``uptime`` and ``methods``.
        """
        with self._lock:
            recorders = sorted(self._methods.items())
            started = self._started
        now = self._clock()
        uptime = now - started
        now_second = math.floor(now)
        total = Histogram()
        errors_by_type: dict[str, int] = {}
        errors = recent_total = operations_total = 0
        methods: dict[str, Any] = {}
        for method, recorder in recorders:
            operations, latency, method_errors, recent = recorder.collect(now_second, self.window)
            count = sum(method_errors.values())
            operations_total += operations
            methods[method] = _summary(operations, count, recent, uptime, self.window)
            methods[method]["errors_by_type"] = method_errors
            methods[method]["latency"] = latency.snapshot()
            total.merge(latency)
            errors += count
            recent_total += recent
            for key, n in method_errors.items():
                errors_by_type[key] = errors_by_type.get(key, 0) + n
        result: dict[str, Any] = {"name": self.name}
        result.update(_summary(operations_total, errors, recent_total, uptime, self.window))
        result.update(
            window=self.window,
            uptime=uptime,
            errors_by_type=errors_by_type,
            latency=total.snapshot(),
            methods=methods,
        )
        return result

    def histograms(self) -> dict[str, Histogram]:
        """Return a copy of each method's latency histogram (for bucket export), keyed by method name."""
        with self._lock:
            recorders = sorted(self._methods.items())
        now_second = math.floor(self._clock())
        return {method: recorder.collect(now_second, self.window)[1] for method, recorder in recorders}

    def reset(self) -> None:
        """Zero every counter and restart the rate clocks; calls in flight may land on either side."""
        with self._lock:
            recorders = list(self._methods.values())
            self._started = self._clock()
        for recorder in recorders:
            recorder.reset()

    def _after_fork_in_child(self) -> None:
        # Called by syncpool.forking in a forked child, where no other thread runs: any of these locks may have
        # been held by a thread of the parent at the fork, and would then never be released.
        self._lock = threading.Lock()
        for recorder in self._methods.values():
            recorder._after_fork_in_child()

    def __repr__(self) -> str:
        """Return the name and the method count."""
        return f"<ClientStats {self.name!r} methods={len(self._methods)}>"


@dataclass(frozen=True, kw_only=True)
class WrapResult:
    """How a :class:`MonitoredClient` monitors what one of its calls returns (the values of ``results=``).

    The result is wrapped in a proxy that behaves like it (``isinstance`` and :func:`unwrap` work as on the
    client itself) and records the calls named by ``methods``. ``measure`` says where the work of the call is done:

    * ``"call"``: in the call itself, recorded under its own name as usual; e.g. ``conn.cursor()`` as ``cursor``.
      If the result, used as a context manager, enters as itself, the proxy enters as itself too, so the calls
      inside ``with conn.cursor() as cur:`` are recorded (``cursor.execute``).
    * ``"iteration"``: while iterating over the result (the pages of a boto3 paginator's ``paginate()``). Each
      item fetched is one operation under the call's name, timed from the request for it to its arrival; the
      call itself, which only prepares, is not recorded.
    * ``"block"``: in the ``with`` block of the result (psycopg's ``cur.copy()``). The block, from ``__enter__``
      to ``__exit__``, is one operation under the call's name, failed if it raised; the call itself is not
      recorded, and ``__enter__`` returns what the result's own ``__enter__`` returns.

    Args:
        methods: Names of the result's methods to record, each as ``prefix + name``. ``None`` records every
            public method, ``()`` none. A call that has a rule of its own in ``results`` is always monitored by
            that rule. Defaults to ``None``.
        prefix: Put before the names of the calls made on the result, to record them and to find their own
            rules in ``results``. Defaults to the call's name and a dot (``"cursor."``); ``""`` records them as
            calls of the client itself (for a client method that returns a reconfigured copy of the client).
        measure: ``"call"``, ``"iteration"`` or ``"block"``, as above. Defaults to ``"call"``.

    Raises:
        ValueError: If ``measure`` is not one of the three.
        TypeError: If ``methods`` is a string or holds something else than strings, or ``prefix`` is not a string.
    """

    methods: Collection[str] | None = None
    prefix: str | None = None
    measure: str = "call"

    def __post_init__(self) -> None:
        if self.methods is not None:
            if isinstance(self.methods, str) or not all(isinstance(name, str) for name in self.methods):
                raise TypeError(f"methods must be a collection of method names or None, got {self.methods!r}")
            object.__setattr__(self, "methods", frozenset(self.methods))
        if self.prefix is not None and not isinstance(self.prefix, str):
            raise TypeError(f"prefix must be a str or None, got {type(self.prefix).__name__}")
        if self.measure not in _MEASURES:
            raise ValueError(f"measure must be one of {', '.join(map(repr, _MEASURES))}, got {self.measure!r}")


def _make_call(method: Callable[..., Any], recorder: _MethodStats) -> Callable[..., Any]:
    """Return a function that calls ``method`` and records the call into ``recorder`` (the hot path)."""
    clock = recorder.clock
    record = recorder.record

    def call(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            result = method(*args, **kwargs)
        except BaseException as error:
            recorder.record_error(start, error)
            raise
        record(start, clock())
        return result

    return _as_wrapper_of(call, method)


def _as_wrapper_of(wrapper: Callable[..., Any], method: Callable[..., Any]) -> Callable[..., Any]:
    try:
        functools.update_wrapper(wrapper, method)
    except (AttributeError, TypeError):  # pragma: no cover - exotic callables without __name__ etc.
        wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


def _make_following_call(method: Callable[..., Any], name: str, rule: WrapResult, parent: _Proxy) -> Callable[..., Any]:
    """Return a function that calls ``method`` (recorded as ``name`` if ``rule`` measures the call) and wraps its
    result according to ``rule``."""
    monitor = parent._sp_monitor
    recorder = monitor.method_stats(name)
    prefix = name + "." if rule.prefix is None else rule.prefix
    namespaces = parent._sp_namespaces
    results = parent._sp_results
    invoke = _make_call(method, recorder) if rule.measure == "call" else method

    def call(*args: Any, **kwargs: Any) -> Any:
        result = invoke(*args, **kwargs)
        if result is None:
            return None
        return _Result(result, monitor, prefix, namespaces, results, rule, recorder)

    return _as_wrapper_of(call, method)


def _steps(iterator: Iterator[Any], recorder: _MethodStats) -> Iterator[Any]:
    """Yield what ``iterator`` yields, recording the fetch of each item as one operation."""
    clock = recorder.clock
    try:
        while True:
            start = clock()
            try:
                item = next(iterator)
            except StopIteration:  # the end of the iteration, not an operation
                return
            except BaseException as error:
                recorder.record_error(start, error)
                raise
            recorder.record(start, clock())
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:  # a loop left early: let a generator doing I/O clean up now, not at collection
            close()


def _is_namespace(name: str, value: Any, namespaces: frozenset[str] | None) -> bool:
    if namespaces is not None:
        return name in namespaces
    return type(value).__name__.endswith("Client") and not callable(value)


class _Proxy:
    """Shared machinery of :class:`MonitoredClient`, nested namespace proxies and wrapped results."""

    __slots__ = (
        "_sp_target", "_sp_monitor", "_sp_prefix", "_sp_namespaces", "_sp_results", "_sp_methods",
        "__dict__", "__weakref__",  # the dict caches wrappers
    )  # fmt: skip

    _sp_target: Any
    _sp_monitor: ClientStats
    _sp_prefix: str
    _sp_namespaces: frozenset[str] | None
    _sp_results: Mapping[str, WrapResult]
    _sp_methods: Collection[str] | None

    def _sp_init(
        self,
        target: Any,
        monitor: ClientStats,
        prefix: str,
        namespaces: frozenset[str] | None,
        results: Mapping[str, WrapResult],
        methods: Collection[str] | None = None,
    ) -> None:
        object.__setattr__(self, "_sp_target", target)
        object.__setattr__(self, "_sp_monitor", monitor)
        object.__setattr__(self, "_sp_prefix", prefix)
        object.__setattr__(self, "_sp_namespaces", namespaces)
        object.__setattr__(self, "_sp_results", results)
        object.__setattr__(self, "_sp_methods", methods)

    def __getattr__(self, name: str) -> Any:
        """Fetch ``name`` from the wrapped object, wrapping public methods and namespaces (cached)."""
        if name in _INTERNAL:  # not initialised yet (e.g. during copy): avoid infinite recursion
            raise AttributeError(name)
        value = getattr(self._sp_target, name)
        if name.startswith("_") or isinstance(value, type):
            return value
        qualified = self._sp_prefix + name
        if callable(value):
            rule = self._sp_results.get(qualified)
            if rule is not None:
                wrapper: Any = _make_following_call(value, qualified, rule, self)
            elif self._sp_methods is None or name in self._sp_methods:
                wrapper = _make_call(value, self._sp_monitor.method_stats(qualified))
            else:
                wrapper = value  # not recorded; cached all the same, so that a loop of fetchone() stays cheap
        elif _is_namespace(name, value, self._sp_namespaces):
            wrapper = _Namespace(value, self._sp_monitor, qualified + ".", self._sp_namespaces, self._sp_results)
        else:
            return value
        self.__dict__[name] = wrapper
        return wrapper

    def __setattr__(self, name: str, value: Any) -> None:
        """Set the attribute on the wrapped object (and forget a cached wrapper of that name)."""
        if name in _INTERNAL:  # copy.copy() restoring the proxy's own state
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)
        setattr(self._sp_target, name, value)

    def __delattr__(self, name: str) -> None:
        """Delete the attribute from the wrapped object (and forget a cached wrapper of that name)."""
        self.__dict__.pop(name, None)
        delattr(self._sp_target, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: F811 - deliberate: isinstance() sees the wrapped class
        """The wrapped object's class, so ``isinstance(proxy, type(raw))`` holds."""
        return self._sp_target.__class__  # type: ignore[no-any-return]

    @property
    def wrapped(self) -> Any:
        """The wrapped object itself."""
        return self._sp_target

    @property
    def __wrapped__(self) -> Any:
        """The wrapped object itself (the ``functools``/``inspect.unwrap`` convention)."""
        return self._sp_target

    @property
    def monitor(self) -> ClientStats:
        """The :class:`ClientStats` this proxy records into."""
        return self._sp_monitor

    def __dir__(self) -> Iterable[str]:
        """List the wrapped object's attributes and the proxy's own."""
        return sorted(set(dir(self._sp_target)) | {"monitor", "wrapped"})

    def __bool__(self) -> bool:
        """Truth value of the wrapped object."""
        return bool(self._sp_target)

    def __len__(self) -> int:
        """Length of the wrapped object."""
        return len(self._sp_target)

    def __iter__(self) -> Iterator[Any]:
        """Iterate over the wrapped object."""
        return iter(self._sp_target)

    def __contains__(self, item: Any) -> bool:
        """Membership test on the wrapped object."""
        return item in self._sp_target

    def __getitem__(self, key: Any) -> Any:
        """Item lookup on the wrapped object."""
        return self._sp_target[key]


class _Namespace(_Proxy):
    """A nested API namespace (``es.indices``) whose calls are recorded as ``"indices.<method>"``."""

    __slots__ = ()

    def __init__(
        self,
        target: Any,
        monitor: ClientStats,
        prefix: str,
        namespaces: frozenset[str] | None,
        results: Mapping[str, WrapResult],
    ) -> None:
        self._sp_init(target, monitor, prefix, namespaces, results)

    def __repr__(self) -> str:
        """Show the namespace and the wrapped object."""
        return f"<monitored namespace {self._sp_prefix[:-1]!r} of {self._sp_target!r}>"


class _Result(_Proxy):
    """The result of a call named in ``results=``, monitored as its :class:`WrapResult` says."""

    __slots__ = ("_sp_rule", "_sp_recorder", "_sp_started")

    _sp_rule: WrapResult
    _sp_recorder: _MethodStats
    _sp_started: float | None

    def __init__(
        self,
        target: Any,
        monitor: ClientStats,
        prefix: str,
        namespaces: frozenset[str] | None,
        results: Mapping[str, WrapResult],
        rule: WrapResult,
        recorder: _MethodStats,
    ) -> None:
        self._sp_init(target, monitor, prefix, namespaces, results, rule.methods)
        object.__setattr__(self, "_sp_rule", rule)
        object.__setattr__(self, "_sp_recorder", recorder)  # the call's own recorder, for iteration and blocks
        object.__setattr__(self, "_sp_started", None)

    def __enter__(self) -> Any:
        """Enter the wrapped object; return this proxy where it returns itself (``"block"``: as it is)."""
        target = self._sp_target
        enter = getattr(type(target), "__enter__", None)
        if enter is None or not hasattr(type(target), "__exit__"):
            raise TypeError(f"{type(target).__name__!r} object does not support the context manager protocol")
        if self._sp_rule.measure != "block":
            entered = enter(target)
            return self if entered is target else entered
        recorder = self._sp_recorder
        start = recorder.clock()
        try:
            entered = enter(target)
        except BaseException as error:
            recorder.record_error(start, error)
            raise
        object.__setattr__(self, "_sp_started", start)
        return entered

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> Any:
        """Exit the wrapped object (``"block"``: and record the block, failed if it raised)."""
        start = self._sp_started
        if start is None:  # "call" or "iteration", or a block never entered
            return type(self._sp_target).__exit__(self._sp_target, exc_type, exc, traceback)
        object.__setattr__(self, "_sp_started", None)
        recorder = self._sp_recorder
        try:
            suppressed = type(self._sp_target).__exit__(self._sp_target, exc_type, exc, traceback)
        except BaseException as error:
            recorder.record_error(start, error)
            raise
        if exc is not None and not suppressed:
            recorder.record_error(start, exc)
        else:
            recorder.record(start, recorder.clock())
        return suppressed

    def __iter__(self) -> Iterator[Any]:
        """Iterate over the wrapped object (``"iteration"``: recording each item fetched)."""
        iterator: Iterator[Any] = iter(self._sp_target)
        if self._sp_rule.measure != "iteration":
            return iterator
        return _steps(iterator, self._sp_recorder)

    def __repr__(self) -> str:
        """Show the wrapped object."""
        return f"<monitored result of {self._sp_target!r}>"


class MonitoredClient(_Proxy):
    """Wrap ``client`` so that it behaves like ``client`` while every public method call is recorded.

    Example::

        s3 = MonitoredClient(boto3.client("s3"), name="s3")
        s3.put_object(Bucket="b", Key="k", Body=b"...")
        s3.stats()["operations"]  # 1

    Failed calls are counted (per exception class name) and the exception is re-raised unchanged. See the
    module docstring for the wrapping rules and for ``isinstance`` (``unwrap(c)`` or ``c.wrapped``).

    Args:
        client: Any object.
        name: Name reported in the statistics. Defaults to the wrapped class name.
        sink: The :class:`ClientStats` to record into, shared between wrappers (a pool passes its own).
            Defaults to a new one.
        namespaces: Attribute names to treat as nested API namespaces; ``None`` (default) guesses: non-callable
            attributes whose class name ends in ``Client``.
        results: The calls whose results are monitored too, by their recorded name (``"cursor"``,
            ``"cursor.copy"``, ``"indices.get_alias"``), each with a :class:`WrapResult` saying how. For example
            ``{"cursor": WrapResult(methods=("execute", "executemany"))}`` records ``cur.execute(...)`` as
            ``cursor.execute``. Defaults to none: results are returned as they are.

    Raises:
        TypeError: If ``results`` is not a mapping of names to :class:`WrapResult`.
    """

    __slots__ = ()

    def __init__(
        self,
        client: Any,
        *,
        name: str | None = None,
        sink: ClientStats | None = None,
        namespaces: Iterable[str] | None = None,
        results: Mapping[str, WrapResult] | None = None,
    ) -> None:
        rules = dict(results) if isinstance(results, Mapping) else {}
        if results is not None and not isinstance(results, Mapping) or not all(
            isinstance(key, str) and isinstance(rule, WrapResult) for key, rule in rules.items()
        ):
            raise TypeError(f"results must be a mapping of call names to WrapResult, got {results!r}")
        if sink is None:
            sink = ClientStats(name if name is not None else type(client).__name__)
        self._sp_init(client, sink, "", None if namespaces is None else frozenset(namespaces), rules)

    def stats(self) -> dict[str, Any]:
        """Return the statistics of the sink (see :meth:`ClientStats.stats`); shared sinks report all wrappers."""
        return self._sp_monitor.stats()

    def reset(self) -> None:
        """Zero the statistics of the sink (see :meth:`ClientStats.reset`)."""
        self._sp_monitor.reset()

    def __enter__(self) -> Any:
        """Enter the wrapped object if it is a context manager; return this wrapper."""
        target = self._sp_target
        if not hasattr(type(target), "__enter__"):
            return self
        entered = target.__enter__()
        return self if entered is target else entered

    def __exit__(self, *exc_info: Any) -> Any:
        """Exit the wrapped object if it is a context manager."""
        target = self._sp_target
        if not hasattr(type(target), "__exit__"):
            return None
        return target.__exit__(*exc_info)

    def __dir__(self) -> Iterable[str]:
        """List the wrapped object's attributes and the wrapper's own."""
        return sorted(set(dir(self._sp_target)) | {"monitor", "reset", "stats", "wrapped"})

    def __repr__(self) -> str:
        """Show the sink name and the wrapped object."""
        return f"<MonitoredClient {self._sp_monitor.name!r} of {self._sp_target!r}>"


# The proxies' own attribute names: never looked up on, nor assigned to, the wrapped object.
_INTERNAL = frozenset(name for cls in (_Proxy, _Result) for name in cls.__slots__ if name.startswith("_sp_"))


def unwrap(obj: Any) -> Any:
    """Return the object behind any number of :class:`MonitoredClient`, namespace and result proxies.

    This is the documented way to type-check: ``isinstance(unwrap(client), psycopg.Connection)``.

    Args:
        obj: A proxy or any other object (returned as is).

    Returns:
        The innermost wrapped object.
    """
    while issubclass(type(obj), _Proxy):  # type(), not obj.__class__, which is spoofed
        obj = object.__getattribute__(obj, "_sp_target")
    return obj


def monitor_of(obj: Any) -> ClientStats:
    """Return the :class:`ClientStats` behind a monitored client, function, class or instance of such a class.

    Args:
        obj: A :class:`MonitoredClient`, a namespace or result proxy, or something decorated with :func:`monitored`.

    Returns:
        The statistics object.

    Raises:
        TypeError: If ``obj`` is not monitored.
    """
    if isinstance(obj, _Proxy):
        return obj.monitor
    monitor = getattr(obj, _MONITOR_ATTRIBUTE, None)
    if isinstance(monitor, ClientStats):
        return monitor
    raise TypeError(f"{type(obj).__name__} object is not monitored")


def _monitor_function(func: F, sink: ClientStats, method: str) -> F:
    call = _make_call(func, sink.method_stats(method))
    setattr(call, _MONITOR_ATTRIBUTE, sink)
    return call  # type: ignore[return-value]


def _monitor_class(cls: type, sink: ClientStats) -> type:
    for attr_name, attr in list(vars(cls).items()):
        if attr_name.startswith("_"):
            continue
        if isinstance(attr, staticmethod):
            setattr(cls, attr_name, staticmethod(_make_call(attr.__func__, sink.method_stats(attr_name))))
        elif isinstance(attr, classmethod):
            setattr(cls, attr_name, classmethod(_make_call(attr.__func__, sink.method_stats(attr_name))))
        elif inspect.isfunction(attr):
            setattr(cls, attr_name, _make_call(attr, sink.method_stats(attr_name)))
    setattr(cls, _MONITOR_ATTRIBUTE, sink)
    return cls


def monitored(target: Any = None, *, name: str | None = None, sink: ClientStats | None = None) -> Any:
    """Decorate a function or a class so that its calls are recorded like a :class:`MonitoredClient`'s.

    On a function, each call is recorded under the function's ``__name__``. On a class, the public methods
    (plain, static and class methods) defined in the class body itself are replaced in place, so instances
    stay genuine instances; all instances share one :class:`ClientStats`. Get it with :func:`monitor_of`::

        @monitored
        def fetch(key): ...

        @monitored(name="repo")
        class Repository: ...

        monitor_of(fetch).stats(); monitor_of(Repository).stats()

    Args:
        target: The function or class (when used without parentheses).
        name: Name reported in the statistics. Defaults to the ``__qualname__``.
        sink: A :class:`ClientStats` to share. Defaults to a new one.

    Returns:
        The monitored function or class, or a decorator when called with keywords only.

    Raises:
        TypeError: If ``target`` is neither a class nor callable.
    """
    if target is None:
        return functools.partial(monitored, name=name, sink=sink)
    if sink is None:
        sink = ClientStats(
            name if name is not None else getattr(target, "__qualname__", type(target).__name__)
        )
    if isinstance(target, type):
        return _monitor_class(target, sink)
    if callable(target):
        return _monitor_function(target, sink, getattr(target, "__name__", "__call__"))
    raise TypeError(f"monitored() needs a function or a class, got {type(target).__name__}")
