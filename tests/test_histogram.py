"""Tests of syncpool.histogram: stated relative error, bounded memory, exact aggregates, thread safety."""

from __future__ import annotations

import math
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncpool.histogram import DEFAULT_BOUNDS, MAX_VALUE, MIN_VALUE, RELATIVE_ERROR, Histogram, _edges, _index

durations = st.floats(min_value=MIN_VALUE, max_value=MAX_VALUE / 2, allow_nan=False, allow_infinity=False)


def nearest_rank(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(quantile * len(ordered) - 1e-9))
    return ordered[rank - 1]


def test_relative_error_is_as_stated() -> None:
    assert RELATIVE_ERROR == pytest.approx(1 / 129)
    assert RELATIVE_ERROR < 0.01


@settings(max_examples=300, deadline=None)
@given(st.lists(durations, min_size=1, max_size=300))
def test_percentiles_within_stated_error(values: list[float]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    snap = histogram.snapshot()
    for key, quantile in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        true = nearest_rank(values, quantile)
        assert abs(snap[key] - true) <= RELATIVE_ERROR * true * (1 + 1e-9), (key, snap[key], true)
    for quantile in (0.0, 0.25, 0.999, 1.0):
        true = nearest_rank(values, quantile)
        assert abs(histogram.percentile(quantile) - true) <= RELATIVE_ERROR * true * (1 + 1e-9)


# Every kind of value a clock difference can give, the edge buckets included.
any_duration = st.one_of(
    durations,
    st.just(0.0),
    st.floats(min_value=0.0, max_value=MIN_VALUE, exclude_max=True),
    st.floats(min_value=MAX_VALUE, max_value=1e300),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(any_duration, min_size=1, max_size=200))
def test_add_many_equals_add(values: list[float]) -> None:
    one_by_one, batch = Histogram(), Histogram()
    for value in values:
        one_by_one.add(value)
    batch.add_many(values)
    assert one_by_one._counts == batch._counts
    assert one_by_one.snapshot() == pytest.approx(batch.snapshot())
    assert one_by_one.buckets() == batch.buckets()


def test_index_is_exponent_and_top_six_mantissa_bits() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        value = rng.lognormvariate(-6, 5)
        if not MIN_VALUE <= value < MAX_VALUE:
            continue
        mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= mantissa < 1
        assert _index(value) == ((exponent + 1022) << 6) | (int(mantissa * 128.0) - 64)
        lower, upper = _edges(_index(value))
        assert lower <= value < upper
        assert (upper - lower) / (upper + lower) <= RELATIVE_ERROR * (1 + 1e-12)


def test_large_sample_percentiles() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(-5, 1.2) for _ in range(50_000)]
    histogram = Histogram()
    histogram.add_many(values)
    snap = histogram.snapshot()
    assert snap["count"] == len(values)
    assert snap["sum"] == pytest.approx(sum(values))
    assert snap["min"] == min(values) and snap["max"] == max(values)
    assert snap["mean"] == pytest.approx(sum(values) / len(values))
    for key, quantile in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        true = nearest_rank(values, quantile)
        assert abs(snap[key] - true) <= RELATIVE_ERROR * true


def test_memory_is_bounded() -> None:
    histogram = Histogram()
    rng = random.Random(1)
    for _ in range(100_000):
        histogram.add(10 ** rng.uniform(-12, 8))
    histogram.add(0.0)
    histogram.add(1e300)
    assert len(histogram._counts) <= 50 * 64 + 2
    assert histogram.snapshot()["max"] == 1e300
    assert histogram.snapshot()["min"] == 0.0


def test_empty_snapshot() -> None:
    snap = Histogram().snapshot()
    assert snap == {
        "count": 0,
        "sum": 0.0,
        "min": 0.0,
        "max": 0.0,
        "mean": 0.0,
        "p50": 0.0,
        "p90": 0.0,
        "p99": 0.0,
    }
    assert Histogram().percentile(0.5) == 0.0
    assert Histogram().buckets()[-1] == (math.inf, 0)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_rejects_invalid_values(bad: float) -> None:
    with pytest.raises(ValueError):
        Histogram().record(bad)


def test_percentile_rejects_bad_quantile() -> None:
    with pytest.raises(ValueError):
        Histogram().percentile(1.5)


def test_zero_and_tiny_values() -> None:
    histogram = Histogram()
    for _ in range(10):
        histogram.add(0.0)
    snap = histogram.snapshot()
    assert snap["p50"] == 0.0 and snap["p99"] == 0.0 and snap["count"] == 10


