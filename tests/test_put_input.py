"""What put() does with bad input: a typed error (a ``FirehoseBufferError``) on the caller's
thread, nothing of the bad event buffered, nothing buffered before it lost, and only valid
lines (one JSON object each) ever on the wire. The rule itself, on the pure encoder, is in
``test_encoding.py``.

A real buffer with real threads against the in-process fake service (:mod:`fakes`).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakes import FakeFirehose
from hypothesis import HealthCheck, given, settings
from json_cases import Unreadable, candidate_bytes, one_json_object

from firehose_buffer import (
    BufferClosedError,
    BufferConfig,
    EventTooLargeError,
    EventTypeError,
    EventValueError,
    FirehoseBuffer,
    FirehoseBufferError,
)
from firehose_buffer._core.routing import stable_index
from firehose_buffer._service.firehose import FIREHOSE

MAX_RECORD_BYTES = FIREHOSE.max_record_bytes
REPO = Path(__file__).resolve().parent.parent

STREAMS = ("in-0", "in-1", "in-2")


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
    b"plain text", b'{"a":1}{"b":2}', b'{"a":1} {"b":2}', b'{"a":1}\x00', b'{"a":"\xff"}',
    b'{"user":"\xff\xfe"}', b'\xef\xbb\xbf{"a":1}', b'{"a":NaN}', b'{"a":', b'{"a":\r1}',
    b'{"a":\n1}', b"1", b'"x"', b"null", b"[1]", memoryview(b"{"),
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
    assert max(len(r) for stream in STREAMS for r in fake.stored[stream]) == MAX_RECORD_BYTES


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
    # Accepted at run time, though the Event type names only bytes.
    buf.put(bytearray(b'{"kind":"bytearray"}'))  # type: ignore[arg-type]
    buf.put(memoryview(b'{"kind":"memoryview"}'))  # type: ignore[arg-type]
    buf.put(b' {"kind": "spaced",\t"x": [1, 2]} ')
    _assert_delivered(buf, fake, [
        b'{"kind":"proxy"}', b'{"kind":"bytearray"}', b'{"kind":"memoryview"}',
        b' {"kind": "spaced",\t"x": [1, 2]} ',
    ])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_floats_become_null_as_documented(
    buf: FirehoseBuffer, fake: FakeFirehose, value: float,
) -> None:
    """README ("What an event may be"): JSON has no NaN or infinity, and finding them costs
    more than encoding the event, so put() accepts them and the wire carries null there."""
    buf.put({"x": value})
    buf.put({"deep": [1, {"x": value}]})
    assert buf.flush(10)
    assert sorted(fake.lines()) == [b'{"deep":[1,{"x":null}]}', b'{"x":null}']


@pytest.mark.parametrize("partition_key", [None, "user"])
def test_put_refuses_bad_bytes_and_delivers_good_ones_byte_identical(
    fake: FakeFirehose, partition_key: str | None,
) -> None:
    """Any bytes that are not exactly one JSON object raise EventValueError at put() and
    buffer nothing, keyless as well as keyed; the rest arrive byte for byte."""
    config = BufferConfig(streams=STREAMS, partition_key=partition_key, linger_seconds=0.05)
    accepted: list[bytes] = []
    with FirehoseBuffer(config, client=fake) as buf:

        @given(candidate_bytes)
        @settings(max_examples=400, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        def put_one(data: bytes) -> None:
            before = buf.stats().events_put
            if one_json_object(data):
                assert buf.put(data)
                accepted.append(data)
            else:
                with pytest.raises(EventValueError):
                    buf.put(data)
                assert buf.stats().events_put == before

        put_one()
        assert buf.flush(10)
        assert sorted(fake.lines()) == sorted(accepted)
        assert buf.stats().events_delivered == len(accepted)


@pytest.mark.parametrize("where", ["getitem", "iter", "keys"])
@pytest.mark.parametrize("partition_key", [None, "a"])
def test_put_refuses_a_mapping_that_raises_and_keeps_going(
    fake: FakeFirehose, where: str, partition_key: str | None,
) -> None:
    """A mapping that raises when read (a lazy or proxied one) is an EventTypeError chained
    to the cause, never a raw RuntimeError out of put(); nothing of it is buffered, and the
    events around it go."""
    config = BufferConfig(streams=STREAMS, partition_key=partition_key, linger_seconds=0.05)
    with FirehoseBuffer(config, client=fake) as buf:
        buf.put({"a": 1, "n": 1})
        with pytest.raises(EventTypeError) as info:
            buf.put(Unreadable(where))
        assert isinstance(info.value.__cause__, RuntimeError)
        buf.put({"a": 2, "n": 2})
        assert buf.flush(10)
        assert buf.stats().events_put == 2
    assert sorted(fake.lines()) == [b'{"a":1,"n":1}', b'{"a":2,"n":2}']


def test_keyed_bytes_and_dicts_with_the_same_key_share_a_stream(fake: FakeFirehose) -> None:
    config = BufferConfig(streams=STREAMS, partition_key="user", linger_seconds=0.05)
    users = [f"u-{i}" for i in range(12)]
    with FirehoseBuffer(config, client=fake) as buf:
        for user in users:
            buf.put({"user": user, "as": "dict"})
            buf.put(b'{"as": "bytes", "user": "%s"}' % user.encode())
        assert buf.flush(10)
    for stream in STREAMS:
        for line in fake.lines(stream):
            assert STREAMS[stable_index(orjson.loads(line)["user"], len(STREAMS))] == stream
    assert len(fake.lines()) == 2 * len(users)


class Fickle(Mapping[str, Any]):
    """Answers a different user on every read: the line and the route must agree."""

    def __init__(self) -> None:
        self.reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return f"user-{self.reads}"

    def __iter__(self) -> Iterator[str]:
        return iter(["user"])

    def __len__(self) -> int:
        return 1


def test_a_mapping_is_routed_by_the_value_that_was_encoded(fake: FakeFirehose) -> None:
    config = BufferConfig(streams=STREAMS, partition_key="user", linger_seconds=0.05)
    with FirehoseBuffer(config, client=fake) as buf:
        for _ in range(30):
            buf.put(Fickle())
        assert buf.flush(10)
    for stream in STREAMS:
        for line in fake.lines(stream):
            assert STREAMS[stable_index(orjson.loads(line)["user"], len(STREAMS))] == stream


# orjson crashed the whole process (SIGSEGV) on a tzinfo whose utcoffset() raises: run it in a
# child, so a regression fails this test instead of killing the test run.
BAD_TZINFO_SCRIPT = textwrap.dedent("""
    import datetime as dt, sys
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
    from fakes import FakeFirehose
    from firehose_buffer import BufferConfig, EventTypeError, FirehoseBuffer

    class BadTz(dt.tzinfo):
        def __init__(self, answer):
            self.answer = answer
        def utcoffset(self, when):
            if self.answer == "raise":
                raise RuntimeError("no offset")
            return self.answer
        def dst(self, when):
            return None
        def tzname(self, when):
            return "bad"

    fake = FakeFirehose(streams={"s"})
    with FirehoseBuffer(BufferConfig(streams=["s"], linger_seconds=0.01), client=fake) as buf:
        for answer in ("raise", "+01:00", dt.timedelta(hours=30)):
            for event in ({"t": dt.datetime(2020, 1, 1, tzinfo=BadTz(answer))},
                          {"nested": [{"t": dt.datetime(2020, 1, 1, tzinfo=BadTz(answer))}]}):
                try:
                    buf.put(event)
                    print("accepted", answer)
                except EventTypeError as exc:
                    print("refused", type(exc.__cause__).__name__)
        buf.put({"t": dt.datetime(2020, 1, 1, 2, tzinfo=BadTz(None))})
        buf.put({"t": dt.datetime(2020, 1, 1, 3, tzinfo=BadTz(dt.timedelta(seconds=-1)))})
        assert buf.flush(10)
    for line in fake.lines():
        print(line.decode())
""")


def test_a_tzinfo_that_raises_or_lies_is_refused_and_the_process_lives() -> None:
    """A datetime whose tzinfo.utcoffset() raises, or answers something other than an offset
    within a day, at the top of the event or nested: put() raises EventTypeError (chained to
    the TypeError saying why) and the process lives on; offsets Python accepts are written
    as orjson writes them."""
    done = subprocess.run([sys.executable, "-c", BAD_TZINFO_SCRIPT, str(REPO)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode >= 0, (
        f"the process died of signal {-done.returncode} inside put(); stdout: {done.stdout!r}"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        *["refused TypeError"] * 6,
        # Offset None: Python calls that datetime naive. Sub-minute offsets as orjson writes.
        '{"t":"2020-01-01T02:00:00"}', '{"t":"2020-01-01T03:00:00-00:00"}',
    ]
