"""What Amazon Data Firehose is, as one object the rest of the library asks.

Its hard limits (AWS's documented quotas, which cannot be raised), the billing step, the wire
format of PutRecordBatch (target, content type, body), how to sign it, and what every
answer means: the packer, the config, the scheduler and both transports read these from
:data:`FIREHOSE` instead of each keeping its own copy. A second service (Kinesis Data
Streams has PutRecords, a partition key per record, other limits) would be a second
:class:`ServiceProfile`.

Sizes: a record has a raw size (the JSON lines it holds) and a wire size (the bytes sent as
its ``Data``: the same unless records are compressed). Billing, the byte quota and the
record and batch caps all count wire bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from .outcome import Outcome

#: Per-record and whole-call codes that mean "slow down".
THROTTLE_CODES = frozenset({"ServiceUnavailableException", "ThrottlingException", "SlowDown",
                            "LimitExceededException", "TooManyRequestsException"})
#: Whole-call codes worth retrying by waiting; anything else 4xx fails the records at once.
RETRYABLE_CODES = THROTTLE_CODES | frozenset({
    "InternalFailure", "InternalFailureException", "InternalServerError", "ServiceFailure",
    "RequestTimeout", "RequestTimeoutException", "RequestExpired", "ExpiredTokenException",
})
#: The code of an entry that carries neither an error nor a RecordId: not acknowledged, and
#: the service may have stored it anyway.
MISSING_RECORD_ID = "MissingRecordId"

#: A 200 whose body cannot say which records were stored: resend them all, as possible
#: duplicates, since the service may have kept some or all of them.
MALFORMED = Outcome(error="MalformedResponse", retryable=True, unknown=True)


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    """One service's limits, billing, wire format and answer semantics."""

    name: str
    #: SigV4 signing name and endpoint prefix (``https://<prefix>.<region>.<dns suffix>``).
    signing_name: str
    endpoint_prefix: str
    target: str
    content_type: str
    #: Largest ``Data`` of one record, in wire bytes (before base64).
    max_record_bytes: int
    max_batch_records: int
    #: Largest sum of ``Data`` in one call, in wire bytes.
    max_batch_bytes: int
    #: Lines per record that dynamic partitioning can deaggregate (it fails silently past).
    max_events_per_record: int
    #: Each record is billed rounded up to this many bytes.
    billing_step: int
    #: Regions whose default Direct PUT quota is ``Quota.HIGH`` (AWS's Firehose quotas page).
    high_quota_regions: frozenset[str]

    def billed(self, size: int) -> int:
        """What the service bills for one record of ``size`` wire bytes."""
        step = self.billing_step
        return -(-size // step) * step

    def waste(self, size: int) -> int:
        """Bytes billed but not sent for one record of ``size`` wire bytes."""
        return -size % self.billing_step

    @staticmethod
    def is_throttle(code: str | None) -> bool:
        """Whether an error code (a record's or a call's) asks us to slow down."""
        return code in THROTTLE_CODES

    @staticmethod
    def not_acknowledged(code: str | None) -> bool:
        """A record the answer neither stored nor failed: it may have landed all the same."""
        return code == MISSING_RECORD_ID

    @staticmethod
    def build_body(stream: str, records: Sequence[bytes | memoryview]) -> bytes:
        """The PutRecordBatch JSON, joined from bytes: base64 text needs no JSON escaping."""
        b64 = base64.b64encode
        if not records:
            return b'{"DeliveryStreamName":' + orjson.dumps(stream) + b',"Records":[]}'
        return b"".join((
            b'{"DeliveryStreamName":', orjson.dumps(stream), b',"Records":[{"Data":"',
            b'"},{"Data":"'.join([b64(r) for r in records]), b'"}]}',
        ))

    @staticmethod
    def classify_response(obj: object, count: int) -> Outcome:
        """Map a parsed HTTP 200 body of a ``count``-record call to an Outcome. Never raises.

        Well-formed means: a dict whose ``RequestResponses`` is a list of ``count`` dicts,
        each with a non-empty str ``ErrorCode`` or a non-empty str ``RecordId`` (or neither:
        that record was not acknowledged and is retried as a possible duplicate), and whose
        ``FailedPutCount`` is an int equal to the number of entries with an ``ErrorCode``.
        Anything else is :data:`MALFORMED`.
        """
        try:
            return _classify(obj, count)
        except Exception:  # belt and braces: a parser bug must not become a lost batch
            return MALFORMED

    @staticmethod
    def classify_error(code: str | None, status: int) -> Outcome:
        """Map a whole-call error (its code, if any, and HTTP status) to an Outcome.

        Throttle codes and 429 are throttled; those, the retryable codes and any 5xx are
        worth retrying, and may have stored the records (a resend may duplicate them). Any
        other 4xx fails the records at once. A 407 can only be a proxy's (a plain-HTTP
        request forwarded through one) refusing its credentials: named as when it refuses a
        CONNECT tunnel.
        """
        if status == 407:
            return Outcome(error="ProxyAuthenticationRequired")
        name = code or f"HTTP{status}"
        throttled = name in THROTTLE_CODES or status == 429
        retryable = throttled or name in RETRYABLE_CODES or status >= 500
        return Outcome(error=name, retryable=retryable, unknown=retryable, throttled=throttled)


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


FIREHOSE = ServiceProfile(
    name="Firehose",
    signing_name="firehose",
    endpoint_prefix="firehose",
    target="Firehose_20150804.PutRecordBatch",
    content_type="application/x-amz-json-1.1",
    max_record_bytes=1_024_000,
    max_batch_records=500,
    max_batch_bytes=4 * 1024 * 1024,
    max_events_per_record=500,
    billing_step=5_120,
    high_quota_regions=frozenset({"us-east-1", "us-west-2", "eu-west-1"}),
)

__all__ = ["FIREHOSE", "MALFORMED", "MISSING_RECORD_ID", "RETRYABLE_CODES", "THROTTLE_CODES",
           "ServiceProfile"]
