"""A boto3 client (``client=``) whose call never ends: a server that sends the headers of a 200
and then trickles the body a byte at a time, which no per-read timeout of botocore trips.

The buffer cannot cut such a call off (botocore gives it no socket), so it gives up on it
``call_timeout_seconds`` (plus a grace) after it started and retries its records, counted as
possible duplicates, while the sender thread stays in the call. Two things must hold then:
the give-up happens at that deadline whatever else goes on (not only when a later put()
happens to wake the worker), and the memory the stuck thread still references does not
break put().
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from hostile_server import Answer, Behaviour, HostileFirehose

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer

pytestmark = pytest.mark.slow

STREAMS = ("stuck-0", "stuck-1")


@pytest.fixture
def server() -> Iterator[HostileFirehose]:
    with HostileFirehose(trickle_interval=0.5) as hostile:
        hostile.script(Answer(Behaviour.TRICKLE, store=False))
        yield hostile


def _buffer(server: HostileFirehose, **extra: Any) -> FirehoseBuffer:
    client = boto3.client(
        "firehose", endpoint_url=server.endpoint_url, region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=5, connect_timeout=2),
    )
    return FirehoseBuffer(BufferConfig(
        streams=STREAMS, partition_key="k", call_timeout_seconds=1.0, linger_seconds=0.05,
        retry_initial_backoff_seconds=0.01, retry_max_backoff_seconds=0.05, **extra,
    ), client=client)


def test_a_stuck_call_is_given_up_on_at_its_deadline_without_another_put(
    server: HostileFirehose,
) -> None:
    """50 events, flush(6): the first call trickles for ever; 1 s (plus the 2 s grace) after
    it started the buffer should retry its records on another call and the flush succeed.
    The worker slept with nothing to wake it (no deadline of a call in flight is among its
    wake times), so the flush waited its whole timeout with every event pending."""
    buffer = _buffer(server)
    try:
        for seq in range(50):
            assert buffer.put({"k": "a", "seq": seq})
        started = time.monotonic()
        result = buffer.flush(6.0)
        took = time.monotonic() - started
    finally:
        buffer.close(1.0)
        server.stop()  # ends the trickle, and with it the stuck sender thread
    assert result, (
        f"flush(6) returned {result} after {took:.1f} s: the call stuck since the start was "
        "never given up on (call_timeout_seconds=1)"
    )
    assert sum(len(server.lines(name)) for name in STREAMS) == 50


def test_put_never_raises_buffer_error_for_memory_a_stuck_call_still_references(
    server: HostileFirehose,
) -> None:
    """A 1,024,000-byte bound over two streams makes 128,000-byte segments. 1,500 small events
    fill a segment and go into the call that trickles; the retry delivers them and their
    segment is free again, while the stuck sender thread still holds slices of it. Events
    larger than a segment then need that free segment unmapped to make room: put() raised
    ``BufferError: cannot close exported pointers exist`` (an error put() never documents),
    and the segment, still mapped, had left the memory count."""
    buffer = _buffer(server, max_buffer_bytes=1_024_000)
    raised: list[BaseException] = []
    try:
        for seq in range(1500):
            assert buffer.put({"k": "a", "seq": seq, "pad": "x" * 100})
        # Each put wakes the worker, which then gives up on the stuck call past its deadline.
        deadline = time.monotonic() + 15.0
        while buffer.stats().events_delivered < 1500 and time.monotonic() < deadline:
            buffer.put({"k": "b", "tick": 1})
            time.sleep(0.05)
        assert buffer.stats().events_delivered >= 1500, "the retry never delivered"
        big = {"k": "a", "big": "y" * 300_000}
        for _ in range(6):
            try:
                buffer.put(big)
            except BufferFullError:
                pass
            except Exception as exc:  # what a user's put() would see
                raised.append(exc)
                break
    finally:
        buffer.close(2.0)
        server.stop()
    assert not raised, f"put() raised {raised[0]!r}"
