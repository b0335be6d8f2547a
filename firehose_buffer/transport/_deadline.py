"""One thread per process that cuts calls off at their deadline.

Socket timeouts bound one read; a server that sends a byte a second never trips them. So
each call registers its connection with a deadline here, and when the deadline passes this
thread shuts the socket down, which wakes the caller blocked in connect, send or recv with
an error; the caller then sees :attr:`Armed.fired` and reports a timeout. The thread starts
on the first call, exits after a few idle seconds, and is made anew in a forked child.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Protocol

_IDLE_EXIT_SECONDS = 5.0


class _HasSock(Protocol):
    """What the watchdog cuts off: anything holding the call's socket."""

    sock: socket.socket | None


class Armed:
    """A call's registration: ``fired`` once its deadline has cut it off."""

    __slots__ = ("conn", "deadline", "done", "fired")

    def __init__(self, deadline: float, conn: _HasSock) -> None:
        self.deadline = deadline
        self.conn = conn
        self.fired = False
        self.done = False


class Watchdog:
    """Cuts off calls past their deadline: one thread per process (started by the first
    ``arm``, gone after a few idle seconds) shuts the socket of a call whose whole deadline
    passed, whatever read it is blocked in. Sender threads arm and disarm their calls."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._live = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Armed]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, conn: _HasSock) -> Armed:
        if self._pid != os.getpid():
            self._reset()  # a forked child: the parent's lock and thread are not ours
        armed = Armed(deadline, conn)
        with self._lock:
            self._live += 1
            if len(self._heap) > 2 * self._live + 64:
                # Finished calls leave their entries behind until their deadline comes up.
                self._heap = [e for e in self._heap if not e[2].done]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (deadline, next(self._seq), armed))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="firehose-transport-deadline")
                self._thread.start()
            elif self._heap[0][2] is armed:
                self._wake.notify()
        return armed

    def disarm(self, armed: Armed) -> bool:
        """Stop watching; True if the call ended before its deadline cut it off. After this
        returns, the watchdog never touches the connection again, so it may be closed."""
        with self._lock:
            if not armed.done:
                armed.done = True
                self._live -= 1
            armed.conn = _NO_CONN
            return not armed.fired

    def _run(self) -> None:
        with self._lock:
            while True:
                heap = self._heap
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                if not heap:
                    if not self._wake.wait(_IDLE_EXIT_SECONDS) and not self._heap:
                        self._thread = None
                        return
                    continue
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                armed = heapq.heappop(heap)[2]
                armed.fired = True
                sock = armed.conn.sock
                if sock is not None:
                    # The plain socket's shutdown, also for TLS: the SSL object stays
                    # intact and the blocked reader wakes with an error or EOF.
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _NoConn:
    """The connection a disarmed call points to: no socket, so nothing to cut off."""

    sock: socket.socket | None = None


_NO_CONN = _NoConn()
WATCHDOG = Watchdog()
