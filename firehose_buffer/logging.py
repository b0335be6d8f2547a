"""``FirehoseHandler``: ship Python log records to Firehose as JSON Lines, through a buffer.

::

    buffer = FirehoseBuffer(BufferConfig(streams=("app-logs",), on_full="drop"))
    logging.getLogger().addHandler(FirehoseHandler(buffer, level=logging.INFO))

Each record becomes one JSON object: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
``message``, ``exception`` and ``stack`` when present, the handler's static ``fields``, and
every ``extra=`` field of the call. Records from this library and from the AWS SDK's
loggers are never shipped (sending them would log more, forever), and nothing the handler
meets, a full or closed buffer included, is raised into the code that logged: it goes to
``logging.Handler.handleError`` like any other handler's trouble.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from ._core.encoding import json_default
from .buffer import FirehoseBuffer

#: Loggers whose records a FirehoseHandler drops: its own buffer's, and those of the HTTP
#: stack under it, since shipping one of them makes more of them.
EXCLUDED_LOGGERS = ("firehose_buffer", "botocore", "boto3", "urllib3", "s3transfer")

#: Attributes every LogRecord has; anything else in ``record.__dict__`` came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}
_JSON_SCALARS = (str, int, float, bool, type(None))
# Datetimes go through encoding.json_default: orjson crashes the process on a bad tzinfo.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


class FirehoseHandler(logging.Handler):
    """A ``logging.Handler`` that puts each record into ``buffer`` as one JSON event.

    The buffer is the caller's: :meth:`close` flushes it (for at most ``flush_timeout``
    seconds) but does not close it. Give the buffer ``on_full="drop"`` if logging must never
    wait for room. ``fields`` are added to every event (service name, host, version...).
    ``exclude`` replaces :data:`EXCLUDED_LOGGERS`: logger name prefixes never shipped.
    """

    def __init__(
        self,
        buffer: FirehoseBuffer,
        level: int | str = logging.NOTSET,
        *,
        fields: Mapping[str, Any] | None = None,
        exclude: Iterable[str] = EXCLUDED_LOGGERS,
        flush_timeout: float = 5.0,
    ) -> None:
        super().__init__(level)
        self.buffer = buffer
        self.fields = dict(fields or {})
        self.flush_timeout = flush_timeout
        prefixes = tuple(exclude)
        self._exact = frozenset(prefixes)
        self._children = tuple(p + "." for p in prefixes)
        # A log call made while this thread is already inside emit() (a router or an
        # on_failure callback that logs, say) is dropped instead of recursing.
        self._local = threading.local()

    def _excluded(self, name: str) -> bool:
        return name in self._exact or name.startswith(self._children)

    def emit(self, record: logging.LogRecord) -> None:
        if self._excluded(record.name) or getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            self.buffer.put(self.encode(record))
        except Exception:
            self.handleError(record)
        finally:
            self._local.busy = False

    def encode(self, record: logging.LogRecord) -> bytes:
        """The JSON line (without its newline) ``record`` becomes."""
        return encode_record(record, self.fields)

    def flush(self) -> None:
        try:
            self.buffer.flush(self.flush_timeout)
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "FirehoseHandler.flush failed"}))

    def close(self) -> None:
        self.flush()
        super().close()


_FORMATTER = logging.Formatter()


def encode_record(record: logging.LogRecord, fields: Mapping[str, Any] | None = None) -> bytes:
    """One log record as one JSON object (no newline): the fields described above."""
    event: dict[str, Any] = {
        "time": _iso_utc(record.created),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    if record.exc_info and not record.exc_text:
        record.exc_text = _FORMATTER.formatException(record.exc_info)
    if record.exc_text:
        event["exception"] = record.exc_text
    if record.stack_info:
        event["stack"] = record.stack_info
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    for key, value in (*(fields or {}).items(), *extra.items()):
        if key not in event:
            event[key] = value
    try:
        return orjson.dumps(event, default=_default, option=_OPTIONS)
    except TypeError:
        # orjson refuses some values even with default= (integers beyond 64 bits, nesting
        # too deep): fall back to str() for every value that is not a plain scalar.
        safe = {k: v if isinstance(v, _JSON_SCALARS) and not _big(v) else str(v)
                for k, v in event.items()}
        return orjson.dumps(safe)


def _default(value: object) -> str:
    try:
        return json_default(value)
    except TypeError:
        return str(value)


def _big(value: object) -> bool:
    return isinstance(value, int) and not -(2**63) <= value < 2**64


def _iso_utc(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
