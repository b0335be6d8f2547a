"""The delivery state machine: lines in, records and batches out, outcomes back.

Single-threaded and clock-free: the worker thread calls it under the buffer's lock with the
current time, and tests drive it with simulated time and a fake service, no sleeps.

Per stream, an event moves: staged line -> record (ready) -> batch in flight -> delivered,
or back to a retry heap with backoff, or failed (with a reason) when it cannot be delivered.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from tenacity import RetryCallState, wait_random_exponential

from .config import BufferConfig
from .logutil import RateLimitedLog
from .packing import billed_bytes, cut_records, take_batch
from .ratelimit import StreamLimiter
from .sender import THROTTLE_CODES, Outcome

log = logging.getLogger("firehose_buffer")

#: A forced cut (linger) also takes lines this fraction of linger younger than the deadline,
#: so a stream with steady traffic sends about two records per linger period, not one per tick.
FORCED_CUT_SLACK = 0.5
#: Wake a little before a linger deadline so scheduling delay does not push an event past it.
DEADLINE_MARGIN = 0.05

#: Keyless remainders up to this size join the filling stream rather than leave alone: a
#: small record wastes up to 5 KB of billing, a fraction that matters below tens of KB.
MERGE_TAIL_BYTES = 64 * 1024

TTL_EXPIRED = "record_ttl_expired"


@dataclass(slots=True, eq=False)
class Record:
    id: int
    data: bytes
    events: int
    born: float
    attempts: int = 0
    not_before: float = 0.0

    def lines(self) -> list[bytes]:
        return self.data[:-1].split(b"\n")


@dataclass(slots=True, eq=False)
class Batch:
    stream: int
    name: str
    records: list[Record]
    nbytes: int
    sent_at: float

    def payloads(self) -> list[bytes]:
        return [r.data for r in self.records]


@dataclass(frozen=True, slots=True)
class Failure:
    stream: str
    events: list[bytes]
    reason: str


@dataclass(slots=True)
class _FlushMark:
    generation: int
    marker: int
    remaining: int


@dataclass(slots=True)
class StreamState:
    index: int
    name: str
    limiter: StreamLimiter
    lines: list[bytes] = field(default_factory=list)
    #: (index of the chunk's first line in ``lines``, time the chunk's oldest line was put)
    chunks: list[tuple[int, float]] = field(default_factory=list)
    staged_bytes: int = 0
    ready: deque[Record] = field(default_factory=deque)
    retry: list[tuple[float, int, Record]] = field(default_factory=list)
    in_flight: Batch | None = None
    #: Bytes waiting for this stream (staged, ready, retry): what routing weighs.
    backlog_bytes: int = 0
    #: Earliest time quotas let the next batch go (when something waits for them).
    quota_wake: float | None = None
    records_sent: int = 0
    bytes_sent: int = 0
    throttled_records: int = 0


@dataclass(slots=True)
class Counters:
    events_delivered: int = 0
    events_failed: int = 0
    records_sent: int = 0
    requests_sent: int = 0
    bytes_sent: int = 0
    billed_bytes: int = 0
    throttled_records: int = 0
    throttled_requests: int = 0
    retried_records: int = 0
    possible_duplicates: int = 0
    failures: Counter[str] = field(default_factory=Counter)


class _Attempt:
    """The one field of tenacity's RetryCallState its wait strategies read."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


