"""Kept for imports from earlier versions: the send path lives in :mod:`.transport`."""

from __future__ import annotations

from .transport.botocore import FirehoseClient
from .transport.outcome import RETRYABLE_CODES, THROTTLE_CODES, Outcome

__all__ = ["RETRYABLE_CODES", "THROTTLE_CODES", "FirehoseClient", "Outcome"]
