"""An idle buffer with a current segment per stream refuses, for ever, a line of an allowed size.

Every stream keeps its current segment (counted in ``held_bytes()``) after its lines were
delivered. ``Accumulator.slow_append`` admits a line longer than a segment with
``_make_room(size)``, which can unmap only free segments: with N streams that each took an
event, ``N x segment_bytes + size`` must fit in ``max_buffer_bytes``. The config allows lines
up to ``max_record_bytes`` with ``max_buffer_bytes`` as small as ``max_record_bytes``, so on an
idle buffer with nothing outstanding a line of an allowed size is refused every time (with
``on_full="block"`` each put() waits ``max_block_seconds`` first). The same happens plain, so
it is older than the compression work; the current segments of idle streams could be given
back (as the wire segment now is) when a long line needs the room.
"""

from __future__ import annotations

from typing import Literal

import pytest

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

STREAMS = tuple(f"is-{i}" for i in range(4))
BOUND = 20_480


@pytest.mark.xfail(strict=True, reason="known limit (docs/concepts/memory.md): a line "
                   "longer than a segment needs room beside every stream's current segment")
@pytest.mark.parametrize("codec", ["zstd", "gzip", None], ids=["zstd", "gzip", "plain"])
def test_an_idle_four_stream_buffer_takes_a_9_kb_line(
    codec: Literal["zstd", "gzip"] | None,
) -> None:
    """Four keyed streams, max_buffer_bytes = max_record_bytes = 20,480 (segments 4 KiB).
    Each stream takes a small event and flush() delivers them: the buffer is idle. A 9 KB
    event (allowed: under max_record_bytes) must be taken; put() raises BufferFullError
    (on_full="raise"): 4 x 4 KiB current segments + 9 KB > 20,480, and nothing will ever
    free them."""
    with LocalFirehose(streams=list(STREAMS)) as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=STREAMS, endpoint_url=fh.endpoint_url, region="us-east-1",
            router=lambda event: event["s"], compression=codec,
            max_record_bytes=BOUND, max_buffer_bytes=BOUND, on_full="raise",
            linger_seconds=0.05,
        ))
        try:
            for i in range(len(STREAMS)):
                assert buffer.put({"s": i, "n": i})
            first = buffer.flush(5.0)
            idle = buffer.stats()
            error: BufferFullError | None = None
            try:
                taken = buffer.put({"s": 0, "p": "x" * 9000})
            except BufferFullError as exc:
                taken, error = False, exc
            second = buffer.flush(5.0)
            stats = buffer.stats()
        finally:
            buffer.close(2.0)
    assert first, first
    assert idle.events_buffered == 0
    assert taken, (f"an idle buffer refused a 9 KB event ({codec}): {error!r}; "
                   f"memory_bytes={idle.memory_bytes} of {BOUND}")
    assert second, second
    assert stats.events_delivered == len(STREAMS) + 1
