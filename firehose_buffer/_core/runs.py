"""Compressed records: the lines the scheduler hands out to be compressed, and what comes back.

A compressed record's size is only known once compressed, so with ``compression`` set the
scheduler does not cut records itself: a tick hands the worker :class:`Run`\\s (a stream's
staged lines, which may span several segments), the worker compresses them outside the lock
(zlib and zstd release the GIL; producers keep writing), and the next call into the scheduler
turns each result into records and consumes exactly the lines they hold. Lines a result
leaves (a record would not be full, and nothing obliges them to leave yet) stay staged.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._storage.segments import Full, Segment
from ..config import BufferConfig
from .ledger import Reason
from .records import Failure, Source
from .streams import DEADLINE_MARGIN, FORCED_CUT_SLACK, Span, StreamState

if TYPE_CHECKING:
    from .compression import Compressed, Compressor
    from .scheduler import Scheduler

#: A stream is handed out for compressing once its staged lines are estimated to compress to
#: this many records: enough that one full record comes out however the estimate errs.
FULL_RUN_RECORDS = 1.25
#: A run holds at most this many records' worth of lines (by the estimate): one call of the
#: compressor, never more than a PutRecordBatch or two.
MAX_RUN_RECORDS = 4
#: The compression ratio assumed before any record was compressed (raw / wire).
FIRST_RATIO = 2.0


@dataclass(slots=True, eq=False)
class Run:
    """A stream's staged lines, in order, as the compressor reads them."""

    stream: int
    #: Slices of segments, read as one run of bytes.
    views: list[memoryview]
    #: The same slices as (segment, start, end), and where each begins in the run.
    pieces: list[Source]
    offsets: list[int]
    #: Offsets in the run just past each line.
    ends: list[int]
    #: Lines that must leave now (linger, a flush, closing), counted from the first; the
    #: rest only in full records. May exceed the run's lines: the rest follow in further
    #: runs of the same tick.
    must: int
    #: (index of a line in the run, when the worker first saw it), for each group of lines
    #: seen together: a record is as old as its first line.
    stamps: list[tuple[int, float]]

    def sources(self, first: int, last: int) -> tuple[Source, ...]:
        """Where lines ``first .. last`` (inclusive) live: one range per segment they span."""
        start = self.ends[first - 1] if first else 0
        end = self.ends[last]
        out: list[Source] = []
        i = bisect_right(self.offsets, start) - 1
        while start < end:
            segment, seg_start, seg_end = self.pieces[i]
            piece_start = self.offsets[i]
            a = seg_start + (start - piece_start)
            b = min(seg_end, seg_start + (end - piece_start))
            out.append((segment, a, b))
            start += b - a
            i += 1
        return tuple(out)

    def born(self, line: int) -> float:
        """When line ``line`` was first seen."""
        k = bisect_right(self.stamps, (line, float("inf"))) - 1
        return self.stamps[max(0, k)][1]


# -- the scheduler's part for compressed records: which streams' lines go out as runs, and
# what comes back (all under the engine's lock, except compress_runs, which takes it around
# each result).


def staged_wire(sched: Scheduler, s: StreamState) -> float:
    """What the staged lines would weigh on the wire (compressed: by the ratio so far)."""
    return s.staged_bytes / sched.ratio if sched.compressing else s.staged_bytes

def pack_runs(sched: Scheduler, ttl_now: float, *, everything: bool) -> list[Run]:
    """With compression: the streams whose staged lines must leave, or would fill a
    record, handed out as runs (nothing is consumed until :func:`compressed`). None while
    the last record made found no room in the bound and no memory was freed since."""
    if sched.starved():
        return []
    cfg = sched.config
    target = cfg.record_target_bytes
    due_after = cfg.linger_seconds * (1 - DEADLINE_MARGIN)
    cutoff = ttl_now - cfg.linger_seconds * (1 - FORCED_CUT_SLACK)
    runs: list[Run] = []
    for s in sched.streams:
        if not s.staged_events:
            continue
        full = staged_wire(sched, s) >= target * FULL_RUN_RECORDS and (
            s.staged_bytes > s.run_floor)
        spans = [sp for sp in s.spans if sp.first < len(sp.ends)]
        # Any span's: a merged remainder keeps its age in a later segment.
        due = min(sp.stamps[0][1] for sp in spans) + due_after <= ttl_now
        if not (everything or full or due):
            continue
        run = _run(s, spans, target * MAX_RUN_RECORDS * sched.ratio)
        if everything:
            run.must = s.staged_events
        elif due:
            run.must = _due_lines(spans, cutoff)
        runs.append(run)
    return runs

