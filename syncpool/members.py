"""The clients a pool owns, and the facts it keeps about each one."""

from __future__ import annotations

from typing import Any

__all__ = ["Member", "MemberIndexes"]


class Member:
    """One client owned by a pool.

    The pool changes a member's fields only under its lock, except ``lease_frames``, which the leasing thread sets
    right after a lease, and ``raw``, which never changes.
    """

    __slots__ = (
        "client", "raw", "key", "index", "created", "expires", "last_used", "leased_at", "leases", "lease_frames",
        "leak_reported", "retire_reason",
    )

    def __init__(self, client: Any, raw: Any, index: int, created: float, expires: float) -> None:
        self.client = client  # what callers get: the connector's client, or a MonitoredClient around it
        self.raw = raw  # what the connector made, given back in every connector call
        self.key = id(client)  # the key of the pool's table of leased members
        self.index = index  # see syncpool.current_member_index(); free again once the member is closed
        self.created = created
        self.expires = expires  # jittered end of life, monotonic seconds; -inf once reload() condemned it
        self.last_used = created  # when it last went idle
        self.leased_at = 0.0
        self.leases = 0  # how many times it was leased: the number of the lease that holds it now, if any
        self.lease_frames: list[tuple[str, int, str]] | None = None  # where it was leased, when leaks are watched
        self.leak_reported = False
        self.retire_reason = ""  # why it is being closed (a key of stats()["discards"]), once retired

    def __repr__(self) -> str:
        return f"<Member #{self.index} of {type(self.raw).__name__}>"


class MemberIndexes:
    """Small integers naming a pool's members, unique among live members and connects under way, reused after."""

    __slots__ = ("_used",)

    def __init__(self) -> None:
        self._used: set[int] = set()

    def take(self) -> int:
        """Return the smallest index not in use, and mark it used."""
        index = 0
        while index in self._used:
            index += 1
        self._used.add(index)
        return index

    def free(self, index: int) -> None:
        """Make ``index`` available again (idempotent)."""
        self._used.discard(index)

    def clear(self) -> None:
        """Forget every index (a forked child starts with no members)."""
        self._used.clear()
