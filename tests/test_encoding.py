"""What may become a line on the wire: encoding.encode and is_valid_line, and put() through a
real buffer. The rule: one JSON object per line, valid UTF-8, no raw line break, at most one
record with its newline; anything else raises a typed error and buffers nothing."""

from __future__ import annotations

import datetime as dt
import json
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
from hypothesis import strategies as st

from firehose_buffer import (
    BufferConfig,
    EventTooLargeError,
    EventTypeError,
    EventValueError,
    FirehoseBuffer,
)
from firehose_buffer._core.encoding import INVALID, TOO_LARGE, encode, encode_fields, is_valid_line
from firehose_buffer._core.routing import stable_index
from firehose_buffer._service.firehose import FIREHOSE

MAX_RECORD_BYTES = FIREHOSE.max_record_bytes

STREAMS = ("enc-0", "enc-1", "enc-2")
REPO = Path(__file__).resolve().parent.parent

# -- an independent oracle: Python's json module, made as strict as the rule --------------


def _finite_and_encodable(value: Any) -> bool:
    """Python's json takes 1e400 (as inf) and lone surrogate escapes; the rule does not."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list):
        return all(_finite_and_encodable(v) for v in value)
    if isinstance(value, dict):
        return all(_finite_and_encodable(k) and _finite_and_encodable(v)
                   for k, v in value.items())
    return True


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def one_json_object(data: bytes) -> bool:
    if b"\n" in data or b"\r" in data:
        return False
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        return False
    return type(value) is dict and _finite_and_encodable(value)


# -- strategies ---------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=6)

# Pieces of almost-JSON: joined at random they make valid objects, and every near miss.
TOKENS = [
    b"{", b"}", b"[", b"]", b":", b",", b'"a"', b'"b"', b"1", b"-0", b"1e400", b"2.5",
    b"true", b"null", b"NaN", b"Infinity", b" ", b"\t", b"\r", b"\n", b"\x00", b"\x0c",
    b'"\\ud800"', b'"\\u0000"', b'"\xed\xa0\x80"', b"\xff", b"\xef\xbb\xbf", b'"\xe2\x80\xa8"',
    b'"x\x01"', b'"\\n"', b"01", b'{"k":"v"}', b'{"k":[1,{"z":null}]}',
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=12).map(b"".join)


@st.composite
def mutated_objects(draw: st.DrawFn) -> bytes:
    """A valid object with one byte changed, inserted or dropped, or something appended."""
    data = json.dumps(draw(json_objects), ensure_ascii=draw(st.booleans())).encode()
    action = draw(st.sampled_from(["keep", "replace", "insert", "drop", "append"]))
    if action == "keep":
        return data
    at = draw(st.integers(0, len(data) - 1))
    byte = draw(st.binary(min_size=1, max_size=1))
    if action == "replace":
        return data[:at] + byte + data[at + 1:]
    if action == "insert":
        return data[:at] + byte + data[at:]
    if action == "drop":
        return data[:at] + data[at + 1:]
    return data + draw(st.sampled_from(TOKENS) | st.binary(max_size=3))


candidate_bytes = (st.binary(max_size=40) | token_soup | mutated_objects()
                   | json_objects.map(lambda event: json.dumps(event).encode()))

# -- encode: pure ---------------------------------------------------------------------------


@given(st.dictionaries(st.text(), st.text()))
def test_a_dict_of_strings_is_one_line_that_reads_back_the_same(event: dict[str, str]) -> None:
    line = encode(event, MAX_RECORD_BYTES)
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1] and b"\r" not in line[:-1]
    assert orjson.loads(line) == event


@given(json_objects)
def test_a_dict_encodes_exactly_as_orjson_does(event: dict[str, Any]) -> None:
    """put() inlines orjson for a plain dict: encode() must give the very same bytes."""
    assert encode(event, MAX_RECORD_BYTES) == orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)


@given(candidate_bytes)
@settings(max_examples=1000)
def test_bytes_go_byte_identical_if_and_only_if_they_are_one_json_object(data: bytes) -> None:
    if one_json_object(data):
        assert encode(data, MAX_RECORD_BYTES) == data + b"\n"
        assert encode(bytearray(data), MAX_RECORD_BYTES) == data + b"\n"
        assert encode(memoryview(data), MAX_RECORD_BYTES) == data + b"\n"
        assert is_valid_line(data + b"\n") is None
    else:
        with pytest.raises(EventValueError):
            encode(data, MAX_RECORD_BYTES)
        assert is_valid_line(data + b"\n") == INVALID


@given(json_objects, st.sampled_from([(",", ":"), (", ", ": ")]), st.booleans())
def test_valid_bytes_are_kept_as_given_and_parsed_once_for_routing(
    event: dict[str, Any], separators: tuple[str, str], ascii_only: bool,
) -> None:
    data = json.dumps(event, separators=separators, ensure_ascii=ascii_only).encode()
    line, fields = encode_fields(data, MAX_RECORD_BYTES)
    assert line == data + b"\n"
    assert fields == orjson.loads(data)


@pytest.mark.parametrize(("data", "why"), [
    (b"", "empty"), (b" \t ", "blank"), (b"\xef\xbb\xbf{}", "byte order mark"),
    (b'{"a":"\xed\xa0\x80"}', "an encoded surrogate is not UTF-8"),
    (b'{"a":"\\ud800"}', "a lone surrogate escape"), (b'{"a":1}\x00', "trailing NUL"),
    (b'{"a":"x\x00"}', "raw NUL in a string"), (b'{"a":1}\r', "lone CR"),
    (b'{"a":\n1}', "newline as whitespace"), (b'{"a":NaN}', "NaN"), (b'{"a":1e400}', "inf"),
    (b"1", "a number"), (b'"x"', "a string"), (b"null", "null"), (b"[{}]", "an array"),
    (b'{"a":1} {"b":2}', "two values"),
])
def test_bytes_that_are_not_one_json_object_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(EventValueError):
        encode(data, MAX_RECORD_BYTES)
    assert is_valid_line(data + b"\n") == INVALID, why


def test_escaped_nul_and_unicode_line_separators_are_fine() -> None:
    """JSON escapes and U+2028 are not line breaks to a line reader; orjson writes them too."""
    for data in (b'{"a":"x\\u0000y"}', b'{"a":"\xe2\x80\xa8"}', b'{"a":"\\r\\n"}'):
        assert encode(data, MAX_RECORD_BYTES) == data + b"\n"


@given(st.integers(20, 400), st.integers(0, 420), st.booleans())
def test_the_size_limit_counts_the_newline_and_the_message_says_so(
    max_line: int, pad: int, as_bytes: bool,
) -> None:
    event = {"pad": "x" * pad}
    data = orjson.dumps(event)
    if len(data) + 1 <= max_line:
        assert len(encode(data if as_bytes else event, max_line)) == len(data) + 1
        return
    with pytest.raises(EventTooLargeError) as info:
        encode(data if as_bytes else event, max_line)
    assert f"event is {len(data):,} bytes encoded" in str(info.value)
    assert f"the largest that fits is {max_line - 1:,}" in str(info.value)
    assert is_valid_line(data + b"\n", max_line) == TOO_LARGE


def test_nan_and_infinity_in_a_dict_become_null() -> None:
    """Documented: orjson writes null, and finding them costs more than encoding."""
    event = {"nan": math.nan, "inf": math.inf, "neg": [-math.inf]}
    assert encode(event, MAX_RECORD_BYTES) == b'{"nan":null,"inf":null,"neg":[null]}\n'


def test_is_valid_line_wants_its_newline() -> None:
    assert is_valid_line(b'{"a":1}\n') is None
    assert is_valid_line(b'{"a":1}') == INVALID
    assert is_valid_line(b'{"a":1}\n\n') == INVALID
    assert is_valid_line(b"\n") == INVALID


class Unreadable(Mapping[str, Any]):
    """A mapping that fails the way user code does: in __getitem__, __iter__ or __len__."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __getitem__(self, key: str) -> Any:
        if self.where == "getitem":
            raise RuntimeError("getitem failed")
        return 1

    def __iter__(self) -> Iterator[str]:
        if self.where == "iter":
            raise RuntimeError("iter failed")
        return iter(["a", "b"])

    def __len__(self) -> int:
        if self.where == "len":
            raise RuntimeError("len failed")
        return 2


