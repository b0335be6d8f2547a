"""A buffered, sharded, quota-aware producer for Amazon Data Firehose.

Events become JSON Lines packed into records cut at Firehose's 5 KB billing step.
"""

from ._core.packing import billed_bytes
from ._runtime.lifecycle import install_sigterm_handler
from .buffer import FirehoseBuffer
from .config import BufferConfig, sharded_stream_names
from .errors import (
    BufferClosedError,
    BufferFullError,
    ConfigurationError,
    EventTooLargeError,
    EventTypeError,
    EventValueError,
    FirehoseBufferError,
)
from .quota import Quota
from .stats import BufferStats, FlushResult, StreamStats

__all__ = [
    "BufferClosedError",
    "BufferConfig",
    "BufferFullError",
    "BufferStats",
    "ConfigurationError",
    "EventTooLargeError",
    "EventTypeError",
    "EventValueError",
    "FirehoseBuffer",
    "FirehoseBufferError",
    "FlushResult",
    "Quota",
    "StreamStats",
    "billed_bytes",
    "install_sigterm_handler",
    "sharded_stream_names",
]
__version__ = "0.1.0"
