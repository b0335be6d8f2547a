"""``possible_duplicates`` counts every resent event that may already have landed.

An answer that does not say which records were stored (a 200 whose entries carry neither
``RecordId`` nor ``ErrorCode``) leaves the buffer to resend them, and the service may have kept
them all: every resent event is a possible duplicate, and README promises that
``possible_duplicates`` counts such resends. Only a non-conforming endpoint (a proxy, an
emulator, a future API change) answers this way, but consumers size their deduplication by
this count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import boto3
import orjson
import pytest
from botocore.config import Config
from hostile_server import Answer, Behaviour, HostileFirehose

from firehose_buffer import BufferConfig, FirehoseBuffer

STREAM = "dups"


@pytest.fixture
def firehose() -> Iterator[HostileFirehose]:
    with HostileFirehose() as server:
        yield server


def _buffer(firehose: HostileFirehose, transport: str) -> FirehoseBuffer:
    config = BufferConfig(streams=(STREAM,), endpoint_url=firehose.endpoint_url,
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
    neither RecordId nor ErrorCode. The buffer resends them (right: it cannot know they
    landed) and the endpoint stores them again; every one of those duplicates must be
    counted in possible_duplicates. Before the fix, 300 duplicates were delivered and
    possible_duplicates stayed 0."""
    firehose.script(Answer(Behaviour.NO_IDS, store=True))
    with _buffer(firehose, transport) as buf:
        for n in range(300):
            buf.put({"n": n, "pad": "d" * 100})
        assert buf.flush(10)
        stats = buf.stats()
    stored = Counter(orjson.loads(line)["n"] for line in firehose.lines(STREAM))
    assert set(stored) == set(range(300))
    duplicates = sum(times - 1 for times in stored.values())
    assert firehose.scripted_calls() and duplicates > 0, "the scripted answer never came"
    assert stats.possible_duplicates >= duplicates, (
        f"{duplicates} events were stored twice, possible_duplicates="
        f"{stats.possible_duplicates}"
    )
