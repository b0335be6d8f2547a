"""The FastAPI service of the co-located server benchmark, run under uvicorn in its own process.

``python -m benchmarks.server_app --mode buffer --endpoint URL --streams a,b --cpus 0``
binds 127.0.0.1 on a free port, prints ``listening on http://127.0.0.1:PORT``, serves until
SIGTERM/SIGINT and, once the lifespan has closed the buffer, prints one JSON line: requests
handled and the buffer's counts.

``POST /track`` takes a JSON object, builds the event a tracking service would keep (the
client's fields plus what only the server knows) and, in ``buffer`` mode, puts it; in
``bare`` mode it does the same work and drops the event, which is the reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response

from firehose_buffer import BufferConfig, FirehoseBuffer, Quota

MODES = ("bare", "buffer")


def build_app(mode: str, endpoint: str, streams: tuple[str, ...], quota: Quota,
              report: dict[str, Any]) -> FastAPI:
    """``report`` is filled at shutdown, after the buffer is closed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    buffer: FirehoseBuffer | None = None
    if mode == "buffer":
        buffer = FirehoseBuffer(BufferConfig(
            streams=streams, quota=quota, endpoint_url=endpoint, region="us-east-1",
        ))
    handled = [0]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        report["handled"] = handled[0]
        if buffer is not None:
            # Blocking the loop is acceptable here: the server has stopped taking requests.
            t0 = time.perf_counter()
            report["closed_cleanly"] = bool(buffer.close(60))
            report["close_seconds"] = time.perf_counter() - t0
            s = buffer.stats()
            report.update(events_put=s.events_put, events_delivered=s.events_delivered,
                          events_failed=s.events_failed, events_dropped=s.events_dropped,
                          requests_sent=s.requests_sent, bytes_sent=s.bytes_sent)
        # Here, not after server.run(): uvicorn re-raises SIGTERM once it has shut down, and
        # the process dies with it.
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(status_code=204)

    @app.post("/track")
    async def track(request: Request) -> Response:
        payload = await request.json()
        if not isinstance(payload, dict):
            return Response(status_code=400)
        event: dict[str, Any] = {
            **payload,
            "received_at": time.time(),
            "event_id": str(uuid.uuid4()),
            "client_ip": request.client.host if request.client else None,
            "user_agent": request.headers.get("user-agent"),
        }
        if buffer is not None:
            buffer.put(event)
        handled[0] += 1
        return Response(status_code=202)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server_app")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--streams", default="bench-0")
    parser.add_argument("--quota", choices=["standard", "high"], default="high")
    parser.add_argument("--cpus", default="", help="comma-separated CPUs to pin this process to")
    args = parser.parse_args(argv)
    if args.cpus:
        # Before any thread exists, so the buffer's threads inherit the mask.
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    report: dict[str, Any] = {"mode": args.mode}
    app = build_app(args.mode, args.endpoint, tuple(args.streams.split(",")),
                    Quota.named(args.quota), report)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            backlog=1024)
    server = uvicorn.Server(config)
    # What uvicorn's "auto" picks: the C parsers and loop make the reference faster, so the
    # buffer's share of each request larger.
    report["http"] = "httptools" if importlib.util.find_spec("httptools") else "h11"
    report["loop"] = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    sys.stdout.write(f"listening on http://127.0.0.1:{port}\n")
    sys.stdout.flush()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
