"""Drive the real Scheduler with simulated time, as the buffer's worker would.

No threads, no sleeps: lines go in as put() writes them (``Accumulator.append``, keyless, so
the real Router's sticky stream, moved by the scheduler), the worker ticks when the last
tick asked to be woken, when a call completes and, after a tick that said producers were
quiet (``Tick.sleep``, the worker's rule), at the next put; every batch is acknowledged after
``rtt`` simulated seconds. With ``config.compression`` the runs a tick hands out go through
the worker's own ``compress_runs`` (real compression, so the CPU is real too) and the worker
ticks again at once, as it does.
"""

from __future__ import annotations

import contextlib
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from firehose_buffer import BufferConfig
from firehose_buffer._core.records import Batch
from firehose_buffer._core.runs import compress_runs, compressor_for
from firehose_buffer._core.scheduler import Scheduler
from firehose_buffer.transport import Outcome


@dataclass(slots=True)
class SimResult:
    events_put: int
    events_delivered: int
    raw_bytes: int
    #: The lines in acknowledged records; ``bytes_sent`` is what went on the wire (smaller
    #: when records are compressed).
    raw_bytes_sent: int
    bytes_sent: int
    billed_bytes: int
    records_sent: int
    requests_sent: int
    simulated_seconds: float
    ticks: int


def _clock_at(now: float) -> Callable[[], float]:
    return lambda: now


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
    sleeping = False
    compressor = compressor_for(config) if config.compression else None
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
            if sleeping:
                sleeping = False
                wake = now if wake is None else min(wake, now)  # put() wakes the worker
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
            if tick.runs:
                assert compressor is not None
                failed = compress_runs(scheduler, compressor, tick.runs, _clock_at(now),
                                       contextlib.nullcontext())
                if failed:
                    raise RuntimeError(f"compressing failed {len(failed)} records")
                wake = now  # the records just made go at the next tick
                sleeping = False
                continue
            wake = tick.wake_at
            sleeping = tick.sleep
            if closing and scheduler.idle and not sent and not done:
                break
    c = scheduler.ledger
    return SimResult(
        events_put=n,
        events_delivered=c.events_delivered,
        raw_bytes=raw,
        raw_bytes_sent=c.raw_bytes_sent,
        bytes_sent=c.bytes_sent,
        billed_bytes=c.billed_bytes,
        records_sent=c.records_sent,
        requests_sent=c.requests_sent,
        simulated_seconds=now,
        ticks=ticks,
    )
