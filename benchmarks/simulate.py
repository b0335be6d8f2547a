"""Drive the clock-free Pipeline with simulated time, as the buffer's worker would.

No threads, no sleeps: lines are staged the way put() routes keyless events (sticky, rotated
to the roomiest stream after a record's worth), the worker's cadence is a tick of
linger/8, and every batch is acknowledged after ``rtt`` simulated seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from firehose_buffer import BufferConfig
from firehose_buffer.pipeline import Batch, Pipeline
from firehose_buffer.routing import roomiest
from firehose_buffer.sender import Outcome


@dataclass(slots=True)
class SimResult:
    events_put: int
    events_delivered: int
    raw_bytes: int
    bytes_sent: int
    billed_bytes: int
    records_sent: int
    requests_sent: int
    simulated_seconds: float


def simulate(
    config: BufferConfig,
    lines: Sequence[bytes],
    rate: float,
    *,
    rtt: float = 0.02,
) -> SimResult:
    """Offer ``lines`` at ``rate`` lines per simulated second, then drain everything."""
    now = 0.0
    pipeline = Pipeline(config, now)
    tick = config.linger_seconds / 8
    streams = len(config.streams)
    shards: list[list[bytes]] = [[] for _ in range(streams)]
    shard_bytes = [0] * streams
    shard_first = [0.0] * streams
    sticky = 0
    sticky_bytes = 0
    sticky_events = 0
    in_flight: list[tuple[float, Batch]] = []
    i = 0
    n = len(lines)
    raw = 0
    while True:
        now += tick
        due = min(n, int(now * rate))
        while i < due:
            line = lines[i]
            size = len(line)
            if not shards[sticky]:
                shard_first[sticky] = i / rate
            shards[sticky].append(line)
            shard_bytes[sticky] += size
            raw += size
            sticky_bytes += size
            sticky_events += 1
            if (sticky_bytes >= config.record_target_bytes
                    or sticky_events >= config.max_events_per_record):
                headroom = [
                    s.limiter.affordable_bytes(now) - s.backlog_bytes - shard_bytes[k]
                    for k, s in enumerate(pipeline.streams)
                ]
                sticky = roomiest(sticky, headroom)
                sticky_bytes = sticky_events = 0
            i += 1
        still: list[tuple[float, Batch]] = []
        for done_at, batch in in_flight:
            if done_at <= now:
                pipeline.complete(batch, Outcome(codes=[None] * len(batch.records)), now)
            else:
                still.append((done_at, batch))
        in_flight = still
        for k in range(streams):
            if shards[k]:
                pipeline.stage(k, shards[k], shard_bytes[k], shard_first[k])
                shards[k] = []
                shard_bytes[k] = 0
        draining = i >= n
        pipeline.settle_keyless(sticky)  # as the buffer's worker does for keyless events
        pipeline.pack(now, everything=draining)
        batches, _ = pipeline.dispatch(now)
        in_flight.extend((now + rtt, b) for b in batches)
        if draining and pipeline.idle and not in_flight:
            break
    c = pipeline.counters
    return SimResult(
        events_put=n,
        events_delivered=c.events_delivered,
        raw_bytes=raw,
        bytes_sent=c.bytes_sent,
        billed_bytes=c.billed_bytes,
        records_sent=c.records_sent,
        requests_sent=c.requests_sent,
        simulated_seconds=now,
    )