def test_buckets_are_cumulative_and_end_with_inf() -> None:
    histogram = Histogram()
    for value in (0.00005, 0.0004, 0.003, 0.003, 0.2, 7.0, 100.0):
        histogram.add(value)
    buckets = histogram.buckets()
    assert [bound for bound, _ in buckets] == [*DEFAULT_BOUNDS, math.inf]
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    as_dict = dict(buckets)
    assert as_dict[0.0001] == 1
    assert as_dict[0.0005] == 2
    assert as_dict[0.005] == 4
    assert as_dict[0.25] == 5
    assert as_dict[10.0] == 6
    assert as_dict[60.0] == 6
    assert as_dict[math.inf] == 7


def test_buckets_custom_bounds_and_validation() -> None:
    histogram = Histogram()
    histogram.add(1.0)
    histogram.add(3.0)
    assert histogram.buckets([2.0, 4.0]) == [(2.0, 1), (4.0, 2), (math.inf, 2)]
    with pytest.raises(ValueError):
        histogram.buckets([2.0, 1.0])


def test_buckets_match_exact_counts_away_from_bounds() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(-4, 2) for _ in range(5000)]
    histogram = Histogram()
    histogram.add_many(values)
    for bound, count in histogram.buckets()[:-1]:
        exact_low = sum(1 for v in values if v <= bound * (1 - 2 * RELATIVE_ERROR) * 0.99)
        exact_high = sum(1 for v in values if v <= bound)
        assert exact_low <= count <= exact_high


def test_merge_copy_reset() -> None:
    first, second = Histogram(), Histogram()
    for value in (0.001, 0.002):
        first.record(value)
    for value in (0.5, 0.0001):
        second.record(value)
    first.merge(second)
    snap = first.snapshot()
    assert snap["count"] == 4 and snap["max"] == 0.5 and snap["min"] == 0.0001
    assert snap["sum"] == pytest.approx(0.5031)
    clone = first.copy()
    first.reset()
    assert first.snapshot()["count"] == 0 and first.count == 0
    assert clone.snapshot()["count"] == 4
    assert second.snapshot()["count"] == 2  # merge leaves the source alone


def test_record_is_thread_safe() -> None:
    histogram = Histogram()
    threads = [
        threading.Thread(target=lambda: [histogram.record(0.001 * (i % 7 + 1)) for i in range(5000)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = histogram.snapshot()
    assert snap["count"] == 40_000
    assert snap["max"] == 0.007


def test_snapshot_while_unlocked_add_runs() -> None:
    histogram = Histogram()
    stop = threading.Event()
    lock = threading.Lock()

    def writer() -> None:
        rng = random.Random(2)
        while not stop.is_set():
            with lock:  # a foreign lock, as a pool would hold
                histogram.add(10 ** rng.uniform(-6, 1))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(200):
            histogram.snapshot()
            histogram.buckets()
    finally:
        stop.set()
        thread.join()


def test_after_fork_in_child_gives_a_free_lock() -> None:
    histogram = Histogram()
    histogram.record(0.5)
    histogram._lock.acquire()  # as a thread of the parent might hold it at the fork
    histogram._after_fork_in_child()
    histogram.record(0.25)
    assert histogram.snapshot()["count"] == 2


def test_repr() -> None:
    histogram = Histogram()
    histogram.add(0.25)
    assert "count=1" in repr(histogram)


def test_since_gives_the_values_recorded_after_a_copy() -> None:
    histogram = Histogram()
    for value in (0.001, 0.002, 0.004):
        histogram.add(value)
    earlier = histogram.copy()
    for value in (0.010, 0.020, 0.002):
        histogram.add(value)
    changes = histogram.since(earlier)
    snapshot = changes.snapshot()
    assert snapshot["count"] == 3 and snapshot["sum"] == pytest.approx(0.032)
    assert snapshot["min"] == pytest.approx(0.002, rel=RELATIVE_ERROR * 2)
    assert snapshot["max"] == pytest.approx(0.020, rel=RELATIVE_ERROR * 2)
    assert histogram.since(histogram.copy()).snapshot()["count"] == 0
    assert histogram.snapshot()["count"] == 6  # the histogram itself is untouched


def test_rescaled_scales_a_sample_to_the_exact_figures() -> None:
    sample = Histogram()
    for value in (0.001, 0.001, 0.002, 0.004):
        sample.add(value)
    scaled = sample.rescaled(32, 0.0625, 0.0009, 0.0041)
    snapshot = scaled.snapshot()
    assert snapshot["count"] == 32 and snapshot["sum"] == 0.0625
    assert snapshot["min"] == 0.0009 and snapshot["max"] == 0.0041
    assert snapshot["p50"] == pytest.approx(0.001, rel=2 * RELATIVE_ERROR)  # half the sample, half the values
    assert scaled.buckets()[-1] == (math.inf, 32)
    assert [n for _, n in scaled.buckets([0.0015, 0.003])] == [16, 24, 32]
    assert Histogram().rescaled(5, 1.0, 0.1, 0.3).count == 0  # nothing sampled: nothing to scale
