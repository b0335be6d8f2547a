"""A bad answer must not jam a stream: a malformed HTTP 200, an answer trickled a byte at a
time, a reset after storing, or no answer at all.

Each test points a real buffer (real botocore, real HTTP) at :mod:`tests.hostile_server` on
127.0.0.1, lets the first call get a bad answer, and checks what a user sees: the stream keeps
delivering, every accepted event is delivered or reported, records that may have landed are
counted as possible duplicates, and ``flush()`` returns within its timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hostile_server import MALFORMED_200, Answer, Behaviour, HostileFirehose
from support import Reported

from firehose_buffer import BufferConfig, FirehoseBuffer

pytestmark = pytest.mark.slow

STREAM = "hostile-0"
#: Long enough for a healthy retry (backoff of at most 0.2 s, a call of a few ms) many times
#: over, short enough that a jammed stream fails the test quickly.
FLUSH_TIMEOUT = 6.0


@pytest.fixture
def server() -> Iterator[HostileFirehose]:
    with HostileFirehose(trickle_interval=0.4) as hostile:
        yield hostile


def _config(server: HostileFirehose, on_failure: Reported, **extra: Any) -> BufferConfig:
    return BufferConfig(
        streams=(STREAM,),
        endpoint_url=server.endpoint_url,
        region="us-east-1",
        linger_seconds=0.05,
        retry_initial_backoff_seconds=0.05,
        retry_max_backoff_seconds=0.2,
        connect_timeout_seconds=1.0,
        read_timeout_seconds=1.0,
        record_ttl_seconds=60.0,
        call_timeout_seconds=2.0,
        on_failure=on_failure,
        **extra,
    )


def _events(start: int, count: int) -> list[dict[str, Any]]:
    return [{"seq": seq, "pad": "p" * 40} for seq in range(start, start + count)]


def _seqs(lines: list[bytes]) -> list[int]:
    return [int(orjson.loads(line)["seq"]) for line in lines]


def _put_flush_twice(
    server: HostileFirehose, answer: Answer,
) -> tuple[FirehoseBuffer, Reported, list[Any]]:
    """Script one bad answer, then: put 30 events, flush; put 30 more, flush."""
    server.script(answer)
    reported = Reported()
    buffer = FirehoseBuffer(_config(server, reported))
    results = []
    for batch in (_events(0, 30), _events(30, 30)):
        for event in batch:
            assert buffer.put(event)
        results.append(buffer.flush(FLUSH_TIMEOUT))
    return buffer, reported, results


def _assert_kept_every_promise(
    server: HostileFirehose, buffer: FirehoseBuffer, reported: Reported, results: list[Any],
) -> None:
    scripted = server.scripted_calls()
    assert len(scripted) == 1, "the hostile answer was never served"
    delivered = _seqs(server.lines(STREAM))
    missing = sorted(set(range(60)) - set(delivered) - {
        int(orjson.loads(e)["seq"]) for e, _ in reported.events
    })
    stats = buffer.stats()
    assert results[0], (
        f"flush() after a {scripted[0].behaviour} answer did not complete within "
        f"{FLUSH_TIMEOUT} s: the stream is jammed ({stats.events_buffered} events stuck)"
    )
    assert results[1], (
        f"events put after a {scripted[0].behaviour} answer were not delivered within "
        f"{FLUSH_TIMEOUT} s: the stream is jammed"
    )
    assert not missing, f"{len(missing)} accepted events neither delivered nor reported"
    # The service was healthy apart from one answer: nothing should have been given up.
    assert reported.events == [], f"failed over one bad answer: {reported.events[:3]}"
    assert sorted(set(delivered)) == list(range(60))
    # The bad answer's records were stored: each may land twice, and must be counted.
    stored_blind = len(scripted[0].lines)
    assert stats.possible_duplicates >= stored_blind, (
        f"{stored_blind} events were stored under an answer that could not be read, but "
        f"possible_duplicates is {stats.possible_duplicates}"
    )
    duplicates = len(delivered) - len(set(delivered))
    assert duplicates <= stats.possible_duplicates


@pytest.mark.parametrize("behaviour", MALFORMED_200, ids=str)
def test_malformed_200_answer_does_not_jam_the_stream(
    server: HostileFirehose, behaviour: Behaviour,
) -> None:
    """A malformed HTTP 200 answer (RequestResponses with null, numeric or string entries, not
    a list, the wrong length, a body that is not JSON) becomes a retry with the records
    counted as possible duplicates; no exception ends a sender thread and jams its stream
    until close()."""
    buffer, reported, results = _put_flush_twice(server, Answer(behaviour, store=True))
    try:
        _assert_kept_every_promise(server, buffer, reported, results)
    finally:
        buffer.close(2.0)


def test_trickled_answer_does_not_jam_the_stream(server: HostileFirehose) -> None:
    """Headers then a body trickled a byte every 0.4 s (inside the 1 s read timeout, so no
    single read ever times out) do not hold the stream: past the call's overall deadline the
    batch is retried (possible duplicates) and the connection dropped, and the stream is
    delivering again within the flush timeout."""
    buffer, reported, results = _put_flush_twice(server, Answer(Behaviour.TRICKLE, store=True))
    try:
        _assert_kept_every_promise(server, buffer, reported, results)
    finally:
        buffer.close(2.0)


@pytest.mark.parametrize("behaviour", [Behaviour.RESET, Behaviour.HANG], ids=str)
def test_reset_or_silent_server_does_not_jam_the_stream(
    server: HostileFirehose, behaviour: Behaviour,
) -> None:
    """A connection reset after storing, or no answer at all, becomes a retry counted as
    possible duplicates, and the stream goes on delivering."""
    buffer, reported, results = _put_flush_twice(server, Answer(behaviour, store=True))
    try:
        _assert_kept_every_promise(server, buffer, reported, results)
    finally:
        buffer.close(2.0)


def test_close_after_a_malformed_answer_reports_nothing_as_undelivered(
    server: HostileFirehose,
) -> None:
    """A close() after one malformed answer delivers everything and reports nothing: a
    stream jammed by that answer would instead report all its events, those the service
    stored included, as ``closed_before_delivery``."""
    server.script(Answer(Behaviour.NULL_ENTRIES, store=True))
    reported = Reported()
    buffer = FirehoseBuffer(_config(server, reported))
    try:
        for event in _events(0, 50):
            buffer.put(event)
    finally:
        closed = buffer.close(FLUSH_TIMEOUT)
    assert server.scripted_calls(), "the hostile answer was never served"
    reasons = sorted({reason for _, reason in reported.events})
    assert not reported.events, f"{len(reported.events)} events reported as {reasons}"
    assert closed
    assert sorted(set(_seqs(server.lines(STREAM)))) == list(range(50))
