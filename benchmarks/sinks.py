"""In-process stand-ins for the Firehose client: accept everything, keep nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from firehose_buffer import BufferConfig, FirehoseBuffer, Quota
from firehose_buffer.transport import Outcome

_OK = {"RecordId": "x"}
#: A quota no in-process benchmark reaches, so pacing never holds data back.
UNLIMITED = Quota(1e9, 1e13, 1e12)


class NullClient:
    """``put_record_batch`` that acknowledges every record and counts what it saw."""

    def __init__(self) -> None:
        self.calls = 0
        self.records = 0
        self.bytes = 0

    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]:
        records = kwargs["Records"]
        self.calls += 1
        self.records += len(records)
        self.bytes += sum(len(r["Data"]) for r in records)
        return {"FailedPutCount": 0, "Encrypted": False, "RequestResponses": [_OK] * len(records)}


class NullTransport:
    """The transport seam with nothing behind it: acknowledges every record without
    touching its bytes (a boto3 client would need each record copied to ``bytes``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.records = 0
        self.bytes = 0

    def send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome:
        self.calls += 1
        self.records += len(records)
        self.bytes += sum(len(r) for r in records)
        return Outcome(codes=[None] * len(records))

    def after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass


def null_buffer(streams: int = 1) -> tuple[FirehoseBuffer, NullTransport]:
    """A buffer that measures put(): no network, no quota, the default memory bound (a put()
    that outruns the worker waits for room, as it would in production)."""
    sink = NullTransport()
    config = BufferConfig(streams=tuple(f"bench-{i}" for i in range(streams)), quota=UNLIMITED)
    # The seam every transport plugs into, with nothing behind it.
    buffer = FirehoseBuffer(config, transport=sink)
    return buffer, sink
