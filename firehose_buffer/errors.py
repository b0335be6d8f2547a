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
    """The event is not a mapping or bytes, or orjson cannot serialize it."""


class EventValueError(FirehoseBufferError, ValueError):
    """The event's content cannot become one JSON Lines line (a newline in bytes, empty bytes)."""


class EventTooLargeError(EventValueError):
    """The encoded event does not fit in one Firehose record (1,024,000 bytes with its newline)."""


class BufferFullError(FirehoseBufferError):
    """``max_buffer_bytes`` is reached and ``on_full`` says not to wait (longer)."""


class BufferClosedError(FirehoseBufferError):
    """``put()`` after ``close()``."""
