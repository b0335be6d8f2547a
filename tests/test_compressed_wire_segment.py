"""The worker's wire segment keeps a segment of the bound from the streams of an idle buffer.

Compressed records are written into one segment borrowed from the accumulator
(``Scheduler.wire``); it goes back to the pool only once it is full and every record in it has
an outcome. The reserve formula leaves every stream a segment of its own ("never fewer
segments than streams"), but the borrowed wire segment is counted in ``held_bytes()`` by
``_take_segment``'s bound check: once the buffer is idle the wire segment, nearly empty, is
never returned, and a stream that has no segment yet is refused for ever when the bound holds
exactly one segment per stream.
"""

from __future__ import annotations

import pytest

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("codec", ["zstd", "gzip", None], ids=["zstd", "gzip", "plain"])
def test_an_idle_keyed_buffer_takes_an_event_for_its_last_stream(codec: str | None) -> None:
    """Keyed routing over 5 streams, max_buffer_bytes=20,480 (the least config allows with
    max_record_bytes=20,480): segments are 4 KiB (the minimum), so the bound holds exactly one
    per stream and the reserve is 0. Streams 0-3 take an event each and flush() delivers
    them: the buffer is idle. An event for stream 4 must be taken. Without compression it
    is; compressed, the wire segment the 4 records were written into stays borrowed, the
    4 current segments plus it fill the bound, and put() for stream 4 raises
    BufferFullError (with on_full="block" it would wait max_block_seconds, every time)."""
    streams = [f"ws-{i}" for i in range(5)]
    with LocalFirehose(streams=streams) as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=tuple(streams), endpoint_url=fh.endpoint_url, region="us-east-1",
            router=lambda event: event["s"], compression=codec,
            max_record_bytes=20_480, max_buffer_bytes=20_480, on_full="raise",
            linger_seconds=0.05,
        ))
        try:
            for i in range(4):
                assert buffer.put({"s": i, "n": i})
            first = buffer.flush(5.0)
            idle = buffer.stats()
            error: BufferFullError | None = None
            try:
                taken = buffer.put({"s": 4, "n": 4})
            except BufferFullError as exc:
                taken, error = False, exc
            second = buffer.flush(5.0)
            stats = buffer.stats()
        finally:
            buffer.close(2.0)
    assert first, first
    assert idle.events_buffered == 0
    assert taken, (
        f"an idle buffer refused an event for its last stream ({codec}): {error!r}; "
        f"memory_bytes={idle.memory_bytes} of 20480")
    assert second, second
    assert stats.events_delivered == 5
