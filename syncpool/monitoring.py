"""Count, time and classify the calls made on any blocking client, and on what its calls return.

[`MonitoredClient`][] wraps an object (a boto3 client, a psycopg connection, an ``Elasticsearch``
instance, ...) and behaves like it, while every public method call is counted, timed and, when it raises,
classified by exception type; the exception itself reaches the caller unchanged. Statistics live in a
[`ClientStats`][] (how a call is recorded without a lock is told there), which many
wrappers may share: a pool created with ``monitor=True`` owns one and wraps every member with
``MonitoredClient(raw, name=pool.name, sink=pool.client_stats, **connector.monitor_options())``, so the pool reports
its members' calls aggregated.

Wrapping rules
--------------
* Public callables (names not starting with ``_``, classes excluded) are wrapped on first access, and the
  wrapper is cached on the proxy, so later lookups are plain instance-dict hits.
* Nested API namespaces return a nested proxy whose calls are recorded as ``"namespace.method"``
  (``es.indices.create`` -> ``indices.create``). A non-callable attribute is a namespace when its name is
  listed in ``namespaces=``, or, by default (``namespaces=None``), when its class name ends in ``Client``
  (the elasticsearch-py ``NamespacedClient`` convention; ``s3.meta`` stays a plain attribute).
* Values returned by calls are returned as they are, except for the calls named in ``results=``: their result is
  wrapped too, because it is what does the work (a cursor, a paginator's pages, a ``COPY``), and a
  [`WrapResult`][] says what to record on it. ``with conn.cursor() as cur: cur.execute(...)`` is then recorded
  as ``cursor`` and ``cursor.execute``. A pool takes these rules from ``Connector.monitor_options()``; the
  PostgreSQL and S3 connectors set them (``docs/monitoring.md`` lists the names they record).
* Everything else (data attributes, ``_private`` names, classes such as ``s3.exceptions.NoSuchKey``) passes
  through untouched; attribute assignment and deletion go to the wrapped object.
* ``with MonitoredClient(x) as c`` enters ``x`` if it is a context manager and gives back the wrapper
  (or whatever ``x.__enter__`` returned, if that is not ``x`` itself); it also works if ``x`` is not one.
* ``stats``, ``reset``, ``monitor``, ``wrapped`` and ``__wrapped__`` are the wrapper's own names; reach a
  wrapped attribute of the same name through ``client.wrapped``.

Design and hazards
------------------
A wrapper is made once per method, not once per proxy: the proxies made at one place (a client, a namespace, the
results of one followed call) share a scope that keeps one wrapper per class function, and a proxy binds it to its
own target. So the proxy of each new cursor costs an object and, on first use of a method, one ``__getattr__``;
where the result's instances have no ``__dict__`` (psycopg's cursors), no instance can differ from its class, and
its methods, recording or not, are put on a proxy class made for that class, which saves even that. The hazards:

* A cached wrapper keeps calling the method it was made for: replace methods through the proxy (which drops the
  cache entry), not on the wrapped object behind its back.
* The proxies hold no lock and no thread: after ``os.fork()`` they work as they did, and their statistics are made
  safe by [`ClientStats`][].
* A ``"block"`` result remembers when it was entered, so it is entered once at a time, like what it wraps; an
  ``"iteration"`` result that is left early closes the iterator it was reading, so that a generator doing I/O
  cleans up at once rather than at garbage collection.
* Results are referenced by nothing but the caller: a proxy never keeps its target alive longer than the caller
  keeps the proxy.

isinstance
----------
The documented way is [`unwrap`][] (or the ``wrapped`` attribute): ``isinstance(unwrap(c), Cls)``.
In addition the proxies report the wrapped object's class through ``__class__`` (the ``wrapt`` /
``unittest.mock`` technique), so ``isinstance(c, type(raw))`` is also true for code you do not control
(``elasticsearch.helpers.bulk(c, ...)``, a cursor passed to a library); ``type(c)`` still tells the truth
([`MonitoredClient`][]) and ``isinstance(c, MonitoredClient)`` holds.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MethodType
from typing import TYPE_CHECKING, Any, TypeVar

from .clientstats import ClientStats

if TYPE_CHECKING:
    from .clientstats import _MethodStats

__all__ = ["ClientStats", "MonitoredClient", "WrapResult", "monitor_of", "monitored", "unwrap"]

_MONITOR_ATTRIBUTE = "__syncpool_monitor__"
_MEASURES = ("call", "iteration", "block", None)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class WrapResult:
    """How a [`MonitoredClient`][] monitors what one of its calls returns (the values of ``results=``).

    The result is wrapped in a proxy that behaves like it (``isinstance`` and [`unwrap`][] work as on the
    client itself) and records the calls named by ``methods``; if the result, used as a context manager, enters as
    itself, the proxy enters as itself too, so that the calls inside ``with conn.cursor() as cur:`` are recorded.
    ``measure`` says what one operation under the call's own name is:

    * ``"call"``: the call itself, recorded as any other.
    * ``None``: nothing; the call only makes an object that does the work (``conn.cursor()``, whose ``execute``
      is recorded as ``cursor.execute``), so only the calls on the result are recorded.
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
        measure: ``"call"``, ``None``, ``"iteration"`` or ``"block"``, as above. Defaults to ``"call"``.

    Raises:
        ValueError: If ``measure`` is not one of the four.
        TypeError: If ``methods`` is a string or holds something else than strings, or ``prefix`` is not a string.
    """

    methods: Collection[str] | None = None
    prefix: str | None = None
    measure: str | None = "call"

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
    """Return a function that calls ``method`` and records the call into ``recorder``.

    The hot path: ``recorder.record(start, end)`` is inlined (a tenth of the added cost of a call).
    """
    clock = recorder.clock
    append = recorder.pending.append

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
            recorder.record(start, end)
        return result

    return _as_wrapper_of(call, method)


def _as_wrapper_of(wrapper: Callable[..., Any], method: Callable[..., Any]) -> Callable[..., Any]:
    try:
        functools.update_wrapper(wrapper, method)
    except (AttributeError, TypeError):  # pragma: no cover - exotic callables without __name__ etc.
        wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


class _Scope:
    """What the proxies made at one place share: where they record and which calls they follow (internal).

    One for each client, namespace and followed call. Read-only but for its caches, which threads may fill at the
    same time (a dict assignment is atomic; a duplicate entry is harmless): one wrapper per method name and class
    function, so that a new proxy binds a ready wrapper to its target instead of building one; and, for the
    results of a followed call, the proxy class of each result class.
    """

    __slots__ = (
        "monitor", "prefix", "namespaces", "results", "methods", "rule", "measure", "recorder", "_wrappers", "_types",
    )  # fmt: skip

    def __init__(
        self,
        monitor: ClientStats,
        prefix: str,
        namespaces: frozenset[str] | None,
        results: Mapping[str, WrapResult],
        methods: Collection[str] | None = None,
        rule: WrapResult | None = None,
        recorder: _MethodStats | None = None,
    ) -> None:
        self.monitor = monitor
        self.prefix = prefix
        self.namespaces = namespaces
        self.results = results
        self.methods = methods  # the names to record; None: every public one
        self.rule = rule  # for the results of a followed call: its rule, and the call's own recorder
        self.measure = None if rule is None else rule.measure
        self.recorder = recorder
        self._wrappers: dict[tuple[str, Any], Callable[..., Any]] = {}
        self._types: dict[type, type[_Result]] = {}

    def wrap(self, name: str, method: Callable[..., Any], target: Any) -> Callable[..., Any]:
        """Return what a proxy of ``target`` gives for its public method ``name``, fetched as ``method``."""
        function = getattr(method, "__func__", None)
        if function is None or getattr(method, "__self__", None) is not target:
            return self._wrap(name, method)  # a builtin's method, a function set on the instance...
        key = (name, function)
        wrapper = self._wrappers.get(key)
        if wrapper is None:
            wrapper = self._wrappers[key] = self._wrap(name, function)
        return MethodType(wrapper, target)

    def result(self, target: Any) -> _Result:
        """Wrap ``target``, a result of the followed call."""
        target_type = type(target)
        proxy_type = self._types.get(target_type)
        if proxy_type is None:
            # Where instances have no __dict__ (psycopg's cursors), none can hide a method of its class, so the
            # methods can live on a proxy class of their own: a new cursor's execute() and fetchone() are then
            # class attributes, not __getattr__ calls.
            if any("__dict__" in vars(klass) for klass in target_type.__mro__):
                proxy_type = _Result
            else:
                proxy_type = type("_Result", (_Result,), {"__slots__": ()})
            self._types[target_type] = proxy_type
        return proxy_type(target, self)

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        qualified = self.prefix + name
        rule = self.results.get(qualified)
        if rule is not None:
            return _make_following_call(method, self.follow(qualified, rule))
        if self.methods is None or name in self.methods:
            return _make_call(method, self.monitor.method_stats(qualified))
        return method

    def namespace(self, name: str) -> _Scope:
        """The scope of the namespace attribute ``name``."""
        return _Scope(self.monitor, f"{self.prefix}{name}.", self.namespaces, self.results)

    def follow(self, qualified: str, rule: WrapResult) -> _Scope:
        """The scope of the results of the call ``qualified``, which ``rule`` follows."""
        prefix = qualified + "." if rule.prefix is None else rule.prefix
        recorder = None if rule.measure is None else self.monitor.method_stats(qualified)
        return _Scope(self.monitor, prefix, self.namespaces, self.results, rule.methods, rule, recorder)


def _make_following_call(method: Callable[..., Any], scope: _Scope) -> Callable[..., Any]:
    """Return a function that calls ``method`` (recorded if its rule measures the call) and wraps its result."""
    invoke = _make_call(method, scope.recorder) if scope.recorder is not None and scope.measure == "call" else method

    def call(*args: Any, **kwargs: Any) -> Any:
        result = invoke(*args, **kwargs)
        return None if result is None else scope.result(result)

    return _as_wrapper_of(call, method)


def _on_target(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """Return a method for a result's proxy class that calls ``wrapper`` on the proxy's target."""

    def method(proxy: _Proxy, *args: Any, **kwargs: Any) -> Any:
        return wrapper(proxy._sp_target, *args, **kwargs)

    return _as_wrapper_of(method, wrapper)


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
    """Shared machinery of [`MonitoredClient`][], nested namespace proxies and wrapped results."""

    __slots__ = ("_sp_target", "_sp_scope", "__dict__", "__weakref__")  # the dict caches wrappers

    _sp_target: Any
    _sp_scope: _Scope

    def __init__(self, target: Any, scope: _Scope) -> None:
        object.__setattr__(self, "_sp_target", target)
        object.__setattr__(self, "_sp_scope", scope)

    def __getattr__(self, name: str) -> Any:
        """Fetch ``name`` from the wrapped object, wrapping public methods and namespaces (cached)."""
        if name in _INTERNAL:  # not initialised yet (e.g. during copy): avoid infinite recursion
            raise AttributeError(name)
        target = self._sp_target
        value = getattr(target, name)
        if name.startswith("_") or isinstance(value, type):
            return value
        scope = self._sp_scope
        if callable(value):
            wrapper: Any = scope.wrap(name, value, target)
        elif _is_namespace(name, value, scope.namespaces):
            wrapper = _Namespace(value, scope.namespace(name))
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
        """The [`ClientStats`][] this proxy records into."""
        return self._sp_scope.monitor

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

    def __repr__(self) -> str:
        """Show the namespace and the wrapped object."""
        return f"<monitored namespace {self._sp_scope.prefix[:-1]!r} of {self._sp_target!r}>"


class _Result(_Proxy):
    """The result of a call named in ``results=``, monitored as its [`WrapResult`][] says."""

    __slots__ = ("_sp_started",)

    _sp_started: float | None

    def __getattr__(self, name: str) -> Any:
        """As for any proxy; a method is also put on this proxy class, when it has one of its own."""
        value = super().__getattr__(name)
        proxy_type = type(self)
        if proxy_type is not _Result and type(value) is MethodType and value.__self__ is self._sp_target:
            setattr(proxy_type, name, _on_target(value.__func__))  # recording or not: it is the class's method
        return value

    def __enter__(self) -> Any:
        """Enter the wrapped object; return this proxy where it returns itself (``"block"``: as it is)."""
        target = self._sp_target
        enter = getattr(type(target), "__enter__", None)
        if enter is None or not hasattr(type(target), "__exit__"):
            raise TypeError(f"{type(target).__name__!r} object does not support the context manager protocol")
        scope = self._sp_scope
        if scope.measure != "block":
            entered = enter(target)
            return self if entered is target else entered
        recorder = scope.recorder
        assert recorder is not None
        start = recorder.clock()
        try:
            entered = enter(target)
        except BaseException as error:
            recorder.record_error(start, error)
            raise
        object.__setattr__(self, "_sp_started", start)  # a block result is entered once, like what it wraps
        return entered

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> Any:
        """Exit the wrapped object (``"block"``: and record the block, failed if it raised)."""
        target = self._sp_target
        scope = self._sp_scope
        start = getattr(self, "_sp_started", None) if scope.measure == "block" else None
        if start is None:  # not a block, or a block never entered
            return type(target).__exit__(target, exc_type, exc, traceback)
        object.__setattr__(self, "_sp_started", None)
        recorder = scope.recorder
        assert recorder is not None
        try:
            suppressed = type(target).__exit__(target, exc_type, exc, traceback)
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
        recorder = self._sp_scope.recorder
        if self._sp_scope.measure != "iteration" or recorder is None:
            return iterator
        return _steps(iterator, recorder)

    def __repr__(self) -> str:
        """Show the wrapped object."""
        return f"<monitored result of {self._sp_target!r}>"


class MonitoredClient(_Proxy):
    """Wrap ``client`` so that it behaves like ``client`` while every public method call is recorded.

    For example:

    ```python
    s3 = MonitoredClient(boto3.client("s3"), name="s3")
    s3.put_object(Bucket="b", Key="k", Body=b"...")
    s3.stats()["operations"]  # 1
    ```

    Failed calls are counted (per exception class name) and the exception is re-raised unchanged. See the
    module docstring for the wrapping rules and for ``isinstance`` (``unwrap(c)`` or ``c.wrapped``).

    Args:
        client: Any object.
        name: Name reported in the statistics. Defaults to the wrapped class name.
        sink: The [`ClientStats`][] to record into, shared between wrappers (a pool passes its own).
            Defaults to a new one.
        namespaces: Attribute names to treat as nested API namespaces; ``None`` (default) guesses: non-callable
            attributes whose class name ends in ``Client``.
        results: The calls whose results are monitored too, by their recorded name (``"cursor"``,
            ``"cursor.copy"``, ``"indices.get_alias"``), each with a [`WrapResult`][] saying how. For example
            ``{"cursor": WrapResult(methods=("execute", "executemany"))}`` records ``cur.execute(...)`` as
            ``cursor.execute``. Defaults to none: results are returned as they are.

    Raises:
        TypeError: If ``results`` is not a mapping of names to [`WrapResult`][].
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
        super().__init__(client, _Scope(sink, "", None if namespaces is None else frozenset(namespaces), rules))

    def stats(self) -> dict[str, Any]:
        """Return the statistics of the sink (see [`ClientStats.stats`][]); shared sinks report all wrappers."""
        return self._sp_scope.monitor.stats()

    def reset(self) -> None:
        """Zero the statistics of the sink (see [`ClientStats.reset`][])."""
        self._sp_scope.monitor.reset()

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
        return f"<MonitoredClient {self._sp_scope.monitor.name!r} of {self._sp_target!r}>"


# The proxies' own attribute names: never looked up on, nor assigned to, the wrapped object.
_INTERNAL = frozenset({"_sp_target", "_sp_scope", "_sp_started"})


def unwrap(obj: Any) -> Any:
    """Return the object behind any number of [`MonitoredClient`][], namespace and result proxies.

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
    """Return the [`ClientStats`][] behind a monitored client, function, class or instance of such a class.

    Args:
        obj: A [`MonitoredClient`][], a namespace or result proxy, or something decorated with [`monitored`][].

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
    """Decorate a function or a class so that its calls are recorded like a [`MonitoredClient`][]'s.

    On a function, each call is recorded under the function's ``__name__``. On a class, the public methods
    (plain, static and class methods) defined in the class body itself are replaced in place, so instances
    stay genuine instances; all instances share one [`ClientStats`][]. Get it with [`monitor_of`][]:

    ```python
    @monitored
    def fetch(key): ...

    @monitored(name="repo")
    class Repository: ...

    monitor_of(fetch).stats(); monitor_of(Repository).stats()
    ```

    Args:
        target: The function or class (when used without parentheses).
        name: Name reported in the statistics. Defaults to the ``__qualname__``.
        sink: A [`ClientStats`][] to share. Defaults to a new one.

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
