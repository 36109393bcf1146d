"""The optional C accelerator (syncpool._speedups) against the pure-Python behaviour it replaces."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import time
import traceback
import weakref
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncpool import monitoring
from syncpool.histogram import MAX_VALUE, MIN_VALUE, Histogram, _index
from syncpool.monitoring import ClientStats, MonitoredClient, monitored

speedups: Any = monitoring._speedups
pytestmark = pytest.mark.skipif(speedups is None, reason="syncpool._speedups is not built here")


class Recorder:
    """Stands in for the Python recorder a TimedCall reports late and failed calls to."""

    def __init__(self) -> None:
        self.late: list[tuple[float, float]] = []
        self.errors: list[tuple[float, BaseException]] = []

    def record_late(self, end: float, elapsed: float) -> None:
        self.late.append((end, elapsed))

    def record_error(self, start: float, error: BaseException) -> None:
        self.errors.append((start, error))


def drained_indexes(values: list[float]) -> dict[int, int]:
    accumulator = speedups.Accumulator()
    for value in values:
        accumulator.add(value)
    drained = accumulator.drain()
    assert drained is not None
    return drained[4]  # type: ignore[no-any-return]


@given(st.floats(min_value=0.0, max_value=MAX_VALUE * 4, allow_nan=False, allow_infinity=False))
def test_bucket_index_matches_the_python_histogram(value: float) -> None:
    assert drained_indexes([value]) == {_index(value): 1}


def test_bucket_index_at_the_edges() -> None:
    edges = [0.0, 5e-324, MIN_VALUE * 0.999, MIN_VALUE, MIN_VALUE * 1.001, 1.0, math.nextafter(MAX_VALUE, 0.0),
             MAX_VALUE, 1e300]
    for value in edges:
        assert drained_indexes([value]) == {_index(value): 1}, value


def test_drain_reports_exact_totals_and_empties() -> None:
    accumulator = speedups.Accumulator()
    assert accumulator.drain() is None
    values = [0.001, 0.002, 0.002, 0.5, 3e-9]
    for value in values:
        accumulator.add(value)
    assert accumulator.count == 5
    count, total, low, high, buckets = accumulator.drain()
    assert (count, low, high) == (5, 3e-9, 0.5)
    assert total == pytest.approx(sum(values))
    assert sum(buckets.values()) == 5
    assert accumulator.drain() is None and accumulator.count == 0
    # Folding the drained counts gives the histogram the Python path builds value by value.
    folded, reference = Histogram(), Histogram()
    folded.add_counts(buckets, count, total, low, high)
    for value in values:
        reference.add(value)
    assert folded.snapshot() == pytest.approx(reference.snapshot())


def test_an_accumulator_stands_in_for_a_list_of_pending_durations() -> None:
    # The pool's hot path appends to its pending durations and folds them when len() reaches 1024.
    accumulator = speedups.Accumulator()
    assert len(accumulator) == 0 and not accumulator
    values = [0.25, 1e-6, 0.003]
    for value in values:
        accumulator.append(value)
    assert len(accumulator) == 3 and accumulator
    folded, reference = Histogram(), Histogram()
    assert folded.add_accumulated(accumulator) == 3
    reference.add_many(values)
    assert folded.snapshot() == pytest.approx(reference.snapshot())
    assert len(accumulator) == 0 and folded.add_accumulated(accumulator) == 0


def test_negative_or_nan_durations_count_as_zero() -> None:
    accumulator = speedups.Accumulator()
    accumulator.add(-1.0)
    accumulator.add(math.nan)
    count, total, low, high, buckets = accumulator.drain()
    assert (count, total, low, high) == (2, 0.0, 0.0, 0.0)
    assert buckets == {_index(0.0): 2}


def test_its_clock_is_perf_counter() -> None:
    before = time.perf_counter()
    ours = speedups.perf_counter()
    after = time.perf_counter()
    assert before <= ours <= after


def test_timed_call_forwards_arguments_and_results() -> None:
    def target(a: int, b: int = 2, *rest: int, c: int = 3, **extra: int) -> tuple[Any, ...]:
        return a, b, rest, c, extra

    accumulator = speedups.Accumulator()
    call = speedups.TimedCall(target, Recorder(), accumulator)
    assert call(1) == (1, 2, (), 3, {})
    assert call(1, 5, 6, 7, c=8, d=9) == (1, 5, (6, 7), 8, {"d": 9})
    assert call(*[1], **{"c": 4}) == (1, 2, (), 4, {})
    assert accumulator.count == 3


def test_timed_call_binds_like_a_function_on_a_class() -> None:
    class Thing:
        def __init__(self) -> None:
            self.value = 7

        def get(self, add: int = 0) -> int:
            return self.value + add

    Thing.get = speedups.TimedCall(Thing.get, Recorder(), speedups.Accumulator())  # type: ignore[method-assign]
    thing = Thing()
    assert thing.get() == 7
    assert thing.get(add=1) == 8
    assert Thing.get(thing, 2) == 9  # looked up on the class: unbound, as a function would be


def test_timed_call_reraises_the_same_error_with_its_traceback() -> None:
    recorder = Recorder()
    accumulator = speedups.Accumulator()
    error = KeyError("missing")

    def fail() -> None:
        raise error

    call = speedups.TimedCall(fail, recorder, accumulator)
    before = time.perf_counter()
    with pytest.raises(KeyError) as caught:
        call()
    assert caught.value is error
    assert "fail" in "".join(traceback.format_tb(caught.value.__traceback__))
    assert len(recorder.errors) == 1
    start, recorded = recorder.errors[0]
    assert recorded is error and before <= start <= time.perf_counter()
    assert accumulator.count == 0  # failed calls are the recorder's to count


def test_timed_call_passes_base_exceptions_through() -> None:
    recorder = Recorder()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        speedups.TimedCall(interrupt, recorder, speedups.Accumulator())()
    assert isinstance(recorder.errors[0][1], KeyboardInterrupt)


def test_a_failing_recorder_never_replaces_the_call_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: reported.append(info.exc_value))

    class Broken:
        def record_late(self, end: float, elapsed: float) -> None:
            raise MemoryError("late")

        def record_error(self, start: float, error: BaseException) -> None:
            raise MemoryError("error")

    late = speedups.TimedCall(lambda: "result", Broken(), speedups.Accumulator(rollover=0.0))
    assert late() == "result"

    def fail() -> None:
        raise ValueError("the caller's error")

    with pytest.raises(ValueError, match="the caller's error"):
        speedups.TimedCall(fail, Broken(), speedups.Accumulator())()
    assert [str(error) for error in reported] == ["late", "error"]


def test_a_call_past_rollover_goes_to_record_late() -> None:
    recorder = Recorder()
    accumulator = speedups.Accumulator(rollover=0.0)  # every call ends after it
    call = speedups.TimedCall(lambda: None, recorder, accumulator)
    before = time.perf_counter()
    call()
    assert accumulator.count == 0
    (end, elapsed), = recorder.late
    assert before <= end <= time.perf_counter() and 0.0 <= elapsed < 1.0
    accumulator.rollover = math.inf
    call()
    assert accumulator.count == 1 and len(recorder.late) == 1


def test_timed_call_is_collected_with_its_cycles() -> None:
    class Client:
        def ping(self) -> None:
            pass

    client = Client()
    call = speedups.TimedCall(client.ping, Recorder(), speedups.Accumulator())
    client.call = call  # type: ignore[attr-defined]  # a cycle: client -> call -> bound method -> client
    ref = weakref.ref(call)
    del client, call
    gc.collect()
    assert ref() is None


def test_rollover_moves_with_the_slots_and_counts_stay_exact() -> None:
    # Calls spread over several 50 ms slots: each slot's first call takes the late path and moves rollover on.
    client = MonitoredClient(type("C", (), {"ping": lambda self: None})(), name="slots")
    recorder = monitor_recorder(client, "ping")
    assert recorder.accumulator is not None
    rollovers = set()
    for _ in range(4):
        for _ in range(100):
            client.ping()
        rollovers.add(recorder.accumulator.rollover)
        time.sleep(0.06)
    stats = client.stats()
    assert stats["operations"] == 400
    assert stats["latency"]["count"] == 400
    assert stats["ops_per_sec_recent"] > 0
    assert len(rollovers) >= 3


def monitor_recorder(client: MonitoredClient, method: str) -> Any:
    return client.monitor.method_stats(method)


def test_exact_mode_with_the_default_clock_uses_the_accelerator() -> None:
    assert ClientStats("x").method_stats("m").accumulator is not None
    assert ClientStats("x", latency_sample=8).method_stats("m").accumulator is None
    assert ClientStats("x", clock=lambda: 0.0).method_stats("m").accumulator is None

    @monitored
    def work() -> int:
        return 1

    assert isinstance(work, speedups.TimedCall)
    assert work() == 1 and work.__name__ == "work"


def test_syncpool_no_speedups_forces_pure_python() -> None:
    code = (
        "import syncpool; from syncpool import monitoring, pool; "
        "print(monitoring._speedups is None, syncpool.Lease is pool._PyLease)"
    )
    env = {**os.environ, "SYNCPOOL_NO_SPEEDUPS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True True"
