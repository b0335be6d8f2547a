"""Every counter, and the only code that changes one.

Each method is one event of an event's life (seen, delivered, failed, kept, dropped...), and
each is called with the engine's lock held, in the same critical section as the state
change it counts: a count another thread reads to decide something (close() asking "is
anything pending or in hand?") can then never disagree with the state it counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from ..stats import BufferStats, StreamStats


class Reason(StrEnum):
    """Why events did not reach Firehose (``failures_by_reason`` keys; the service's error
    code is used as it is for calls it refused)."""

    TTL_EXPIRED = "record_ttl_expired"
    CLOSED = "closed_before_delivery"
    BUFFER_FULL = "buffer_full"
    TOO_LARGE = "event_too_large"
    INVALID_EVENT = "invalid_event"
    WORKER_CRASHED = "worker_crashed"


@dataclass(slots=True)
class Ledger:
    """The counters behind ``stats()``; one per engine. Read them freely, change them only
    through the methods below, under the engine's lock: the scheduler on the worker thread,
    the engine for the failure sink and close(), the intake and the replayer."""

    events_put: int = 0
    events_delivered: int = 0
    events_failed: int = 0
    events_dropped: int = 0
    events_spooled: int = 0
    events_replayed: int = 0
    events_lost: int = 0
    events_torn: int = 0
    records_sent: int = 0
    requests_sent: int = 0
    raw_bytes_sent: int = 0
    bytes_sent: int = 0
    billed_bytes: int = 0
    throttled_records: int = 0
    throttled_requests: int = 0
    retried_records: int = 0
    possible_duplicates: int = 0
    last_error: str | None = None
    failures: Counter[str] = field(default_factory=Counter)
    #: Failed events handed to the failure sink and not yet kept (spooled) or handed over
    #: (to ``on_failure``): what close() counts as lost if its deadline comes first.
    in_hand: int = 0

    # -- in ---------------------------------------------------------------------------------

    def seen(self, events: int) -> None:
        """Events the worker found in the segments (put() itself counts nothing)."""
        self.events_put += events

    def moved(self, events: int) -> None:
        """Events taken out of one stream to be seen again on another."""
        self.events_put -= events

    def dropped(self, events: int = 1) -> None:
        """Events put() refused because the buffer was full: put, and never buffered."""
        self.events_put += events
        self.events_dropped += events

    def replayed(self, events: int) -> None:
        """Events read back from the spool (they are seen again as put)."""
        self.events_replayed += events

    def torn(self, events: int) -> None:
        """Lines cut short by the death of a process, found when its spool files or durable
        segments were read back: dropped."""
        self.events_torn += events

    # -- calls ------------------------------------------------------------------------------

    def call_completed(self, *, throttled: bool, error: str | None, stream: str) -> None:
        self.requests_sent += 1
        if throttled and error is not None:
            self.throttled_requests += 1
        if error is not None:
            self.last_error = f"{stream}: {error}"

    def delivered(self, events: int, raw: int, wire: int, billed: int) -> None:
        self.events_delivered += events
        self.records_sent += 1
        self.raw_bytes_sent += raw
        self.bytes_sent += wire
        self.billed_bytes += billed

    def record_refused(self, stream: str, code: str, *, throttled: bool) -> None:
        self.last_error = f"{stream}: {code}"
        if throttled:
            self.throttled_records += 1

    def retried(self) -> None:
        self.retried_records += 1

    def maybe_duplicated(self, events: int) -> None:
        """Events in a call whose outcome could not be known: they may have landed."""
        self.possible_duplicates += events

    # -- out --------------------------------------------------------------------------------

    def failed(self, reason: str, events: int) -> None:
        """Events given up on; they go to the failure sink (held ``in_hand`` until kept)."""
        self.events_failed += events
        self.failures[reason] += events
        self.in_hand += events

    def settled(self, events: int, *, spooled: bool) -> None:
        """The failure sink kept these (in the spool) or handed them to ``on_failure``."""
        self.in_hand -= events
        if spooled:
            self.events_spooled += events

    def spilled(self, events: int) -> None:
        """put() wrote these to the spool because the buffer was full."""
        self.events_put += events
        self.events_failed += events
        self.failures[Reason.BUFFER_FULL.value] += events
        self.events_spooled += events

    def lost(self, events: int) -> None:
        """close() ran out of time with these neither delivered, kept nor handed over."""
        self.events_lost += events

    # -- read -------------------------------------------------------------------------------

    def snapshot(
        self, *, unseen: int, buffered_events: int, buffered_bytes: int, memory_bytes: int,
        streams: tuple[StreamStats, ...],
    ) -> BufferStats:
        """The counters, with the levels the scheduler holds, as a frozen BufferStats.
        ``unseen``: events written since the worker last looked (put, not yet counted)."""
        return BufferStats(
            events_put=self.events_put + unseen,
            events_delivered=self.events_delivered,
            events_failed=self.events_failed,
            events_dropped=self.events_dropped,
            events_buffered=buffered_events,
            bytes_buffered=buffered_bytes,
            records_sent=self.records_sent,
            bytes_sent=self.bytes_sent,
            raw_bytes_sent=self.raw_bytes_sent,
            billed_bytes=self.billed_bytes,
            requests_sent=self.requests_sent,
            throttled_records=self.throttled_records,
            throttled_requests=self.throttled_requests,
            retried_records=self.retried_records,
            possible_duplicates=self.possible_duplicates,
            last_error=self.last_error,
            failures_by_reason=dict(self.failures),
            streams=streams,
            events_spooled=self.events_spooled,
            events_replayed=self.events_replayed,
            events_lost=self.events_lost,
            events_torn=self.events_torn,
            memory_bytes=memory_bytes,
        )
