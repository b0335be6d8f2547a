"""Figure 8: the library against the designs it replaces, on one emulator, same events.

Run in a process of its own (``python -m benchmarks.naive --endpoint URL``) so that the CPU
per event is the process's own. Mixed 0.5-4 KB events over 16 streams at the high quota (5
MiB/s): at the standard quota, 500 events of 2-4 KB in one call would exceed a stream's
1 MiB/s on their own and be throttled, which would measure the quota, not the design.

- ``put_record``: one synchronous PutRecord per event, streams in turn.
- ``put_record_batch``: 500 events per PutRecordBatch, one event per record, streams in turn.
- ``library``: FirehoseBuffer.put for every event, then flush().
Each runs for a fixed time (naive) or a fixed count (library), one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import orjson

from firehose_buffer import BufferConfig, FirehoseBuffer, Quota, billed_bytes

from .client import make_client
from .events import mixed

STREAMS = tuple(f"naive-{k}" for k in range(16))


def _billed_ratio(lines: list[bytes]) -> float:
    return sum(billed_bytes(len(x)) for x in lines) / sum(len(x) for x in lines)


def run_naive(endpoint: str, seconds: float) -> dict[str, Any]:
    config = BufferConfig(streams=STREAMS, quota=Quota.HIGH, endpoint_url=endpoint,
                          region="us-east-1")
    client: Any = make_client(config)
    pool = mixed(4000, seed=21)
    lines = [orjson.dumps(e) for e in pool]
    out: dict[str, Any] = {}

    # One PutRecord per event; a naive producer sends the event's JSON as it is.
    start, cpu0 = time.perf_counter(), time.process_time()
    sent: list[bytes] = []
    i = 0
    while time.perf_counter() - start < seconds:
        data = orjson.dumps(pool[i % len(pool)]) + b"\n"
        client.put_record(DeliveryStreamName=STREAMS[i % len(STREAMS)], Record={"Data": data})
        sent.append(data)
        i += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    out["put_record"] = {"events": i, "seconds": elapsed, "cpu_seconds": cpu,
                         "billed_ratio": _billed_ratio(sent)}

    # 500 events per PutRecordBatch, each its own record; failed entries are not retried.
    start, cpu0 = time.perf_counter(), time.process_time()
    sent = []
    i = calls = failed = 0
    while time.perf_counter() - start < seconds:
        batch = [orjson.dumps(pool[(i + k) % len(pool)]) + b"\n" for k in range(500)]
        response = client.put_record_batch(DeliveryStreamName=STREAMS[calls % len(STREAMS)],
                                           Records=[{"Data": d} for d in batch])
        failed += response["FailedPutCount"]
        sent.extend(batch)
        i += 500
        calls += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    out["put_record_batch"] = {"events": i, "seconds": elapsed, "cpu_seconds": cpu,
                               "failed": failed, "billed_ratio": _billed_ratio(sent)}

    # The library: as many events as put_record_batch managed, put then flushed.
    count = max(out["put_record_batch"]["events"], 20_000)
    buffer = FirehoseBuffer(config)
    start, cpu0 = time.perf_counter(), time.process_time()
    with buffer:
        put = buffer.put
        for k in range(count):
            put(pool[k % len(pool)])
        buffer.flush(120)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        stats = buffer.stats()
    out["library"] = {"events": count, "seconds": elapsed, "cpu_seconds": cpu,
                      "delivered": stats.events_delivered, "billed_ratio": stats.billed_ratio,
                      "throttled_records": stats.throttled_records}
    for v in out.values():
        v["events_per_s"] = v["events"] / v["seconds"]
        v["cpu_us_per_event"] = v["cpu_seconds"] / v["events"] * 1e6
    out["mean_event_bytes"] = sum(map(len, lines)) / len(lines)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(run_naive(args.endpoint, args.seconds)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
