"""PutRecordBatch bodies built as bytes, keeping botocore's signing, credentials and endpoints.

botocore serializes a batch by base64-encoding every record into a str and running the
stdlib JSON encoder over the lot: about 12 CPU ns per byte, twice the floor of a signed
request (base64 plus SHA-256 of the body). Base64 text needs no JSON escaping, so the body
can be joined from bytes directly. botocore still validates and serializes a one-record
placeholder, so everything around the body (endpoint, headers, SigV4, retries, response
parsing) stays botocore's; the real body is swapped in at ``before-call``, which runs
before the request is signed at ``request-created``.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

_PLACEHOLDER: list[dict[str, bytes]] = [{"Data": b"-"}]
_CONTEXT_KEY = "firehose_buffer_body"


def _build(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    records = params.get("Records")
    if not records or records is _PLACEHOLDER:
        return
    try:
        parts = [b'{"Data":"' + base64.b64encode(r["Data"]) + b'"}' for r in records]
    except (KeyError, TypeError):
        return  # not the shape we send: let botocore validate and explain
    context[_CONTEXT_KEY] = b"".join((
        b'{"DeliveryStreamName":', orjson.dumps(params["DeliveryStreamName"]),
        b',"Records":[', b",".join(parts), b"]}",
    ))
    params["Records"] = _PLACEHOLDER


def _swap(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    body = context.pop(_CONTEXT_KEY, None)
    if body is not None:
        params["body"] = body


def install(client: Any) -> None:
    """Make this boto3 Firehose client build PutRecordBatch bodies the fast way."""
    events = client.meta.events
    events.register("before-parameter-build.firehose.PutRecordBatch", _build,
                    unique_id="firehose_buffer.fastbody.build")
    events.register("before-call.firehose.PutRecordBatch", _swap,
                    unique_id="firehose_buffer.fastbody.swap")
