"""A small in-process Firehose for unit tests: real limits, scriptable failures, no mocks.

It behaves like the service where the client can observe it: batch and record limits raise
the same ClientError codes, per-record failures come back inside a normal response, whole-call
errors and connection errors raise what botocore raises.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

from firehose_buffer._service.firehose import FIREHOSE

MAX_BATCH_BYTES = FIREHOSE.max_batch_bytes
MAX_BATCH_RECORDS = FIREHOSE.max_batch_records
MAX_RECORD_BYTES = FIREHOSE.max_record_bytes




def client_error(code: str, status: int, message: str = "") -> ClientError:
    # The stubs want every ResponseMetadata key; botocore itself reads only these two.
    response: Any = {"Error": {"Code": code, "Message": message},
                     "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutRecordBatch")


@dataclass
class Call:
    """What the fake saw for one PutRecordBatch: when, which stream, the record sizes."""

    time: float
    stream: str
    sizes: list[int]


@dataclass
class FakeFirehose:
    """``streams``: names that exist (others raise ResourceNotFoundException)."""

    streams: set[str]
    clock: Callable[[], float] | None = None
    #: Probability that a record fails with ServiceUnavailableException (seeded).
    record_failure_rate: float = 0.0
    seed: int = 0
    #: Actions for the next calls: "throttle_all", "http_500", "http_503", "reset_after",
    #: "reset_before", "access_denied", "not_found", or a per-record code list.
    script: deque[Any] = field(default_factory=deque)
    stored: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]:
        stream = kwargs["DeliveryStreamName"]
        records = [r["Data"] for r in kwargs["Records"]]
        now = self.clock() if self.clock else 0.0
        with self._lock:
            self.calls.append(Call(now, stream, [len(r) for r in records]))
            action = self.script.popleft() if self.script else None
            if stream not in self.streams or action == "not_found":
                raise client_error("ResourceNotFoundException", 400, f"{stream} not found")
            if not 1 <= len(records) <= MAX_BATCH_RECORDS:
                raise client_error("InvalidArgumentException", 400, "records count")
            if sum(map(len, records)) > MAX_BATCH_BYTES:
                raise client_error("InvalidArgumentException", 400, "batch too large")
            if any(len(r) > MAX_RECORD_BYTES or not r for r in records):
                raise client_error("InvalidArgumentException", 400, "record size")
            if action == "access_denied":
                raise client_error("AccessDeniedException", 400)
            if action == "http_500":
                raise client_error("InternalFailure", 500)
            if action == "http_503":
                raise client_error("ServiceUnavailableException", 503, "Slow down.")
            if action == "reset_before":
                raise ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
            codes: list[str | None]
            if action == "throttle_all":
                codes = ["ServiceUnavailableException"] * len(records)
            elif isinstance(action, list):
                codes = action
            else:
                codes = [
                    "ServiceUnavailableException"
                    if self._rng.random() < self.record_failure_rate else None
                    for _ in records
                ]
            for data, code in zip(records, codes, strict=True):
                if code is None:
                    self.stored[stream].append(data)
            if action == "reset_after":
                raise ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
        return {
            "FailedPutCount": sum(c is not None for c in codes),
            "Encrypted": False,
            "RequestResponses": [
                {"RecordId": f"id-{i}"} if c is None
                else {"ErrorCode": c, "ErrorMessage": "Slow down."}
                for i, c in enumerate(codes)
            ],
        }

    def lines(self, stream: str | None = None) -> list[bytes]:
        """Every delivered event line (without newline), stream by stream."""
        names = [stream] if stream else sorted(self.stored)
        out: list[bytes] = []
        for name in names:
            for data in self.stored[name]:
                assert data.endswith(b"\n"), "a record must end with a newline"
                out.extend(data[:-1].split(b"\n"))
        return out
