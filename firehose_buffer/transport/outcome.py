"""What one PutRecordBatch call meant for each record in it, decided by pure functions.

Both transports parse what came back and hand it here, so a response shape means the same
thing whoever sent the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Per-record and whole-call codes that mean "slow down".
THROTTLE_CODES = frozenset({"ServiceUnavailableException", "ThrottlingException", "SlowDown",
                            "LimitExceededException", "TooManyRequestsException"})
#: Whole-call codes worth retrying by waiting; anything else 4xx fails the records at once.
RETRYABLE_CODES = THROTTLE_CODES | frozenset({
    "InternalFailure", "InternalFailureException", "InternalServerError", "ServiceFailure",
    "RequestTimeout", "RequestTimeoutException", "RequestExpired", "ExpiredTokenException",
})
#: The code of an entry that carries neither an error nor a RecordId: not acknowledged.
MISSING_RECORD_ID = "MissingRecordId"


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


#: A 200 whose body cannot say which records were stored: resend them all, as possible
#: duplicates, since the service may have kept some or all of them.
MALFORMED = Outcome(error="MalformedResponse", retryable=True, unknown=True)


def classify_response(obj: object, count: int) -> Outcome:
    """Map a parsed HTTP 200 body of a ``count``-record call to an Outcome. Never raises.

    Well-formed means: a dict whose ``RequestResponses`` is a list of ``count`` dicts, each
    with a non-empty str ``ErrorCode`` or a non-empty str ``RecordId`` (or neither: that
    record was not acknowledged and is retried), and whose ``FailedPutCount`` is an int equal
    to the number of entries with an ``ErrorCode``. Anything else is :data:`MALFORMED`.
    """
    try:
        return _classify(obj, count)
    except Exception:  # belt and braces: a parser bug must not become a lost batch
        return MALFORMED


def _classify(obj: object, count: int) -> Outcome:
    if not isinstance(obj, dict):
        return MALFORMED
    entries = obj.get("RequestResponses")
    failed = obj.get("FailedPutCount")
    if not isinstance(entries, list) or len(entries) != count:
        return MALFORMED
    if not isinstance(failed, int) or isinstance(failed, bool):
        return MALFORMED
    codes: list[str | None] = []
    errors = 0
    for entry in entries:
        if not isinstance(entry, dict):
            return MALFORMED
        code = entry.get("ErrorCode")
        record_id = entry.get("RecordId")
        if code is not None:
            if not isinstance(code, str) or not code:
                return MALFORMED
            errors += 1
            codes.append(code)
        elif record_id is not None:
            if not isinstance(record_id, str) or not record_id:
                return MALFORMED
            codes.append(None)
        else:
            codes.append(MISSING_RECORD_ID)
    if failed != errors:
        # The count and the entries disagree: neither can be trusted to say what was stored.
        return MALFORMED
    return Outcome(codes=codes, throttled=any(c in THROTTLE_CODES for c in codes))


def classify_error(code: str | None, status: int) -> Outcome:
    """Map a whole-call error (its code, if any, and HTTP status) to an Outcome.

    Throttle codes and 429 are throttled; those, the retryable codes and any 5xx are worth
    retrying, and may have stored the records (a resend may duplicate them). Any other 4xx
    fails the records at once. A 407 can only be a proxy's (a plain-HTTP request forwarded
    through one) refusing its credentials: named as when it refuses a CONNECT tunnel.
    """
    if status == 407:
        return Outcome(error="ProxyAuthenticationRequired")
    name = code or f"HTTP{status}"
    throttled = name in THROTTLE_CODES or status == 429
    retryable = throttled or name in RETRYABLE_CODES or status >= 500
    return Outcome(error=name, retryable=retryable, unknown=retryable, throttled=throttled)


__all__ = ["MALFORMED", "MISSING_RECORD_ID", "RETRYABLE_CODES", "THROTTLE_CODES", "Outcome",
           "classify_error", "classify_response"]
