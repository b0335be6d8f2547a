"""One event -> one JSON Lines line; every input check lives here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .errors import EventTooLargeError, EventTypeError, EventValueError

_OPT = orjson.OPT_APPEND_NEWLINE


def encode(event: object, max_line: int) -> tuple[bytes, Any]:
    """The line (with its newline) and, for bytes events, the parsed value (else None)."""
    parsed: Any = None
    if isinstance(event, bytes | bytearray | memoryview):
        data = bytes(event)
        if not data.strip():
            raise EventValueError("bytes event is empty")
        if b"\n" in data:
            raise EventValueError("bytes event contains a newline; one event is one line")
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise EventValueError(f"bytes event is not one JSON value: {exc}") from None
        line = data + b"\n"
    elif isinstance(event, Mapping):
        try:
            line = orjson.dumps(dict(event), option=_OPT)
        except TypeError as exc:
            raise EventTypeError(f"event cannot be serialized to JSON: {exc}") from None
        except Exception as exc:
            raise EventTypeError(f"event mapping could not be read: {exc!r}") from exc
    else:
        raise EventTypeError(
            f"event must be a mapping with str keys or bytes, not {type(event).__name__}")
    if len(line) > max_line:
        raise EventTooLargeError(
            f"encoded event is {len(line) - 1} bytes; with its newline a record holds events "
            f"of at most {max_line - 1} bytes")
    return line, parsed


def line_problem(line: bytes, max_line: int) -> str | None:
    """Why a spooled line (with its newline) cannot be sent, or None."""
    if len(line) > max_line:
        return "event_too_large"
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return "invalid_spool_line"
    return None
