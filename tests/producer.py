"""A producer that offers 6 MB/s of 4 KB events to the four "shared" streams and reports.

Run by tests/test_client_http.py twice at once, in-process and as a script in another
process, so that the two compete for the same quota.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from firehose_buffer import BufferConfig, FirehoseBuffer, sharded_stream_names


def produce(
    endpoint: str, seconds: float, run: str, ready: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    config = BufferConfig(streams=sharded_stream_names("shared", 4), endpoint_url=endpoint,
                          region="us-east-1", retry_max_backoff_seconds=1.0)
    lowest_share, i = 1.0, 0
    with FirehoseBuffer(config) as buf:
        ready()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            buf.put({"event_id": f"{run}-{i}", "pad": "y" * 3900})
            i += 1
            if i % 100 == 0:  # 1,500 events/s of 4 KB: 6 MB/s
                time.sleep(max(0.0, start + i / 1500 - time.monotonic()))
                shares = [s.allowed_share for s in buf.stats().streams]
                lowest_share = min(lowest_share, *shares)
        # Keep watching the allowed share while the backlog drains: throttling can come last.
        deadline = time.monotonic() + 120
        ok = False
        while not ok and time.monotonic() < deadline:
            ok = buf.flush(timeout=0.1)
            lowest_share = min(lowest_share, *(s.allowed_share for s in buf.stats().streams))
        s = buf.stats()
    return {"n": i, "ok": ok, "failed": s.events_failed, "lowest_share": lowest_share,
            "throttled": s.throttled_records + s.throttled_requests}


if __name__ == "__main__":
    result = produce(sys.argv[1], float(sys.argv[2]), "b", lambda: print("ready", flush=True))
    print(orjson.dumps(result).decode(), flush=True)
