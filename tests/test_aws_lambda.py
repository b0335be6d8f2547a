"""flush_after: a Lambda handler's events are delivered before it returns, within the time
the invocation has left; what cannot go in time stays for the next invocation.

A real buffer against the emulator; the context is a tiny object with the one method of
Lambda's context contract the decorator uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose_buffer import BufferConfig, ConfigurationError, FirehoseBuffer
from firehose_buffer.aws_lambda import flush_after
from firehose_buffer.emulator import Fault, LocalFirehose

STREAM = "lambda-events"


class FakeContext:
    """Lambda's context object, as far as the decorator needs it: the deadline."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=[STREAM], data_dir=tmp_path / "delivered") as fh:
        yield fh


@pytest.fixture
def buffer(firehose: LocalFirehose) -> Iterator[FirehoseBuffer]:
    # Linger far beyond the test: only the decorator's flush can send anything.
    config = BufferConfig(streams=(STREAM,), endpoint_url=firehose.endpoint_url,
                          region="us-east-1", linger_seconds=600.0, read_timeout_seconds=30.0)
    buf = FirehoseBuffer(config)
    yield buf
    buf.close(10)


def delivered_ids(fh: LocalFirehose) -> list[int]:
    return sorted(orjson.loads(line)["id"] for line in fh.delivered_lines(STREAM))


def make_handler(buffer: FirehoseBuffer, **options: Any) -> Any:
    @flush_after(buffer, **options)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        for i in event["ids"]:
            buffer.put({"id": i, "pad": "x" * 700})
        if event.get("fail"):
            raise RuntimeError("handler failed after putting")
        return {"statusCode": 200, "count": len(event["ids"])}

    return handler


def test_everything_the_invocation_put_is_delivered_when_it_returns(
    buffer: FirehoseBuffer, firehose: LocalFirehose
) -> None:
    handler = make_handler(buffer)
    assert handler({"ids": list(range(250))}, FakeContext(3.0)) == {"statusCode": 200,
                                                                    "count": 250}
    assert delivered_ids(firehose) == list(range(250))
    assert handler({"ids": list(range(250, 300))}, FakeContext(3.0))["count"] == 50
    assert delivered_ids(firehose) == list(range(300))


def test_a_handler_that_raises_still_delivers_and_its_exception_goes_on(
    buffer: FirehoseBuffer, firehose: LocalFirehose
) -> None:
    handler = make_handler(buffer)
    with pytest.raises(RuntimeError, match="handler failed after putting"):
        handler({"ids": list(range(40)), "fail": True}, FakeContext(3.0))
    assert delivered_ids(firehose) == list(range(40))


@pytest.mark.parametrize("context", [None, object()], ids=["no-context", "no-method"])
def test_without_a_lambda_context_it_flushes_for_the_default_time(
    buffer: FirehoseBuffer, firehose: LocalFirehose, context: object
) -> None:
    handler = make_handler(buffer)
    handler({"ids": list(range(30))}, context)
    assert delivered_ids(firehose) == list(range(30))


def test_out_of_time_it_returns_reports_the_counts_and_the_next_invocation_delivers(
    buffer: FirehoseBuffer, firehose: LocalFirehose, caplog: pytest.LogCaptureFixture
) -> None:
    handler = make_handler(buffer, margin_seconds=0.5)
    # The endpoint holds the first call for 2 s before storing; the invocation has 0.6 s
    # left, so the flush may wait 0.1 s.
    firehose.script(Fault.latency(2.0))
    with caplog.at_level(logging.WARNING, logger="firehose_buffer.aws_lambda"):
        handler({"ids": list(range(20))}, FakeContext(0.6))
    # The handler returned while the endpoint still held the request: nothing stored yet.
    assert delivered_ids(firehose) == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "firehose_buffer.aws_lambda"]
    assert len(warnings) == 1
    assert "0 delivered, 0 failed" in warnings[0] and "20 pending" in warnings[0]
    assert buffer.stats().events_buffered == 20

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="firehose_buffer.aws_lambda"):
        handler({"ids": list(range(20, 25))}, FakeContext(5.0))
    assert delivered_ids(firehose) == list(range(25))
    assert not [r for r in caplog.records if r.name == "firehose_buffer.aws_lambda"]


def test_a_context_with_no_time_left_does_not_wait(
    buffer: FirehoseBuffer, firehose: LocalFirehose, caplog: pytest.LogCaptureFixture
) -> None:
    handler = make_handler(buffer, margin_seconds=0.5)
    firehose.script(Fault.latency(2.0))
    with caplog.at_level(logging.WARNING, logger="firehose_buffer.aws_lambda"):
        handler({"ids": [1, 2, 3]}, FakeContext(0.2))  # less than the margin
    assert delivered_ids(firehose) == []
    assert any("3 pending" in r.getMessage() for r in caplog.records)
    assert buffer.flush(10)
    assert delivered_ids(firehose) == [1, 2, 3]


def test_negative_margins_are_refused(buffer: FirehoseBuffer) -> None:
    with pytest.raises(ConfigurationError, match="margin_seconds"):
        flush_after(buffer, margin_seconds=-1.0)
    with pytest.raises(ConfigurationError, match="default_timeout_seconds"):
        flush_after(buffer, default_timeout_seconds=-1.0)