def _due_lines(spans: list[Span], cutoff: float) -> int:
    """How many staged lines must leave for every line first seen at or before
    ``cutoff`` to leave (lines leave in order, so the earlier ones go too)."""
    count = 0
    must = 0
    for span in spans:
        stamps = list(span.stamps)
        for i, (_, t) in enumerate(stamps):
            if t <= cutoff:
                last = stamps[i + 1][0] if i + 1 < len(stamps) else len(span.ends)
                must = count + max(0, last - span.first)
        count += len(span.ends) - span.first
    return must

def _run(s: StreamState, spans: list[Span], max_raw: float) -> Run:
    """The stream's staged lines, oldest first, up to about ``max_raw`` bytes."""
    views: list[memoryview] = []
    pieces: list[Source] = []
    offsets: list[int] = []
    ends: list[int] = []
    stamps: list[tuple[int, float]] = []
    length = 0
    for span in spans:
        lines = span.ends[span.first:]
        partial = ends and length + lines[-1] - span.base > max_raw
        if partial:
            cut = bisect_right(lines, span.base + int(max_raw) - length)
            if not cut:
                break
            lines = lines[:cut]
        start, end = span.base, lines[-1]
        first = len(ends)
        for k, t in span.stamps:
            stamps.append((max(0, k - span.first) + first, t))
        views.append(span.segment.view[start:end])
        pieces.append((span.segment, start, end))
        offsets.append(length)
        ends.extend(e - start + length for e in lines)
        length += end - start
        if partial or length >= max_raw:
            break  # lines leave in order: none after those left behind
    stamps = [(k, t) for k, t in stamps if k < len(ends)]
    return Run(s.index, views, pieces, offsets, ends, 0, stamps)

def compressed(sched: Scheduler, run: Run, result: Compressed, now: float,
               failures: list[Failure]) -> int:
    """A run came back compressed: its records become ready, the lines they hold are
    consumed (and a line no record of this codec can hold fails, into ``failures``); the
    rest stay staged. Returns how many lines were consumed. Call :func:`runs_done` once
    every run of a tick is back."""
    s = sched.streams[run.stream]
    line = 0
    for frame, count in zip(result.records, result.lines, strict=True):
        stored = _store(sched, frame)
        if stored is None:
            # No room in the bound for it: the lines stay staged until memory is freed.
            sched.starve()
            _consume(sched, s, line)
            return line
        data, wire = stored
        sources = run.sources(line, line + count - 1)
        raw = run.ends[line + count - 1] - (run.ends[line - 1] if line else 0)
        s.ready.append(sched._record(data, count, run.born(line), sources, raw=raw,
                                    wire=wire))
        line += count
    if not line and not result.oversize:
        # Nothing full after all (the estimate erred): wait for more lines, or linger,
        # before handing this stream out again.
        s.run_floor = s.staged_bytes
    if result.oversize:
        # Incompressible and within a few hundred bytes of the record cap: no frame of
        # this codec holds it. It is failed; the lines after it go on.
        record = sched._record(b"", 1, run.born(line), run.sources(line, line))
        failures.append(sched._fail(s, record, Reason.TOO_LARGE))
        line += 1
    _consume(sched, s, line)
    return line

def run_for(sched: Scheduler, stream: int, must: int) -> Run:
    """The next run of a stream whose first ``must`` lines must leave now."""
    s = sched.streams[stream]
    spans = [sp for sp in s.spans if sp.first < len(sp.ends)]
    run = _run(s, spans, sched.config.record_target_bytes * MAX_RUN_RECORDS * sched.ratio)
    run.must = must
    return run

