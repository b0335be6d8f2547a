"""Micro-benchmarks for pytest-benchmark (not part of the test suite; testpaths is tests/):

    python -m pytest benchmarks/ --benchmark-only

put() of 0.5 and 4 KB events next to bare orjson.dumps of the same events, the packer, and
the scheduler's tick.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import cycle
from typing import Any

import orjson
import pytest

from benchmarks.events import Event, fixed_size, mixed
from benchmarks.sinks import UNLIMITED, null_buffer
from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer._core.packing import cut_records
from firehose_buffer._core.scheduler import Scheduler
from firehose_buffer.transport import Outcome

SIZES = [512, 4096]


@pytest.fixture(scope="module")
def buffer() -> Iterator[FirehoseBuffer]:
    buf, _ = null_buffer()
    with buf:
        yield buf


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s}B")
def events(request: pytest.FixtureRequest) -> list[Event]:
    size: int = request.param
    return fixed_size(2000, size, seed=size)


def test_orjson_dumps(benchmark: Any, events: list[Event]) -> None:
    nxt = cycle(events).__next__
    dumps = orjson.dumps
    benchmark(lambda: dumps(nxt()))


def test_put(benchmark: Any, buffer: FirehoseBuffer, events: list[Event]) -> None:
    nxt = cycle(events).__next__
    put = buffer.put
    benchmark(lambda: put(nxt()))
    assert buffer.flush(30)


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    pool = [orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in mixed(2000, seed=4)]
    out: list[bytes] = []
    while sum(map(len, out)) < 1_024_000:
        out.append(pool[len(out) % len(pool)])
    return out


def test_cut_records_and_join(benchmark: Any, lines: list[bytes]) -> None:
    """One shard's worth (1 MB) of mixed 0.5-4 KB lines cut into records."""

    def cut() -> int:
        ends = cut_records([len(x) for x in lines], len(lines), 1_024_000, 500)
        begin = 0
        for end in ends:
            b"".join(lines[begin:end])
            begin = end
        return len(ends)

    assert benchmark(cut) >= 1


def test_scheduler_tick(benchmark: Any, lines: list[bytes]) -> None:
    """Append 1 MB to a stream as put() does, then the ticks that cut, dispatch and take the
    acknowledgements of it, with simulated time (memory reused from round to round)."""
    config = BufferConfig(streams=("p",), quota=UNLIMITED)
    sched = Scheduler.for_config(config, 0.0)
    acc = sched.acc
    clock = [0.0]

    def once() -> int:
        before = sched.ledger.events_delivered
        for line in lines:
            acc.append(0, line)
        clock[0] += 2.0
        tick = sched.tick(clock[0], everything=True)
        while tick.batches:
            tick = sched.tick(clock[0], [
                (b, Outcome(codes=[None] * len(b.records))) for b in tick.batches
            ], everything=True)
        return sched.ledger.events_delivered - before

    assert benchmark(once) == len(lines)
