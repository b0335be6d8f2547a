"""An open-loop HTTP load generator: requests on a fixed schedule, latency from the schedule.

``python -m benchmarks.open_loop --url http://127.0.0.1:PORT/track --bodies FILE --rate 1000
--seconds 10 --warmup 2 --cpus 1`` sends POSTs (bodies from a JSON list of strings, in turn)
over keep-alive HTTP/1.1 connections and prints one JSON object.

Request i is due at ``start + i / rate`` whatever happened before it. Each latency runs from
that due time to the end of the response, so a server stall counts against every request it
delayed (no coordinated omission): a request waiting for a free connection is late, not
unsent. ``send_lag`` is how late the generator itself wrote requests, the floor under every
latency it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def _percentiles(values: list[float], points: tuple[float, ...]) -> dict[str, float]:
    if not values:
        return {f"p{p:g}": float("nan") for p in points}
    ordered = sorted(values)
    n = len(ordered)
    return {f"p{p:g}": ordered[min(n - 1, int(p / 100 * n))] for p in points}


async def _run(host: str, port: int, path: str, bodies: list[bytes], *, rate: float,
               seconds: float, warmup: float, connections: int) -> dict[str, Any]:
    requests = [
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: open-loop\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), host.encode(), port, len(body), body)
        for body in bodies
    ]
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    clock = time.perf_counter
    total = int((warmup + seconds) * rate)
    start = clock() + 0.2
    measure_from = start + warmup

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (item := await queue.get()) is not None:
                i, due = item
                sent = clock()
                writer.write(requests[i % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                if at >= 0:
                    end = lower.index(b"\r\n", at + 2)
                    length = int(lower[at + 17:end])
                    if length:
                        await reader.readexactly(length)
                done = clock()
                if due >= measure_from:
                    latencies.append(done - due)
                    lags.append(sent - due)
                    statuses[status] = statuses.get(status, 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append(repr(exc))
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(connections)]
    i = 0
    while i < total:
        due = min(total, int((clock() - start) * rate) + 1)
        while i < due:
            queue.put_nowait((i, start + i / rate))
            i += 1
        await asyncio.sleep(max(0.0, start + i / rate - clock()))
    for _ in tasks:
        queue.put_nowait(None)
    await asyncio.gather(*tasks)
    points = (50, 90, 99, 99.9)
    return {
        "rate": rate,
        "seconds": seconds,
        "scheduled": int(seconds * rate),
        "completed": len(latencies),
        "statuses": statuses,
        "errors": errors[:5],
        "error_count": len(errors),
        "latency_s": {**_percentiles(latencies, points), "max": max(latencies, default=0.0)},
        "send_lag_s": _percentiles(lags, (50, 99)),
        "cpu_seconds": time.process_time(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.open_loop")
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="a JSON list of request bodies")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True, help="measured time")
    parser.add_argument("--warmup", type=float, default=1.0, help="sent first, not measured")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cpus", default="", help="comma-separated CPUs to pin this process to")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    url = urlsplit(args.url)
    with open(args.bodies) as f:
        bodies = [b.encode() for b in json.load(f)]
    result = asyncio.run(_run(url.hostname or "127.0.0.1", url.port or 80, url.path or "/",
                              bodies, rate=args.rate, seconds=args.seconds,
                              warmup=args.warmup, connections=args.connections))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
