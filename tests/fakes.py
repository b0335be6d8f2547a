"""Small in-process stand-ins for the world outside the buffer, for unit tests; no mocks.

:class:`FakeFirehose` is a boto3-shaped client that behaves like the service where the client
can observe it: batch and record limits raise the same ClientError codes, per-record failures
come back inside a normal response, whole-call errors and connection errors raise what
botocore raises. :class:`LocalTransport` is the buffer's own seam
(:class:`~firehose_buffer.transport.Transport`) answered in this process, with calls that can
be held; :class:`FakeClock` is a clock the test moves.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

from firehose_buffer._service.firehose import FIREHOSE
from firehose_buffer.transport import Outcome

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


class FakeClock:
    """Monotonic seconds that move only when the test says (``advance``); counts its reads,
    so a test can tell when the buffer's threads stop looking at it."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.reads = 0

    def __call__(self) -> float:
        with self._lock:
            self.reads += 1
            return self._now

    def peek(self) -> float:
        """The time, without counting a read."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass
class Sent:
    """One send() the transport saw: the stream, the records' bytes, the clock at the call."""

    stream: str
    records: list[bytes]
    at: float


class LocalTransport:
    """A :class:`~firehose_buffer.transport.Transport` answered in this process.

    Each call gets the next of ``answers`` (an Outcome), or when none is left one that
    stores every record. ``hold()`` keeps calls waiting inside send() until ``release()``.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.answers: deque[Outcome] = deque()
        self.calls: list[Sent] = []
        self.stored: dict[str, list[bytes]] = defaultdict(list)
        self.closed = False
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()

    def send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome:
        data = [bytes(r) for r in records]  # the views are reused once send() returns
        with self._lock:
            self.calls.append(Sent(stream, data, self.clock.peek() if self.clock else 0.0))
            answer = self.answers.popleft() if self.answers else None
        if not self._open.wait(30):
            return Outcome(error="HeldTooLong", retryable=True, unknown=True)
        if answer is None:
            answer = Outcome(codes=[None] * len(data))
        if answer.codes is not None:
            with self._lock:
                self.stored[stream].extend(
                    d for d, code in zip(data, answer.codes, strict=True) if code is None)
        return answer

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def after_fork(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def lines(self, stream: str | None = None) -> list[bytes]:
        """Every stored event line (without newline), stream by stream."""
        with self._lock:
            names = [stream] if stream else sorted(self.stored)
            return [line for name in names for record in self.stored[name]
                    for line in record[:-1].split(b"\n")]
