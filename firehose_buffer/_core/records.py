"""The values the scheduler hands around: records, batches, failures and a tick's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .runs import Run


class Acknowledgments(Protocol):
    """A durable segment's persistent record (see :mod:`.._storage.durable`)."""

    def acked(self, start: int, end: int) -> None:
        """These bytes are delivered, or kept by the failure sink."""

    def in_flight(self, end: int) -> None:
        """Lines up to ``end`` may have reached Firehose (or the failure sink)."""


class SegmentRef(Protocol):
    """What a record knows of the memory it is a slice of (see :mod:`.._storage.segments`)."""

    open_records: int
    retired: bool
    view: memoryview

    @property
    def file(self) -> Acknowledgments | None:
        """The segment's acknowledgment record when it is durable."""


#: Raw lines where they live: a segment, and the offsets of their first byte and past their
#: last newline.
Source = tuple[SegmentRef, int, int]


@dataclass(slots=True, eq=False)
class Record:
    """Whole JSON lines (each ending in a newline) that go as one record's ``Data``: cut by
    the scheduler on the worker thread, read by a sender during its call.

    ``data`` is what goes on the wire: a slice of a segment while the record is
    outstanding (it becomes ``b""`` once the record has an outcome, so the segment can be
    reused), or bytes of its own (lines kept apart: longer than a segment, or handed over by
    a re-entrant put()). ``raw`` is the size of the lines; ``len(data)`` the size on the
    wire, which billing, quotas and the request caps count (the same unless records are
    compressed).
    """

    id: int
    data: memoryview | bytes
    events: int
    raw: int
    #: When its oldest line was first seen, on the TTL clock (which skips frozen time).
    born: float
    #: The raw lines it carries: one range for a record that is a slice of its segment
    #: (``data`` itself), several for a compressed record, none for lines kept apart.
    sources: tuple[Source, ...] = ()
    #: Segments kept from reuse until this record has an outcome (``open_records`` counts
    #: it in each): those of ``sources``, and the one ``data`` is in.
    holds: tuple[SegmentRef, ...] = ()
    #: Bytes of its own (``data`` outside every segment) counted against the memory bound.
    apart: int = 0
    #: Calls that carried it so far.
    attempts: int = 0
    not_before: float = 0.0
    #: ``data`` is one compressed frame of its lines, and nothing else holds them (a line
    #: kept apart, compressed): the failure sink gets them by decoding it.
    framed: bool = False

    @property
    def wire(self) -> int:
        return len(self.data)

    def plain(self) -> list[bytes]:
        """The raw lines, as whole-line chunks (for the spool and ``on_failure``): a copy,
        since the memory is reused once the record is resolved."""
        if self.sources:
            return [bytes(seg.view[start:end]) for seg, start, end in self.sources]
        if self.framed:
            from .compression import decompress_object  # noqa: PLC0415  (only compressed)

            return [decompress_object(self.data)]
        return [bytes(self.data)]


@dataclass(slots=True, eq=False)
class Batch:
    """One PutRecordBatch call's records, for one stream: made by the scheduler's tick, sent by
    one sender thread, its outcome handed back to the next tick."""

    stream: int
    name: str
    records: list[Record]
    #: Wire bytes of the records.
    nbytes: int
    #: When the scheduler let it go (the monotonic clock).
    dispatched_at: float
    #: Set by the sender that makes the call, just before it starts: only a call that
    #: started can have stored anything (a possible duplicate), and its deadline runs from
    #: then.
    started_at: float | None = None

    def payloads(self) -> list[memoryview | bytes]:
        return [r.data for r in self.records]


@dataclass(slots=True)
class Failure:
    """Events that will not be delivered, for the spool or ``on_failure``: ``chunks`` of
    whole lines (each line ends in a newline), ``count`` lines in all."""

    stream: str
    reason: str
    chunks: list[bytes]
    count: int
    #: Durable: the records the lines come from, acknowledged (their segments let go) only
    #: once the failure sink has kept or handed over the lines (``Scheduler.settle``).
    records: list[Record] = field(default_factory=list)

    def lines(self) -> list[bytes]:
        """One ``bytes`` per event, without its newline (what ``on_failure`` receives)."""
        out: list[bytes] = []
        for chunk in self.chunks:
            out.extend(chunk[:-1].split(b"\n"))
        return out

    @classmethod
    def of_lines(cls, stream: str, reason: str, lines: list[bytes]) -> Failure:
        """From events without their newlines."""
        data = b"".join(line + b"\n" for line in lines)
        return cls(stream, reason, [data] if data else [], len(lines))


@dataclass(slots=True)
class Tick:
    """What one :meth:`Scheduler.tick` decided."""

    batches: list[Batch]
    failures: list[Failure]
    #: When to look again (the caller's clock); None: only when woken.
    wake_at: float | None
    #: Bytes producers wrote since the last tick. While they write, the worker looks again
    #: within ``TICK_SECONDS``; once they stop it sleeps, and the next put() wakes it.
    arrived: int = 0
    #: Lines to compress into records (with ``compression``), then hand back through
    #: :func:`.runs.compress_runs`; the worker ticks again once they are records.
    runs: list[Run] = field(default_factory=list)
    #: A durable stream's move to a free segment that raised (the stream stays where it
    #: was): said by the worker, outside every lock (a logging handler may use the buffer).
    move_error: Exception | None = None

    @property
    def sleep(self) -> bool:
        """Producers are quiet: the next put() must wake the worker."""
        return not self.arrived
