"""Where put() leaves its lines: per stream, segments of memory allocated once and reused.

A :class:`Segment` is a private anonymous ``mmap``, or with ``durable=True`` a shared mapping
of a pre-allocated file (see :mod:`.durable`): the same object to put(), chosen by the
backing the accumulator is given. Each stream has a ring: a list whose last
entry is the segment put() writes to, preceded by the segments it has moved on from that the
worker has not taken yet. put() appends one encoded line with ``ring[-1].write(line)``, a
single C call that copies the bytes and moves the write position while holding the GIL: no
lock, no object kept per event, no fresh pages touched once a segment has been used. The
worker reads what was written with ``tell()`` and cuts records as ``memoryview`` slices, so
nothing is copied again until the transport encodes them.

Why the fast path needs no lock: a producer loads ``ring[-1]`` and calls its ``write`` in
one expression, and CPython (with the GIL) switches threads, and runs signal handlers, only
between calls and on backward jumps, so no write can land in a segment after another thread
has moved the stream on. When a write does not fit (``ValueError``), or the stream has no
segment yet, or the buffer is closed, put() takes :meth:`Accumulator.slow_append`, under the
lock. Free-threaded builds take the lock on every put (see ``LOCK_FREE``).

Why a ring is a list: moving a stream to a new segment is ONE step, ``ring.append(new)``.
The old segment is sealed (no put() can reach it any more) and handed to the worker by the
same C call, so an exception raised between two steps (a signal handler's, a
KeyboardInterrupt) can never leave a sealed segment that nobody will read. An exception
between taking a free segment and appending it can leak that segment's capacity; the
memory bound finds such segments again before it refuses an event (:meth:`_reclaim`).

The memory bound: segments allocated plus lines kept apart (longer than a segment) never
exceed ``max_buffer_bytes``; free segments are unmapped when a long line needs their room.
"""

from __future__ import annotations

import mmap
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from .durable import SegmentFile

#: False on a free-threaded CPython, where the lock-free append is not atomic.
LOCK_FREE: bool = getattr(sys, "_is_gil_enabled", lambda: True)()

MIN_SEGMENT_BYTES = 4096
MAX_SEGMENT_BYTES = 4 * 1024 * 1024

#: Segment states (``Segment.state``).
FREE: Final = 0
#: In a stream's ring: being written, or sealed and not yet taken by the worker.
FILLING: Final = 1
#: Taken by the worker; free again once every record cut from it has an outcome.
TAKEN: Final = 2


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


class Segment(mmap.mmap):
    """A stretch of reused memory that lines are appended to; records are slices of it."""

    __slots__ = ("file", "open_records", "retired", "state", "view")

    file: SegmentFile | None
    open_records: int
    retired: bool
    state: int
    view: memoryview

    @classmethod
    def allocate(cls, size: int) -> Segment:
        return cls(-1, size, flags=mmap.MAP_PRIVATE)._ready(None)

    @classmethod
    def mapped(cls, fd: int, size: int, offset: int) -> Segment:
        """``size`` bytes of the file ``fd`` from ``offset``, shared: what is written is in
        the page cache at once, and stays there if the process dies."""
        return cls(fd, size, flags=mmap.MAP_SHARED, offset=offset)._ready(None)

    def _ready(self, file: SegmentFile | None) -> Segment:
        self.view = memoryview(self)
        #: The segment's file and acknowledgment record (durable), or None (memory).
        self.file = file
        #: Records cut from this segment that have no outcome yet.
        self.open_records = 0
        #: Wholly cut into records: free once ``open_records`` is zero.
        self.retired = False
        self.state = FREE
        return self

    def unmap(self) -> None:
        """Give the memory back; BufferError (and the segment stays usable) while a view of
        it is still held (a call past its deadline may still hold its batch's)."""
        self.view.release()
        try:
            self.close()
        except BufferError:
            self.view = memoryview(self)
            raise


class Oversized:
    """One line longer than a segment, kept as its own bytes in the stream's ring (and, when
    durable, in a file of its own: ``kept``). put() never writes into it: the next put()
    moves the stream on to a new segment."""

    __slots__ = ("kept", "line", "taken")

    def __init__(self, line: bytes, kept: Segment | None = None) -> None:
        self.line = line
        self.kept = kept
        self.taken = False

    def write(self, data: bytes, /) -> int:
        raise ValueError("an oversized line is not a segment")


