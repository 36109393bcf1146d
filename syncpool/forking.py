"""Fork safety: objects that own locks or threads get a fresh start in a forked child.

``os.fork()`` copies the memory of the calling thread only. A lock that another thread held at that moment stays
held forever in the child, and a thread the parent ran does not exist there. Every object of this package that owns
a lock or a thread registers itself here with ``register``; in the child, right after the fork, each one's
``_after_fork_in_child()`` is called to re-create its locks and forget the parent's threads. Objects that must not
be copied mid-decision also get ``_before_fork()`` / ``_after_fork_in_parent()`` around the fork (a pool holds its
lock across it, so the child never inherits a half-made decision).

Registration keeps only a weak reference. Hooks run in registration order, oldest first; one that raises is logged
and the others still run. The registry takes no lock (a dict update is atomic), so ``register`` may be called
from anywhere, including under another lock and from a weak-reference callback.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

__all__ = ["register"]

logger = logging.getLogger("syncpool")

# Insertion-ordered: a dict keyed by id() whose values are weak references (a WeakSet has no order).
_registered: dict[int, weakref.ref[Any]] = {}


def register(obj: Any) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked from now on, while ``obj`` is alive.

    If ``obj`` also has ``_before_fork`` and ``_after_fork_in_parent``, they are called around each fork in the
    parent, in registration order and in reverse order respectively.
    """
    key = id(obj)

    def forget(_: weakref.ref[Any]) -> None:
        _registered.pop(key, None)

    _registered[key] = weakref.ref(obj, forget)


def _alive() -> list[Any]:
    return [obj for obj in (ref() for ref in list(_registered.values())) if obj is not None]


# The objects whose _before_fork ran, so that exactly those get _after_fork_in_parent (registrations made by other
# threads during the fork are left alone).
_held: list[Any] = []


def _before_fork() -> None:
    for obj in _alive():
        before = getattr(obj, "_before_fork", None)
        if before is not None:
            before()
            _held.append(obj)


def _after_fork_in_parent() -> None:
    while _held:
        _held.pop()._after_fork_in_parent()


def _after_fork_in_child() -> None:
    _held.clear()
    for obj in _alive():
        try:
            obj._after_fork_in_child()
        except Exception:  # one object must not stop the others, nor the child's start
            logger.exception("after fork: %s could not reset itself", type(obj).__name__)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
