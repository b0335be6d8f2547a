"""``possible_duplicates``: consumers size their deduplication by it, so it must count every
event that may really have been stored twice, and not many more.

Counted: events resent after an answer that was lost once the request reached the service,
or that did not say which records were stored. Not counted: calls that never left the client,
requests the server never read.

The server (``hostile_server``) counts the requests it read in full and those it reset
before reading a byte, and stores every line it accepts, so real duplicates are known.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest
from botocore.config import Config
from hostile_server import Answer, Behaviour, HostileFirehose
from support import wait_for

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
    were still waiting for a sender when close() gave up. Only the first may have landed;
    counting every batch handed to the senders would tell the user to expect ten times the
    duplicates there can be."""
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
        # The server has closed it (as an idle timeout does, a while before the next call).
        wait_for(lambda: firehose.open_connections() == 0, 5.0, "the server to close")
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


def _buffer(firehose: HostileFirehose, transport: str) -> FirehoseBuffer:
    config = BufferConfig(streams=STREAMS[:1], endpoint_url=firehose.endpoint_url,
                          region="us-east-1", linger_seconds=0.05,
                          retry_initial_backoff_seconds=0.01, retry_max_backoff_seconds=0.05)
    if transport == "lean":
        return FirehoseBuffer(config)
    client = boto3.client("firehose", endpoint_url=firehose.endpoint_url,
                          region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=Config(retries={"total_max_attempts": 1}))
    return FirehoseBuffer(config, client=client)


@pytest.mark.parametrize("transport", ["lean", "boto3"])
def test_a_success_answer_without_record_ids_counts_the_resent_events(
    firehose: HostileFirehose, transport: str,
) -> None:
    """The endpoint stores a call's records, then answers 200 with entries that carry
    neither RecordId nor ErrorCode (only a non-conforming endpoint does: a proxy, an
    emulator, a future API change). The buffer resends them (right: it cannot know they
    landed) and the endpoint stores them again; every one of those duplicates must be
    counted in possible_duplicates, as README promises for such resends."""
    firehose.script(Answer(Behaviour.NO_IDS, store=True))
    with _buffer(firehose, transport) as buf:
        for n in range(300):
            buf.put({"n": n, "pad": "d" * 100})
        assert buf.flush(10)
        stats = buf.stats()
    stored = Counter(orjson.loads(line)["n"] for line in firehose.lines(STREAMS[0]))
    assert set(stored) == set(range(300))
    duplicates = sum(times - 1 for times in stored.values())
    assert firehose.scripted_calls() and duplicates > 0, "the scripted answer never came"
    assert stats.possible_duplicates >= duplicates, (
        f"{duplicates} events were stored twice, possible_duplicates="
        f"{stats.possible_duplicates}"
    )
