"""Count, time and classify the calls made on any blocking client.

:class:`MonitoredClient` wraps an object (a boto3 client, a psycopg connection, an ``Elasticsearch``
instance, ...) and behaves like it, while every public method call is counted, timed and, when it raises,
classified by exception type; the exception itself reaches the caller unchanged. Statistics live in a
:class:`ClientStats`, which many wrappers may share: a pool created with ``monitor=True`` owns one and
wraps every member with ``MonitoredClient(raw, name=pool.name, sink=pool_stats)``, so the pool reports
its members' calls aggregated.

The call path takes no lock
---------------------------
A monitored call costs two ``perf_counter()`` reads, one float subtraction, one ``list.append`` onto the
method's pending list and one float comparison. ``list.append`` is atomic (under the GIL, and under the
per-object lock of free-threaded builds), so counts stay exact under any number of threads without a lock.
The pending durations are folded into the method's :class:`~syncpool.histogram.Histogram` (in C, via
``map``) under a per-method lock by the first call that ends in a new 50 ms slot, by a failing call, and by
:meth:`ClientStats.stats`. So the pending list holds at most one slot's worth of calls (bounded memory), and
every pending call is known to have ended in the current slot, which gives the per-second counts behind the
recent rate (``ops_per_sec_recent``, last 60 s by default) without storing a timestamp per call.

The C accelerator
-----------------
``syncpool._speedups`` is a small optional C extension, built at install time wherever a C compiler is at hand
(and skipped with a warning where none is). For exact-mode recorders on the default clock it replaces the
Python wrapper above with a ``TimedCall`` that forwards its arguments by vectorcall (no tuple or dict is
built), reads the same ``perf_counter`` clock, and adds the duration straight into per-bucket counters that use
the histogram's own bucket layout, so a fold merges counts instead of bucketing values. Calls that end past
``rollover`` or raise go to the same ``record_late`` / ``record_error`` as in Python. It is not used on
free-threaded builds (it relies on the GIL) or when ``SYNCPOOL_NO_SPEEDUPS`` is set.

Cost (``benchmarks/bench_monitor.py``, CPython 3.11, 2 cores): with the accelerator a monitored call adds
about 90-130 ns, 1.4 to 1.5 uncontended lock acquire+release pairs, at 1 and at 8 threads. The pure-Python path adds
about 400-550 ns, 6 pairs (the wrapper frame with ``*args, **kwargs`` about 1, two clock reads about 1, append
and compare about 0.5, amortised bucketing about 2). There, ``ClientStats(latency_sample=8)`` times one call
in eight and only counts the others, for 3.5 to 5 pairs; counts, errors and rates stay exact, latency becomes
a sample.

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
* Everything else (data attributes, ``_private`` names, classes such as ``s3.exceptions.NoSuchKey``) passes
  through untouched; attribute assignment and deletion go to the wrapped object; values returned by calls
  (a cursor, a paginator) are not wrapped.
* ``with MonitoredClient(x) as c`` enters ``x`` if it is a context manager and gives back the wrapper
  (or whatever ``x.__enter__`` returned, if that is not ``x`` itself); it also works if ``x`` is not one.
* ``stats``, ``reset``, ``monitor``, ``wrapped`` and ``__wrapped__`` are the wrapper's own names; reach a
  wrapped attribute of the same name through ``client.wrapped``.

isinstance
----------
The documented way is :func:`unwrap` (or the ``wrapped`` attribute): ``isinstance(unwrap(c), Cls)``.
In addition the proxies report the wrapped object's class through ``__class__`` (the ``wrapt`` /
``unittest.mock`` technique), so ``isinstance(c, type(raw))`` is also true for code you do not control;
``type(c)`` still tells the truth (:class:`MonitoredClient`) and ``isinstance(c, MonitoredClient)`` holds.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ._accel import speedups as _speedups
from .histogram import Histogram

__all__ = ["ClientStats", "MonitoredClient", "monitor_of", "monitored", "unwrap"]

_SLOTS_PER_SECOND = 20  # 50 ms fold slots
_MONITOR_ATTRIBUTE = "__syncpool_monitor__"

F = TypeVar("F", bound=Callable[..., Any])


class _MethodStats:
    """Counters of one method name inside a :class:`ClientStats` (internal).

    Invariant: every entry in ``pending`` (and ``calls``) belongs to a call that ended before ``rollover``,
    i.e. inside the slot ``_slot`` (modulo a thread preempted between its clock read and its append, which
    can only push a call into a later slot; with sampling, up to ``sample_every - 1`` untimed calls made
    after the last timed one may be attributed to its slot).

    Exact mode (``sample_every == 1``): ``pending`` holds the duration of every successful call not yet
    folded, and counts come from it. Sampled mode: every successful call appends ``None`` to ``calls`` (the
    exact count), and only every ``sample_every``-th call is timed into ``pending``; a fold counts every
    entry of ``calls`` but deletes whole periods only, and ``_carried`` says how many of the entries left
    (fewer than ``sample_every``) are already counted.
    """

    __slots__ = (
        "pending",
        "calls",
        "rollover",
        "clock",
        "sample_every",
        "_slot",
        "_lock",
        "_histogram",
        "_operations",
        "_carried",
        "_errors",
        "_window",
        "_keep",
        "accumulator",
    )

    def __init__(self, clock: Callable[[], float], window: int, sample_every: int = 1) -> None:
        self.clock = clock
        self.sample_every = sample_every
        self.pending: list[float] = []
        self.calls: list[None] = []
        self._lock = threading.Lock()
        self._histogram = Histogram()
        self._operations = 0
        self._carried = 0
        self._errors: dict[str, int] = {}
        self._window: dict[int, int] = {}  # whole second -> calls that ended in it
        self._keep = window + 1
        self._slot = math.floor(clock() * _SLOTS_PER_SECOND)
        self.rollover = (self._slot + 1) / _SLOTS_PER_SECOND
        # The C accelerator times exact-mode calls on its own clock: only when that is the clock asked for.
        self.accumulator: Any = None
        if _speedups is not None and sample_every == 1 and clock is time.perf_counter:
            self.accumulator = _speedups.Accumulator(self.rollover)

    def _fold_locked(self) -> None:
        # Appends that race with us land after the copied prefix; only lock holders delete.
        pending = self.pending
        batch = pending[:]
        if batch:
            del pending[: len(batch)]
            self._histogram.add_many(batch)
        if self.sample_every == 1:
            folded = len(batch)
            if self.accumulator is not None:
                folded += self._histogram.add_accumulated(self.accumulator)
        else:
            # Count every call, but delete whole periods only: the wrappers time a call when len(calls) is a
            # multiple of sample_every, so the counted remainder stays to keep that phase across folds.
            calls = self.calls
            length = len(calls)
            folded = length - self._carried
            self._carried = length & (self.sample_every - 1)
            del calls[: length - self._carried]
        if folded:
            self._operations += folded
            second = self._slot // _SLOTS_PER_SECOND
            self._window[second] = self._window.get(second, 0) + folded

    def _add_locked(self, end: float, elapsed: float | None, counted: bool) -> None:
        # Decides which slot is current; pending calls belong to the old one, so fold them first.
        self._fold_locked()
        slot = math.floor(end * _SLOTS_PER_SECOND)
        if slot > self._slot:
            old_second = self._slot // _SLOTS_PER_SECOND
            self._slot = slot
            self.rollover = (slot + 1) / _SLOTS_PER_SECOND
            if self.accumulator is not None:
                self.accumulator.rollover = self.rollover
            second = slot // _SLOTS_PER_SECOND
            if second != old_second:
                oldest = second - self._keep
                for stale in [s for s in self._window if s < oldest]:
                    del self._window[stale]
        if elapsed is not None:
            self._histogram.add(elapsed if elapsed > 0.0 else 0.0)
        if not counted:
            self._operations += 1
            second = math.floor(end)
            self._window[second] = self._window.get(second, 0) + 1

    def record_late(self, end: float, elapsed: float) -> None:
        """Record a successful timed call that ended at or after ``rollover`` (about once per 50 ms)."""
        with self._lock:
            # In sampled mode the call already appended itself to ``calls``.
            self._add_locked(end, elapsed, counted=self.sample_every != 1)

    def record_error(self, start: float | None, error: BaseException) -> None:
        """Record a call that raised ``error`` (``start`` is None for an untimed call in sampled mode)."""
        end = self.clock()
        with self._lock:
            self._add_locked(end, None if start is None else end - start, counted=False)
            key = type(error).__name__
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
            del self.pending[:]  # in place: call wrappers hold these lists' bound append
            del self.calls[:]
            if self.accumulator is not None:
                self.accumulator.drain()
            self._histogram = Histogram()
            self._operations = 0
            self._carried = 0
            self._errors = {}
            self._window = {}


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
    result from one pass, so within a method ``errors <= operations`` and (unless sampling) the latency count
    equals ``operations``.

    Args:
        name: Reported as ``name`` in :meth:`stats` (a pool name, ``"s3"``...). Never put a secret in it.
        window: Length in whole seconds of the recent-rate window (``ops_per_sec_recent``). Defaults to 60.
        latency_sample: Time one call in this many (a power of two). Defaults to 1: every call is timed and
            the latency percentiles are within :data:`~syncpool.histogram.RELATIVE_ERROR` of the truth. With
            8, the added cost per call roughly halves; counts and errors stay exact, failed calls are always
            counted, latency becomes a 1-in-8 sample (``max`` and percentiles are then estimates), and the
            recent rate may shift up to ``latency_sample - 1`` calls by a 50 ms slot.
        clock: Monotonic clock in seconds, injectable for tests. Defaults to ``time.perf_counter``.

    Raises:
        ValueError: If ``window`` or ``latency_sample`` is invalid.
    """

    def __init__(
        self,
        name: str = "client",
        *,
        window: int = 60,
        latency_sample: int = 1,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a whole number of seconds >= 1, got {window!r}")
        if not isinstance(latency_sample, int) or latency_sample < 1 or latency_sample & (latency_sample - 1):
            raise ValueError(f"latency_sample must be a power of two >= 1, got {latency_sample!r}")
        self.name = name
        self.window = window
        self.latency_sample = latency_sample
        self._clock = clock
        self._lock = threading.Lock()
        self._methods: dict[str, _MethodStats] = {}
        self._started = clock()

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
                    recorder = self._methods[method] = _MethodStats(
                        self._clock, self.window, self.latency_sample
                    )
        return recorder

    def stats(self) -> dict[str, Any]:
        """Return a snapshot of the statistics.

        Returns:
            A dict with ``name``; ``operations``, ``errors``, ``ops_per_sec`` (since start or reset),
            ``error_rate`` (errors / operations) and ``ops_per_sec_recent`` (over the last ``window``
            seconds, at one-second resolution; over the uptime while that is shorter); ``window``;
            ``latency_sample``;
            ``uptime`` (seconds); ``errors_by_type`` (exception class name -> count); ``latency`` (a
            :meth:`Histogram.snapshot` of every call, failed ones included); and ``methods``, mapping each
            method name to a dict with the same keys except ``name``, ``window``, ``latency_sample``,
            ``uptime`` and ``methods``.
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
            latency_sample=self.latency_sample,
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

    def __repr__(self) -> str:
        """Return the name and the method count."""
        return f"<ClientStats {self.name!r} methods={len(self._methods)}>"


def _make_call(method: Callable[..., Any], recorder: _MethodStats) -> Callable[..., Any]:
    """Return a function that calls ``method`` and records the call into ``recorder``.

    This is the hot path; every line costs. No lock: ``append`` is atomic, ``rollover`` is read racily on
    purpose (a stale read only delays a fold by one call).
    """
    append = recorder.pending.append
    clock = recorder.clock

    call: Callable[..., Any]
    if recorder.accumulator is not None:  # the C accelerator: the same steps, without a Python frame
        call = _speedups.TimedCall(method, recorder, recorder.accumulator)

    elif recorder.sample_every == 1:

        def call(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                result = method(*args, **kwargs)
            except BaseException as error:
                recorder.record_error(start, error)
                raise
            end = clock()
            if end < recorder.rollover:
                append(end - start)
            else:
                recorder.record_late(end, end - start)
            return result

    else:
        calls = recorder.calls
        count = calls.append
        mask = recorder.sample_every - 1

        def call(*args: Any, **kwargs: Any) -> Any:
            if len(calls) & mask:  # untimed: only counted (racy length read: sampling stays approximate)
                try:
                    result = method(*args, **kwargs)
                except BaseException as error:
                    recorder.record_error(None, error)
                    raise
                count(None)
                return result
            start = clock()
            try:
                result = method(*args, **kwargs)
            except BaseException as error:
                recorder.record_error(start, error)
                raise
            end = clock()
            count(None)
            if end < recorder.rollover:
                append(end - start)
            else:
                recorder.record_late(end, end - start)
            return result

    try:
        functools.update_wrapper(call, method)
    except (AttributeError, TypeError):  # pragma: no cover - exotic callables without __name__ etc.
        call.__wrapped__ = method  # type: ignore[attr-defined]
    return call


def _is_namespace(name: str, value: Any, namespaces: frozenset[str] | None) -> bool:
    if namespaces is not None:
        return name in namespaces
    return type(value).__name__.endswith("Client") and not callable(value)


_INTERNAL = frozenset({"_sp_target", "_sp_monitor", "_sp_prefix", "_sp_namespaces"})


class _Proxy:
    """Shared machinery of :class:`MonitoredClient` and nested namespace proxies."""

    __slots__ = ("_sp_target", "_sp_monitor", "_sp_prefix", "_sp_namespaces", "__dict__", "__weakref__")

    _sp_target: Any
    _sp_monitor: ClientStats
    _sp_prefix: str
    _sp_namespaces: frozenset[str] | None

    def _sp_init(
        self, target: Any, monitor: ClientStats, prefix: str, namespaces: frozenset[str] | None
    ) -> None:
        object.__setattr__(self, "_sp_target", target)
        object.__setattr__(self, "_sp_monitor", monitor)
        object.__setattr__(self, "_sp_prefix", prefix)
        object.__setattr__(self, "_sp_namespaces", namespaces)

    def __getattr__(self, name: str) -> Any:
        """Fetch ``name`` from the wrapped object, wrapping public methods and namespaces (cached)."""
        if name in _INTERNAL:  # not initialised yet (e.g. during copy): avoid infinite recursion
            raise AttributeError(name)
        value = getattr(self._sp_target, name)
        if name.startswith("_") or isinstance(value, type):
            return value
        if callable(value):
            wrapper: Any = _make_call(value, self._sp_monitor.method_stats(self._sp_prefix + name))
        elif _is_namespace(name, value, self._sp_namespaces):
            wrapper = _Namespace(value, self._sp_monitor, f"{self._sp_prefix}{name}.", self._sp_namespaces)
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
        self, target: Any, monitor: ClientStats, prefix: str, namespaces: frozenset[str] | None
    ) -> None:
        self._sp_init(target, monitor, prefix, namespaces)

    def __repr__(self) -> str:
        """Show the namespace and the wrapped object."""
        return f"<monitored namespace {self._sp_prefix[:-1]!r} of {self._sp_target!r}>"


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
    """

    __slots__ = ()

    def __init__(
        self,
        client: Any,
        *,
        name: str | None = None,
        sink: ClientStats | None = None,
        namespaces: Iterable[str] | None = None,
    ) -> None:
        if sink is None:
            sink = ClientStats(name if name is not None else type(client).__name__)
        self._sp_init(client, sink, "", None if namespaces is None else frozenset(namespaces))

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


def unwrap(obj: Any) -> Any:
    """Return the object behind any number of :class:`MonitoredClient` / namespace proxies.

    This is the documented way to type-check: ``isinstance(unwrap(client), psycopg.Connection)``.

    Args:
        obj: A proxy or any other object (returned as is).

    Returns:
        The innermost wrapped object.
    """
    while type(obj) in (MonitoredClient, _Namespace):  # type(), not isinstance(): __class__ is spoofed
        obj = object.__getattribute__(obj, "_sp_target")
    return obj


def monitor_of(obj: Any) -> ClientStats:
    """Return the :class:`ClientStats` behind a monitored client, function, class or instance of such a class.

    Args:
        obj: A :class:`MonitoredClient`, a namespace proxy, or something decorated with :func:`monitored`.

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
