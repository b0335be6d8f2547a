"""A FastAPI service that ships one event per request to Firehose.

The buffer is made at import (one per process: under gunicorn ``--preload`` the master
builds it, and each forked worker gets its own) and closed in the lifespan's shutdown,
which both uvicorn and gunicorn's UvicornWorker run on SIGTERM before the process exits.
``aclose()`` drains on a thread, so the loop keeps answering requests already accepted.

Why the lifespan, and not the buffer's exit hook: uvicorn ends a SIGTERM by restoring the
handler that was there before it and raising SIGTERM again; that is the default handler
(under UvicornWorker always: the worker resets it), which kills the process without
running ``atexit``. Whatever the buffer still held would be lost.

Run from this directory (see README.md)::

    FIREHOSE_BUFFER_STREAMS=events-0,events-1 uvicorn fastapi_app:app
    FIREHOSE_BUFFER_STREAMS=events-0,events-1 \\
        gunicorn -c gunicorn_conf.py -k uvicorn.workers.UvicornWorker fastapi_app:app
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from shutdown_report import report_final_stats

from firehose_buffer import (
    BufferConfig,
    BufferFullError,
    EventTypeError,
    EventValueError,
    FirehoseBuffer,
)

# FIREHOSE_BUFFER_* variables; the endpoint from FIREHOSE_BUFFER_ENDPOINT_URL or the AWS
# SDK's AWS_ENDPOINT_URL_FIREHOSE, credentials and region the usual AWS way.
buffer = FirehoseBuffer(BufferConfig.from_env())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Keep exit_timeout_seconds (FIREHOSE_BUFFER_EXIT_TIMEOUT_SECONDS) under the time the
    # platform waits between SIGTERM and SIGKILL (Kubernetes: 30 s; gunicorn's
    # graceful_timeout: 30 s), minus the time in-flight requests take to finish.
    result = await buffer.aclose(buffer.config.exit_timeout_seconds)
    report_final_stats(buffer, result)


app = FastAPI(lifespan=lifespan)


@app.post("/events", status_code=202)
async def track(event: dict[str, Any]) -> dict[str, bool]:
    try:
        buffer.put(event)
    except BufferFullError:
        # Firehose is slower than the traffic (or unreachable) and the buffer is at
        # max_buffer_bytes: tell the client to come back rather than hold the loop.
        raise HTTPException(503, "event buffer full", headers={"Retry-After": "1"}) from None
    except (EventTypeError, EventValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    return {"accepted": True}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}
