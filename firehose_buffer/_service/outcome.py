"""What one PutRecordBatch call meant for its records: the value every transport returns and
the scheduler consumes. The service profile (:mod:`.firehose`) makes one from an answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one call.

    ``codes`` is set when the call returned: one entry per record, ``None`` for stored.
    Otherwise ``error`` names what went wrong, ``retryable`` says whether waiting can help,
    ``unknown`` whether the records may have been stored anyway (a resend may duplicate them),
    and ``throttled`` whether the service asked us to slow down. ``resent``: the client
    itself sent the call more than once (a boto3 client's own retries), so any record in it
    may have been stored by an earlier attempt as well.
    """

    codes: Sequence[str | None] | None = None
    error: str | None = None
    retryable: bool = False
    unknown: bool = False
    throttled: bool = False
    resent: bool = False


__all__ = ["Outcome"]
