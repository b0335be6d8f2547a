"""The compressed records' memory at its edges (the reserve, lines kept apart as frames).

Two ways the compressed path could break what README and docs/concepts/memory.md promise:

- ``max_buffer_bytes`` may be as low as ``max_record_bytes`` (config accepts it), so one
  event of any allowed size fits an empty buffer; with compression, put() leaves the
  worker's reserve on top of a line longer than a segment, and refuses such an event from
  an empty buffer, for ever.
- The only documented way past the bound with compression is "one record when nothing is
  outstanding". A line longer than a segment is checked against the bound (line + reserve)
  when put() takes it, but its frame is added by the worker later, unchecked: lines put
  before the worker gathers them each leave the same reserve, and their frames together
  take the buffer past the bound while records are outstanding.
"""

from __future__ import annotations

import random
import string
import threading
import time

import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import FaultRates, LocalFirehose

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_an_empty_compressed_buffer_takes_one_event_of_the_allowed_size(codec: str) -> None:
    """max_buffer_bytes=1,024,000 (the least config allows with the default record cap) and
    an empty buffer: a 900 KB event (the limit is 1,023,999) must be taken and delivered, as
    it is without compression. With compression put() raises BufferFullError at once
    (on_full="raise"): the line (900,012 bytes) plus the worker's reserve (256,000) is past
    the bound, though nothing at all is held."""
    stream = "r2-empty-0"
    event = {"pad": "a" * 900_000}
    with LocalFirehose(streams=[stream]) as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=(stream,), endpoint_url=fh.endpoint_url, region="us-east-1",
            compression=codec, max_buffer_bytes=1_024_000, on_full="raise",
        ))
        try:
            assert buffer.stats().memory_bytes == 0
            taken = buffer.put(event)
            result = buffer.flush(5.0)
        finally:
            buffer.close(2.0)
    assert taken
    assert result, result


def _noise(rnd: random.Random, size: int) -> str:
    """Printable ASCII that compresses poorly (about 0.82 of its size)."""
    alphabet = string.ascii_letters + string.digits + string.punctuation.replace(
        '"', "").replace("\\", "")
    return "".join(rnd.choices(alphabet, k=size))


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_frames_of_long_lines_stay_within_the_bound(codec: str) -> None:
    """Every call answered 503 (records stay outstanding), 4 streams (16 KiB segments),
    max_record_bytes=100,000, a 256 KiB bound. While the worker is busy in a slow on_failure
    callback (a record expired), a producer puts poorly compressible ~75 KB events: put()
    takes two (each checked as line + 64 KiB reserve against the bound). Once the worker
    gathers them it adds their two ~62 KB frames unchecked: memory_bytes reached 306,763
    against 262,144 with records outstanding (measured with zstd)."""
    streams = [f"r2-apart-{i}" for i in range(4)]
    bound = 256 * 1024
    rnd = random.Random(5)
    entered = threading.Event()
    go = threading.Event()

    def slow_on_failure(events: list[bytes], reason: str) -> None:
        entered.set()
        go.wait(5.0)

    with LocalFirehose(streams=streams, fault_rates=FaultRates(http_503=1.0), seed=3) as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=tuple(streams), endpoint_url=fh.endpoint_url, region="us-east-1",
            compression=codec, max_buffer_bytes=bound, max_record_bytes=100_000,
            on_full="drop", linger_seconds=0.05, record_ttl_seconds=0.3,
            retry_initial_backoff_seconds=0.01, retry_max_backoff_seconds=0.05,
            on_failure=slow_on_failure,
        ))
        try:
            buffer.put({"first": 1})  # expires after 0.3 s: on_failure holds the worker
            assert entered.wait(5.0), "no record expired"
            taken = 0
            for _ in range(4):
                taken += buffer.put({"pad": _noise(rnd, 75_000)})
            assert taken >= 2
            go.set()
            peak = 0
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                stats = buffer.stats()
                peak = max(peak, stats.memory_bytes)
                if stats.events_put >= 1 + taken + 2 and peak > bound:
                    break
            stats = buffer.stats()
        finally:
            go.set()
            buffer.close(1.0)
    assert stats.events_put >= 1 + taken, "the worker never gathered the long lines"
    assert peak <= bound, (
        f"memory_bytes reached {peak} with max_buffer_bytes={bound} ({codec}, {taken} "
        "long lines taken)")
