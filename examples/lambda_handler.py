"""An AWS Lambda function that ships the events it is given to Firehose.

The buffer is made once per execution environment (at the cold start) and reused by every
invocation. Lambda freezes the environment the moment the handler returns and may destroy it
later without a signal, so ``flush_after`` flushes what the invocation put before the
handler returns, within the time the invocation has left; what cannot go in time stays
buffered for the next invocation and is logged as a WARNING with the counts.

Configuration from the function's environment variables: ``FIREHOSE_BUFFER_STREAMS`` (or
``FIREHOSE_BUFFER_STREAM`` with ``FIREHOSE_BUFFER_SHARDS``), and ``FIREHOSE_BUFFER_QUOTA``
(``high`` in us-east-1, us-west-2, eu-west-1). Lambda provides the region and credentials.
Handler setting: ``lambda_handler.handler``.
"""

from __future__ import annotations

from typing import Any

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.aws_lambda import flush_after

buffer = FirehoseBuffer(BufferConfig.from_env())


@flush_after(buffer)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    events = event.get("events", [])
    for item in events:
        buffer.put(item)
    return {"statusCode": 200, "accepted": len(events)}