def runs_done(sched: Scheduler, *, complete: bool = True) -> None:
    """Every run of the last tick is back (or dropped): release a held flush mark, unless
    some of the lines it covers are still staged (no room for their records, or the
    compressor failed: ``complete`` False); later ticks hand them out again."""
    if sched.flushes.held is not None and complete and not sched.lines_waiting():
        sched.flushes.release(sched._next_id - 1)

def _store(sched: Scheduler, frame: memoryview) -> tuple[memoryview | bytes,
                                                         Segment | None] | None:
    """A compressed record's bytes, copied out of the compressor's buffer into the wire
    segment all streams share (memory reused from record to record, inside the bound), or
    into bytes of their own counted against the bound; None when the bound has no room."""
    size = len(frame)
    seg = sched.wire
    if seg is None or len(seg) - seg.tell() < size:
        if seg is not None:
            seg.retired = True
            sched.wire = None
            if seg.open_records == 0:
                sched.acc.release(seg)
        seg = None
        if size <= sched.acc.segment_bytes and not sched._durable:
            # Durable segments hold lines for recovery; compressed bytes are not lines
            # (and are made again from the lines after a death): kept apart instead.
            with suppress(Full):
                seg = sched.wire = sched.acc.borrow()
        if seg is None:
            # Past the bound only when nothing outstanding could ever free memory.
            if not sched.acc.hold_apart(size, anyway=not sched.outstanding_records):
                return None
            return bytes(frame), None
    start = seg.tell()
    seg.write(frame)
    return seg.view[start:start + size], seg

def _consume(sched: Scheduler, s: StreamState, lines: int) -> None:
    """The first ``lines`` staged lines of a stream are in records (or failed)."""
    for span in s.spans:
        if not lines:
            break
        pending = len(span.ends) - span.first
        if not pending:
            continue
        take = min(lines, pending)
        first = span.first + take
        end = span.ends[first - 1]
        s.staged_events -= take
        s.staged_bytes -= end - span.base
        span.first = first
        span.base = end
        stamps = span.stamps
        while len(stamps) > 1 and stamps[1][0] <= first:
            stamps.popleft()
        lines -= take
    sched.retire_done(s)


def compressor_for(config: BufferConfig) -> Compressor:
    """The compressor a worker keeps for ``config.compression`` (one per thread)."""
    from .compression import Compressor  # noqa: PLC0415  (only with compression)

    assert config.compression is not None
    return Compressor(config.compression, config.compression_level)


def compress_runs(
    scheduler: Scheduler, compressor: Compressor, runs: Sequence[Run],
    clock: Callable[[], float], lock: AbstractContextManager[Any],
) -> list[Failure]:
    """What the worker does with a tick's runs: compress each outside ``lock`` (zlib and
    zstd release the GIL, so producers keep writing) and hand the result back under it at
    once (the compressor's output is reused by its next call). The simulations call it too,
    with no lock."""
    config = scheduler.config
    target = config.record_target_bytes
    failures: list[Failure] = []
    queue = list(runs)
    complete = False
    try:
        while queue:
            run = queue.pop(0)
            try:
                result = compressor.compress(
                    run.views, run.ends, target=target, limit=config.max_record_bytes,
                    must=min(run.must, len(run.ends)), max_bytes=MAX_RUN_RECORDS * target,
                    max_records=config.max_batch_records)
            finally:
                for view in run.views:
                    view.release()
            with lock:
                # One estimate of the ratio, the compressor's, decides both when a stream
                # would fill a record and when the compressor agrees it does.
                scheduler.ratio = compressor.ratio
                done = compressed(scheduler, run, result, clock(), failures)
                if scheduler.starved():
                    break  # every run needs room the bound does not have now
                if 0 < done < run.must:
                    # One call stops at a few records' worth; lines that must leave now
                    # (a flush, linger, closing) all leave before this tick is over.
                    queue.insert(0, run_for(scheduler, run.stream, run.must - done))
        complete = True
    finally:
        with lock:
            runs_done(scheduler, complete=complete)
    return failures