class Pipeline:
    def __init__(self, config: BufferConfig, now: float) -> None:
        self.config = config
        self.streams = [
            StreamState(i, name, StreamLimiter(config.quota, config.quota_share, now))
            for i, name in enumerate(config.streams)
        ]
        self.counters = Counters()
        self.last_error: str | None = None
        #: Bytes of events that reached an outcome; the buffer's memory bound subtracts it.
        self.resolved_bytes = 0
        self.outstanding_records = 0
        self.outstanding_events = 0
        self.flushed_generation = 0
        self._flushes: list[_FlushMark] = []
        self._next_id = 1
        self._fatal_logs: dict[tuple[str, str], RateLimitedLog] = {}
        self._wait = wait_random_exponential(
            multiplier=config.retry_initial_backoff_seconds, max=config.retry_max_backoff_seconds
        )

    # -- lines in -------------------------------------------------------------------------

    def stage(self, stream: int, lines: list[bytes], nbytes: int, oldest: float) -> None:
        s = self.streams[stream]
        s.chunks.append((len(s.lines), oldest))
        s.lines.extend(lines)
        s.staged_bytes += nbytes
        s.backlog_bytes += nbytes

    @property
    def staged_events(self) -> int:
        return sum(len(s.lines) for s in self.streams)

    # -- records --------------------------------------------------------------------------

    def settle_keyless(self, into: int) -> dict[int, int]:
        """For keyless events only: the streams sticky routing has moved on from get no new
        lines until it comes back. Cut their full records now, and move a short remainder
        to the front of the stream now filling (``into``), where it starts a full record
        instead of leaving after linger as a small one that wastes up to 5 KB of billing.
        A longer remainder stays for linger: cut now, it would be one more indivisible
        record competing for the stream's one-second byte window.

        Returns how many lines moved from each stream (for simulations that track them).
        """
        target = self.streams[into]
        moved: dict[int, int] = {}
        for s in self.streams:
            if s is target or not s.lines:
                continue
            self._cut(s, 0)  # full records only
            if not s.lines:
                continue
            in_order = not target.chunks or s.chunks[-1][1] <= target.chunks[0][1]
            if s.staged_bytes > MERGE_TAIL_BYTES or not in_order:
                continue
            moved[s.index] = len(s.lines)
            shift = len(s.lines)
            target.chunks = s.chunks + [(i + shift, t) for i, t in target.chunks]
            target.lines[:0] = s.lines
            target.staged_bytes += s.staged_bytes
            target.backlog_bytes += s.staged_bytes
            s.backlog_bytes -= s.staged_bytes
            s.lines, s.chunks, s.staged_bytes = [], [], 0
        return moved

    def pack(self, now: float, everything: bool = False) -> None:
        """Cut full records, and records whose oldest line has reached its linger deadline."""
        cfg = self.config
        cutoff = now - cfg.linger_seconds * (1 - FORCED_CUT_SLACK)
        for s in self.streams:
            if not s.lines:
                continue
            if everything:
                must = len(s.lines)
            else:
                if s.chunks[0][1] + cfg.linger_seconds * (1 - DEADLINE_MARGIN) > now:
                    must = 0
                else:
                    must = next((i for i, t in s.chunks if t > cutoff), len(s.lines))
                if must == 0 and s.staged_bytes < cfg.record_target_bytes and (
                    len(s.lines) < cfg.max_events_per_record
                ):
                    continue
            self._cut(s, must)

    def _cut(self, s: StreamState, must: int) -> None:
        cfg = self.config
        lines = s.lines
        ends = cut_records(
            [len(line) for line in lines], must, cfg.record_target_bytes,
            cfg.max_events_per_record,
        )
        if not ends:
            return
        chunk = 0
        start = 0
        made = 0
        for end in ends:
            while chunk + 1 < len(s.chunks) and s.chunks[chunk + 1][0] <= start:
                chunk += 1
            data = b"".join(lines[start:end])
            record = Record(self._next_id, data, end - start, s.chunks[chunk][1])
            self._next_id += 1
            s.ready.append(record)
            self.outstanding_records += 1
            self.outstanding_events += record.events
            made += len(data)
            start = end
        del lines[:start]
        s.staged_bytes -= made
        s.chunks = _shift_chunks(s.chunks, start) if lines else []

    # -- batches --------------------------------------------------------------------------

    def dispatch(self, now: float) -> tuple[list[Batch], list[Failure]]:
        """Batches that quotas allow now, at most one in flight per stream."""
        batches: list[Batch] = []
        failures: list[Failure] = []
        for s in self.streams:
            if s.in_flight is not None:
                s.quota_wake = None
                continue
            if s.quota_wake is not None and now < s.quota_wake:
                # The quotas said when; looking sooner would take up to a batch of records
                # out and put them back, under the buffer's lock, on every wakeup.
                continue
            s.quota_wake = None
            candidates = self._candidates(s, now, failures)
            if not candidates:
                continue
            count = self._affordable(s, candidates, now)
            if count:
                chosen = candidates[:count]
                nbytes = sum(len(r.data) for r in chosen)
                s.limiter.take(nbytes, count, now)
                s.backlog_bytes -= nbytes
                batch = Batch(s.index, s.name, chosen, nbytes, now)
                s.in_flight = batch
                batches.append(batch)
            for r in reversed(candidates[count:]):
                self._put_back(s, r)
        return batches, failures

    def _candidates(self, s: StreamState, now: float, failures: list[Failure]) -> list[Record]:
        """The next batch's records: due retries first, then fresh ones, failing the expired.

        Taken until a batch's worth, then trimmed to what one batch may carry; the dispatcher
        puts back what does not go.
        """
        cfg = self.config
        deadline = now - cfg.record_ttl_seconds
        out: list[Record] = []
        size = 0
        while len(out) < cfg.max_batch_records and size < cfg.batch_target_bytes:
            if s.retry and s.retry[0][0] <= now:
                r = heapq.heappop(s.retry)[2]
            elif s.ready:
                r = s.ready.popleft()
            else:
                break
            if r.born <= deadline:
                s.backlog_bytes -= len(r.data)
                failures.append(self._fail(s, r, TTL_EXPIRED))
                continue
            out.append(r)
            size += len(r.data)
        count = take_batch([len(r.data) for r in out], cfg.max_batch_records,
                           cfg.batch_target_bytes)
        for r in reversed(out[count:]):
            self._put_back(s, r)
        return out[:count]

    @staticmethod
    def _put_back(s: StreamState, r: Record) -> None:
        """Return an unsent record where it came from, ahead of what is there."""
        if r.attempts:
            heapq.heappush(s.retry, (r.not_before, r.id, r))
        else:
            s.ready.appendleft(r)

    def _affordable(self, s: StreamState, records: Sequence[Record], now: float) -> int:
        """How many leading records the quotas let go now; sets ``quota_wake`` if none.

        A partial batch goes only once a quarter of a full batch is affordable: sending
        whatever trickles into the bucket would mean many tiny requests, each costing CPU.
        """
        limiter = s.limiter
        sizes = [len(r.data) for r in records]
        need = min(sum(sizes), max(sizes[0], self.config.batch_target_bytes // 4))
        wait = limiter.wait_time(need, 1, now)
        if wait > 0.0:
            s.quota_wake = now + wait
            return 0
        count = limiter.grantable(sizes, now)
        if not count:
            s.quota_wake = now + limiter.wait_time(sizes[0], 1, now)
        return count

    # -- outcomes -------------------------------------------------------------------------

    def complete(self, batch: Batch, outcome: Outcome, now: float) -> list[Failure]:
        s = self.streams[batch.stream]
        if s.in_flight is not batch:
            return []  # abandoned at close: already counted as failed
        s.in_flight = None
        c = self.counters
        c.requests_sent += 1
        failures: list[Failure] = []
        if outcome.throttled:
            s.limiter.throttled(now)
        if outcome.codes is not None:
            for record, code in zip(batch.records, outcome.codes, strict=True):
                if code is None:
                    self._deliver(s, record)
                    continue
                self.last_error = f"{s.name}: {code}"
                if code in THROTTLE_CODES:
                    c.throttled_records += 1
                    s.throttled_records += 1
                self._retry(s, record, code, now, unknown=False, failures=failures)
            return failures
        error = outcome.error or "Unknown"
        self.last_error = f"{s.name}: {error}"
        if outcome.throttled:
            c.throttled_requests += 1
        if outcome.retryable:
            for record in batch.records:
                self._retry(s, record, error, now, unknown=outcome.unknown, failures=failures)
            return failures
        # A missing stream or a denied role fails every batch for that stream: say so once
        # per interval per stream and error, not once per batch.
        key = (s.name, error)
        if key not in self._fatal_logs:
            self._fatal_logs[key] = RateLimitedLog(log, interval=10.0)
        self._fatal_logs[key].error(
            "PutRecordBatch to %s failed with %s, which waiting cannot fix: %d events failed",
            s.name, error, sum(r.events for r in batch.records),
        )
        failures.extend(self._fail(s, r, error) for r in batch.records)
        return failures

    def _deliver(self, s: StreamState, r: Record) -> None:
        c = self.counters
        size = len(r.data)
        c.events_delivered += r.events
        c.records_sent += 1
        c.bytes_sent += size
        c.billed_bytes += billed_bytes(size)
        s.records_sent += 1
        s.bytes_sent += size
        self._resolve(r)

    def _retry(
        self, s: StreamState, r: Record, error: str, now: float, *, unknown: bool,
        failures: list[Failure],
    ) -> None:
        if unknown:
            self.counters.possible_duplicates += r.events
        if now >= r.born + self.config.record_ttl_seconds:
            failures.append(self._fail(s, r, TTL_EXPIRED))
            return
        r.attempts += 1
        delay = self._wait(cast(RetryCallState, _Attempt(r.attempts)))
        r.not_before = min(now + delay, r.born + self.config.record_ttl_seconds)
        heapq.heappush(s.retry, (r.not_before, r.id, r))
        s.backlog_bytes += len(r.data)
        self.counters.retried_records += 1

    def _fail(self, s: StreamState, r: Record, reason: str) -> Failure:
        self.counters.events_failed += r.events
        self.counters.failures[reason] += r.events
        self._resolve(r)
        return Failure(s.name, r.lines(), reason)

    def _resolve(self, r: Record) -> None:
        self.outstanding_records -= 1
        self.outstanding_events -= r.events
        self.resolved_bytes += len(r.data)
        if self._flushes:
            for mark in self._flushes:
                if r.id <= mark.marker:
                    mark.remaining -= 1
            while self._flushes and self._flushes[0].remaining <= 0:
                self.flushed_generation = self._flushes.pop(0).generation

    # -- flush, close, scheduling ---------------------------------------------------------

    def mark_flush(self, generation: int) -> None:
        """Everything staged must already be packed: the flush is done when every record
        that exists now has an outcome."""
        if self.outstanding_records == 0 and not self._flushes:
            self.flushed_generation = generation
            return
        self._flushes.append(_FlushMark(generation, self._next_id - 1, self.outstanding_records))

    def abandon(self, reason: str) -> list[Failure]:
        """Fail everything not yet delivered, in flight included (its outcome is unknown)."""
        failures: list[Failure] = []
        for s in self.streams:
            if s.lines:
                events = [line[:-1] for line in s.lines]
                self.counters.events_failed += len(events)
                self.counters.failures[reason] += len(events)
                self.resolved_bytes += s.staged_bytes
                failures.append(Failure(s.name, events, reason))
                s.lines, s.chunks, s.staged_bytes = [], [], 0
            pending = list(s.ready) + [item[2] for item in sorted(s.retry)]
            if s.in_flight is not None:
                pending.extend(s.in_flight.records)
            s.ready.clear()
            s.retry.clear()
            s.in_flight = None
            s.backlog_bytes = 0
            failures.extend(self._fail(s, r, reason) for r in pending)
        return failures

    def next_deadline(self, now: float) -> float | None:
        """When the worker must look again even if nothing wakes it."""
        linger = self.config.linger_seconds * (1 - DEADLINE_MARGIN)
        times: list[float] = []
        for s in self.streams:
            if s.chunks:
                times.append(s.chunks[0][1] + linger)
            if s.in_flight is None:
                if s.quota_wake is not None:
                    times.append(s.quota_wake)
                elif s.retry:
                    times.append(s.retry[0][0])
        return min(times) if times else None

    @property
    def idle(self) -> bool:
        return self.outstanding_records == 0 and not any(s.lines for s in self.streams)


def _shift_chunks(chunks: list[tuple[int, float]], consumed: int) -> list[tuple[int, float]]:
    """Chunk starts after removing the first ``consumed`` lines; a chunk cut in two keeps
    its stamp for the part left behind."""
    shifted: list[tuple[int, float]] = []
    for i, (start, stamp) in enumerate(chunks):
        end = chunks[i + 1][0] if i + 1 < len(chunks) else None
        if end is not None and end <= consumed:
            continue
        shifted.append((max(0, start - consumed), stamp))
    return shifted
