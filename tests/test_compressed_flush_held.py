"""Hostile review: a flush a compressed buffer defers while it waits for memory.

README: ``flush()`` returns ``FlushResult(delivered, failed, pending)`` "for everything put
before the call", truthy only if all of it was delivered. With compression, a flush whose
lines find no room for their records is deferred (``Flushes.defer``) and marked later, when
memory was freed. Memory is freed by records finishing, failures included: those outcomes
come before the mark, so the mark never counts them, and the flush answers for only the
events still outstanding when it is finally marked.
"""

from __future__ import annotations

import base64
import random

import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import FaultRates, LocalFirehose

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_a_deferred_flush_counts_the_events_that_failed_before_it_was_marked(
    codec: str,
) -> None:
    """Every call answered 503, a 128 KiB bound filled with poorly compressible events
    (on_full="drop"), record_ttl_seconds=1: flush() is asked for while the records made
    first hold the memory the rest need. Those records expire and go to on_failure, whose
    first call makes the endpoint answer again; the rest are delivered. The flush covers
    every event put before it: it must count the failed ones and be falsy. It returned
    FlushResult(delivered=80, failed=0, pending=0), truthy, for 120 events put, 40 of them
    handed to on_failure (zstd). Without compression the same run answers
    delivered=0, failed=160: falsy."""
    stream = "r2-flush-0"
    rnd = random.Random(1)
    events = [{"pad": base64.b64encode(rnd.randbytes(600)).decode(), "n": i}
              for i in range(3000)]
    reported: list[bytes] = []
    with LocalFirehose(streams=[stream], fault_rates=FaultRates(http_503=1.0), seed=1) as fh:

        def on_failure(lines: list[bytes], reason: str) -> None:
            reported.extend(lines)
            fh.set_fault_rates(FaultRates())

        buffer = FirehoseBuffer(BufferConfig(
            streams=(stream,), endpoint_url=fh.endpoint_url, region="us-east-1",
            compression=codec, max_buffer_bytes=128 * 1024, max_record_bytes=32 * 1024,
            on_full="drop", linger_seconds=0.05, record_ttl_seconds=1.0,
            retry_initial_backoff_seconds=0.05, retry_max_backoff_seconds=0.1,
            on_failure=on_failure,
        ))
        try:
            taken = sum(buffer.put(e) for e in events)
            assert taken < len(events), "the bound never filled"
            result = buffer.flush(8.0)
            stats = buffer.stats()
        finally:
            buffer.close(3.0)
    assert result.pending == 0, result
    assert stats.events_delivered + stats.events_failed == taken
    handed = len(reported)
    assert not (result and handed), (
        f"flush was truthy ({result}) for {taken} events put before it, "
        f"{handed} of which were handed to on_failure")
    assert (result.delivered, result.failed) == (stats.events_delivered, stats.events_failed), (
        f"flush answered {result} for {taken} events put before it: "
        f"{stats.events_delivered} delivered, {stats.events_failed} failed")
