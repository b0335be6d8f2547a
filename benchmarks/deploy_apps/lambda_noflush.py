"""The examples' Lambda handler without ``flush_after``, for the contrast row of
benchmarks/deploy_table.py: events wait for the background thread, which Lambda freezes."""

from __future__ import annotations

from typing import Any

from firehose_buffer import BufferConfig, FirehoseBuffer

buffer = FirehoseBuffer(BufferConfig.from_env())


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    events = event.get("events", [])
    for item in events:
        buffer.put(item)
    return {"statusCode": 200, "accepted": len(events)}
