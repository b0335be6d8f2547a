"""In-process stand-ins for the Firehose client: accept everything, keep nothing."""

from __future__ import annotations

from typing import Any

from firehose_buffer import BufferConfig, FirehoseBuffer, Quota

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


def null_buffer(streams: int = 1) -> tuple[FirehoseBuffer, NullClient]:
    """A buffer that measures put(): no network, no quota, room for everything."""
    client = NullClient()
    config = BufferConfig(
        streams=tuple(f"bench-{i}" for i in range(streams)),
        quota=UNLIMITED,
        max_buffer_bytes=8 * 1024**3,
    )
    return FirehoseBuffer(config, client), client
