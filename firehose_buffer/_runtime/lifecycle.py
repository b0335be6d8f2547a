"""What the process does to every buffer in it: fork (seen even when the server skips
Python's fork hooks) and SIGTERM (turned into a normal exit when asked).

Buffers register in ``LIVE``; after a fork each is given a fresh, empty state by its own
``_after_fork()``.
"""

from __future__ import annotations

import _thread
import logging
import mmap
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Protocol


class _Forkable(Protocol):
    """What ``LIVE`` holds: a buffer that can make itself anew in a forked child."""

    def _after_fork(self) -> None: ...


# -- fork detection ---------------------------------------------------------------------------
#
# Python's fork hooks (os.register_at_fork) run only when the fork goes through os.fork();
# servers that fork from C without calling PyOS_AfterFork_Child (uWSGI without
# --py-call-osafterfork, some C extensions) skip them. Comparing os.getpid() on every put()
# would catch those too, but getpid is a syscall (about 200 ns on this project's machines,
# more than half of encoding a 0.5 KB event). Instead, one page of private memory marked
# MADV_WIPEONFORK holds a nonzero byte: the kernel hands a forked child that page zeroed,
# however the fork was made, and reading one byte costs about 30 ns. Without that madvise
# (not Linux, or Linux older than 4.14), the byte is emulated by a pid comparison.


class _Flag(Protocol):
    """``ARMED``: one byte read by every put() (index 0), nonzero in the process that armed
    it; a wiped-on-fork page, or :class:`_PidFlag` where there is none."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


class _PidFlag:
    """The fallback: "armed" while the process is the one that armed it."""

    def __init__(self) -> None:
        self._pid = os.getpid()

    def __getitem__(self, index: int, /) -> int:
        return 1 if os.getpid() == self._pid else 0

    def __setitem__(self, index: int, value: int, /) -> None:
        self._pid = os.getpid() if value else -1


_MADV_WIPEONFORK = getattr(mmap, "MADV_WIPEONFORK", 18)  # 18 on every Linux architecture


def _fork_flag() -> _Flag:
    if sys.platform == "linux":
        try:
            page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
            page.madvise(_MADV_WIPEONFORK)
            page[0] = 1
            return memoryview(page)  # keeps the mapping alive; cheaper to index than mmap
        except (OSError, ValueError, AttributeError):
            pass
    return _PidFlag()


#: Nonzero in the process that armed it; zero in a child forked by any means.
ARMED: _Flag = _fork_flag()
LIVE: weakref.WeakSet[_Forkable] = weakref.WeakSet()
#: Re-entrant: a buffer's reset runs user code (a client_factory), which may put() into a
#: buffer of this process, which then finds the process forked and comes back here.
_FORK_LOCK = threading.RLock()


def after_fork_in_child() -> None:
    """Give every buffer inherited from the parent a fresh, empty state; then re-arm."""
    with _FORK_LOCK:
        if ARMED[0]:
            return  # another thread of this child did it first
        for buffer in list(LIVE):
            buffer._after_fork()
        ARMED[0] = 1


def _fork_hook() -> None:
    global _FORK_LOCK
    # A thread of the parent may have held it at the fork; that thread does not exist here.
    _FORK_LOCK = threading.RLock()
    after_fork_in_child()


os.register_at_fork(after_in_child=_fork_hook)


# -- threads ----------------------------------------------------------------------------------


def start_thread(target: Callable[[], None], name: str) -> None:
    """Start a daemon thread running ``target``, in a way no exception raised in the caller
    (a KeyboardInterrupt, a signal handler's) can break half way.

    ``threading.Thread.start()`` is Python code: an exception landing just after it created
    the OS thread makes it forget the thread it started (whose bootstrap then dies with a
    KeyError), and one landing in its wait for the thread to begin leaves a lock half
    released. So the caller makes one C call, ``_thread.start_new_thread``, and the new OS
    thread, where no signal handler ever runs, starts the real ``threading.Thread`` and
    ends. If the caller is interrupted after that call, the thread starts all the same.
    """
    _thread.start_new_thread(_launch, (target, name))


def _launch(target: Callable[[], None], name: str) -> None:
    try:
        threading.Thread(target=target, name=name, daemon=True).start()
    except Exception:
        # No Thread to be had (a limit on threads): this OS thread does the work instead.
        logging.getLogger("firehose_buffer").exception(
            "could not start the %s thread; running it on a bare thread instead", name)
        target()


# -- SIGTERM ----------------------------------------------------------------------------------

_TERMINATING = False


def install_sigterm_handler() -> bool:
    """Make SIGTERM end the process through a normal interpreter exit, which closes every
    buffer (delivering, or spooling, within ``exit_timeout_seconds``).

    Python's default SIGTERM kills the process at once: no atexit, events in memory lost.
    Call this from the main thread when nothing else handles SIGTERM (containers and
    plain scripts: ``docker stop``, Kubernetes, systemd). The handler raises
    ``SystemExit(143)`` in the main thread; a later SIGTERM during the exit is ignored, so
    a second signal cannot cut the flush short. A handler already installed (gunicorn's,
    say) is chained: it is called instead, and its own shutdown ends in the normal exit that
    closes the buffers. With SIGTERM ignored (``SIG_IGN``) nothing is installed.

    Returns True when installed (or already installed). Raises ValueError off the main
    thread (a rule of the ``signal`` module).
    """
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        return False
    if getattr(previous, "_firehose_buffer", False):
        return True

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        global _TERMINATING
        if callable(previous):
            previous(signum, frame)
            return
        if _TERMINATING:
            return
        _TERMINATING = True
        raise SystemExit(128 + signum)

    on_sigterm._firehose_buffer = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, on_sigterm)
    return True
