"""The delivery state machine behind one entry point, :meth:`Scheduler.tick`.

Single-threaded and clock-free: the worker calls ``tick(now, outcomes, ...)`` and gets back
the batches to send, the events that failed and when to look again; tests and benchmarks run
the very same tick with simulated time. Per stream, data moves: bytes in a segment (found by
scanning new bytes once for line ends) -> record (a slice of the segment) -> batch in flight
-> delivered, or a retry with backoff, or failed with a reason.

A tick costs what is new: bytes written since the last tick are scanned once, records are cut
only where a stream is full or due, and streams with nothing new are skipped.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from tenacity import RetryCallState, wait_random_exponential

from .._service.firehose import FIREHOSE, ServiceProfile
from .._service.outcome import Outcome
from .._storage.segments import MEMORY, Accumulator, Backing, Full, Oversized, Segment
from ..config import BufferConfig
from ..stats import BufferStats, StreamStats
from .flushes import Flushes
from .ledger import Ledger, Reason
from .packing import cut_lines, take_batch
from .ratelimit import StreamLimiter
from .records import Batch, Failure, Record, SegmentRef, Source, Tick
from .routing import Router
from .runs import FIRST_RATIO, Run, pack_runs, staged_wire
from .streams import DEADLINE_MARGIN, FORCED_CUT_SLACK, Span, StreamState

if TYPE_CHECKING:
    pass

#: How often the worker looks for new lines while producers are writing. put() wakes the
#: worker only when it sleeps (a flag read; waking costs a system call); this bounds how
#: late a full record is noticed.
TICK_SECONDS = 0.01
#: Keyless remainders up to this size join the sticky stream instead of leaving alone at
#: linger: a small record wastes up to 5 KB of billing, a share that matters below tens of
#: KB. Longer ones stay: cut now, they would be one more indivisible record in the
#: stream's one-second byte window.
MERGE_TAIL_BYTES = 64 * 1024
#: Durable: a stream moves to a free segment once this much of its current one (at most an
#: eighth) is cut into records and the rest is at most RESEAT_MOVE_BYTES (a quarter): the
#: rest is copied over (see ``_reseat``).
RESEAT_AFTER_BYTES = 64 * 1024
RESEAT_MOVE_BYTES = 256 * 1024
#: Only a remainder younger than this share of linger moves (it waits again, from the age
#: it had, on the stream it joins).
MERGE_TAIL_AGE = 0.5
#: A tick this much later than planned means the process did not run (SIGSTOP, a frozen
#: Lambda environment): that time does not count against record_ttl_seconds.
FREEZE_SECONDS = 1.0
#: The least a quota wait lasts: a token shortfall of a rounding error (1e-16 of a request)
#: would otherwise ask to be woken at ``now`` itself, and a clock that has not moved since
#: (simulated time, a coarse system clock) would spin on the same tick.
MIN_QUOTA_WAIT = 1e-6


class _Attempt:
    """The one field of tenacity's RetryCallState its wait strategies read."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


