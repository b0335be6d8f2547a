"""The frozen snapshot ``FirehoseBuffer.stats()`` returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One delivery stream's share of the work."""

    name: str
    #: Fraction of the configured quota the adaptive limiter currently allows (1.0 = all).
    allowed_share: float
    #: Bytes per second the client currently allows itself on this stream.
    allowed_bytes_per_second: float
    #: Bytes waiting for this stream (packed or not, retries included, not in flight).
    backlog_bytes: int
    records_sent: int
    bytes_sent: int
    throttled_records: int


@dataclass(frozen=True, slots=True)
class BufferStats:
    """Counters since the buffer started (or since fork, in a child process).

    When the buffer is idle, ``events_put == events_delivered + events_failed +
    events_dropped + events_buffered``: ``events_put`` counts every event put() took
    (dropped ones included). Replayed events count in ``events_put``; spooled events are
    failed events that were kept.
    """

    events_put: int
    events_delivered: int
    #: Events not delivered: rejected, expired, abandoned at close, spilled when full; kept in
    #: the spool (``events_spooled``), else handed to ``on_failure`` (or logged).
    events_failed: int
    #: Events refused because the buffer was full (``on_full="drop"``, or ``"spill"`` when the
    #: spool could not take them); counted in ``events_put``, never buffered.
    events_dropped: int
    #: Events accepted and not yet delivered or failed (in memory, in flight or waiting).
    events_buffered: int
    bytes_buffered: int
    #: Records Firehose acknowledged, their bytes as sent, and those bytes as billed (each
    #: record rounded up to 5,120 bytes).
    records_sent: int
    bytes_sent: int
    billed_bytes: int
    #: PutRecordBatch calls that completed (with any outcome).
    requests_sent: int
    throttled_records: int
    throttled_requests: int
    #: Record sends that were retried (one record retried three times counts three).
    retried_records: int
    #: Events resent after an outcome we could not know (5xx, reset, timeout): each may have
    #: landed twice.
    possible_duplicates: int
    last_error: str | None
    failures_by_reason: Mapping[str, int] = field(default_factory=dict)
    streams: tuple[StreamStats, ...] = ()
    #: Events written to the spool (``spool_dir``): a subset of ``events_failed``, the part
    #: kept on disk for a later run or ``firehose-buffer replay`` to re-send.
    events_spooled: int = 0
    #: Events read back from the spool and re-sent; included in ``events_put``.
    events_replayed: int = 0
    #: Events close() could neither deliver nor keep nor hand over before its deadline
    #: (each time, an ERROR log line gives the number).
    events_lost: int = 0
    #: Lines cut short by the death of a process (the last line it was writing to a durable
    #: segment or a spool file), found when they were read back: dropped, never sent. In a
    #: durable segment, put() had not returned for such a line.
    events_torn: int = 0
    #: The JSON lines in the acknowledged records (equal to ``bytes_sent`` unless records
    #: are compressed).
    raw_bytes_sent: int = 0
    #: Memory holding events now (segments allocated, and events larger than a segment),
    #: never above ``max_buffer_bytes``.
    memory_bytes: int = 0

    @property
    def billed_ratio(self) -> float:
        """Billed bytes over the raw bytes of the events delivered (1.0 is perfect packing;
        below 1 with compressed records); 0.0 before any delivery."""
        return self.billed_bytes / self.raw_bytes_sent if self.raw_bytes_sent else 0.0


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What became of the events a ``flush()`` or ``close()`` covered (everything put before
    the call). Truthy only when every one of them was delivered."""

    delivered: int
    failed: int
    #: Still without an outcome when the call returned (it timed out).
    pending: int

    def __bool__(self) -> bool:
        return self.failed == 0 and self.pending == 0
