"""Where put() leaves its lines: per stream, segments of memory allocated once and reused.

A segment is a private anonymous ``mmap`` of ``segment_bytes``. put() appends one encoded
line with ``mmap.write``, a single C call that copies the bytes and moves the write position
while holding the GIL: no lock, no object kept per event, no fresh pages touched once a
segment has been used. The worker reads what was written with ``tell()`` and finds the line
ends with ``find`` (each byte is scanned once); records are ``memoryview`` slices of a
segment, so nothing is copied again until the transport base64-encodes them.

Why the fast path needs no lock: a producer loads the stream's current ``mmap`` and calls
its ``write`` in one expression, and CPython (with the GIL) switches threads only between
calls, so no write can land in a segment after another thread has swapped it out. When a
write does not fit (``ValueError``), or the stream has no segment yet, or the buffer is
closed, put() takes :meth:`Accumulator.slow_append`, under the lock. Free-threaded builds
take the lock on every put (see ``LOCK_FREE``).

The memory bound: at most ``max_buffer_bytes // segment_bytes`` segments exist; a segment
goes back to the pool when every record cut from it has an outcome. Lines longer than a
segment are kept as their own ``bytes`` and counted against the same bound.
"""

from __future__ import annotations

import mmap
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: False on a free-threaded CPython, where the lock-free append is not atomic.
LOCK_FREE: bool = getattr(sys, "_is_gil_enabled", lambda: True)()

MIN_SEGMENT_BYTES = 4096
MAX_SEGMENT_BYTES = 4 * 1024 * 1024


def segment_size(max_buffer_bytes: int, streams: int, record_bytes: int) -> int:
    """Four records, with four segments per stream within the bound; never below a page or
    above 4 MiB.

    Records never span segments, so a segment's last record may be short (it wastes at most
    one billing step); larger segments make that rarer. Smaller ones keep the bound closer
    to the bytes held (every stream's current segment counts whole, however full), and
    move a keyless burst on to the next stream sooner: with two per stream, 16 streams at
    16 MB/s filled a 64 MiB bound holding 22 MB.
    """
    size = min(max_buffer_bytes // (4 * streams), 4 * record_bytes)
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, size))


class Closed:
    """Stands in for a stream's mmap when it has none (before first use, after close):
    every write fails, so put() falls to the slow path, which knows why."""

    __slots__ = ()

    def write(self, data: bytes) -> int:
        raise ValueError("no segment")

    def tell(self) -> int:
        return 0


NO_SEGMENT = Closed()


class Segment:
    __slots__ = ("mm", "open_records", "retired", "view")

    def __init__(self, size: int) -> None:
        self.mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        self.view = memoryview(self.mm)
        #: Records cut from this segment that have no outcome yet.
        self.open_records = 0
        #: Sealed and wholly cut into records: free once ``open_records`` is zero.
        self.retired = False


@dataclass(slots=True)
class Sealed:
    """A segment a stream has moved on from, with where its last line ends."""

    segment: Segment
    end: int


@dataclass(slots=True)
class Oversized:
    """One line longer than a segment, kept as it is."""

    line: bytes


class Ring:
    """One stream's place in the accumulator. ``mm`` is what put() writes to."""

    __slots__ = ("current", "handed", "mm")

    def __init__(self) -> None:
        self.mm: mmap.mmap | Closed = NO_SEGMENT
        self.current: Segment | None = None
        #: Sealed segments and oversized lines, in put order, for the worker to take.
        self.handed: deque[Sealed | Oversized] = deque()


class Full(Exception):
    """No segment is free and the bound allows no new one."""


class Accumulator:
    def __init__(
        self, streams: int, max_buffer_bytes: int, record_bytes: int,
        on_seal: Callable[[int], None] | None = None,
    ) -> None:
        self.segment_bytes = segment_size(max_buffer_bytes, streams, record_bytes)
        #: Told (under the lock) when a stream moves to a new segment: the router's hook.
        self.on_seal = on_seal
        self.max_buffer_bytes = max_buffer_bytes
        self.rings = [Ring() for _ in range(streams)]
        self.lock = threading.Lock()
        #: Notified (under ``lock``) whenever room appears.
        self.room = threading.Condition(self.lock)
        self._free: list[Segment] = []
        self._segments = 0
        self.oversized_bytes = 0
        self.closed = False

    # -- producers (slow path; the fast path is inlined in put()) ----------------------------

    def append(self, index: int, line: bytes) -> None:
        """Exactly what put() does with an encoded line, for the simulations and benchmarks
        that drive the scheduler: the lock-free write, else :meth:`slow_append` under the
        lock. Raises :class:`Full` like it; the caller checks ``closed``. (put() keeps an
        inlined copy of the first step: a method call would cost every put() ~60 ns.)"""
        if LOCK_FREE:
            try:
                self.rings[index].mm.write(line)
                return
            except ValueError:
                pass
        with self.lock:
            self.slow_append(index, line)

    def slow_append(self, index: int, line: bytes) -> bool:
        """Append under the lock: a new segment if the current one is full. Raises
        :class:`Full` when the bound allows nothing more; the caller decides what that means.
        The caller checks ``closed`` first, under the same lock. Returns True when the line
        went into a segment the stream had just moved to."""
        ring = self.rings[index]
        size = len(line)
        mm = ring.mm
        try:
            mm.write(line)
            return False
        except ValueError:
            pass
        if size > self.segment_bytes:
            if self._used_bytes() + size > self.max_buffer_bytes:
                raise Full
            self.oversized_bytes += size
            ring.handed.append(Oversized(line))
            return False
        segment = self._take_segment()
        old = ring.current
        # Swap first, then read where the old segment ends: a producer that loaded the old
        # mmap has already written (load and write are one step for the GIL), and none can
        # write to it any more, so its position stays where it is (the worker may be reading
        # it this very moment).
        ring.current = segment
        ring.mm = segment.mm
        if old is not None:
            ring.handed.append(Sealed(old, old.mm.tell()))
        segment.mm.write(line)
        if old is not None and self.on_seal is not None:
            self.on_seal(index)
        return old is not None

    def _used_bytes(self) -> int:
        return (self._segments - len(self._free)) * self.segment_bytes + self.oversized_bytes

    def _take_segment(self) -> Segment:
        if self._free:
            return self._free.pop()
        if self._segments * self.segment_bytes + self.oversized_bytes + self.segment_bytes > (
            self.max_buffer_bytes
        ) and self._segments >= 1:
            raise Full
        self._segments += 1
        return Segment(self.segment_bytes)

    # -- the worker ------------------------------------------------------------------------

    def take(self, index: int) -> tuple[list[Sealed | Oversized], Segment | None]:
        """What stream ``index`` handed over since the last call, and its current segment."""
        ring = self.rings[index]
        with self.lock:
            handed = list(ring.handed)
            ring.handed.clear()
            return handed, ring.current

    def release(self, segment: Segment) -> None:
        """Every record of a sealed segment has an outcome: reuse it."""
        segment.mm.seek(0)
        segment.retired = False
        with self.lock:
            self._free.append(segment)
            self.room.notify_all()

    def release_oversized(self, size: int) -> None:
        with self.lock:
            self.oversized_bytes -= size
            self.room.notify_all()

    def close(self) -> None:
        """Seal every stream against put() (the worker still reads what was written)."""
        with self.lock:
            self.closed = True
            for ring in self.rings:
                ring.mm = NO_SEGMENT
            self.room.notify_all()
