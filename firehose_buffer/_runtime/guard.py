"""A put() that re-enters on a thread holding one of the buffer's locks never waits for it.

put() is re-entered on the same thread: a signal handler runs between two bytecodes of
whatever the main thread was doing, a garbage-collector finalizer runs on whichever thread
allocated, a logging handler runs inside a log call. If that thread was holding one of the
buffer's locks (put()'s slow path, flush(), stats(), the worker's tick, a spool write), a
put() that waits for the lock would wait forever, and one that took a re-entrant lock would
run in the middle of a half-made change. So the buffer's locks are ``RLock``\\s, which know
their owner, and put()'s slow path asks :meth:`Guard.inside` first: re-entering, it hands
its line to the worker through a queue that is safe to use re-entrantly instead.

Why RLocks rather than a registry of our own: ``with lock:`` on a lock written in C cannot
be split by an exception raised between taking the lock and entering the block, so a
KeyboardInterrupt cannot leave a lock held (a Python ``__enter__`` could).
"""

from __future__ import annotations

import threading
from typing import Any


def new_lock() -> Any:
    """A lock of the buffer's: re-entrant only so that :meth:`Guard.inside` can see that
    the calling thread holds it; the buffer's own code never takes one twice."""
    return threading.RLock()


class Guard:
    """The buffer's locks, asked which of them the calling thread holds."""

    __slots__ = ("_locks",)

    def __init__(self, *locks: Any) -> None:
        self._locks: tuple[Any, ...] = locks

    def add(self, lock: Any) -> None:
        self._locks = (*self._locks, lock)

    def inside(self) -> bool:
        """Whether the calling thread holds one of the locks (a put() re-entering)."""
        return any(lock._is_owned() for lock in self._locks)
