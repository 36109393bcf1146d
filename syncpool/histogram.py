"""Log-linear latency histogram with bounded memory and a stated relative error.

Buckets follow the IEEE-754 layout of the value (the HDR-histogram idea): each power of two is split into
64 equal sub-buckets, so the bucket index of ``x`` is its exponent and top 6 mantissa bits,
``struct.unpack("<q", struct.pack("<d", x))[0] >> 46``. A percentile is reported as the bucket's harmonic
midpoint ``2 * lower * upper / (lower + upper)``, which is within ``RELATIVE_ERROR = 1 / 129`` (0.78 %) of
every value in the bucket, whatever the distribution. Values below ``MIN_VALUE`` (2**-30 s, about 1 ns)
share one bucket and values above ``MAX_VALUE`` (2**20 s, about 12 days) another, so a histogram holds at
most 50 * 64 + 2 = 3,202 buckets, stored sparsely in a dict (a latency range of 1 ms to 1 s needs
about 640). ``count``, ``sum``, ``min`` and ``max`` are exact, and percentiles are clamped to ``[min, max]``.

Because the index is a bit field, a batch of values is bucketed without one Python-level operation per value:
the doubles are reinterpreted as 64-bit integers (``array``), shifted by ``map`` and counted by
``collections.Counter``, all in C; see [`Histogram.add_many`][].
"""

from __future__ import annotations

import math
import struct
import sys
import threading
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["DEFAULT_BOUNDS", "RELATIVE_ERROR", "Histogram"]

SUB_BUCKETS = 64
"""Sub-buckets per power of two."""

RELATIVE_ERROR = 1 / (2 * SUB_BUCKETS + 1)
"""Largest relative error of a reported percentile (1/129, about 0.78 %) for values in ``[MIN_VALUE, MAX_VALUE]``."""

MIN_VALUE = 2.0**-30
MAX_VALUE = 2.0**20

_SHIFT = 46  # 52 mantissa bits - 6 kept
# How add_many builds a native-order 32-bit key from the top three bytes of a native-order double: (key byte, double
# byte) pairs, and which key byte keeps only its top 2 bits (the rest of the double's third byte is mantissa).
if sys.byteorder == "little":
    _KEY_BYTES = ((1, 5), (2, 6), (3, 7))
    _MASKED_KEY_BYTE = 1
else:  # pragma: no cover - big-endian machines
    _KEY_BYTES = ((0, 0), (1, 1), (2, 2))
    _MASKED_KEY_BYTE = 2
_KEEP_TOP_2_BITS = bytes(b & 0xC0 for b in range(256))
MIN_INDEX = (-30 + 1023) << 6
MAX_INDEX = (20 + 1023) << 6  # the overflow bucket [MAX_VALUE, inf)
_UNDERFLOW = MIN_INDEX - 1  # the bucket [0, MIN_VALUE)
_DOUBLE = struct.Struct("=d")
_INT64 = struct.Struct("=q")  # same byte order as _DOUBLE: the pair reinterprets a double's bits

DEFAULT_BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
)  # fmt: skip
"""Default export bounds (seconds) for [`Histogram.buckets`][]: 100 µs to one minute, 1-2.5-5 steps."""

_QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def _clamp(key: int) -> int:
    """The bucket of a bit-field key: keys below ``MIN_VALUE`` or at or above ``MAX_VALUE`` share one bucket each."""
    if key < MIN_INDEX:
        return _UNDERFLOW
    if key > MAX_INDEX:
        return MAX_INDEX
    return key


def _index(seconds: float) -> int:
    """Bucket index of a value ``>= 0``: its exponent and top 6 mantissa bits (the sign bit is 0), clamped."""
    return _clamp(_INT64.unpack(_DOUBLE.pack(seconds))[0] >> _SHIFT)


def _edges(index: int) -> tuple[float, float]:
    """Lower and upper edge of a bucket."""
    if index < MIN_INDEX:
        return 0.0, MIN_VALUE
    if index >= MAX_INDEX:
        return MAX_VALUE, math.inf
    base = math.ldexp(1.0, (index >> 6) - 1023)
    sub = index & 63
    return base * (1.0 + sub / SUB_BUCKETS), base * (1.0 + (sub + 1) / SUB_BUCKETS)


def _representative(index: int, low: float, high: float) -> float:
    lower, upper = _edges(index)
    if lower == 0.0 or upper == math.inf:
        estimate = lower if upper == math.inf else upper
    else:
        estimate = 2.0 * lower * upper / (lower + upper)
    return min(max(estimate, low), high)


