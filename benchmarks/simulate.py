"""Drive the real Scheduler with simulated time, as the buffer's worker would.

No threads, no sleeps: lines go in as put() writes them (``Accumulator.append``, keyless, so
the real Router's sticky stream, moved by the scheduler), the worker ticks when the last
tick asked to be woken, when a call completes and, after a tick that asked for nothing, at
the next put; every batch is acknowledged after ``rtt`` simulated seconds.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from firehose_buffer import BufferConfig
from firehose_buffer._core.scheduler import Batch, Scheduler
from firehose_buffer.transport import Outcome


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
    ticks: int


def simulate(
    config: BufferConfig,
    lines: Sequence[bytes],
    rate: float,
    *,
    rtt: float = 0.02,
) -> SimResult:
    """Offer ``lines`` at ``rate`` lines per simulated second, then drain everything."""
    scheduler = Scheduler.for_config(config, 0.0)
    acc = scheduler.acc
    router = scheduler.router
    sent: list[tuple[float, int, Batch]] = []
    done: list[Batch] = []
    wake: float | None = 0.0
    now = 0.0
    ticks = spins = 0
    closing = False
    i = 0
    n = len(lines)
    raw = 0
    while True:
        put_at = i / rate if i < n else math.inf
        done_at = sent[0][0] if sent else math.inf
        tick_at = wake if wake is not None else math.inf
        if i >= n and not closing:
            closing = True
            tick_at = now
        t = min(put_at, done_at, tick_at)
        if t == math.inf:
            break
        now = max(now, t)
        if t == put_at:
            line = lines[i]
            acc.append(router.sticky, line)
            raw += len(line)
            i += 1
            if wake is None:
                wake = now  # put() wakes a sleeping worker
        elif t == done_at:
            done.append(heapq.heappop(sent)[2])
            wake = now  # the sender wakes the worker
        else:
            outcomes = [(b, Outcome(codes=[None] * len(b.records))) for b in done]
            done = []
            tick = scheduler.tick(now, outcomes, everything=closing)
            ticks += 1
            spins = spins + 1 if tick.wake_at is not None and tick.wake_at <= now and (
                not tick.batches) else 0
            if spins > 1000:
                raise RuntimeError(f"the scheduler keeps asking to be woken at {now} for nothing")
            for batch in tick.batches:
                heapq.heappush(sent, (now + rtt, id(batch), batch))
            wake = tick.wake_at
            if closing and scheduler.idle and not sent and not done:
                break
    c = scheduler.ledger
    return SimResult(
        events_put=n,
        events_delivered=c.events_delivered,
        raw_bytes=raw,
        bytes_sent=c.bytes_sent,
        billed_bytes=c.billed_bytes,
        records_sent=c.records_sent,
        requests_sent=c.requests_sent,
        simulated_seconds=now,
        ticks=ticks,
    )
