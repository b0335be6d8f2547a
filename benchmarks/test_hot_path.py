"""Micro-benchmarks for pytest-benchmark (not part of the test suite; testpaths is tests/):

    python -m pytest benchmarks/ --benchmark-only

put() of 0.5 and 4 KB events next to bare orjson.dumps of the same events, and the packer.
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
from firehose_buffer.packing import cut_records
from firehose_buffer.pipeline import Pipeline
from firehose_buffer.sender import Outcome

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


def test_pipeline_pack_dispatch(benchmark: Any, lines: list[bytes]) -> None:
    """Stage 1 MB, pack, dispatch and acknowledge it, with simulated time."""
    config = BufferConfig(streams=("p",), quota=UNLIMITED)
    nbytes = sum(map(len, lines))

    def once() -> int:
        pipeline = Pipeline(config, 0.0)
        pipeline.stage(0, list(lines), nbytes, 0.0)
        pipeline.pack(2.0, everything=True)
        batches, _ = pipeline.dispatch(2.0)
        for batch in batches:
            pipeline.complete(batch, Outcome(codes=[None] * len(batch.records)), 2.0)
        return pipeline.counters.events_delivered

    assert benchmark(once) == len(lines)
