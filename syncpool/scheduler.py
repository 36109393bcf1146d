"""The background threads of one pool: a scheduler thread and a few worker threads.

The scheduler keeps a heap of timed tasks and hands each one, when due, to the workers' queue; workers run tasks one
at a time. Tasks are plain callables that the pool builds around a weak reference to itself (see
``weak_task``), so the threads never keep a forgotten pool alive.

Threads are daemons, named ``syncpool-<pool>-scheduler`` and ``syncpool-<pool>-worker-<n>``. Whatever a task raises,
``BaseException`` included (a connector's ``SystemExit``, an asynchronous exception), is logged and the thread goes
on: a background thread never dies of its tasks. Periodic tasks (``Scheduler.every``) are re-armed by the
scheduler itself when it hands them to a worker, so a task that fails can never stop its own schedule.
``Scheduler.stop`` wakes every thread at once (a sleeping backoff never delays a close) and joins them with a
timeout: a worker stuck in a connect that never returns is left behind as a daemon rather than hanging the caller.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any

__all__ = ["Scheduler", "weak_task"]

logger = logging.getLogger("syncpool")

Task = Callable[[], Any]

_STOP = object()


def weak_task(owner: object, method_name: str, *args: Any) -> Task:
    """Return a task that calls ``owner.<method_name>(*args)`` if ``owner`` is still alive, else does nothing."""
    ref = weakref.ref(owner)

    def task() -> None:
        target = ref()
        if target is not None:
            getattr(target, method_name)(*args)

    task.__qualname__ = f"{type(owner).__name__}.{method_name}"
    return task


class Scheduler:
    """Runs tasks now (``submit``) or later (``call_later``) on a few daemon worker threads."""

    def __init__(self, name: str, *, num_workers: int = 3) -> None:
        self.name = name
        self.num_workers = num_workers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._heap: list[tuple[float, int, Task, float | None]] = []  # (when, tie-breaker, task, period)
        self._counter = itertools.count()  # tie-breaker so the heap never compares two tasks
        self._cond = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._stopping = False

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return bool(self._threads) and not self._stopping

    def start(self) -> None:
        """Start the scheduler and worker threads. Idempotent."""
        with self._cond:
            if self._threads or self._stopping:
                return
            threads = [threading.Thread(target=self._run_timer, name=f"syncpool-{self.name}-scheduler", daemon=True)]
            threads += [
                threading.Thread(target=self._run_worker, name=f"syncpool-{self.name}-worker-{i}", daemon=True)
                for i in range(self.num_workers)
            ]
            self._threads = threads
        for thread in threads:
            thread.start()

    def submit(self, task: Task) -> bool:
        """Run ``task`` on a worker as soon as one is free; return False (and drop it) if the scheduler stopped."""
        if self._stopping:
            return False
        self._queue.put(task)
        return True

    def call_later(self, delay: float, task: Task) -> bool:
        """Run ``task`` on a worker after ``delay`` seconds; False if the scheduler stopped (it then never runs).

        A task scheduled before ``stop`` is dropped by it.
        """
        return self._push(monotonic() + delay, task, None)

    def every(self, interval: float, task: Task) -> bool:
        """Run ``task`` on a worker every ``interval`` seconds, first after one interval, until ``stop``.

        The next run is scheduled when this one is handed to a worker, whatever the task then does.
        """
        return self._push(monotonic() + interval, task, interval)

    def _push(self, when: float, task: Task, interval: float | None) -> bool:
        with self._cond:
            if self._stopping:
                return False
            heapq.heappush(self._heap, (when, next(self._counter), task, interval))
            self._cond.notify()
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Stop every thread, dropping pending timed tasks; return True if all of them ended within ``timeout``.

        Safe to call several times and from any thread, including one of the workers (which is then not joined).
        """
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        for _ in range(self.num_workers):
            self._queue.put(_STOP)
        deadline = None if timeout is None else monotonic() + timeout
        current = threading.current_thread()
        alive = False
        for thread in threads:
            if thread is current or not thread.is_alive():
                continue
            thread.join(None if deadline is None else max(0.0, deadline - monotonic()))
            alive = alive or thread.is_alive()
        return not alive

    def after_fork_in_child(self) -> None:
        """Forget the parent's threads, which do not exist in a forked child; the pool starts new ones on demand."""
        self._cond = threading.Condition(threading.Lock())
        self._queue = queue.SimpleQueue()
        self._heap = []
        self._threads = []

    def _run_timer(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while True:
                    if self._stopping:
                        return
                    if self._heap:
                        now = monotonic()
                        delay = self._heap[0][0] - now
                        if delay <= 0:
                            _, _, task, interval = heapq.heappop(self._heap)
                            if interval is not None:  # re-arm first: nothing the task does can stop its schedule
                                heapq.heappush(self._heap, (now + interval, next(self._counter), task, interval))
                            break
                        cond.wait(delay)
                    else:
                        cond.wait()
            self._queue.put(task)

    def _run_worker(self) -> None:
        get = self._queue.get
        while True:
            task = get()
            if task is _STOP:
                return
            try:
                task()
            except BaseException:  # noqa: B036 - a background thread must survive anything a connector throws
                logger.exception("pool %r: background task %s failed", self.name, getattr(task, "__qualname__", task))
