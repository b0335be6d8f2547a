"""Bad input fails in put(), with the right error, and loses nothing already buffered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fakes import FakeFirehose

from firehose_buffer import (
    BufferClosedError,
    BufferConfig,
    EventTooLargeError,
    EventTypeError,
    EventValueError,
    FirehoseBuffer,
    FirehoseBufferError,
)
from firehose_buffer._service.firehose import FIREHOSE

MAX_RECORD_BYTES = FIREHOSE.max_record_bytes


STREAMS = ("in-0", "in-1")


class Opaque:
    pass


BAD_TYPES: list[Any] = [
    "a string", ["a", "list"], 42, None, Opaque(),
    {1: "int key"}, {("tuple",): 1}, {"value": Opaque()}, {"value": {2.5: "nested key"}},
    {"nan-ok-but-set-is-not": {1, 2}},
]
BAD_VALUES: list[Any] = [
    b"", b"   ", b"two\nlines", b"trailing newline\n", bytearray(b"a\nb"),
    # Keyless too: none of these is one JSON object on one line.
    b"plain text", b'{"a":1}{"b":2}', b'{"a":1}\x00', b'{"a":"\xff"}', b'\xef\xbb\xbf{"a":1}',
    b'{"a":\r1}', b'{"a":\n1}', b"1", b'"x"', b"null", b"[1]", memoryview(b"{"),
]


@pytest.fixture
def fake() -> FakeFirehose:
    return FakeFirehose(streams=set(STREAMS))


@pytest.fixture
def buf(fake: FakeFirehose) -> Iterator[FirehoseBuffer]:
    config = BufferConfig(streams=STREAMS, linger_seconds=0.05)
    with FirehoseBuffer(config, client=fake) as buffer:
        yield buffer


def _put_good(buf: FirehoseBuffer, start: int, count: int) -> list[bytes]:
    lines = []
    for seq in range(start, start + count):
        event = {"seq": seq}
        buf.put(event)
        lines.append(orjson.dumps(event))
    return lines


def _assert_delivered(buf: FirehoseBuffer, fake: FakeFirehose, lines: list[bytes]) -> None:
    assert buf.flush(10)
    assert sorted(fake.lines()) == sorted(lines)
    stats = buf.stats()
    assert stats.events_put == stats.events_delivered == len(lines)
    assert stats.events_failed == stats.events_buffered == 0


@pytest.mark.parametrize("event", BAD_TYPES, ids=repr)
def test_bad_types_raise_type_error_and_lose_nothing(
    buf: FirehoseBuffer, fake: FakeFirehose, event: Any,
) -> None:
    before = _put_good(buf, 0, 5)
    with pytest.raises(EventTypeError) as info:
        buf.put(event)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, FirehoseBufferError)
    _assert_delivered(buf, fake, before + _put_good(buf, 5, 5))


@pytest.mark.parametrize("event", BAD_VALUES, ids=repr)
def test_bad_bytes_raise_value_error_and_lose_nothing(
    buf: FirehoseBuffer, fake: FakeFirehose, event: Any,
) -> None:
    before = _put_good(buf, 0, 5)
    with pytest.raises(EventValueError) as info:
        buf.put(event)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, FirehoseBufferError)
    _assert_delivered(buf, fake, before + _put_good(buf, 5, 5))


def test_one_event_fills_at_most_one_record(buf: FirehoseBuffer, fake: FakeFirehose) -> None:
    """1,024,000 bytes with the newline is the limit: one byte more is too large."""
    before = _put_good(buf, 0, 3)
    largest = b'{"pad":"' + b"x" * (MAX_RECORD_BYTES - 11) + b'"}'
    assert len(largest) == MAX_RECORD_BYTES - 1
    as_dict = orjson.loads(largest)
    for too_large in (largest[:-2] + b'y"}', {**as_dict, "pad": as_dict["pad"] + "y"}):
        with pytest.raises(EventTooLargeError) as info:
            buf.put(too_large)
        # The message names the event's own size and the largest that fits, newline aside.
        assert "event is 1,024,000 bytes encoded" in str(info.value)
        assert "the largest that fits is 1,023,999" in str(info.value)
        assert isinstance(info.value, EventValueError)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, FirehoseBufferError)
    # The largest event that fits goes, alone, in a record of exactly the limit.
    buf.put(largest)
    _assert_delivered(buf, fake, [*before, largest])
    assert max(len(r) for r in fake.stored[STREAMS[0]] + fake.stored[STREAMS[1]]) == (
        MAX_RECORD_BYTES
    )


def test_put_after_close_raises_and_the_rest_was_delivered(
    fake: FakeFirehose,
) -> None:

    config = BufferConfig(streams=STREAMS, linger_seconds=5.0)
    buf = FirehoseBuffer(config, client=fake)
    lines = _put_good(buf, 0, 20)
    assert buf.close(10)
    for event in ({"seq": 99}, b'{"raw":1}'):
        with pytest.raises(BufferClosedError) as info:
            buf.put(event)
        assert isinstance(info.value, FirehoseBufferError)
    assert sorted(fake.lines()) == sorted(lines)
    assert buf.stats().events_put == 20
    assert buf.close(1), "close() again is harmless"


def test_mappings_and_bytes_like_are_accepted(buf: FirehoseBuffer, fake: FakeFirehose) -> None:
    from types import MappingProxyType  # noqa: PLC0415

    buf.put(MappingProxyType({"kind": "proxy"}))
    # Accepted at run time though the Event type says bytes (see the report).
    buf.put(bytearray(b'{"kind":"bytearray"}'))  # type: ignore[arg-type]
    buf.put(memoryview(b'{"kind":"memoryview"}'))  # type: ignore[arg-type]
    buf.put(b' {"kind": "spaced",\t"x": [1, 2]} ')
    _assert_delivered(buf, fake, [
        b'{"kind":"proxy"}', b'{"kind":"bytearray"}', b'{"kind":"memoryview"}',
        b' {"kind": "spaced",\t"x": [1, 2]} ',
    ])
