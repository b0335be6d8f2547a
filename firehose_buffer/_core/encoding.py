"""One event -> one JSON Lines line, and every check that decides whether an event may go.

What goes on the wire is always one JSON object per line, encoded as UTF-8, with no raw line
break in it, and at most one record long with its newline:

- a ``dict`` (or any other ``Mapping`` with ``str`` keys) is encoded by orjson;
- ``bytes``, ``bytearray`` and ``memoryview`` are taken as already encoded, byte for byte, once
  they are shown to be exactly one JSON object: valid UTF-8 (no byte order mark), nothing
  after the value, no raw ``\\n`` or ``\\r`` (JSON allows them as whitespace; a line reader,
  Python's text mode among them, would split the event there).

Why an object, not any JSON value: every other way in (a dict, a mapping) can only make an
object, a partition key can only be read from one, and what reads the delivered files (a
table over S3, Firehose's own dynamic partitioning) takes each line as one record of fields.

NaN and +/-infinity in a dict become ``null``, as orjson writes them. Finding them costs more
than encoding (see ``benchmarks/encoding.py``), and a bytes event cannot carry them: they are
not JSON, so orjson refuses them there.

orjson reads a ``datetime``'s offset by calling its ``tzinfo.utcoffset()``, and crashes the
process (SIGSEGV, every release from 3.9 to 3.13.0) when that call raises, and writes garbage
when it returns something other than a ``timedelta``. So datetimes, dates and times are passed
to :func:`json_default` (``OPT_PASSTHROUGH_DATETIME``), which asks Python for the offset, where
a bad ``tzinfo`` raises an ordinary exception, and hands orjson an equivalent datetime with a
fixed offset: the text is the same as orjson's own. An event without datetimes pays nothing
measurable (within 1-2%, the noise of ``benchmarks/encoding.py``); one aware datetime costs
0.3-0.5 µs more than orjson's own (trying without ``default=`` first and again with it on
``TypeError`` would cost nothing either, and an event with a datetime 2 µs more).
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo as _zoneinfo
from collections.abc import Mapping
from typing import Any

import orjson

from .._service.firehose import FIREHOSE
from ..errors import EventTooLargeError, EventTypeError, EventValueError

#: put() inlines ``orjson.dumps(event, default=json_default, option=DUMPS_OPTION)`` for a
#: plain dict; :func:`encode` does exactly the same, so both give the same line.
DUMPS_OPTION = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME

#: Failure reasons :func:`is_valid_line` gives (also used as ``on_failure`` reasons).
TOO_LARGE = "event_too_large"
INVALID = "invalid_event"

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_datetime = _dt.datetime
_date = _dt.date
_time = _dt.time
_timezone = _dt.timezone
_BYTES_LIKE = (bytes, bytearray, memoryview)
#: tzinfo classes written in C whose utcoffset() runs no Python code: orjson may ask them
#: itself (a tzinfo of any other class, subclasses of these included, is asked by Python).
_C_TZINFOS = frozenset({_dt.timezone, _zoneinfo.ZoneInfo})
_KIND = {list: "an array", str: "a string", int: "a number", float: "a number",
         bool: "a boolean", type(None): "null"}


def json_default(value: object) -> str:
    """orjson's ``default=``: datetimes, dates and times (passed through), as orjson writes
    them; anything else raises ``TypeError``, which orjson turns into its own."""
    kind = type(value)
    if kind is _datetime:
        assert isinstance(value, _datetime)
        if value.tzinfo is not None and type(value.tzinfo) not in _C_TZINFOS:
            try:
                # Python checks the answer (a timedelta within a day, or None); orjson does not.
                offset = value.utcoffset()
            except Exception as exc:
                raise TypeError(f"datetime's tzinfo.utcoffset() failed: {exc!r}") from exc
            # None means the offset is unknown: Python then calls the datetime naive.
            value = value.replace(tzinfo=None if offset is None else _timezone(offset))
        return _dumps(value)[1:-1].decode()
    if kind is _date or kind is _time:
        # No tzinfo method is called here: orjson refuses a time with a tzinfo before that.
        return _dumps(value)[1:-1].decode()
    raise TypeError(f"Type is not JSON serializable: {kind.__name__}")


def unserializable(exc: TypeError) -> EventTypeError:
    """The error put() raises when orjson cannot encode the event (chain it: ``from exc``)."""
    cause = exc.__cause__
    detail = f"{exc}: {cause}" if cause is not None else str(exc)
    return EventTypeError(f"event cannot be serialized to JSON: {detail}")


def too_large(size: int, max_line: int) -> EventTooLargeError:
    """The error for a line of ``size`` bytes (newline included) over ``max_line``."""
    return EventTooLargeError(
        f"event is {size - 1:,} bytes encoded; the largest that fits is {max_line - 1:,} "
        f"(a record holds {max_line:,} bytes, and the event's newline counts)"
    )


def encode(event: object, max_line: int) -> bytes:
    """One event as one line, its newline included.

    Raises :class:`EventTypeError` (not a mapping or bytes, non-str keys, a value orjson
    cannot write), :class:`EventValueError` (bytes that are not exactly one JSON object on
    one line) or :class:`EventTooLargeError` (longer than ``max_line`` with the newline).
    """
    return encode_fields(event, max_line)[0]


def encode_fields(event: object, max_line: int) -> tuple[bytes, Mapping[str, Any]]:
    """:func:`encode`, and the event's fields to read a partition key from: the dict itself,
    a copy of a mapping (its methods are not called twice), or a bytes event's parsed
    object (bytes are parsed once, to check them and to route them)."""
    if type(event) is dict:
        try:
            line = _dumps(event, default=json_default, option=DUMPS_OPTION)
        except TypeError as exc:
            raise unserializable(exc) from exc
        if len(line) > max_line:
            raise too_large(len(line), max_line)
        return line, event
    if isinstance(event, _BYTES_LIKE):
        data = event if type(event) is bytes else bytes(event)
        if len(data) >= max_line:
            raise too_large(len(data) + 1, max_line)
        fields = _parse(data)
        return data + b"\n", fields
    if isinstance(event, Mapping):
        try:
            fields = dict(event)
        except Exception as exc:
            raise EventTypeError(
                f"event mapping {type(event).__name__} could not be read: {exc!r}"
            ) from exc
        return encode_fields(fields, max_line)
    raise EventTypeError(
        f"event must be a mapping with str keys or bytes, not {type(event).__name__}"
    )


def _parse(data: bytes) -> dict[str, Any]:
    """The one JSON object ``data`` holds, or :class:`EventValueError` saying why not."""
    # JSON allows \n and \r between tokens, so orjson would take them: look for them first.
    if b"\n" in data or b"\r" in data:
        raise EventValueError(
            "bytes event contains a line break (\\n or \\r); one event is one line"
        )
    try:
        # Also refuses invalid UTF-8, a BOM, empty or blank input, NaN, and trailing bytes.
        value = _loads(data)
    except _JSONDecodeError as exc:
        raise EventValueError(f"bytes event is not one JSON value: {exc}") from exc
    if type(value) is not dict:
        raise EventValueError(
            f"bytes event is {_KIND.get(type(value), 'a JSON value')}, not a JSON object"
        )
    return value


def is_valid_line(line: bytes, max_line: int = FIREHOSE.max_record_bytes) -> str | None:
    """Why a spooled line (with its newline) may not be sent, as a failure reason
    (:data:`TOO_LARGE`, :data:`INVALID`), or None when it may."""
    if len(line) > max_line:
        return TOO_LARGE
    if not line.endswith(b"\n"):
        return INVALID
    try:
        _parse(line[:-1])
    except EventValueError:
        return INVALID
    return None
