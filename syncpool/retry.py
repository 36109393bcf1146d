"""Backoff between reconnect attempts, built on tenacity's wait strategies.

This is the only module that imports tenacity.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import tenacity

__all__ = ["Backoff"]


class _Attempt:
    """The one attribute of ``tenacity.RetryCallState`` that exponential waits read."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with a small multiplicative jitter.

    The n-th delay (n from 1) is ``min(initial * 2 ** (n - 1), maximum)``, shortened by a random fraction of at most
    ``jitter``. Jitter is multiplicative and small, so that consecutive gaps still double within 10% (easy to reason
    about in logs) while many pools recovering together do not reconnect in lockstep.

    Args:
        initial: First delay in seconds. Defaults to 0.1.
        maximum: Cap on any delay in seconds. Defaults to 10.0.
        jitter: Largest fraction removed at random from a delay. Defaults to 0.05.
    """

    initial: float = 0.1
    maximum: float = 10.0
    jitter: float = 0.05
    _wait: tenacity.wait.wait_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("initial", "maximum"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"Backoff {name} must be a positive finite number of seconds, got {value!r}")
        if self.maximum < self.initial:
            raise ValueError(f"Backoff maximum ({self.maximum}) must not be smaller than initial ({self.initial})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"Backoff jitter must be in [0, 1), got {self.jitter!r}")
        object.__setattr__(
            self, "_wait", tenacity.wait_exponential(multiplier=self.initial, exp_base=2, max=self.maximum)
        )

    def delay(self, attempt: int) -> float:
        """Return the delay to sleep before retry number ``attempt`` (1 for the first retry)."""
        base = float(self._wait(_Attempt(max(1, attempt))))  # type: ignore[arg-type]
        return base * (1.0 - random.uniform(0.0, self.jitter))
