"""``possible_duplicates`` counts events that may really have been stored twice: those of a
call whose answer was lost after the request reached the service. Calls that never left the
client, and requests the server never read, cannot have landed.

The server (``hostile_server``) counts the requests it read in full and those it reset
before reading a byte, and stores every line it accepts, so real duplicates are known.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hostile_server import Answer, Behaviour, HostileFirehose

from firehose_buffer import BufferConfig, FirehoseBuffer

STREAMS = tuple(f"dup-{i}" for i in range(10))


@pytest.fixture
def firehose() -> Iterator[HostileFirehose]:
    with HostileFirehose() as server:
        yield server


@pytest.fixture
def slow_firehose() -> Iterator[HostileFirehose]:
    # Each call is answered after 3 s: longer than the close() below lets it take.
    with HostileFirehose(answer_delay=3.0) as server:
        yield server


def _to_stream(event: Any) -> int:
    return int(event["stream"])


def test_calls_still_queued_at_close_are_not_possible_duplicates(
    slow_firehose: HostileFirehose,
) -> None:
    """Ten streams each with a batch ready, one call at a time (``max_concurrent_requests=1``),
    a slow service, and close(1.0): one request reached the server, the other nine batches
    were still waiting for a sender when close() gave up. Only the first may have landed.
    Today every batch handed to the senders counts as possibly stored, so the user is told
    to expect ten times the duplicates there can be."""
    buffer = FirehoseBuffer(BufferConfig(
        streams=STREAMS, router=_to_stream, endpoint_url=slow_firehose.endpoint_url,
        region="us-east-1", max_concurrent_requests=1, linger_seconds=0.05,
    ))
    for index in range(len(STREAMS)):
        for seq in range(10):
            buffer.put({"stream": index, "seq": seq})
    buffer.close(1.0)
    stats = buffer.stats()
    reached = slow_firehose.requests_received
    assert reached >= 1
    assert stats.possible_duplicates <= 10 * reached, (
        f"{reached} request(s) of 10 events reached the server before close() gave up, "
        f"but possible_duplicates is {stats.possible_duplicates}"
    )


def test_a_keep_alive_connection_the_server_closed_is_not_reused(
    firehose: HostileFirehose,
) -> None:
    """A server (or a load balancer) closes an idle keep-alive connection, as their idle
    timeouts do: the client must see it before reusing it, and send the next call on a new
    connection, so nothing is reset and nothing counted as a possible duplicate. (A reset
    on a reused connection is counted: the client cannot tell a server that never read the
    request from one that read it and died, so possible_duplicates stays an upper bound.)"""
    firehose.script(Answer(Behaviour.IDLE_CLOSE))
    buffer = FirehoseBuffer(BufferConfig(
        streams=STREAMS[:1], endpoint_url=firehose.endpoint_url, region="us-east-1",
        linger_seconds=0.05, max_concurrent_requests=1,
    ))
    try:
        for seq in range(10):
            buffer.put({"round": 1, "seq": seq})
        assert buffer.flush(10.0)
        for seq in range(10):
            buffer.put({"round": 2, "seq": seq})
        assert buffer.flush(10.0)
    finally:
        buffer.close(10.0)
    stats = buffer.stats()
    lines = firehose.lines(STREAMS[0])
    peers = [c.peer for c in firehose.all_calls()]
    assert len(lines) == len(set(lines)) == 20
    assert len(peers) == 2 and peers[0] != peers[1], "the closed connection was reused"
    assert stats.possible_duplicates == 0
