"""Several addresses for one service: connect to the first that answers, skip the ones that just failed."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from syncpool import forking
from syncpool.connector import Connector
from syncpool.errors import AuthError, ConnectError

__all__ = ["FailoverConnector"]

T = TypeVar("T")


@dataclass
class _Member(Generic[T]):
    connector: Connector[T]
    failures: int = 0
    retry_at: float = 0.0  # monotonic time before which connect() skips this member


class FailoverConnector(Connector[T]):
    """Tries its member connectors in order; a member that fails to connect is skipped until its backoff expires.

    The first member is the preferred one: as soon as its backoff expires it is tried again, so a pool drifts back
    to it once it recovers (new connections go to it; existing ones stay where they are until they expire).
    A member's backoff starts at ``backoff`` seconds and doubles with each consecutive failure up to
    ``max_backoff``; one successful connect clears it. When every member is backing off, the one whose backoff
    ends first is tried anyway rather than failing without trying.

    An [`AuthError`][] from a member (or an error its ``is_auth_error`` recognises) is raised at once
    without trying the others: the members are addresses of one service, so they presumably share credentials,
    and trying them all would only hide the refusal behind timeouts. Give the members distinct connectors if that
    is not so.

    Each client remembers the member that made it, and [`check`][], [`is_broken`][], [`reset`][],
    [`close`][] and [`after_fork`][] are delegated to that member.

    For PostgreSQL, libpq's own multi-host conninfo (``host=a,b target_session_attrs=read-write``) is an
    alternative that also picks the primary; this class adds the memory of failed hosts and works for any client.

    Args:
        connectors: The members, preferred first.
        backoff: Seconds a member is skipped after its first failure. Defaults to 1.
        max_backoff: Longest skip after repeated failures. Defaults to 30.
        clock: Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        connectors: Iterable[Connector[T]],
        *,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        members = [_Member(connector) for connector in connectors]
        if not members:
            raise ValueError("connectors must hold at least one connector")
        for member in members:
            if not isinstance(member.connector, Connector):
                raise TypeError(
                    f"connectors must be syncpool.Connector instances, not {type(member.connector).__name__}"
                )
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff!r}")
        if max_backoff < backoff:
            raise ValueError(f"max_backoff must be >= backoff, got {max_backoff!r}")
        self._members = members
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()
        # Which member made each client. Weak keys so that a client dropped without close() does not leak; clients
        # that cannot be weakly referenced fall back to an id-keyed dict, cleaned on close().
        self._owners: weakref.WeakKeyDictionary[Any, _Member[T]] = weakref.WeakKeyDictionary()
        self._owners_by_id: dict[int, tuple[Any, _Member[T]]] = {}
        self.description = "failover(" + ", ".join(m.connector.description for m in members) + ")"
        forking.register(self)

    def _after_fork_in_child(self) -> None:
        # Another thread of the parent may have held the lock at the fork: it would stay held forever in the child.
        # The records it guards are kept; at worst one of them misses the update that thread was making.
        self._lock = threading.Lock()

    @property
    def connectors(self) -> list[Connector[T]]:
        """The members, preferred first."""
        return [member.connector for member in self._members]

    def status(self) -> list[dict[str, Any]]:
        """Per member: its description, consecutive failures and seconds left before it is tried again."""
        now = self._clock()
        with self._lock:  # a consistent snapshot of the failure records
            return [
                {
                    "description": m.connector.description,
                    "failures": m.failures,
                    "retry_in": max(0.0, m.retry_at - now),
                }
                for m in self._members
            ]

    def _candidates(self) -> list[_Member[T]]:
        now = self._clock()
        with self._lock:  # decides which members are out of backoff
            ready = [m for m in self._members if m.retry_at <= now]
            if not ready:
                ready = [min(self._members, key=lambda m: m.retry_at)]
        return ready

    def _record_failure(self, member: _Member[T]) -> None:
        with self._lock:  # updates the member's backoff
            member.failures += 1
            delay = min(self.backoff * 2 ** (member.failures - 1), self.max_backoff)
            member.retry_at = self._clock() + delay

    def _record_success(self, member: _Member[T], client: T) -> None:
        with self._lock:  # clears the member's backoff and records the client's owner
            member.failures = 0
            member.retry_at = 0.0
            try:
                self._owners[client] = member
            except TypeError:
                self._owners_by_id[id(client)] = (client, member)

    def connect(self) -> T:
        """Connect through the first member out of backoff that succeeds.

        Raises [`AuthError`][] at once when a member's credentials are refused, and
        [`ConnectError`][] chaining the last member's error when all the members tried fail.
        """
        candidates = self._candidates()
        last_error: BaseException | None = None
        failed: list[str] = []
        for member in candidates:
            try:
                client = member.connector.connect()
            except AuthError:
                raise
            except Exception as error:
                if member.connector.is_auth_error(error):
                    raise AuthError(
                        f"{member.connector.description} refused the credentials ({type(error).__name__})"
                    ) from error
                self._record_failure(member)
                last_error = error
                failed.append(f"{member.connector.description}: {type(error).__name__}")
                continue
            self._record_success(member, client)
            return client
        skipped = len(self._members) - len(candidates)
        raise ConnectError(
            f"{self.description}: every member tried failed ({'; '.join(failed)})"
            + (f", {skipped} skipped while backing off" if skipped else "")
        ) from last_error

    def _owner(self, client: T) -> Connector[T]:
        with self._lock:  # looks the owner up
            member = self._owners.get(client) if _weakrefable(client) else None
            if member is None:
                entry = self._owners_by_id.get(id(client))
                member = entry[1] if entry is not None and entry[0] is client else None
        if member is None:
            raise ValueError(f"{self.description}: this client was not made by this connector")
        return member.connector

    def check(self, client: T) -> None:
        """Delegated to the member that made ``client``."""
        self._owner(client).check(client)

    def is_broken(self, client: T) -> bool:
        """Delegated to the member that made ``client``; a client of unknown origin counts as broken."""
        try:
            owner = self._owner(client)
        except ValueError:
            return True
        return owner.is_broken(client)

    def reset(self, client: T) -> None:
        """Delegated to the member that made ``client``."""
        self._owner(client).reset(client)

    def release(self, client: T, error: BaseException | None) -> bool:
        """Delegated to the member that made ``client`` (so a database member commits a ``with`` block); a client of
        unknown origin is discarded."""
        try:
            owner = self._owner(client)
        except ValueError:
            return False
        return owner.release(client, error)

    def close(self, client: T) -> None:
        """Delegated to the member that made ``client``, which is then forgotten."""
        owner = self._owner(client)
        with self._lock:  # forgets the client
            if _weakrefable(client):
                self._owners.pop(client, None)
            self._owners_by_id.pop(id(client), None)
        owner.close(client)

    def after_fork(self, client: T) -> None:
        """Delegated to the member that made ``client``."""
        self._owner(client).after_fork(client)

    def is_auth_error(self, error: BaseException) -> bool:
        """True if any member recognises ``error`` as refused credentials."""
        return isinstance(error, AuthError) or any(m.connector.is_auth_error(error) for m in self._members)

    def is_transient(self, error: BaseException) -> bool:
        """True if any member classifies ``error`` as transient (the lost member may be the reason for it)."""
        if isinstance(error, ConnectError):
            return True
        for member in self._members:
            classify = getattr(member.connector, "is_transient", None)
            if classify is not None and classify(error):
                return True
        return False


def _weakrefable(client: Any) -> bool:
    try:
        weakref.ref(client)
    except TypeError:
        return False
    return True
