"""The way into the accumulator when put()'s lock-free write does not go: the memory bound,
``on_full`` and closing; and the spool replay's way in, which waits for room."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from .._core.ledger import Ledger, Reason
from .._storage.segments import Accumulator, Full
from .._storage.spool import Spool
from ..config import BufferConfig
from ..errors import BufferClosedError, BufferFullError
from .logs import RateLimitedLog
from .worker import Worker

log = logging.getLogger("firehose_buffer")


class Intake:
    def __init__(
        self,
        config: BufferConfig,
        *,
        acc: Accumulator,
        worker: Worker,
        spool: Spool | None,
        ledger: Ledger,
        lock: threading.Lock,
        ensure_started: Callable[[], None],
    ) -> None:
        self.config = config
        self.acc = acc
        self.worker = worker
        self.spool = spool
        self.ledger = ledger
        self.lock = lock
        self.ensure_started = ensure_started
        self.full_log = RateLimitedLog(log, interval=10.0)

    def slow(self, index: int, line: bytes) -> bool:
        """put()'s way in when the fast write failed: a new segment, the memory bound and
        ``on_full``, or BufferClosedError."""
        acc = self.acc
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
                on_full = self.config.on_full
                if on_full in ("drop", "spill"):
                    appended = False
                    break
                if on_full == "raise" or _on_event_loop():
                    raise BufferFullError(
                        f"buffer holds {self.config.max_buffer_bytes} bytes (max_buffer_bytes)")
                if deadline is None:
                    deadline = time.monotonic() + self.config.max_block_seconds
                    self.worker.wake()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or threading.current_thread() is self.worker.thread:
                    # The worker makes the room: it must never wait for it itself.
                    raise BufferFullError(
                        f"buffer stayed full for max_block_seconds="
                        f"{self.config.max_block_seconds}")
                acc.room.wait(remaining)
        if not appended:
            return self._when_full(index, line)
        self.ensure_started()
        self.worker.wake()
        return True

    def _when_full(self, index: int, line: bytes) -> bool:
        """on_full is "drop" or "spill": count, say so, maybe spill (outside every lock)."""
        config = self.config
        spool = self.spool
        if config.on_full == "spill" and spool is not None:
            kept = spool.append(config.streams[index], line, sync=False)
            with self.lock:
                if kept:
                    self.ledger.events_put += 1
                    self.ledger.failed(Reason.BUFFER_FULL.value, 1)
                    self.ledger.events_spooled += 1
                else:
                    self.ledger.events_dropped += 1
            if kept:
                self.full_log.warning("buffer full (max_buffer_bytes=%d): event spilled to %s",
                                      config.max_buffer_bytes, spool.directory)
                return True
            self.full_log.warning("buffer full and the spool failed: event dropped")
            return False
        with self.lock:
            self.ledger.events_dropped += 1
        self.full_log.warning("buffer full (max_buffer_bytes=%d): event dropped",
                              config.max_buffer_bytes)
        return False

    def replayed(self, index: int, line: bytes, stop: threading.Event) -> bool:
        """The replay's way in: the same accumulator, waiting for room as long as it takes."""
        acc = self.acc
        with acc.lock:
            while True:
                if acc.closed or stop.is_set():
                    return False
                try:
                    acc.slow_append(index, line)
                    break
                except Full:
                    self.worker.wake()
                    acc.room.wait(0.25)
        with self.lock:
            self.ledger.events_replayed += 1
        self.worker.wake()
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