class Histogram:
    """Latency histogram whose percentiles are within [`RELATIVE_ERROR`][] (< 1 %) of the true value.

    64 log-linear sub-buckets per power of two; see the module docstring for the error bound and the memory
    bound. Percentiles use the nearest-rank definition (the smallest recorded value such that at
    least ``q`` of all values are less than or equal to it) and are clamped to the exact ``min``/``max``.

    Two ways to write:

    * [`record`][] takes the histogram's own lock: safe from any thread.
    * [`add`][] takes no lock (one bit-field read, one dict update): for a caller that
      serialises writes itself, such as a pool recording lease wait times under its own lock.

    [`snapshot`][] and [`buckets`][] may be called from any thread, even while another thread calls
    [`add`][] under a foreign lock: they copy the bucket table in one step (atomic under the GIL and under
    free-threading's per-object locks), so they never fail; ``sum``/``min``/``max`` may then include a value
    or two more than ``count``.
    """

    __slots__ = ("_counts", "_count", "_sum", "_min", "_max", "_lock")

    def __init__(self) -> None:
        """Create an empty histogram."""
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = 0.0

    def add(self, seconds: float) -> None:
        """Record one value without locking.

        Only for callers that already serialise every write to this histogram (e.g. under their own lock).

        Args:
            seconds: A duration, ``>= 0``.

        Raises:
            ValueError: If ``seconds`` is negative or NaN.
        """
        if not 0.0 <= seconds < math.inf:
            raise ValueError(f"a histogram value must be a finite duration >= 0, got {seconds!r}")
        index = _index(seconds)
        counts = self._counts
        counts[index] = counts.get(index, 0) + 1
        self._count += 1
        self._sum += seconds
        if seconds > self._max:
            self._max = seconds
        if seconds < self._min:
            self._min = seconds

    def record(self, seconds: float) -> None:
        """Record one value; thread-safe.

        Args:
            seconds: A duration, ``>= 0``.

        Raises:
            ValueError: If ``seconds`` is negative or NaN.
        """
        with self._lock:
            self.add(seconds)

    def add_many(self, values: Sequence[float]) -> None:
        """Record many values at once without locking (how the client monitor and the pool fold their batches).

        The values are not validated: the caller guarantees finite durations ``>= 0`` (two clock readings
        subtracted). Bucketing runs in C: the doubles' bits are read as 64-bit integers, shifted and counted by
        ``collections.Counter``; Python code runs once per distinct bucket, not per value.

        Args:
            values: Durations in seconds.
        """
        if not values:
            return
        # The top 18 bits of each double (sign, exponent, 6 mantissa bits: the bucket index) are bytes 5 to 7 of its
        # little-endian form, 0 to 2 of its big-endian one. Sliced out for every value at once, in C, into 32-bit
        # keys (index << 14, bit 31 the sign, always 0 here), and counted by Counter.
        packed = array("d", values).tobytes()
        keys = bytearray(4 * len(values))
        for target, source in _KEY_BYTES:
            keys[target::4] = packed[source::8]
        keys[_MASKED_KEY_BYTE::4] = keys[_MASKED_KEY_BYTE::4].translate(_KEEP_TOP_2_BITS)
        counted = array("I")
        counted.frombytes(bytes(keys))
        buckets: dict[int, int] = {}
        for key, n in Counter(counted).items():
            index = _clamp(key >> 14)
            buckets[index] = buckets.get(index, 0) + n  # clamping maps many keys to the two edge buckets
        self._add_counts(buckets, len(values), sum(values), min(values), max(values))

    def _add_counts(self, buckets: dict[int, int], count: int, total: float, low: float, high: float) -> None:
        # Values already bucketed (by add_many, or copied from another histogram by merge); no lock.
        counts = self._counts
        for index, n in buckets.items():
            counts[index] = counts.get(index, 0) + n
        self._count += count
        self._sum += total
        if high > self._max:
            self._max = high
        if low < self._min:
            self._min = low

    def _state(self) -> tuple[dict[int, int], float, float, float]:
        # dict.copy() is one C call: a consistent table even if a foreign-locked add() runs meanwhile.
        with self._lock:
            return self._counts.copy(), self._sum, self._min, self._max

    def copy(self) -> Histogram:
        """Return an independent copy of this histogram.

        Returns:
            A new [`Histogram`][] with the same contents.
        """
        counts, total, low, high = self._state()
        clone = Histogram()
        clone._counts = counts
        clone._count = sum(counts.values())
        clone._sum, clone._min, clone._max = total, low, high
        return clone

    def since(self, earlier: Histogram) -> Histogram:
        """Return the values recorded after ``earlier``, a copy of this histogram taken before.

        ``count``, ``sum`` and the buckets are exact; ``min`` and ``max`` are those of the changed buckets, clamped to
        this histogram's, so within [`RELATIVE_ERROR`][] of the exact ones.

        Args:
            earlier: A copy ([`copy`][]) of this histogram from an earlier moment.
        """
        counts, total, low, high = self._state()
        before, before_total, _, _ = earlier._state()
        changed = {index: n - before.get(index, 0) for index, n in counts.items() if n > before.get(index, 0)}
        clone = Histogram()
        if changed:
            clone._counts = changed
            clone._count = sum(changed.values())
            clone._sum = max(0.0, total - before_total)
            clone._min = max(low, _edges(min(changed))[0])
            clone._max = min(high, _edges(max(changed))[1])
        return clone

    def rescaled(self, count: int, total: float, low: float, high: float) -> Histogram:
        """Return a copy whose bucket counts add up to ``count``, with ``total``, ``low`` and ``high`` as its sum, min
        and max: for a histogram that holds a sample of ``count`` values whose count, sum and extremes are known
        exactly. Each bucket is scaled by the same factor, rounded, and the largest one absorbs the rounding.

        Args:
            count: How many values the sample stands for.
            total: Their exact sum.
            low: The smallest of them.
            high: The largest of them.
        """
        counts, _, _, _ = self._state()
        sampled = sum(counts.values())
        clone = Histogram()
        if not sampled or not count:
            return clone
        scale = count / sampled
        scaled = {index: max(1, round(n * scale)) for index, n in counts.items()}
        largest = max(scaled, key=scaled.__getitem__)
        scaled[largest] += count - sum(scaled.values())
        if scaled[largest] <= 0:  # only when count < buckets: keep the most frequent ones
            scaled = dict.fromkeys(sorted(counts, key=counts.__getitem__, reverse=True)[:count], 1)
        clone._counts = scaled
        clone._count = count
        clone._sum, clone._min, clone._max = total, low, high
        return clone

    def merge(self, other: Histogram) -> None:
        """Add every value recorded in ``other`` to this histogram; thread-safe.

        Args:
            other: The histogram to fold in; it is not modified.
        """
        counts, total, low, high = (
            other._state()
        )  # copy first: never hold both locks (no lock-order deadlock)
        with self._lock:
            self._add_counts(counts, sum(counts.values()), total, low, high)

    def reset(self) -> None:
        """Forget every recorded value; thread-safe with respect to [`record`][]."""
        with self._lock:
            self._counts = {}
            self._count = 0
            self._sum = 0.0
            self._min = math.inf
            self._max = 0.0

    def _after_fork_in_child(self) -> None:
        """Replace the lock, which a thread of the parent may have held at the fork (called by the histogram's owner).

        Histograms do not register with ``syncpool.forking`` themselves: their owners (a pool, a
        [`ClientStats`][]) know which ones outlive the fork and call this for them.
        """
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Number of recorded values."""
        return self._count

    def snapshot(self) -> dict[str, Any]:
        """Summarise the recorded values.

        Returns:
            A dict with ``count`` (int) and, in seconds, ``sum``, ``min``, ``max``, ``mean``, ``p50``,
            ``p90``, ``p99``. Every float is ``0.0`` when nothing was recorded.
        """
        counts, total, low, high = self._state()
        count = sum(counts.values())
        result: dict[str, Any] = {"count": count, "sum": total, "min": 0.0, "max": 0.0, "mean": 0.0}
        if not count:
            result.update(dict.fromkeys([key for key, _ in _QUANTILES], 0.0))
            return result
        result.update(min=low, max=high, mean=total / count)
        ordered = sorted(counts.items())
        for key, quantile in _QUANTILES:
            rank = max(1, math.ceil(quantile * count - 1e-9))
            seen = 0
            for index, n in ordered:
                seen += n
                if seen >= rank:
                    result[key] = _representative(index, low, high)
                    break
        return result

    def percentile(self, quantile: float) -> float:
        """Return one percentile (nearest rank), within [`RELATIVE_ERROR`][] of the true value.

        Args:
            quantile: Between 0 and 1, e.g. ``0.999``.

        Returns:
            The estimate in seconds, ``0.0`` if nothing was recorded.

        Raises:
            ValueError: If ``quantile`` is outside ``[0, 1]``.
        """
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be between 0 and 1, got {quantile!r}")
        counts, _, low, high = self._state()
        count = sum(counts.values())
        if not count:
            return 0.0
        rank = max(1, math.ceil(quantile * count - 1e-9))
        seen = 0
        for index, n in sorted(counts.items()):
            seen += n
            if seen >= rank:
                return _representative(index, low, high)
        return high  # pragma: no cover - the loop always reaches rank

    def buckets(self, bounds: Iterable[float] = DEFAULT_BOUNDS) -> list[tuple[float, int]]:
        """Return cumulative counts at explicit bounds, as Prometheus and OpenTelemetry histograms want.

        An internal bucket ``[lower, upper)`` is counted under the first bound ``>= upper``, so a value less
        than 1.6 % below a bound may be counted in the next bucket up; counts are otherwise exact.

        Args:
            bounds: Increasing upper bounds in seconds. Defaults to [`DEFAULT_BOUNDS`][].

        Returns:
            ``(upper_bound, cumulative_count)`` pairs, one per bound, then ``(math.inf, count)``.
        """
        counts, _, _, _ = self._state()
        limits = [float(bound) for bound in bounds]
        if any(b >= a for a, b in zip(limits[1:], limits[:-1], strict=True)):
            raise ValueError("bounds must be strictly increasing")
        ordered = sorted(counts.items())
        result: list[tuple[float, int]] = []
        seen = 0
        position = 0
        for bound in limits:
            while position < len(ordered) and _edges(ordered[position][0])[1] <= bound:
                seen += ordered[position][1]
                position += 1
            result.append((bound, seen))
        result.append((math.inf, sum(counts.values())))
        return result

    def __repr__(self) -> str:
        """Return a short summary: count, p50 and max."""
        snap = self.snapshot()
        return f"<Histogram count={snap['count']} p50={snap['p50']:.6f}s max={snap['max']:.6f}s>"
