"""Durable + compressed: a long line admitted without the reserve takes memory past the bound.

``Accumulator.slow_append`` now admits a line longer than a segment with ``_make_room(size)``
(no reserve) on the ground that "compressed, its frame takes its place". Durable, it does
not: the line stays in its file of its own (recovery reads it) and its frame needs room of
its own (``Scheduler._apart`` with ``sources``). When the line fills the bound beside lines
another stream has staged (not yet records: nothing outstanding), ``hold_apart(frame,
anyway=not outstanding_records)`` holds the frame past the bound. Before, the reserve kept
room for it (the line was refused instead). Without durability, the frame replaces the line
and the bound holds.
"""

from __future__ import annotations

import random
import string
import time
from pathlib import Path
from typing import Literal

import pytest

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer
from firehose_buffer.emulator import FaultRates, LocalFirehose

pytestmark = pytest.mark.slow

STREAMS = ("dl-0", "dl-1")
BOUND = 64 * 1024


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "memory"])
@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_a_long_line_beside_staged_lines_keeps_memory_within_the_bound(
    codec: Literal["zstd", "gzip"], durable: bool, tmp_path: Path,
) -> None:
    """Two keyed streams, max_buffer_bytes=65,536, linger 1 s, every call answered after 1 s
    (so records stay outstanding while memory is sampled). Stream 0 takes a small event (its
    segment is held, the line staged); stream 1 then takes one event of base64-like random
    text exactly as long as the room left (57 KB: it compresses to ~43 KB). While both are
    delivered, ``stats().memory_bytes`` must stay within max_buffer_bytes (durable, put() may
    refuse the line instead, as before the change). Durable, it reaches ~108 KB (1.66x the
    bound): the 57 KB line in its file plus its 43 KB frame held apart past the bound."""
    rng = random.Random(1)
    with LocalFirehose(data_dir=tmp_path / "out", seed=2,
                       fault_rates=FaultRates(latency=1.0, latency_seconds=1.0)) as fh:
        for name in STREAMS:
            fh.create_stream(name)
        buffer = FirehoseBuffer(BufferConfig(
            streams=STREAMS, endpoint_url=fh.endpoint_url, region="us-east-1",
            router=lambda event: event["s"], compression=codec, durable=durable,
            spool_dir=str(tmp_path / "spool"), max_buffer_bytes=BOUND,
            max_record_bytes=BOUND, on_full="raise", linger_seconds=1.0,
        ))
        try:
            assert buffer.put({"s": 0, "n": 0})
            room = BOUND - buffer.stats().memory_bytes
            pad = room - len(b'{"s":1,"p":""}\n')
            text = "".join(rng.choice(string.ascii_letters + string.digits + "+/")
                           for _ in range(pad))
            try:
                taken = buffer.put({"s": 1, "p": text})
            except BufferFullError:
                # Durable, refusing the line is a fair answer (its frame needs room too).
                if not durable:
                    raise
                taken = False
            peak = 0
            deadline = time.monotonic() + 6.0
            stats = buffer.stats()
            while stats.events_delivered < 1 + taken and time.monotonic() < deadline:
                peak = max(peak, stats.memory_bytes)
                stats = buffer.stats()
            peak = max(peak, stats.memory_bytes)
        finally:
            buffer.close(3.0)
    assert stats.events_delivered == 1 + taken, stats
    assert peak <= BOUND, (
        f"memory_bytes reached {peak} with max_buffer_bytes={BOUND} "
        f"({codec}, durable={durable}, line of {pad + 15} bytes)")