class Scheduler:
    """One buffer's delivery state machine (see the module's doc): owned by the engine, and
    ticked by its worker thread. Every method runs with the engine's lock held; only
    :meth:`tick` changes state."""

    def __init__(
        self, config: BufferConfig, accumulator: Accumulator, router: Router, now: float,
        ledger: Ledger | None = None, *, service: ServiceProfile = FIREHOSE,
    ) -> None:
        self.config = config
        self.service = service
        self.acc = accumulator
        #: Segments are files with an acknowledgment record each (``durable=True``).
        self._durable = accumulator.backing.durable
        self.router = router
        self.ledger = ledger if ledger is not None else Ledger()
        self.flushes = Flushes()
        self.streams = [
            StreamState(i, name, StreamLimiter(config.quota, config.quota_share, now))
            for i, name in enumerate(config.streams)
        ]
        self.outstanding_records = 0
        self.outstanding_events = 0
        self.outstanding_bytes = 0
        #: Batches dispatched and without an outcome: at most ``config.concurrency``.
        self.calls_in_flight = 0
        #: The stream dispatch looks at first, turning, so that a cap below the number of
        #: streams shares the calls out.
        self._turn = 0
        self._next_id = 1
        #: Seconds the process spent frozen, left out of the TTL clock.
        self.frozen = 0.0
        self.compressing = config.compression is not None
        #: Raw bytes per wire byte, from the records compressed so far.
        self.ratio = FIRST_RATIO
        #: The segment compressed records are written into (borrowed from the accumulator,
        #: so the bound covers them); a new one when a record does not fit.
        self.wire: Segment | None = None
        #: ``acc.freed`` when a compressed record found no room: until memory is freed, the
        #: staged lines wait without waking the worker.
        self._starved_at: int | None = None
        #: Lines kept in durable files of their own whose frame found no room in the bound:
        #: (stream, lines, events, born, sources), framed once memory is freed.
        self._unframed: list[tuple[int, memoryview | bytes, int, float, tuple[Source, ...]]] = []
        if self.compressing:
            # Never so much that a stream could not have a segment of its own.
            seg = accumulator.segment_bytes
            accumulator.reserve_bytes = max(0, min(
                max(seg, config.record_target_bytes), config.max_buffer_bytes // 4,
                config.max_buffer_bytes - len(config.streams) * seg))
        #: Lines kept apart that no record of the codec can hold, failed between ticks.
        self._too_large: list[Failure] = []
        self._wait = wait_random_exponential(
            multiplier=config.retry_initial_backoff_seconds, max=config.retry_max_backoff_seconds
        )

    @classmethod
    def for_config(
        cls, config: BufferConfig, now: float, *, router: Router | None = None,
        ledger: Ledger | None = None, backing: Backing = MEMORY,
    ) -> Scheduler:
        """The scheduler with its accumulator and router wired as the buffer wires them
        (simulations and benchmarks use this too, so they run the same core)."""
        if router is None:
            router = Router(config.streams, config.partition_key, config.router,
                            max_line=config.max_line_bytes)
        acc = Accumulator(len(config.streams), config.max_buffer_bytes,
                          config.record_target_bytes, router.segment_full, backing)
        return cls(config, acc, router, now, ledger)

    # -- the one entry point --------------------------------------------------------------

    def tick(
        self,
        now: float,
        outcomes: Sequence[tuple[Batch, Outcome]] = (),
        *,
        everything: bool = False,
        abandon: str | None = None,
        expected: float | None = None,
    ) -> Tick:
        """Outcomes in; new lines found; records cut; flushes marked; batches out.

        A flush asked for since the last tick (``flushes.request()``) is marked: everything
        seen so far is cut and covered. ``everything``: cut every line now (closing).
        ``abandon``: fail all that is left with this reason (close's deadline passed).
        ``expected``: when the caller meant to tick (the end of its wait); a tick much later
        means the process was frozen, and that time does not count against
        record_ttl_seconds.
        """
        if expected is not None and now - expected > FREEZE_SECONDS:
            self.frozen += now - expected
        ttl_now = now - self.frozen
        if self.room_freed():
            self._starved_at = None
        failures: list[Failure] = []
        for batch, outcome in outcomes:
            failures.extend(self._complete(batch, outcome, now, ttl_now))
        arrived = self._gather(ttl_now)
        flush = self.flushes.due()
        flushing = flush is not None or self.flushes.held is not None
        if not self.router.keyed:
            if arrived:
                self._maybe_move_on(now)
            if not everything and not flushing and abandon is None:
                self._merge_tails(ttl_now)
        runs: list[Run] = []
        if self.compressing and abandon is None:
            if self._unframed and not self.starved():
                self._frame_waiting()
            runs = pack_runs(self, ttl_now, everything=everything or flushing)
            for s in self.streams:
                if s.spans:
                    self.retire_done(s)  # sealed since their last lines went out
        else:
            self._pack(ttl_now, everything=everything or flushing)
        if self._too_large:
            failures.extend(self._too_large)
            self._too_large.clear()
        if flush is not None:
            # Lines out being compressed, or waiting for room, become records after this
            # tick: the mark is held until they have (see flushes.py).
            self.flushes.mark(flush, self._next_id - 1, self.outstanding_records,
                              self.outstanding_events,
                              held=bool(runs) or (abandon is None and self.lines_waiting()))
        if self.flushes.held is not None and not runs and not self.lines_waiting():
            self.flushes.release(self._next_id - 1)
        batches: list[Batch] = []
        move_error: Exception | None = None
        if abandon is not None:
            failures.extend(self._abandon(abandon))
            self.flushes.release(self._next_id - 1)
        else:
            batches = self._dispatch(now, ttl_now, failures)
            if self._durable and not self.compressing and not everything and not flushing:
                try:
                    self._reseat(ttl_now)
                except Exception as exc:
                    # The batches just dispatched are in flight and the failures found are
                    # out of their streams: raising would lose both (the stream would wait
                    # for an answer to a call never made). A move is only an economy, and
                    # one that raised left its stream as it was (Accumulator.reseat).
                    move_error = exc
        wake = self._next_wake(now, ttl_now, arrived)
        return Tick(batches, failures, wake, arrived, runs, move_error)

    # -- lines in -------------------------------------------------------------------------

    def _gather(self, ttl_now: float) -> int:
        """Scan what producers wrote since the last tick; returns new bytes seen."""
        return sum(self._gather_stream(s, ttl_now) for s in self.streams)

    def _gather_stream(self, s: StreamState, stamp: float) -> int:
        arrived = 0
        sealed, current = self.acc.take(s.index)
        for item in sealed:
            if type(item) is Oversized:
                arrived += self._oversized(s, item, stamp)
                continue
            segment = cast(Segment, item)
            span = self._span_for(s, segment)
            arrived += self._scan(s, span, segment.tell(), stamp)
            span.sealed = True
        if current is not None:
            span = self._span_for(s, current)
            arrived += self._scan(s, span, current.tell(), stamp)
        return arrived

    def _merge_tails(self, ttl_now: float) -> None:
        """Keyless only: a stream the sticky route has left keeps a remainder shorter than a
        record, which linger would send as a small record of its own (wasting up to 5 KB of
        billing). Streams are interchangeable for keyless events, so a short, young
        remainder is appended to the sticky stream instead, where it joins a full record."""
        sticky = self.router.sticky
        young = ttl_now - self.config.linger_seconds * MERGE_TAIL_AGE
        limit = min(MERGE_TAIL_BYTES, self.acc.segment_bytes // 4)
        for s in self.streams:
            if s.index == sticky or not s.staged_events or s.staged_bytes > limit:
                continue
            spans = [sp for sp in s.spans if sp.first < len(sp.ends)]
            oldest = spans[0].stamps[0][1]
            if oldest < young:
                continue
            data = b"".join(bytes(sp.segment.view[sp.base:sp.ends[-1]]) for sp in spans)
            if self._durable:
                # Durable: a death between the copy and the acknowledgment below leaves the
                # lines in both places; counted as possible duplicates then.
                for sp in spans:
                    self._mark_sent(sp.segment, sp.ends[-1])
            try:
                self.acc.append(sticky, data)
            except Full:
                return
            for sp in spans:
                if self._durable:
                    # Written in the sticky stream's segment: acknowledged in their old place.
                    kept = sp.segment.file
                    if kept is not None:
                        kept.acked(sp.base, sp.ends[-1])
                sp.first = len(sp.ends)
                sp.base = sp.ends[-1]
                sp.stamps.clear()
            moved = s.staged_events
            s.staged_bytes = 0
            s.staged_events = 0
            self.ledger.moved(moved)  # seen again when scanned on the sticky stream
            # Scanned now, with the age the lines already had, so linger still holds for them.
            self._gather_stream(self.streams[sticky], oldest)

    def _reseat(self, ttl_now: float) -> None:
        """Durable: the kernel writes a dirty page of a file back (about every 30 s) and
        the next write to it faults again, so what costs is how many pages a stream writes
        between two write-backs. Filling each segment before moving on, a stream writes
        two whole segments over and over (up to 4 MB each): at 500 events/s of 0.5 KB one
        put in 8 faulted. Once enough of the current segment is cut into records and what
        is left is short, the stream moves to a free segment (the free list is last in,
        first out: the one released last) with that rest copied to its start, so it writes
        the same few pages again and again, and write-back has fewer to write. Not while
        records wait, nor with compression (its records are built apart from the lines)."""
        after = min(RESEAT_AFTER_BYTES, self.acc.segment_bytes // 8)
        limit = min(RESEAT_MOVE_BYTES, self.acc.segment_bytes // 4)
        for s in self.streams:
            if not s.spans:
                continue
            span = s.spans[-1]
            if s.ready or s.retry:
                # Records wait (quota, retries): the segments are not freed soon, so the
                # stream fills them, as a stream in memory does, to hold the most.
                continue
            if (span.sealed or span.base < after
                    or span.scanned - span.base > limit):
                continue
            oldest = span.stamps[0][1] if span.first < len(span.ends) else ttl_now
            end = self.acc.reseat(s.index, span.segment, span.base, limit)
            if end is None:
                continue
            moved = len(span.ends) - span.first
            s.staged_bytes -= span.scanned - span.base
            s.staged_events -= moved
            span.first = len(span.ends)
            span.base = span.scanned = end
            span.stamps.clear()
            self.ledger.moved(moved)  # seen again when the new segment is scanned
            # Scanned now, with the age the lines already had, so linger still holds.
            self._gather_stream(s, oldest)
            self.retire_done(s)

    @staticmethod
    def _span_for(s: StreamState, segment: Segment) -> Span:
        if s.spans and s.spans[-1].segment is segment and not s.spans[-1].sealed:
            return s.spans[-1]
        span = Span(segment)
        s.spans.append(span)
        return span

    def _scan(self, s: StreamState, span: Span, end: int, stamp: float) -> int:
        pos = span.scanned
        if end <= pos:
            return 0
        ends = span.ends
        k0 = len(ends)
        find = span.segment.find
        while pos < end:
            pos = find(b"\n", pos, end) + 1
            ends.append(pos)
        new_bytes = end - span.scanned
        span.scanned = end
        if span.stamps and span.stamps[-1][1] > stamp:
            # An older group (a merged remainder) after newer ones: stamps stay in order,
            # so the newer lines are due no later than the older ones.
            span.stamps = deque((k, min(t, stamp)) for k, t in span.stamps)
        if k0 == span.first:
            span.stamps.clear()  # every earlier line is in a record: their stamp is stale
        span.stamps.append((k0, stamp))
        events = len(ends) - k0
        s.staged_bytes += new_bytes
        s.staged_events += events
        self.ledger.seen(events)
        return new_bytes

    def _oversized(self, s: StreamState, item: Oversized, ttl_now: float) -> int:
        self.ledger.seen(1)
        line = item.line
        if item.kept is None:
            self._apart(s, line, 1, ttl_now)
        else:
            self._kept(s, item.kept, len(line), ttl_now)
        return len(line)

    def _kept(self, s: StreamState, segment: Segment, size: int, ttl_now: float) -> None:
        """The record of a line kept in a durable file of its own: a slice of it, which
        frees (deletes) the file once it has an outcome."""
        segment.retired = True
        self._apart(s, segment.view[0:size], 1, ttl_now, ((segment, 0, size),))

    def _apart(
        self, s: StreamState, data: memoryview | bytes, events: int, born: float,
        sources: tuple[Source, ...] = (),
    ) -> None:
        """A record of lines that did not go through the stream's segments (counted against
        the bound apart already). Compressing, it is one frame of its own like every record
        of the stream, and its raw lines stay (in ``sources``, or held as ``lines``) for the
        failure sink; a frame over the record cap fails as too large."""
        if not self.compressing:
            s.ready.append(self._record(data, events, born, sources))
            return
        from .compression import compress_whole  # noqa: PLC0415  (only with compression)

        frame = compress_whole(self.config.compression or "", self.config.compression_level,
                               data)
        if sources:
            # Durable: the lines stay in their file (recovery reads them), so the frame needs
            # room of its own; without it, it is made again once memory is freed.
            if not self.acc.hold_apart(len(frame), anyway=not self.outstanding_records):
                self._unframed.append((s.index, data, events, born, sources))
                self.starve()
                return
            record = self._record(frame, events, born, sources, raw=len(data))
        else:
            # The frame takes the lines' place in memory; the failure sink decodes it.
            with self.acc.lock:
                self.acc.oversized_bytes += len(frame) - len(data)
            record = self._record(frame, events, born, raw=len(data))
            record.framed = True
        if len(frame) > self.config.max_record_bytes:
            self._too_large.append(self._fail(s, record, Reason.TOO_LARGE))
        else:
            s.ready.append(record)

    def adopt(self, index: int, lines: Sequence[bytes | Segment], now: float) -> None:
        """Lines that did not go through a segment (a put() re-entering on a thread that
        held a lock could only hand them over): records of their own, held beside the
        segments like lines longer than one. Durable, each was written to a file of its own
        before put() returned (a :class:`Segment` here)."""
        s = self.streams[index]
        ttl_now = now - self.frozen
        plain: list[bytes] = []
        for item in lines:
            if isinstance(item, Segment):
                kept = item.file.kept_bytes if item.file is not None else 0
                with self.acc.lock:
                    self.acc.oversized_bytes += kept
                self.ledger.seen(1)
                self._kept(s, item, kept, ttl_now)
            else:
                plain.append(item)
        target = self.config.record_target_bytes
        chunk: list[bytes] = []
        size = 0
        for line in [*plain, b""]:
            if chunk and (not line or size + len(line) > target):
                data = b"".join(chunk)
                with self.acc.lock:
                    self.acc.oversized_bytes += len(data)
                self.ledger.seen(len(chunk))
                self._apart(s, data, len(chunk), ttl_now)
                chunk, size = [], 0
            if line:
                chunk.append(line)
                size += len(line)

    def _frame_waiting(self) -> None:
        """Memory was freed: frame the lines kept apart that waited for room, in order."""
        waiting, self._unframed = self._unframed, []
        for i, (index, data, events, born, sources) in enumerate(waiting):
            self._apart(self.streams[index], data, events, born, sources)
            if self._unframed:  # no room again: the rest wait behind it
                self._unframed.extend(waiting[i + 1:])
                return

    def _unframed_events(self) -> int:
        return sum(item[2] for item in self._unframed)

    def lines_waiting(self) -> bool:
        """Compressed: lines that cannot become records until memory is freed."""
        return bool(self._unframed) or self.starved()

    def _maybe_move_on(self, now: float) -> None:
        """Keyless: once the sticky stream has had a record's worth, move to another."""
        s = self.streams[self.router.sticky]
        if staged_wire(self, s) >= self.config.record_target_bytes or (
            not self.compressing and s.staged_events >= self.config.max_events_per_record
        ):
            headroom = [st.limiter.affordable_bytes(now) - st.backlog_bytes
                        for st in self.streams]
            # The segment-full hook moves the route too, from put()'s slow path: one lock.
            with self.acc.lock:
                self.router.visit_full(headroom)

    # -- records --------------------------------------------------------------------------

    def _record(
        self, data: memoryview | bytes, events: int, born: float,
        sources: tuple[Source, ...] = (), *, raw: int | None = None,
        wire: SegmentRef | None = None,
    ) -> Record:
        """A record of ``data`` (the raw lines themselves unless ``raw`` says otherwise),
        keeping the segments of ``sources`` (and ``wire``, the one ``data`` is in) from reuse
        until it has an outcome. ``data`` in no segment counts against the bound apart."""
        if len(sources) == 1 and wire is None:
            holds: tuple[SegmentRef, ...] = (sources[0][0],)  # the common case: one slice
        else:
            held = {id(seg): seg for seg, _, _ in sources}
            if wire is not None:
                held[id(wire)] = wire
            holds = tuple(held.values())
        apart = len(data) if not sources or (raw is not None and wire is None) else 0
        record = Record(self._next_id, data, events, len(data) if raw is None else raw, born,
                        sources, holds, apart)
        self._next_id += 1
        self.outstanding_records += 1
        self.outstanding_events += events
        self.outstanding_bytes += len(data)
        for segment in record.holds:
            segment.open_records += 1
        if self.flushes.held is not None:
            self.flushes.created(events)
        return record

    def _pack(self, ttl_now: float, *, everything: bool) -> None:
        cfg = self.config
        target = cfg.record_target_bytes
        max_events = cfg.max_events_per_record
        due_after = cfg.linger_seconds * (1 - DEADLINE_MARGIN)
        cutoff = ttl_now - cfg.linger_seconds * (1 - FORCED_CUT_SLACK)
        for s in self.streams:
            if not s.spans:
                continue
            for span in list(s.spans):
                n = len(span.ends)
                if span.first < n:
                    if everything or span.sealed:
                        must = n
                    elif span.stamps[0][1] + due_after <= ttl_now:
                        must = next((k for k, t in span.stamps if t > cutoff), n)
                    else:
                        must = 0
                    if must or span.ends[-1] - span.base >= target or (
                        n - span.first >= max_events
                    ):
                        self._cut(s, span, must, target, max_events)
            self.retire_done(s)

    def retire_done(self, s: StreamState) -> None:
        """Sealed spans whose every line is in a record: their segments are retired (reused
        once those records have outcomes)."""
        for span in list(s.spans):
            if span.sealed and span.first == len(span.ends):
                s.spans.remove(span)
                segment = span.segment
                segment.retired = True
                if segment.open_records == 0:
                    self.acc.release(segment)

    def _cut(self, s: StreamState, span: Span, must: int, target: int, max_events: int) -> None:
        cuts = cut_lines(span.ends, span.first, span.base, must, target, max_events)
        if not cuts:
            return
        view = span.segment.view
        stamps = span.stamps
        made_bytes = 0
        first = span.first
        base = span.base
        for k in cuts:
            while len(stamps) > 1 and stamps[1][0] <= first:
                stamps.popleft()
            end = span.ends[k]
            record = self._record(view[base:end], k - first + 1, stamps[0][1],
                                  ((span.segment, base, end),))
            s.ready.append(record)
            made_bytes += end - base
            first = k + 1
            base = end
        while len(stamps) > 1 and stamps[1][0] <= first:
            stamps.popleft()
        s.staged_events -= first - span.first
        s.staged_bytes -= made_bytes
        span.first = first
        span.base = base

    def expired(self, r: Record, ttl_now: float) -> bool:
        """A record past record_ttl_seconds that has had at least one attempt (after a
        freeze, every record gets one try before it can expire)."""
        return r.attempts > 0 and ttl_now >= r.born + self.config.record_ttl_seconds

    # -- batches --------------------------------------------------------------------------

    def _dispatch(self, now: float, ttl_now: float, failures: list[Failure]) -> list[Batch]:
        """Batches that quotas allow now: at most one in flight per stream, and at most
        ``config.concurrency`` in flight in all (a cap counted where calls start: a batch
        dispatched is a call a sender makes at once, never one waiting in a queue)."""
        batches: list[Batch] = []
        n = len(self.streams)
        start = self._turn
        for step in range(n):
            s = self.streams[(start + step) % n]
            if s.in_flight is not None or not (s.ready or s.retry):
                s.quota_wake = None if s.in_flight is not None else s.quota_wake
                continue
            if self.calls_in_flight >= self.config.concurrency:
                break
            if s.quota_wake is not None and now < s.quota_wake:
                continue
            s.quota_wake = None
            candidates = self._candidates(s, ttl_now, failures)
            if not candidates:
                continue
            count = self._affordable(s, candidates, now)
            if count:
                chosen = candidates[:count]
                nbytes = sum(r.wire for r in chosen)
                s.limiter.take(nbytes, count, now)
                for r in chosen:
                    r.attempts += 1
                if self._durable:
                    for r in chosen:
                        self._in_flight(r)
                batch = Batch(s.index, s.name, chosen, nbytes, now)
                s.in_flight = batch
                self.calls_in_flight += 1
                batches.append(batch)
                self._turn = (s.index + 1) % n
            for r in reversed(candidates[count:]):
                self._put_back(s, r)
        return batches

    def _candidates(self, s: StreamState, ttl_now: float, failures: list[Failure]) -> list[Record]:
        """The next batch's records: due retries first, then fresh ones, failing the expired."""
        cfg = self.config
        out: list[Record] = []
        size = 0
        while len(out) < cfg.max_batch_records and size < cfg.batch_target_bytes:
            if s.retry and s.retry[0][0] <= ttl_now:
                r = heapq.heappop(s.retry)[2]
            elif s.ready:
                r = s.ready.popleft()
            else:
                break
            if self.expired(r, ttl_now):
                failures.append(self._fail(s, r, Reason.TTL_EXPIRED))
                continue
            out.append(r)
            size += r.wire
        count = take_batch([r.wire for r in out], cfg.max_batch_records, cfg.batch_target_bytes)
        for r in reversed(out[count:]):
            self._put_back(s, r)
        return out[:count]

    @staticmethod
    def _put_back(s: StreamState, r: Record) -> None:
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
        sizes = [r.wire for r in records]
        need = min(sum(sizes), max(sizes[0], self.config.batch_target_bytes // 4))
        wait = limiter.wait_time(need, 1, now)
        if wait > 0.0:
            s.quota_wake = now + max(wait, MIN_QUOTA_WAIT)
            return 0
        count = limiter.grantable(sizes, now)
        if not count:
            s.quota_wake = now + max(limiter.wait_time(sizes[0], 1, now), MIN_QUOTA_WAIT)
        return count

    # -- outcomes -------------------------------------------------------------------------

    def _complete(
        self, batch: Batch, outcome: Outcome, now: float, ttl_now: float,
    ) -> list[Failure]:
        s = self.streams[batch.stream]
        if s.in_flight is not batch:
            return []  # abandoned at close: already failed
        s.in_flight = None
        self.calls_in_flight -= 1
        ledger = self.ledger
        service = self.service
        ledger.call_completed(throttled=outcome.throttled, error=outcome.error, stream=s.name)
        failures: list[Failure] = []
        if outcome.throttled:
            s.limiter.throttled(now)
        if outcome.resent and not (outcome.codes is None and outcome.unknown):
            # The client sent the call more than once itself: any record in it may have
            # been stored by an attempt before the one that answered (an unknown outcome
            # counts them below already).
            ledger.maybe_duplicated(sum(r.events for r in batch.records))
        if outcome.codes is not None:
            for record, code in zip(batch.records, outcome.codes, strict=True):
                if code is None:
                    self._deliver(s, record)
                    continue
                throttled = service.is_throttle(code)
                ledger.record_refused(s.name, code, throttled=throttled)
                if throttled:
                    s.throttled_records += 1
                self._retry(s, record, ttl_now, unknown=service.not_acknowledged(code),
                            failures=failures)
            return failures
        error = outcome.error or "Unknown"
        if outcome.retryable:
            for record in batch.records:
                self._retry(s, record, ttl_now, unknown=outcome.unknown, failures=failures)
            return failures
        failures.extend(self._fail(s, r, error) for r in batch.records)
        return failures

    def _deliver(self, s: StreamState, r: Record) -> None:
        wire = r.wire
        self.ledger.delivered(r.events, r.raw, wire, self.service.billed(wire))
        s.records_sent += 1
        s.bytes_sent += wire
        self._resolve(r, delivered=True)

    def _retry(
        self, s: StreamState, r: Record, ttl_now: float, *, unknown: bool,
        failures: list[Failure],
    ) -> None:
        if unknown:
            self.ledger.maybe_duplicated(r.events)
        if self.expired(r, ttl_now):
            failures.append(self._fail(s, r, Reason.TTL_EXPIRED))
            return
        delay = self._wait(cast(RetryCallState, _Attempt(r.attempts)))
        r.not_before = min(ttl_now + delay, r.born + self.config.record_ttl_seconds)
        heapq.heappush(s.retry, (r.not_before, r.id, r))
        self.ledger.retried()

    def _fail(self, s: StreamState, r: Record, reason: str) -> Failure:
        self.ledger.failed(reason, r.events)
        failure = Failure(s.name, reason, r.plain(), r.events)
        if self._durable and r.sources:
            # Acknowledged only once the failure sink has kept or handed over the lines
            # (settle()); a death before that counts them as possible duplicates.
            self._in_flight(r)
            failure.records.append(r)
            self._resolve(r, delivered=False, settled=False)
        else:
            self._resolve(r, delivered=False)
        return failure

    def _resolve(self, r: Record, *, delivered: bool, settled: bool = True) -> None:
        self.outstanding_records -= 1
        self.outstanding_events -= r.events
        self.outstanding_bytes -= r.wire
        if settled:
            self._let_go(r)
        self.flushes.resolved(r.id, r.events, delivered=delivered)

    def _let_go(self, r: Record) -> None:
        """The record's lines are delivered or kept elsewhere: acknowledge them (durable) and
        let its segments (and the memory it holds apart) be reused."""
        apart = r.apart
        r.data = b""  # let go of the segments' memory before it is reused
        if self._durable:
            for segment, start, end in r.sources:
                kept = segment.file
                if kept is not None:
                    kept.acked(start, end)
        for segment in r.holds:
            segment.open_records -= 1
            if segment.open_records == 0:
                if segment is self.wire:
                    # Back to the pool while nothing is in it: an idle worker holds no
                    # memory producers may need (the next record borrows it again).
                    self.wire = None
                    self.acc.release(segment)
                elif segment.retired:
                    self.acc.release(cast(Segment, segment))
        if apart:
            self.acc.release_oversized(apart)

    def settle(self, records: Sequence[Record]) -> None:
        """Durable: the failure sink kept (spooled) or handed over these failed records'
        lines; acknowledge them now."""
        for r in records:
            self._let_go(r)

    def _in_flight(self, r: Record) -> None:
        for segment, _, end in r.sources:
            self._mark_sent(segment, end)

    @staticmethod
    def _mark_sent(segment: SegmentRef, end: int) -> None:
        kept = segment.file
        if kept is not None:
            kept.in_flight(end)

    # -- close, scheduling, levels --------------------------------------------------------

    def _abandon(self, reason: str) -> list[Failure]:
        """Fail everything not yet delivered, in flight included (it may have landed, if
        its call started)."""
        failures: list[Failure] = []
        for index, data, events, born, sources in self._unframed:
            self.streams[index].ready.append(self._record(data, events, born, sources))
        self._unframed.clear()
        for s in self.streams:
            pending = list(s.ready) + [item[2] for item in sorted(s.retry)]
            batch = s.in_flight
            if batch is not None:
                if batch.started_at is not None:
                    self.ledger.maybe_duplicated(sum(r.events for r in batch.records))
                pending.extend(batch.records)
                self.calls_in_flight -= 1
            s.ready.clear()
            s.retry.clear()
            s.in_flight = None
            failures.extend(self._fail(s, r, reason) for r in pending)
        return failures

    def starve(self) -> None:
        """A compressed record found no room in the bound."""
        self._starved_at = self.acc.freed

    def starved(self) -> bool:
        """No memory was freed since a compressed record found no room."""
        return self._starved_at is not None and self._starved_at == self.acc.freed

    def room_freed(self) -> bool:
        """Compressed records found no room, and memory was freed since (maybe outside a
        tick: the failure sink settling records): lines waiting for it can go now."""
        return self._starved_at is not None and self._starved_at != self.acc.freed

    def _next_wake(self, now: float, ttl_now: float, arrived: int) -> float | None:
        linger = self.config.linger_seconds * (1 - DEADLINE_MARGIN)
        capped = self.calls_in_flight >= self.config.concurrency
        starved = self.starved()
        times: list[float] = []
        if self.flushes.held is not None and not starved:
            times.append(now + TICK_SECONDS)
        for s in self.streams:
            for span in s.spans if not starved else ():
                if span.first < len(span.ends):
                    times.append(span.stamps[0][1] + linger + self.frozen)
            if s.in_flight is None and not capped:
                if s.quota_wake is not None:
                    times.append(s.quota_wake)
                elif s.retry:
                    times.append(s.retry[0][0] + self.frozen)
                elif s.ready:
                    times.append(now)
        if arrived:
            times.append(now + TICK_SECONDS)
        return min(times) if times else None

    @property
    def idle(self) -> bool:
        return self.outstanding_records == 0 and not self._unframed and not any(
            s.staged_events for s in self.streams
        )

    def snapshot(self) -> BufferStats:
        """The counters and levels as a frozen BufferStats."""
        unseen = self.unseen_events()
        streams = tuple(
            StreamStats(
                name=s.name,
                allowed_share=s.limiter.share,
                allowed_bytes_per_second=s.limiter.bytes_per_second,
                backlog_bytes=s.backlog_bytes,
                records_sent=s.records_sent,
                bytes_sent=s.bytes_sent,
                throttled_records=s.throttled_records,
            )
            for s in self.streams
        )
        return self.ledger.snapshot(
            unseen=unseen,
            buffered_events=sum(s.staged_events for s in self.streams)
            + self.outstanding_events + self._unframed_events() + unseen,
            buffered_bytes=sum(s.staged_bytes for s in self.streams) + self.outstanding_bytes
            + sum(len(item[1]) for item in self._unframed),
            memory_bytes=self.acc.held_bytes(),
            streams=streams,
        )

    def pending_events(self) -> int:
        """Events accepted and without an outcome: in records, staged, or not yet seen."""
        return (self.outstanding_events + sum(s.staged_events for s in self.streams)
                + self._unframed_events() + self.unseen_events())

    def unseen_events(self) -> int:
        """Events written since the last tick (for stats between ticks)."""
        count = 0
        for s in self.streams:
            scanned = {id(sp.segment): sp.scanned for sp in s.spans if not sp.sealed}
            for entry in list(self.acc.rings[s.index]):
                if type(entry) is Oversized:
                    count += not entry.taken
                elif type(entry) is Segment:
                    pos = scanned.get(id(entry), 0)
                    end = entry.tell()
                    find = entry.find
                    while pos < end:
                        pos = find(b"\n", pos, end) + 1
                        count += 1
        return count

