"""max_buffer_bytes with compressed records: the compressed bodies stay inside the bound.

README: every segment that holds events counts against ``max_buffer_bytes``; the compressed
records are written "into memory reused from request to request" taken from the same pool
(issue: "memory for compressed bodies stays inside the documented bound"). When the pool is
exhausted (the endpoint refuses, the segments hold the raw lines of records waiting for a
retry), a compressed record must not be kept on top of the bound.
"""

from __future__ import annotations

import base64
import random
import time

import orjson
import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import FaultRates, LocalFirehose

pytestmark = pytest.mark.slow

STREAM = "cz-bound-0"
BOUND = 256 * 1024


def _buffer(fh: LocalFirehose, codec: str) -> FirehoseBuffer:
    """A compressed buffer on a 256 KiB bound that drops what does not fit."""
    return FirehoseBuffer(BufferConfig(
        streams=(STREAM,), endpoint_url=fh.endpoint_url, region="us-east-1",
        compression=codec, max_buffer_bytes=BOUND, max_record_bytes=64 * 1024,  # type: ignore[arg-type]
        on_full="drop", linger_seconds=0.05, retry_initial_backoff_seconds=0.01,
        retry_max_backoff_seconds=0.05,
    ))


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_memory_bytes_stay_within_the_bound_while_every_call_fails(codec: str) -> None:
    """Every call answered 503, events that compress poorly (random base64) put as fast as
    possible with ``on_full="drop"`` for 1.5 s: ``stats().memory_bytes`` must never exceed
    ``max_buffer_bytes``. The records compressed while the pool had no free segment were
    kept as bytes of their own on top of the bound: 455 KB held against a 256 KiB bound."""
    rnd = random.Random(7)
    events = [{"pad": base64.b64encode(rnd.randbytes(300)).decode()} for _ in range(2000)]
    with LocalFirehose(streams=[STREAM], fault_rates=FaultRates(http_503=1.0), seed=1) as fh:
        buffer = _buffer(fh, codec)
        try:
            peak = 0
            dropped = False
            end = time.monotonic() + 1.5
            i = 0
            while time.monotonic() < end:
                dropped |= not buffer.put(events[i % len(events)])
                i += 1
                peak = max(peak, buffer.stats().memory_bytes)
        finally:
            buffer.close(1.0)
    assert dropped, "the buffer never filled"
    assert peak <= BOUND, (
        f"memory_bytes reached {peak} bytes with max_buffer_bytes={BOUND} ({codec})"
    )


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_a_full_bound_of_compressed_records_drains_once_the_endpoint_recovers(codec: str) -> None:
    """The bound filled while every call fails (records retrying hold the memory compressed
    records need): once the endpoint answers again, flush() delivers every event put() took,
    the memory bound having held throughout."""
    rnd = random.Random(11)
    events = [{"pad": base64.b64encode(rnd.randbytes(300)).decode(), "n": i}
              for i in range(4000)]
    with LocalFirehose(streams=[STREAM], fault_rates=FaultRates(http_503=1.0), seed=1) as fh:
        buffer = _buffer(fh, codec)
        try:
            taken = [e for e in events if buffer.put(e)]
            assert len(taken) < len(events), "the buffer never filled"
            peak = buffer.stats().memory_bytes
            fh.set_fault_rates(FaultRates())
            result = buffer.flush(20.0)
            stats = buffer.stats()
        finally:
            buffer.close(5.0)
        lines = fh.delivered_lines(STREAM)
    assert result, result
    assert peak <= BOUND
    assert stats.events_delivered == len(taken)
    assert sorted(orjson.loads(line)["n"] for line in lines) == [e["n"] for e in taken]
