"""One PutRecordBatch call and what its result means for each record in it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

log = logging.getLogger("firehose_buffer")

#: Per-record and whole-call codes that mean "slow down".
THROTTLE_CODES = frozenset({"ServiceUnavailableException", "ThrottlingException", "SlowDown",
                            "LimitExceededException", "TooManyRequestsException"})
#: Whole-call codes worth retrying by waiting; anything else 4xx fails the records at once.
RETRYABLE_CODES = THROTTLE_CODES | frozenset({
    "InternalFailure", "InternalFailureException", "InternalServerError", "ServiceFailure",
    "RequestTimeout", "RequestTimeoutException", "RequestExpired", "ExpiredTokenException",
})


class FirehoseClient(Protocol):
    """The part of boto3's Firehose client this library uses."""

    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one call.

    ``codes`` is set when the call returned: one entry per record, ``None`` for stored.
    Otherwise ``error`` names what went wrong, ``retryable`` says whether waiting can help,
    ``unknown`` whether the records may have been stored anyway (a resend may duplicate them),
    and ``throttled`` whether the service asked us to slow down.
    """

    codes: Sequence[str | None] | None = None
    error: str | None = None
    retryable: bool = False
    unknown: bool = False
    throttled: bool = False


def put_record_batch(client: FirehoseClient, stream: str, records: Sequence[bytes]) -> Outcome:
    """Send one batch; classify every way it can end. Never raises."""
    try:
        response = client.put_record_batch(
            DeliveryStreamName=stream, Records=[{"Data": data} for data in records]
        )
    except ClientError as exc:
        return _client_error(exc)
    except (ConnectTimeoutError, EndpointConnectionError) as exc:
        # Nothing reached the service: a resend cannot duplicate.
        return Outcome(error=type(exc).__name__, retryable=True)
    except (NoCredentialsError, PartialCredentialsError) as exc:
        return Outcome(error=type(exc).__name__)
    except BotoCoreError as exc:
        # Connection reset, read timeout, bad response...: the records may have landed.
        return Outcome(error=type(exc).__name__, retryable=True, unknown=True)
    except Exception as exc:  # a bug or an exotic client: keep the events, retry, say so
        log.exception("PutRecordBatch to %s raised unexpectedly", stream)
        return Outcome(error=type(exc).__name__, retryable=True, unknown=True)
    return _response(response, len(records))


def _client_error(exc: ClientError) -> Outcome:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    throttled = code in THROTTLE_CODES or status == 429
    retryable = throttled or code in RETRYABLE_CODES or status >= 500
    return Outcome(error=code, retryable=retryable, unknown=retryable, throttled=throttled)


def _response(response: dict[str, Any], count: int) -> Outcome:
    entries = response.get("RequestResponses")
    failed = response.get("FailedPutCount", 0)
    if not isinstance(entries, list) or len(entries) != count:
        # Cannot tell which records were stored: resend all, flagged as possible duplicates.
        return Outcome(error="MalformedResponse", retryable=True, unknown=True)
    if not failed and not any("ErrorCode" in e for e in entries):
        return Outcome(codes=[None] * count)
    codes = [_entry_code(e) for e in entries]
    return Outcome(codes=codes, throttled=any(c in THROTTLE_CODES for c in codes))


def _entry_code(entry: dict[str, Any]) -> str | None:
    code = entry.get("ErrorCode")
    if code:
        return str(code)
    # Neither an error nor a RecordId: not acknowledged, so not delivered.
    return None if entry.get("RecordId") else "MissingRecordId"