class Closed:
    """A ring's only entry before first use and its last after close: every write fails,
    so put() falls to the slow path, which knows why."""

    __slots__ = ()

    def write(self, data: bytes, /) -> int:
        raise ValueError("no segment")


NO_SEGMENT = Closed()
Entry = Segment | Oversized | Closed
#: The last entry of a ring while the worker moves its stream to another segment
#: (:meth:`Accumulator.reseat`): put() takes the slow path, which waits for the lock.
_MOVING: Final[Entry] = Closed()


class Full(Exception):
    """No segment is free and the bound allows no new one."""


class Backing(Protocol):
    """Where segments come from: memory (:data:`MEMORY`) or files (``durable.DurableStore``).
    Called under the accumulator's lock, except :meth:`keep` from a re-entrant put()."""

    #: Whether segments are files whose records are acknowledged (the scheduler's hooks).
    durable: bool

    def allocate(self, size: int) -> Segment: ...

    def filling(self, segment: Segment, index: int) -> None:
        """Stream ``index`` takes ``segment``, before put() can write to it."""

    def keep(self, index: int, line: bytes, *, blocking: bool = True) -> Segment | None:
        """``line`` written into a segment of its own that outlives the process, or None."""

    def discard(self, segment: Segment) -> None:
        """``segment`` will not be used again."""


class Memory:
    """Private anonymous memory: what a process death loses."""

    durable = False

    def allocate(self, size: int) -> Segment:
        return Segment.allocate(size)

    def filling(self, segment: Segment, index: int) -> None:
        pass

    def keep(self, index: int, line: bytes, *, blocking: bool = True) -> Segment | None:
        return None

    def discard(self, segment: Segment) -> None:
        segment.unmap()


MEMORY = Memory()