@pytest.mark.parametrize("where", ["getitem", "iter"])
def test_a_mapping_that_raises_gives_a_chained_type_error(where: str) -> None:
    with pytest.raises(EventTypeError) as info:
        encode(Unreadable(where), MAX_RECORD_BYTES)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert f"{where} failed" in str(info.value)


def test_a_readable_mapping_is_encoded_from_one_copy() -> None:
    assert encode(Unreadable("none"), MAX_RECORD_BYTES) == b'{"a":1,"b":1}\n'


naive = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
fixed_offsets = st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59, seconds=59),
                              max_value=dt.timedelta(hours=23, minutes=59, seconds=59)
                              ).map(dt.timezone)
aware = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                     timezones=st.timezones() | fixed_offsets)


@given(st.lists(naive | aware | st.dates() | st.times(), min_size=1, max_size=3))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_good_datetimes_are_written_as_orjson_writes_them(values: list[Any]) -> None:
    event = {"t": values[0], "nested": [{"t": v} for v in values]}
    assert encode(event, MAX_RECORD_BYTES) == orjson.dumps(event,
                                                           option=orjson.OPT_APPEND_NEWLINE)


def test_a_time_with_a_tzinfo_is_refused_as_orjson_refuses_it() -> None:
    with pytest.raises(EventTypeError):
        encode({"t": dt.time(1, tzinfo=dt.UTC)}, MAX_RECORD_BYTES)


# A bad tzinfo crashed the whole process inside orjson: run it in a child, so a regression
# fails this test instead of killing the test run.
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
            try:
                buf.put({"t": dt.datetime(2020, 1, 1, tzinfo=BadTz(answer))})
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
    done = subprocess.run([sys.executable, "-c", BAD_TZINFO_SCRIPT, str(REPO)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "refused TypeError", "refused TypeError", "refused TypeError",
        # Offset None: Python calls that datetime naive. Sub-minute offsets as orjson writes.
        '{"t":"2020-01-01T02:00:00"}', '{"t":"2020-01-01T03:00:00-00:00"}',
    ]


# -- put() through a real buffer ------------------------------------------------------------


@pytest.fixture
def fake() -> FakeFirehose:
    return FakeFirehose(streams=set(STREAMS))


@pytest.mark.parametrize("partition_key", [None, "user"])
def test_put_refuses_bad_bytes_and_delivers_good_ones_byte_identical(
    fake: FakeFirehose, partition_key: str | None,
) -> None:

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


def test_put_refuses_a_raising_mapping_and_keeps_going(fake: FakeFirehose) -> None:
    config = BufferConfig(streams=STREAMS, linger_seconds=0.05)
    with FirehoseBuffer(config, client=fake) as buf:
        buf.put({"n": 1})
        with pytest.raises(EventTypeError) as info:
            buf.put(Unreadable("getitem"))
        assert isinstance(info.value.__cause__, RuntimeError)
        buf.put({"n": 2})
        assert buf.flush(10)
        assert buf.stats().events_put == 2
    assert sorted(fake.lines()) == [b'{"n":1}', b'{"n":2}']
