"""Every counter in one place, and the reasons events fail."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


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
    events_put: int = 0
    events_delivered: int = 0
    events_failed: int = 0
    events_dropped: int = 0
    events_spooled: int = 0
    events_replayed: int = 0
    events_lost: int = 0
    records_sent: int = 0
    requests_sent: int = 0
    bytes_sent: int = 0
    billed_bytes: int = 0
    throttled_records: int = 0
    throttled_requests: int = 0
    retried_records: int = 0
    possible_duplicates: int = 0
    last_error: str | None = None
    failures: Counter[str] = field(default_factory=Counter)

    def failed(self, reason: str, events: int) -> None:
        self.events_failed += events
        self.failures[reason] += events
