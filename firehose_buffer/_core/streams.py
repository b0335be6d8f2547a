"""What the scheduler keeps per delivery stream: the lines staged in each segment (spans),
the records waiting, retrying and in flight, and the stream's rate limiter."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .._storage.segments import Segment
from .ratelimit import StreamLimiter
from .records import Batch, Record

#: Staged lines are due a little before linger runs out, so scheduling delay does not push an
#: event past it.
DEADLINE_MARGIN = 0.05
#: A forced cut (linger) also takes lines this fraction of linger younger than the deadline,
#: so a stream with steady traffic sends about two records per linger period, not one per tick.
FORCED_CUT_SLACK = 0.5

@dataclass(slots=True, eq=False)
class Span:
    """One segment's lines for a stream, from the first not yet in a record."""

    segment: Segment
    ends: list[int] = field(default_factory=list)
    first: int = 0
    base: int = 0
    scanned: int = 0
    sealed: bool = False
    #: (index of the first line of a group, TTL-clock time the worker first saw it)
    stamps: deque[tuple[int, float]] = field(default_factory=deque)


@dataclass(slots=True, eq=False)
class StreamState:
    """One delivery stream as the scheduler sees it: lines not yet in records, records
    waiting, the call in flight, retries, and its rate limiter."""

    index: int
    name: str
    limiter: StreamLimiter
    spans: deque[Span] = field(default_factory=deque)
    ready: deque[Record] = field(default_factory=deque)
    retry: list[tuple[float, int, Record]] = field(default_factory=list)
    in_flight: Batch | None = None
    staged_bytes: int = 0
    staged_events: int = 0
    #: Staged bytes when a run came back with no full record: not handed out again as
    #: full until there are more.
    run_floor: int = 0
    quota_wake: float | None = None
    records_sent: int = 0
    bytes_sent: int = 0
    throttled_records: int = 0

    @property
    def backlog_bytes(self) -> int:
        """Bytes waiting for this stream (staged, ready, retrying; not in flight): what
        routing weighs."""
        return (self.staged_bytes + sum(r.wire for r in self.ready)
                + sum(item[2].wire for item in self.retry))
