"""Counters of what the emulator saw, per stream, and their frozen snapshot :class:`Stats`."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of put-call counters (one stream's, or all streams' summed).

    ``requests`` counts every ``PutRecord``/``PutRecordBatch`` call to an existing stream that
    passed validation, whatever happened to it next. ``throttled_*`` count only refusals caused
    by the quota; injected faults are counted apart in ``faults``, keyed by kind:
    ``records_service_unavailable`` and ``records_internal_failure`` (records),
    ``http_<status>``, ``latency``, ``reset_before_store``, ``reset_after_store`` (calls).
    ``records_failed`` counts every record answered with an ``ErrorCode`` or lost to a
    whole-call fault or throttle, i.e. every record a client must resend.
    """

    requests: int = 0
    records_accepted: int = 0
    bytes_accepted: int = 0
    records_failed: int = 0
    throttled_requests: int = 0
    throttled_records: int = 0
    faults: Mapping[str, int] = field(default_factory=dict)

    @property
    def injected_faults(self) -> int:
        """Total injected faults of every kind."""
        return sum(self.faults.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "records_accepted": self.records_accepted,
            "bytes_accepted": self.bytes_accepted,
            "records_failed": self.records_failed,
            "throttled_requests": self.throttled_requests,
            "throttled_records": self.throttled_records,
            "faults": dict(self.faults),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stats:
        return cls(**{**data, "faults": dict(data.get("faults", {}))})


class StreamCounters:
    """Mutable counters of one stream; every update takes the lock once."""

    __slots__ = (
        "_lock", "bytes_accepted", "faults", "records_accepted", "records_failed", "requests",
        "throttled_records", "throttled_requests",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.records_accepted = 0
        self.bytes_accepted = 0
        self.records_failed = 0
        self.throttled_requests = 0
        self.throttled_records = 0
        self.faults: dict[str, int] = {}

    def record_call(
        self,
        *,
        accepted: int = 0,
        accepted_bytes: int = 0,
        failed: int = 0,
        throttled_request: bool = False,
        throttled_records: int = 0,
        faults: Mapping[str, int] | None = None,
    ) -> None:
        with self._lock:
            self.requests += 1
            self.records_accepted += accepted
            self.bytes_accepted += accepted_bytes
            self.records_failed += failed
            self.throttled_requests += throttled_request
            self.throttled_records += throttled_records
            if faults:
                for kind, n in faults.items():
                    self.faults[kind] = self.faults.get(kind, 0) + n

    def snapshot(self) -> Stats:
        with self._lock:
            return Stats(
                self.requests, self.records_accepted, self.bytes_accepted, self.records_failed,
                self.throttled_requests, self.throttled_records, dict(self.faults),
            )


def total(snapshots: Iterable[Stats]) -> Stats:
    """The sum of several streams' snapshots."""
    result = Stats()
    faults: dict[str, int] = {}
    for s in snapshots:
        result = Stats(
            result.requests + s.requests,
            result.records_accepted + s.records_accepted,
            result.bytes_accepted + s.bytes_accepted,
            result.records_failed + s.records_failed,
            result.throttled_requests + s.throttled_requests,
            result.throttled_records + s.throttled_records,
        )
        for kind, n in s.faults.items():
            faults[kind] = faults.get(kind, 0) + n
    return replace(result, faults=faults)
