"""Pool-level integration tests over real sockets: each connector through :class:`syncpool.Pool`.

Helpers shared by the test modules live here: a load generator that records what callers saw, a sampler of a gauge
while the load runs, and the check that no secret leaked into reprs, stats, errors or log records.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Load:
    """Threads running ``operation`` in a loop until stopped, recording successes and errors by type."""

    operation: Callable[[int], object]
    threads: int = 12
    ok: int = 0
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _last_ok: float = 0.0

    def start(self) -> Load:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), name=f"load-{index}", daemon=True)
            self._workers.append(worker)
            worker.start()
        return self

    def _run(self, index: int) -> None:
        while not self._stop.is_set():
            try:
                self.operation(index)
            except Exception as error:
                with self._lock:
                    self.errors.append(error)
                time.sleep(0.01)  # do not spin on a down server
            else:
                with self._lock:
                    self.ok += 1
                    self._last_ok = time.monotonic()

    def successes_since(self, moment: float) -> bool:
        with self._lock:
            return self._last_ok > moment

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout)
        alive = [worker.name for worker in self._workers if worker.is_alive()]
        assert not alive, f"load threads still running: {alive}"

    def unexpected(self, allowed: tuple[type[BaseException], ...]) -> list[str]:
        """Describe every recorded error that is not one of ``allowed``."""
        return [
            "".join(traceback.format_exception_only(type(error), error)).strip()
            for error in self.errors
            if not isinstance(error, allowed)
        ]


class Sampler:
    """Calls ``probe`` every ``interval`` seconds on a thread and keeps the values (None when it raised)."""

    def __init__(self, probe: Callable[[], Any], interval: float = 0.02) -> None:
        self.values: list[Any] = []
        self._probe = probe
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.values.append(self._probe())
            except Exception:
                self.values.append(None)

    @property
    def seen(self) -> list[Any]:
        return [value for value in self.values if value is not None]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> float:
    """Poll ``predicate`` until it is true; return the seconds it took. Fails the test on timeout."""
    started = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not reached within {timeout}s")
        time.sleep(interval)


def _error_texts(error: BaseException | None) -> Iterable[str]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield str(error)
        yield repr(error)
        yield "".join(traceback.format_exception_only(type(error), error))
        error = error.__cause__ or error.__context__


def assert_no_secret(
    secrets: Iterable[str],
    *,
    pool: Any = None,
    errors: Iterable[BaseException | None] = (),
    records: Iterable[logging.LogRecord] = (),
) -> None:
    """Fail if any secret appears in ``repr(pool)``, ``str(pool.stats())``, the errors (and their causes) or the
    log records (message, arguments and formatted exception)."""
    texts: list[tuple[str, str]] = []
    if pool is not None:
        texts.append(("repr(pool)", repr(pool)))
        texts.append(("str(pool.stats())", str(pool.stats())))
    for error in errors:
        texts.extend(("exception", text) for text in _error_texts(error))
    formatter = logging.Formatter()
    for record in records:
        texts.append((f"log record {record.name}", record.getMessage()))
        if record.exc_info:
            texts.append((f"log record {record.name} traceback", formatter.formatException(record.exc_info)))
    for secret in secrets:
        assert secret, "empty secret"
        for where, text in texts:
            assert secret not in text, f"secret leaked into {where}: {text[:300]}"


def outage_under_load(
    load: Load,
    take_down: Callable[[], object],
    bring_back: Callable[[], object],
    *,
    warm_up: int = 50,
    down_for: float = 0.5,
    after: int = 50,
) -> float:
    """Start ``load``, take the backend down and back up, and return how long after that the first lease succeeded.

    The load runs until ``warm_up`` operations succeeded before the outage and ``after`` more once it recovered,
    then is stopped; the caller asserts on ``load`` (errors seen, recovery time) afterwards.
    """
    load.start()
    wait_until(lambda: load.ok >= warm_up, timeout=30)
    take_down()
    time.sleep(down_for)
    bring_back()
    back = time.monotonic()
    # Generous deadlines: they bound a hang, not the speed of a machine that may be busy with other tests.
    recovery = wait_until(lambda: load.successes_since(back), timeout=30)
    ok_after = load.ok
    wait_until(lambda: load.ok >= ok_after + after, timeout=30)
    load.stop()
    return recovery
