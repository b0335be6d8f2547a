"""Figure 7: billed bytes over raw bytes, default settings, simulated time through Scheduler.tick.

Mixed 0.5-4 KB events for one simulated minute at 500 and at 4,000 events/s over 16
streams at the standard quota (4,000 events/s of ~2.3 KB is ~9 MB/s, more than one
stream's 1 MiB/s). The reference is what one event per record would be billed.
"""

from __future__ import annotations

import time

import orjson

from firehose_buffer import BufferConfig, billed_bytes

from .events import mixed
from .report import Row
from .simulate import simulate

GOAL = 1.005
STREAMS = 16


def run(quick: bool) -> list[Row]:
    rows = []
    for rate in (500, 4000):
        count = rate * 60
        pool = [orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in mixed(3000, seed=rate)]
        lines = [pool[k % len(pool)] for k in range(count)]
        config = BufferConfig(streams=tuple(f"cost-{k}" for k in range(STREAMS)))
        start = time.perf_counter()
        result = simulate(config, lines, rate)
        elapsed = time.perf_counter() - start
        ratio = result.billed_bytes / result.bytes_sent
        # One event per record, what the library replaces: the same lines, each billed alone.
        naive = sum(billed_bytes(len(line) - 1) for line in lines) / sum(
            len(line) - 1 for line in lines
        )
        rows.append(Row(
            figure=f"7. billed/raw, mixed 0.5-4 KB, {rate} ev/s, 60 s",
            measured=ratio,
            unit="",
            reference=naive,
            reference_label="1 event/record",
            goal=f"<= {GOAL}",
            met=ratio <= GOAL and result.events_delivered == count,
            notes="simulated time through Scheduler.tick (default config, 16 streams)",
            details={
                "events": count,
                "events_delivered": result.events_delivered,
                "records": result.records_sent,
                "requests": result.requests_sent,
                "mean_record_bytes": result.bytes_sent / max(1, result.records_sent),
                "simulated_seconds": result.simulated_seconds,
                "wall_seconds": elapsed,
                "ticks": result.ticks,
            },
        ))
    return rows
