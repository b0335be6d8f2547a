"""With ``compression`` set, every record sent is one complete frame (zstd) or member (gzip),
whatever way its lines came in.

Firehose writes a stream's records concatenated into one S3 object: a single plain JSON
record among zstd frames makes the whole ``.jsonl.zst`` object unreadable (zstdcat, DuckDB,
python-zstandard's stream reader all stop at it), so every event of that object is lost to
its readers. Two ways in skip the compressor:

- an event larger than a segment (``max_buffer_bytes / (4 x streams)``, capped at four
  records), kept apart as a line of its own;
- a line handed to the worker by a put() that re-entered on a thread holding one of the
  buffer's locks (a signal handler, a finalizer, a logging handler). The re-entry is made
  exact with ``clock=``: the worker reads the clock while it holds the engine's lock, and
  that clock calls put() for a stream that has no segment yet, as a finalizer run by the
  garbage collector at that point would.
"""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from support import Reported

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

CODECS = ["zstd", "gzip"]
EXTENSIONS = {"zstd": ".jsonl.zst", "gzip": ".jsonl.gz"}
#: What each record must start with: a zstd frame's magic number, a gzip member's.
MAGIC = {"zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b"}


def _check(fh: LocalFirehose, streams: tuple[str, ...], codec: str, put: list[bytes]) -> None:
    records = [(s, r) for s in streams for r in fh.accepted_records(s)]
    plain = [(s, len(r), bytes(r[:30])) for s, r in records
             if not bytes(r[:4]).startswith(MAGIC[codec])]
    assert not plain, f"records sent that are not one {codec} frame/member: {plain}"
    delivered = sorted(line for s in streams for line in fh.delivered_lines(s))
    assert delivered == sorted(put)


@pytest.mark.parametrize("codec", CODECS)
def test_an_event_larger_than_a_segment_is_compressed_too(codec: str) -> None:
    """A 1,024,000-byte bound on one stream makes 256,000-byte segments; a 300 KB event
    between two small ones went out as a plain JSON record in the compressed stream."""
    events = [{"small": 1}, {"big": "b" * 300_000}, {"small": 2}]
    with LocalFirehose(keep_records=True) as fh:
        fh.create_stream("big-0", file_extension=EXTENSIONS[codec])
        buffer = FirehoseBuffer(BufferConfig(
            streams=("big-0",), endpoint_url=fh.endpoint_url, region="us-east-1",
            compression=codec, max_buffer_bytes=1_024_000, linger_seconds=0.05,
        ))
        try:
            for event in events:
                assert buffer.put(event)
            assert buffer.flush(10.0)
        finally:
            buffer.close(5.0)
        _check(fh, ("big-0",), codec, [orjson.dumps(e) for e in events])


@pytest.mark.parametrize("codec", CODECS)
def test_a_line_handed_over_by_a_reentrant_put_is_compressed_too(codec: str) -> None:
    """The worker's clock puts one event for the second stream (no segment yet: put()'s
    slow path, re-entering on a thread that holds the engine's lock, hands the line to the
    worker). It went out as a plain JSON record."""
    streams = ("re-0", "re-1")
    holder: list[FirehoseBuffer] = []
    armed = threading.Event()
    done = threading.Event()

    def clock() -> float:
        if (armed.is_set() and not done.is_set()
                and threading.current_thread().name == "firehose-buffer-worker"):
            done.set()
            holder[0].put({"k": "re-1", "from": "worker"})
        return time.monotonic()

    with LocalFirehose(keep_records=True) as fh:
        for name in streams:
            fh.create_stream(name, file_extension=EXTENSIONS[codec])
        buffer = FirehoseBuffer(BufferConfig(
            streams=streams, endpoint_url=fh.endpoint_url, region="us-east-1",
            compression=codec, router=lambda e: e["k"], linger_seconds=0.05,
        ), clock=clock)
        holder.append(buffer)
        try:
            assert buffer.put({"k": "re-0", "from": "main"})
            assert buffer.flush(10.0)
            armed.set()
            assert buffer.put({"k": "re-0", "from": "main", "n": 2})  # wakes the worker
            deadline = time.monotonic() + 5.0
            while not done.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert done.is_set(), "the worker never read the clock"
            assert buffer.flush(10.0)
            stats = buffer.stats()
        finally:
            buffer.close(5.0)
        assert stats.events_delivered == 3, stats
        put = [orjson.dumps(e) for e in ({"k": "re-0", "from": "main"},
                                          {"k": "re-0", "from": "main", "n": 2},
                                          {"k": "re-1", "from": "worker"})]
        _check(fh, streams, codec, put)


@pytest.mark.parametrize("codec", CODECS)
def test_a_failed_line_kept_apart_reaches_on_failure_as_its_json(codec: str) -> None:
    """The record of a line longer than a segment is its own frame on the wire; when it
    fails (here: the stream does not exist), on_failure gets the line as put, not the
    frame."""
    events = [{"small": 1}, {"big": "b" * 300_000}, {"small": 2}]
    reported = Reported()
    with LocalFirehose() as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=("missing-0",), endpoint_url=fh.endpoint_url, region="us-east-1",
            compression=codec, max_buffer_bytes=1_024_000, linger_seconds=0.05,
            on_failure=reported,
        ))
        try:
            for event in events:
                assert buffer.put(event)
            buffer.flush(5.0)
        finally:
            buffer.close(5.0)
    assert sorted(line for line, _ in reported.events) == sorted(
        orjson.dumps(e) for e in events)
