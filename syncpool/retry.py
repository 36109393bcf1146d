"""Backoff between reconnect attempts, and retried operations ([`Pool.run`][]), built on tenacity.

This is the only module that imports tenacity.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, TypeVar

import tenacity

from .errors import PoolClosed, PoolError, PoolUnavailable
from .protocols import PoolLike

__all__ = ["NO_RETRY", "Backoff", "RetryPolicy", "run"]

logger = logging.getLogger("syncpool")

T = TypeVar("T")
R = TypeVar("R")


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


@dataclass(frozen=True)
class RetryPolicy:
    """syncpool's default retry policy for [`Pool.run`][].

    An operation is retried, on a fresh lease each time, when it raised an error that ``retry_on`` calls transient
    (by default the connector's [`is_transient`][Connector.is_transient], plus
    [`PoolUnavailable`][] while the circuit breaker is open), until ``attempts`` have been made or
    ``deadline`` seconds have passed since the first one, whichever comes first. The last error is raised as it
    was, never wrapped.

    Args:
        attempts: Most attempts in all (1 means no retry). Defaults to 3.
        backoff: Delays between attempts. Defaults to ``Backoff(initial=0.05, maximum=2.0)``.
        deadline: Seconds all attempts together may take, sleeps and lease waits included; None for no bound.
            Defaults to 30.0.
        retry_on: Decides whether an error is worth another attempt. Defaults to the connector's judgement.
    """

    attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.05, maximum=2.0))
    deadline: float | None = 30.0
    retry_on: Callable[[BaseException], bool] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"RetryPolicy attempts must be an int >= 1, got {self.attempts!r}")
        if self.deadline is not None and not (
            isinstance(self.deadline, (int, float)) and 0 < self.deadline < float("inf")
        ):
            raise ValueError(f"RetryPolicy deadline must be a positive finite number of seconds or None, got "
                             f"{self.deadline!r}")


NO_RETRY = RetryPolicy(attempts=1, deadline=None)
"""A policy that makes one attempt: ``pool.run(fn, retry=NO_RETRY)`` (``retry=False`` means the same)."""


def run(
    pool: PoolLike[T],
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    retry: RetryPolicy | tenacity.BaseRetrying | bool | None,
    deadline: float | None,
) -> R:
    """Call ``fn(client, *args, **kwargs)`` under a lease of ``pool``, retrying as ``retry`` says.

    This is [`Pool.run`][]; see there. ``pool`` may be any [`PoolLike`][].
    """
    started = monotonic()
    if retry is None or retry is True:
        retry = RetryPolicy()
    elif retry is False:
        retry = NO_RETRY
    if deadline is None and isinstance(retry, RetryPolicy):
        deadline = retry.deadline
    if deadline is not None and not (isinstance(deadline, (int, float)) and 0 < deadline < float("inf")):
        raise ValueError(f"deadline must be a positive finite number of seconds or None, got {deadline!r}")

    def remaining() -> float | None:
        return None if deadline is None else deadline - (monotonic() - started)

    def attempt() -> R:
        left = remaining()
        if left is not None and left <= 0:
            raise TimeoutError(f"pool {pool.name!r}: run() deadline of {deadline}s passed before an attempt")
        timeout = None if left is None else min(pool.timeout, left)
        with pool.connection(timeout=timeout) as client:
            return fn(client, *args, **kwargs)

    def sleep(seconds: float) -> None:
        # A backoff sleep ends at once when the pool closes, instead of holding the caller hostage.
        if pool.wait_closed(seconds) or pool.closed:
            raise PoolClosed(f"pool {pool.name!r} was closed while run() was waiting to retry")

    if isinstance(retry, RetryPolicy):
        policy = retry
        judge = policy.retry_on or pool.connector.is_transient

        def transient(error: BaseException) -> bool:
            return isinstance(error, PoolUnavailable) or (not isinstance(error, PoolError) and judge(error))

        def wait(state: tenacity.RetryCallState) -> float:
            delay = policy.backoff.delay(state.attempt_number)
            left = remaining()
            return delay if left is None else max(0.0, min(delay, left))

        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(policy.attempts)
        if deadline is not None:
            stop = stop | tenacity.stop_after_delay(deadline)
        retrying: tenacity.BaseRetrying = tenacity.Retrying(
            stop=stop, wait=wait, retry=tenacity.retry_if_exception(transient), reraise=True, sleep=sleep,
            before_sleep=lambda state: _log_retry(pool, state),
        )
    elif isinstance(retry, tenacity.BaseRetrying):
        # The caller's policy decides what to retry and how long to wait; we add the deadline and a sleep that
        # ends when the pool closes.
        changes: dict[str, Any] = {"sleep": sleep}
        if deadline is not None:
            user_stop = retry.stop

            def stop_with_deadline(state: tenacity.RetryCallState) -> bool:
                return bool(user_stop(state)) or monotonic() - started >= deadline

            changes["stop"] = stop_with_deadline
        retrying = retry.copy(**changes)
    else:
        raise TypeError(
            "retry must be a syncpool.retry.RetryPolicy, a tenacity.Retrying, True/None (the default policy) or "
            f"False (no retry), not {type(retry).__name__}"
        )
    return retrying(attempt)


def _log_retry(pool: PoolLike[Any], state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    logger.info(
        "pool %r: attempt %d failed with %s; retrying in %.2fs",
        pool.name, state.attempt_number, type(error).__name__, state.upcoming_sleep,
    )
