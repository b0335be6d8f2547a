"""Per-stream quota enforcement with three token buckets (requests, records, bytes).

Each bucket holds at most one second of its rate, refills continuously from a monotonic clock
and starts full, so a stream absorbs a one-second burst and then settles at the quota. A put
call takes one request token or is refused whole; then each record, in order, takes one record
token and ``len(Data)`` byte tokens or fails alone, taking nothing, so a later smaller record
may still fit. The real service's algorithm is not published; this is the simplest model that
matches its documented per-second quotas and per-record "Slow down." failures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from firehose_buffer.quota import Quota

Clock = Callable[[], float]


class StreamThrottle:
    """The three buckets of one delivery stream; thread-safe."""

    __slots__ = ("_bytes", "_clock", "_last", "_lock", "_quota", "_records", "_requests")

    def __init__(self, quota: Quota, clock: Clock) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._quota = quota
        self._requests = quota.requests_per_second
        self._records = quota.records_per_second
        self._bytes = quota.bytes_per_second
        self._last = clock()

    @property
    def quota(self) -> Quota:
        return self._quota

    def set_quota(self, quota: Quota) -> None:
        """Switch to ``quota`` with full buckets (a quota change starts a fresh second)."""
        with self._lock:
            self._quota = quota
            self._requests = quota.requests_per_second
            self._records = quota.records_per_second
            self._bytes = quota.bytes_per_second
            self._last = self._clock()

    def admit(
        self, sizes: Sequence[int], total_bytes: int, skip: Sequence[str | None] | None = None
    ) -> list[bool] | None:
        """Charge one call. None: no request token, the call is throttled and took nothing.

        Otherwise one flag per record of ``sizes``: True if it got its tokens. Records whose
        ``skip`` entry is set (failed by an injected fault) are not charged and come back False.
        """
        q = self._quota
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            requests = min(q.requests_per_second, self._requests + elapsed * q.requests_per_second)
            records = min(q.records_per_second, self._records + elapsed * q.records_per_second)
            nbytes = min(q.bytes_per_second, self._bytes + elapsed * q.bytes_per_second)
            if requests < 1.0:
                self._requests, self._records, self._bytes = requests, records, nbytes
                return None
            requests -= 1.0
            count = len(sizes)
            # Fast path, the common case: everything fits, no per-record bookkeeping.
            if skip is None and records >= count and nbytes >= total_bytes:
                self._requests = requests
                self._records = records - count
                self._bytes = nbytes - total_bytes
                return [True] * count
            admitted = [False] * count
            for i, size in enumerate(sizes):
                if (skip is None or skip[i] is None) and records >= 1.0 and nbytes >= size:
                    records -= 1.0
                    nbytes -= size
                    admitted[i] = True
            self._requests, self._records, self._bytes = requests, records, nbytes
            return admitted
