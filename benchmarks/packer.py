"""Figure 3: the packer alone, in MB/s of buffered lines turned into records and batches.

Two stages: ``packing.cut_records`` plus ``b"".join`` (the pure cut), and the worker's whole
share, ``Scheduler.tick`` (find the new lines, cut records, dispatch, take outcomes) driven
with simulated time and no quota; only the ticks are timed, the appends are put()'s cost.
The reference is ``b"".join`` of the same lines alone (the copy every design pays). The
goal is ours: packing the 64 MB/s of figure 5 should cost at most a tenth of a core, so at
least 640 MB/s.
"""

from __future__ import annotations

import time

import orjson

from firehose_buffer import BufferConfig
from firehose_buffer._core.packing import cut_records
from firehose_buffer._core.routing import Router
from firehose_buffer._core.scheduler import Batch, Scheduler
from firehose_buffer.transport import Outcome

from .events import fixed_size, mixed
from .report import Row
from .sinks import UNLIMITED

GOAL_MB_S = 640.0
#: What producers append to one stream between two ticks here.
CHUNK_BYTES = 1_024_000


def _chunks(lines: list[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = [[]]
    size = 0
    for line in lines:
        out[-1].append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            out.append([])
            size = 0
    return [c for c in out if c]


def _cut_and_join(chunks: list[list[bytes]], config: BufferConfig) -> float:
    start = time.perf_counter()
    for lines in chunks:
        ends = cut_records([len(line) for line in lines], len(lines),
                           config.record_target_bytes, config.max_events_per_record)
        begin = 0
        for end in ends:
            b"".join(lines[begin:end])
            begin = end
    return time.perf_counter() - start


def _join_only(chunks: list[list[bytes]]) -> float:
    start = time.perf_counter()
    for lines in chunks:
        b"".join(lines)
    return time.perf_counter() - start


def _ok(batches: list[Batch]) -> list[tuple[Batch, Outcome]]:
    return [(b, Outcome(codes=[None] * len(b.records))) for b in batches]


def _scheduler(chunks: list[list[bytes]], config: BufferConfig) -> float:
    """Seconds spent in Scheduler.tick while every chunk is appended to a stream in turn
    and each tick's batches are acknowledged at the next."""
    streams = len(config.streams)
    sched = Scheduler.for_config(config, 0.0, router=Router(config.streams, partition_key="key"))
    acc = sched.acc
    append = acc.append
    clock = time.perf_counter
    now = 0.0
    elapsed = 0.0
    batches: list[Batch] = []
    for k, lines in enumerate(chunks):
        stream = k % streams
        for line in lines:
            append(stream, line)
        now += 0.01
        start = clock()
        batches = sched.tick(now, _ok(batches)).batches
        elapsed += clock() - start
    start = clock()
    tick = sched.tick(now, _ok(batches), everything=True)
    while tick.batches or not sched.idle:
        now += 0.01
        tick = sched.tick(now, _ok(tick.batches), everything=True)
    elapsed += clock() - start
    if sched.ledger.events_delivered != sum(map(len, chunks)):
        raise RuntimeError("the scheduler lost events in the packer benchmark")
    return elapsed


def run(quick: bool) -> list[Row]:
    total = (32 if quick else 256) * 1024 * 1024
    rows = []
    config = BufferConfig(streams=tuple(f"pack-{k}" for k in range(16)), quota=UNLIMITED)
    for label, pool in (("0.5 KB", fixed_size(2000, 512, seed=3)),
                        ("mixed 0.5-4 KB", mixed(2000, seed=4))):
        encoded = [orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in pool]
        per_pool = sum(map(len, encoded))
        lines = encoded * max(1, total // per_pool)
        nbytes = sum(map(len, lines))
        chunks = _chunks(lines)
        repeats = 1 if quick else 3
        join_s = min(_join_only(chunks) for _ in range(repeats))
        cut_s = min(_cut_and_join(chunks, config) for _ in range(repeats))
        tick_s = min(_scheduler(chunks, config) for _ in range(repeats))
        mb = nbytes / 1e6
        for name, seconds in (("cut_records+join", cut_s), ("Scheduler.tick", tick_s)):
            rate = mb / seconds
            rows.append(Row(
                figure=f"3. {name}, {label} lines",
                measured=rate,
                unit="MB/s",
                reference=mb / join_s,
                reference_label="b''.join alone",
                goal=f">= {GOAL_MB_S:.0f} MB/s",
                met=rate >= GOAL_MB_S,
                details={"bytes": nbytes, "lines": len(lines), "seconds": seconds,
                         "ns_per_line": seconds / len(lines) * 1e9},
            ))
    return rows
