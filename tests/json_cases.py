"""What the input tests share: an independent oracle for "one JSON object on one line" and
hypothesis strategies that make valid events and every kind of near miss.

The oracle is Python's json module made as strict as the library's rule (no NaN or infinity,
no lone surrogate, no raw line break, an object and nothing after it), so a test never checks
orjson against itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import strategies as st


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
    """The rule: exactly one JSON object (whitespace around it allowed), valid UTF-8 without
    a byte order mark, no raw ``\\n`` or ``\\r``."""
    if b"\n" in data or b"\r" in data:
        return False
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        return False
    return type(value) is dict and _finite_and_encodable(value)


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=6)
#: Any JSON value, encoded: objects, and the arrays and scalars that are not events.
encoded_values = json_values.map(lambda value: json.dumps(value).encode())

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


#: Bytes a caller might pass as an event: valid objects, and near misses of every kind (two
#: values run together, a valid value with junk after it, text in another encoding).
candidate_bytes = (
    st.binary(max_size=40) | token_soup | mutated_objects()
    | json_objects.map(lambda event: json.dumps(event).encode())
    | encoded_values
    | st.tuples(encoded_values, encoded_values).map(b"".join)
    | st.tuples(encoded_values, st.sampled_from([b"\x00", b"\xff", b" x", b"}", b"\t"])).map(
        b"".join)
    | st.text(min_size=1, max_size=20).map(lambda s: s.encode("utf-16-le"))
)


class Unreadable(Mapping[str, Any]):
    """A mapping that fails the way user code (a lazy or proxied mapping) does: in
    ``__getitem__``, ``__iter__``, ``__len__`` or ``keys`` (``where``); any other ``where``
    reads ``{"a": 1, "b": 1}``."""

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

    def keys(self) -> Any:
        if self.where == "keys":
            raise RuntimeError("keys failed")
        return super().keys()
