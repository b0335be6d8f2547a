"""The examples' FastAPI app without its lifespan close, for the contrast rows of
benchmarks/deploy_table.py: the buffer is closed only by its exit hook (or not at all).

``FIREHOSE_BENCH_SIGTERM_HANDLER=1`` calls ``install_sigterm_handler()`` at import, before
uvicorn starts (uvicorn restores it and re-raises SIGTERM into it after its shutdown).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from firehose_buffer import BufferConfig, FirehoseBuffer, install_sigterm_handler

buffer = FirehoseBuffer(BufferConfig.from_env())
if os.environ.get("FIREHOSE_BENCH_SIGTERM_HANDLER") == "1":
    install_sigterm_handler()

app = FastAPI()


@app.post("/events", status_code=202)
async def track(event: dict[str, Any]) -> dict[str, bool]:
    buffer.put(event)
    return {"accepted": True}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}
