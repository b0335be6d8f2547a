"""``max_concurrent_requests`` is a cap, and a call is timed from when it is sent.

Many streams each have a batch ready while the service answers slowly (every call takes
0.2 s): more batches are ready than the cap lets go at once, so most wait their turn. The
server counts how many calls it handles at the same time and stores every line it receives.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hostile_server import HostileFirehose

from firehose_buffer import BufferConfig, FirehoseBuffer

STREAMS = tuple(f"cap-{i}" for i in range(40))
CAP = 2
ANSWER_DELAY = 0.2
PER_STREAM = 5


@pytest.fixture
def slow_firehose() -> Iterator[HostileFirehose]:
    with HostileFirehose(answer_delay=ANSWER_DELAY) as server:
        yield server


def _to_stream(event: Any) -> int:
    return int(event["stream"])


def _senders() -> int:
    return sum(1 for t in threading.enumerate()
               if t.name.startswith("firehose-buffer-sender") and t.is_alive())


@pytest.mark.slow
def test_max_concurrent_requests_caps_calls_and_queued_calls_are_not_timed_out(
    slow_firehose: HostileFirehose,
) -> None:
    """A user who sets ``max_concurrent_requests=2`` (to keep memory and connections down)
    with 40 streams and a slow service expects at most 2 calls at a time, and no duplicates,
    since every call is answered well within ``call_timeout_seconds``. A call's deadline
    runs from when it is sent: timed from when it was queued, calls still waiting for a
    sender would be declared timed out, counted as possible duplicates, retried, and later
    sent anyway (real duplicates), and each one given up would let one more sender thread
    start, past the cap."""
    before = _senders()
    buffer = FirehoseBuffer(BufferConfig(
        streams=STREAMS, router=_to_stream, endpoint_url=slow_firehose.endpoint_url,
        region="us-east-1", max_concurrent_requests=CAP, call_timeout_seconds=0.5,
        linger_seconds=0.05,
    ))
    most_senders = 0
    try:
        for seq in range(PER_STREAM):
            for index in range(len(STREAMS)):
                buffer.put({"stream": index, "seq": seq})
        result = buffer.flush(30.0)
        most_senders = _senders() - before
    finally:
        buffer.close(10.0)
    stats = buffer.stats()
    received = Counter(
        (line, stream) for stream in STREAMS for line in slow_firehose.lines(stream)
    )
    duplicated = sum(n - 1 for n in received.values() if n > 1)
    assert result, f"flush did not deliver everything: {result}, {stats}"
    assert slow_firehose.max_concurrent <= CAP, (
        f"max_concurrent_requests={CAP}, but the server handled "
        f"{slow_firehose.max_concurrent} calls at once ({most_senders} sender threads)"
    )
    assert (stats.possible_duplicates, duplicated) == (0, 0), (
        f"every call was answered in {ANSWER_DELAY} s (call_timeout_seconds=0.5), yet "
        f"{stats.possible_duplicates} events were counted as possible duplicates and "
        f"{duplicated} arrived twice (last error {stats.last_error!r})"
    )
    assert len(received) == len(STREAMS) * PER_STREAM
    assert all(orjson.loads(line)["stream"] == STREAMS.index(stream)
               for line, stream in received)