class Accumulator:
    """Every stream's ring, the pool of free segments and the memory bound; one per engine,
    made with its scheduler (:meth:`Scheduler.for_config`).

    Producers write lock-free to ``rings[i][-1]``; everything else happens under ``lock``:
    the slow path (:meth:`slow_append`), the worker's :meth:`take` and :meth:`release`,
    closing, and (through ``on_seal``) the keyless router's moves.
    """

    def __init__(
        self, streams: int, max_buffer_bytes: int, record_bytes: int,
        on_seal: Callable[[int], None] | None = None, backing: Backing = MEMORY,
    ) -> None:
        self.segment_bytes = segment_size(max_buffer_bytes, streams, record_bytes)
        self.backing = backing
        #: Told (under the lock) when a stream moves to a new segment: the router's hook.
        self.on_seal = on_seal
        self.max_buffer_bytes = max_buffer_bytes
        #: What put() writes to: ``rings[i][-1].write(line)``.
        self.rings: list[list[Entry]] = [[NO_SEGMENT] for _ in range(streams)]
        #: Re-entrant only so that a put() re-entering on a thread that holds it can tell
        #: (see ``_runtime/guard.py``); nothing here takes it twice.
        self.lock = threading.RLock()
        #: Notified (under ``lock``) whenever room appears.
        self.room = threading.Condition(self.lock)
        self._free: list[Segment] = []
        #: Every segment allocated and not unmapped.
        self._all: list[Segment] = []
        self.oversized_bytes = 0
        #: Room producers leave to the worker: with compression, compressed records are
        #: written into memory of the bound too, and must find some when producers filled it.
        self.reserve_bytes = 0
        #: Segments the worker borrowed (compressed records are in them): the reserve.
        self._borrowed: set[int] = set()
        #: Counts every release of memory (under ``lock``): the worker waiting for room to
        #: store compressed records reads it to know when to try again.
        self.freed = 0
        self.closed = False

    # -- producers (slow path; the fast path is inlined in put()) ----------------------------

    def append(self, index: int, line: bytes) -> None:
        """Exactly what put() does with an encoded line, for the worker (lines it moves) and
        the simulations: the lock-free write, else :meth:`slow_append` under the lock.
        Raises :class:`Full` like it; the caller checks ``closed``."""
        if LOCK_FREE:
            try:
                self.rings[index][-1].write(line)
                return
            except ValueError:
                pass
        with self.lock:
            self.slow_append(index, line)

    def slow_append(self, index: int, line: bytes) -> bool:
        """Append under the lock: a new segment if the current one is full. Raises
        :class:`Full` when the bound allows nothing more. The caller checks ``closed``
        first, under the same lock. Returns True when the stream moved to a new segment."""
        ring = self.rings[index]
        try:
            ring[-1].write(line)
            return False
        except ValueError:
            pass
        size = len(line)
        if size > self.segment_bytes:
            # Compressed, its frame takes its place in memory and needs no reserve; durable,
            # the line stays in its file and the frame needs room beside it.
            self._make_room(size + (self.reserve_bytes if self.backing.durable
                                    and self._events_held() else 0))
            entry = Oversized(line, self.backing.keep(index, line) if self.backing.durable
                              else None)
            self.oversized_bytes += size
            try:
                ring.append(entry)
            except BaseException:
                # An exception raised after the append (a signal handler's) finds the line
                # kept; one raised before it must not leave its bytes counted.
                if ring[-1] is not entry:
                    self.oversized_bytes -= size
                raise
            return False
        segment = self._take_segment(self.reserve_bytes)
        moved = type(ring[-1]) is not Closed
        self.backing.filling(segment, index)
        ring.append(segment)  # the one step that seals the old segment and opens this one
        segment.state = FILLING
        segment.write(line)
        if moved and self.on_seal is not None:
            self.on_seal(index)
        return moved

    def held_bytes(self) -> int:
        """Memory holding events, against ``max_buffer_bytes``."""
        return len(self._all) * self.segment_bytes + self.oversized_bytes

    def _take_segment(self, reserve: int = 0) -> Segment:
        """A free or new segment; ``reserve``: room to leave unused (a stream's segment,
        with compression: the worker's room for compressed records)."""
        if reserve and self._events_held() + self.segment_bytes > self.max_buffer_bytes - reserve:
            self._reclaim()
            if self._events_held() and (
                self._events_held() + self.segment_bytes > self.max_buffer_bytes - reserve
            ):
                raise Full
        if self._free:
            return self._free.pop()
        # The first segment goes even past a bound smaller than itself, when nothing else is
        # held (else nothing could ever be buffered); never beside lines kept apart.
        if self.held_bytes() and self.held_bytes() + self.segment_bytes > self.max_buffer_bytes:
            self._reclaim()
            if self._free:
                return self._free.pop()
            raise Full
        segment = self.backing.allocate(self.segment_bytes)
        self._all.append(segment)
        return segment

    def _in_use(self) -> int:
        """Memory holding events or records: what is held but free segments."""
        return self.held_bytes() - self.segment_bytes * len(self._free)

    def _events_held(self) -> int:
        """What producers' events hold: in use, but the worker's borrowed segments."""
        return self._in_use() - self.segment_bytes * len(self._borrowed)

    def hold_apart(self, size: int, *, anyway: bool) -> bool:
        """Count ``size`` bytes the worker keeps outside every segment, if the bound has
        room for them, unmapping free segments if need be (or ``anyway``: nothing else would
        ever free any)."""
        with self.lock:
            if not anyway:
                try:
                    self._make_room(size)
                except Full:
                    return False
            self.oversized_bytes += size
            return True

    def _make_room(self, size: int) -> None:
        """Room for a line of ``size`` kept apart: unmap free segments if needed."""
        if self.held_bytes() + size > self.max_buffer_bytes:
            self._reclaim()
        kept: list[Segment] = []
        try:
            while self.held_bytes() + size > self.max_buffer_bytes and self._free:
                segment = self._free.pop()
                self._all.remove(segment)
                try:
                    self.backing.discard(segment)
                except BufferError:  # still viewed: stays, counted, free for reuse
                    self._all.append(segment)
                    kept.append(segment)
        finally:
            self._free.extend(kept)
        if self.held_bytes() + size > self.max_buffer_bytes:
            raise Full

    def _reclaim(self) -> None:
        """Find segments an exception stranded between the free list and a ring (see the
        module's doc): in a ring, they are filling; in neither, free."""
        in_rings = {id(e) for ring in self.rings for e in ring}
        listed = {id(s) for s in self._free}
        for segment in self._all:
            if id(segment) in in_rings:
                segment.state = FILLING
            elif segment.state == FREE and id(segment) not in listed:
                self._free.append(segment)

    # -- the worker ------------------------------------------------------------------------

    def reseat(self, index: int, current: Segment, start: int, limit: int) -> int | None:
        """Move stream ``index`` on from ``current`` to a free segment that starts with a
        copy of ``current``'s lines from ``start`` (about ``limit`` bytes at most), so the
        stream writes to the same few pages again (see ``Scheduler._reseat``). Returns where
        the copy ended in ``current`` (its end: nothing is written to it after), or None
        (the bound half used, the rest too long, the stream moved on or closed)."""
        with self.lock:
            ring = self.rings[index]
            if (self.closed or ring[-1] is not current
                    or 2 * (self._events_held() + self.segment_bytes) > self.max_buffer_bytes):
                return None
            if current.tell() - start > limit:
                return None
            if not self._free:
                try:
                    self._free.append(self._take_segment(self.reserve_bytes))
                except Full:
                    return None
            if current.file is not None and self._free[-1].file is None:
                return None  # memory (no file could be made): the lines would lose their file
            segment = self._free.pop()
            # Sealed first: a line put() wrote to ``current`` after the copy would leave
            # after the copied lines, out of put order. Now put()'s lock-free write fails
            # and its slow path waits for this lock, then writes after the copy.
            ring.append(_MOVING)
            try:
                end = current.tell()  # past ``limit`` if producers wrote on until the seal
                kept = current.file
                if kept is not None:
                    kept.in_flight(end)  # a death before the acknowledgment finds both copies
                segment.write(current.view[start:end])
                self.backing.filling(segment, index)
            except BaseException:
                ring.pop()  # the blocker: put() writes to ``current`` again, nothing moved
                if segment.file is not None:  # zeroed again: its data must end at a NUL
                    segment.file.recycle(segment.tell())
                segment.seek(0)
                self._free.append(segment)
                raise
            ring[-1] = segment  # one step: the blocker's place, so the ring is as after a seal
            segment.state = FILLING
            if kept is not None:
                kept.acked(start, end)  # kept in the new segment
            return end

    def borrow(self) -> Segment:
        """A free segment for the worker's own use (compressed records are written into
        one); raises :class:`Full`. It comes back through :meth:`release`."""
        with self.lock:
            segment = self._take_segment()
            segment.state = TAKEN
            self._borrowed.add(id(segment))
            return segment

    def take(self, index: int) -> tuple[list[Segment | Oversized], Segment | None]:
        """What stream ``index`` moved on from since the last call (sealed segments and
        lines kept apart, in put order), and its current segment, read in one instant."""
        ring = self.rings[index]
        if len(ring) == 1:
            # Without the lock: if a producer appends after the length was read, ring[0] is
            # still the oldest entry, the one the worker was reading; it is taken as sealed
            # at the next call.
            first = ring[0]
            if type(first) is Segment:
                return [], first
            if type(first) is Closed or (type(first) is Oversized and first.taken):
                return [], None
        with self.lock:
            sealed: list[Segment | Oversized] = []
            while len(ring) > 1:
                entry = ring.pop(0)
                if type(entry) is Segment:
                    entry.state = TAKEN
                    sealed.append(entry)
                elif type(entry) is Oversized and not entry.taken:
                    entry.taken = True
                    sealed.append(entry)
            last = ring[-1]
            if type(last) is Oversized and not last.taken:
                last.taken = True
                sealed.append(last)
            current = last if type(last) is Segment else None
            return sealed, current

    def release(self, segment: Segment) -> None:
        """Every record of a sealed segment has an outcome: reuse it (a durable one once
        marked free and zeroed; a line kept apart in a file: delete it)."""
        kept = segment.file
        if kept is not None:
            if kept.one_off:
                self.backing.discard(segment)
                self.release_oversized(kept.kept_bytes)
                return
            kept.recycle(segment.tell())
        segment.seek(0)
        segment.retired = False
        with self.lock:
            segment.state = FREE
            self._borrowed.discard(id(segment))
            self._free.append(segment)
            self.freed += 1
            self.room.notify_all()

    def release_oversized(self, size: int) -> None:
        with self.lock:
            self.oversized_bytes -= size
            self.freed += 1
            self.room.notify_all()

    def close(self) -> None:
        """Seal every stream against put() (the worker still reads what was written)."""
        with self.lock:
            self.closed = True
            for ring in self.rings:
                if ring[-1] is not NO_SEGMENT:
                    ring.append(NO_SEGMENT)
            self.room.notify_all()
