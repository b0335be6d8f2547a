"""Figure 3: the packer alone, in MB/s of buffered lines turned into records and batches.

Two stages: ``packing.cut_records`` plus ``b"".join`` (the pure cut), and the whole
``Pipeline`` (stage, pack, dispatch, complete) driven with simulated time and no quota, as
the worker runs it. The reference is ``b"".join`` of the same lines alone (the copy every
design pays). The goal is ours: packing the 64 MB/s of figure 5 should cost at most a
tenth of a core, so at least 640 MB/s.
"""

from __future__ import annotations

import time

import orjson

from firehose_buffer import BufferConfig
from firehose_buffer.packing import cut_records
from firehose_buffer.pipeline import Pipeline
from firehose_buffer.sender import Outcome

from .events import fixed_size, mixed
from .report import Row
from .sinks import UNLIMITED

GOAL_MB_S = 640.0
#: What the worker takes from a shard at once when it is woken by a full record's worth.
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


def _pipeline(chunks: list[list[bytes]], config: BufferConfig) -> float:
    now = 0.0
    pipeline = Pipeline(config, now)
    streams = len(config.streams)
    start = time.perf_counter()
    for k, lines in enumerate(chunks):
        now += 0.01
        pipeline.stage(k % streams, lines, sum(map(len, lines)), now)
        pipeline.pack(now)
        batches, _ = pipeline.dispatch(now)
        for batch in batches:
            pipeline.complete(batch, Outcome(codes=[None] * len(batch.records)), now)
    pipeline.pack(now, everything=True)
    while not pipeline.idle:
        now += 0.01
        batches, _ = pipeline.dispatch(now)
        for batch in batches:
            pipeline.complete(batch, Outcome(codes=[None] * len(batch.records)), now)
    elapsed = time.perf_counter() - start
    if pipeline.counters.events_delivered != sum(map(len, chunks)):
        raise RuntimeError("the pipeline lost events in the packer benchmark")
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
        pipe_s = min(_pipeline(chunks, config) for _ in range(repeats))
        mb = nbytes / 1e6
        for name, seconds in (("cut_records+join", cut_s), ("Pipeline pack+dispatch", pipe_s)):
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
