"""Every error the library raises, under one base class.

Errors about bad input also derive from the built-in a caller would expect (``TypeError`` or
``ValueError``), so ``except ValueError`` keeps working for code that does not know this library.
"""

from __future__ import annotations


class FirehoseBufferError(Exception):
    """Base class of every error raised by firehose_buffer."""


class ConfigurationError(FirehoseBufferError, ValueError):
    """A configuration value is invalid or inconsistent; raised when the config is built."""


class EventTypeError(FirehoseBufferError, TypeError):
    """The event is not a mapping or bytes, a mapping raised when read, or orjson cannot
    serialize it (a non-str key, an unsupported value, a datetime with a broken tzinfo)."""


class EventValueError(FirehoseBufferError, ValueError):
    """The event's content cannot become one JSON Lines line: bytes that are not exactly one
    JSON object (invalid UTF-8 or JSON, not an object, more after it, a raw line break)."""


class EventTooLargeError(EventValueError):
    """The encoded event does not fit in one Firehose record (1,024,000 bytes with its newline)."""


class BufferFullError(FirehoseBufferError):
    """``max_buffer_bytes`` is reached and ``on_full`` says not to wait (longer)."""


class BufferClosedError(FirehoseBufferError):
    """``put()`` after ``close()``."""
