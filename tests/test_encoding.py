"""What may become a line on the wire, decided by the pure encoder and validator
(``encoding.encode``, ``encode_fields``, ``is_valid_line``): one JSON object per line, valid
UTF-8, no raw line break, at most one record with its newline; anything else raises a typed
error. What put() does with the same input, through a real buffer, is in
``test_put_input.py``."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_cases import Unreadable, candidate_bytes, json_objects, one_json_object

from firehose_buffer import EventTooLargeError, EventTypeError, EventValueError
from firehose_buffer._core.encoding import INVALID, TOO_LARGE, encode, encode_fields, is_valid_line
from firehose_buffer._service.firehose import FIREHOSE

MAX_RECORD_BYTES = FIREHOSE.max_record_bytes


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


@pytest.mark.parametrize("where", ["getitem", "iter", "keys"])
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
