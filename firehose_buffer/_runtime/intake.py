"""The ways into the accumulator other than put()'s lock-free write: put()'s slow path (a new
segment, the memory bound, ``on_full``, closing), a put() re-entering on a thread that holds
one of the buffer's locks, and the spool replay."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING

from .._logs import RateLimitedLog
from .._storage.segments import Full, Segment
from ..errors import BufferClosedError, BufferFullError

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("firehose_buffer")


class Intake:
    """put()'s slow path and the other ways in (see the module's doc); one per engine, run on
    the callers' threads (put()), the worker's (lines handed by re-entrant puts) and the
    replayer's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.acc = engine.acc
        self.full_log = RateLimitedLog(log, interval=10.0)

    def slow(self, index: int, line: bytes) -> bool:
        """put()'s way in when the fast write failed: a new segment, the memory bound and
        ``on_full``, or BufferClosedError."""
        engine = self.engine
        if engine.guard.inside():
            # Re-entering (a signal handler, a finalizer) on a thread holding one of our
            # locks: waiting for it would deadlock; the worker takes the line instead,
            # unless close() has sealed the streams (the worker may be gone).
            if self.acc.closed:
                raise BufferClosedError("put() after close()")
            return engine.worker.hand(index, line)
        # Started before the line goes in: if this put() is interrupted after the append,
        # the lines that follow (on the lock-free path) still have a worker to go to.
        engine.ensure_started()
        acc = self.acc
        config = self.config
        deadline: float | None = None
        with acc.lock:
            while True:
                if acc.closed:
                    raise BufferClosedError("put() after close()")
                try:
                    acc.slow_append(index, line)
                    appended = True
                    break
                except Full:
                    pass
                on_full = config.on_full
                if on_full in ("drop", "spill"):
                    appended = False
                    break
                if on_full == "raise" or _on_event_loop():
                    raise BufferFullError(
                        f"buffer holds {config.max_buffer_bytes} bytes (max_buffer_bytes)")
                if engine.worker.is_current():
                    # The worker makes the room: it must never wait for it itself.
                    raise BufferFullError(
                        f"buffer is full (max_buffer_bytes={config.max_buffer_bytes}) and "
                        "put() on the worker thread (an on_failure callback) cannot wait")
                if deadline is None:
                    deadline = engine.clock() + config.max_block_seconds
                    engine.worker.wake()
                remaining = deadline - engine.clock()
                if remaining <= 0:
                    raise BufferFullError(
                        f"buffer stayed full for max_block_seconds={config.max_block_seconds}")
                acc.room.wait(remaining)
        if not appended:
            return self._when_full(index, line)
        engine.worker.wake()
        return True

    def _when_full(self, index: int, line: bytes) -> bool:
        """on_full is "drop" or "spill": count, say so, maybe spill (outside every lock)."""
        engine = self.engine
        config = self.config
        spool = engine.spool
        if config.on_full == "spill" and spool is not None:
            kept = spool.append(config.streams[index], [line], sync=False)
            with engine.lock:
                if kept:
                    engine.ledger.spilled(1)
                else:
                    engine.ledger.dropped(1)
            if kept:
                self.full_log.warning("buffer full (max_buffer_bytes=%d): event spilled to %s",
                                      config.max_buffer_bytes, spool.directory)
                return True
            self.full_log.warning("buffer full and the spool failed: event dropped")
            return False
        with engine.lock:
            engine.ledger.dropped(1)
        self.full_log.warning("buffer full (max_buffer_bytes=%d): event dropped",
                              config.max_buffer_bytes)
        return False

    def adopt(self, handed: list[tuple[int, bytes | Segment]], dropped: int) -> None:
        """On the worker: lines re-entrant puts handed over, and how many they refused.
        Each line becomes its own record (outside the segments, like an oversized line)."""
        engine = self.engine
        by_stream: dict[int, list[bytes | Segment]] = {}
        for index, line in handed:
            by_stream.setdefault(index, []).append(line)
        with engine.lock:
            if dropped:
                engine.ledger.dropped(dropped)
            for index, lines in by_stream.items():
                engine.scheduler.adopt(index, lines, engine.clock())
        if dropped:
            self.full_log.warning("%d events put re-entrantly (from a signal handler or a "
                                  "finalizer) while many were waiting: dropped", dropped)

    def replayed(self, index: int, line: bytes, stop: threading.Event, events: int = 1
                 ) -> bool:
        """The replay's way in: the same accumulator, waiting for room as long as it takes.
        ``line`` may be several whole lines (``events`` of them), never more than a segment
        holds unless it is one line."""
        engine = self.engine
        acc = self.acc
        with acc.lock:
            while True:
                if acc.closed or stop.is_set():
                    return False
                try:
                    acc.slow_append(index, line)
                    break
                except Full:
                    engine.worker.wake()
                    acc.room.wait(0.25)
        with engine.lock:
            engine.ledger.replayed(events)
        engine.worker.wake()
        return True


def _on_event_loop() -> bool:
    """True on a thread running an asyncio loop, which put() must never block."""
    asyncio = sys.modules.get("asyncio")  # never imported: no loop can be running
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
