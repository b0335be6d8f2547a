"""An idle compressed buffer refuses, for ever, a long line the same buffer takes plain.

``Accumulator.slow_append`` asks room for a line longer than a segment plus the worker's
reserve whenever ``_events_held()`` is not zero ("a line alone in the bound needs no
reserve"). But ``_events_held()`` counts every stream's current segment, which stays the
stream's (and in use) after all its lines were delivered, and ``held_bytes()`` counts the
wire segment the worker borrowed for compressed records, which goes back only once full. On
an idle buffer, nothing outstanding, a line of an allowed size then needs current segments
+ wire segment + line + reserve, past the bound, and put() refuses it every time: nothing
will ever free that memory. Without compression the same line is taken.
"""

from __future__ import annotations

import pytest

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

STREAMS = ("il-0", "il-1")
BOUND = 256 * 1024


@pytest.mark.parametrize("codec", ["zstd", "gzip", None], ids=["zstd", "gzip", "plain"])
def test_an_idle_buffer_takes_a_long_line_of_an_allowed_size(codec: str | None) -> None:
    """Two keyed streams, max_buffer_bytes=262,144, max_record_bytes=120,000 (so lines up to
    120,000 bytes are allowed): segments are 32 KiB and the reserve 64 KiB. Each stream takes
    a small event and flush() delivers them: the buffer is idle (events_buffered 0). A
    118 KB event must then be taken. Plain, it is (2 segments + the line = 182 KB). Compressed,
    put() raises BufferFullError (on_full="raise"; "block" would wait max_block_seconds, each
    time): it asks for 2 x 32 KiB current segments + the 32 KiB wire segment + the line + the
    64 KiB reserve = 280 KB, past the bound, although nothing is outstanding."""
    with LocalFirehose(streams=list(STREAMS)) as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=STREAMS, endpoint_url=fh.endpoint_url, region="us-east-1",
            router=lambda event: event["s"], compression=codec,
            max_buffer_bytes=BOUND, max_record_bytes=120_000, on_full="raise",
            linger_seconds=0.05,
        ))
        try:
            for s in range(len(STREAMS)):
                assert buffer.put({"s": s, "n": s})
            first = buffer.flush(5.0)
            idle = buffer.stats()
            error: BufferFullError | None = None
            try:
                taken = buffer.put({"s": 0, "pad": "y" * 118_000})
            except BufferFullError as exc:
                taken, error = False, exc
            second = buffer.flush(5.0)
            stats = buffer.stats()
        finally:
            buffer.close(2.0)
    assert first, first
    assert idle.events_buffered == 0
    assert taken, (
        f"an idle buffer refused a 118 KB event ({codec}): {error!r}; memory_bytes="
        f"{idle.memory_bytes} of {BOUND} with nothing outstanding")
    assert second, second
    assert stats.events_delivered == 3
