"""Several workers, one set of streams: N producer processes, each with its own
FirehoseBuffer on the same streams of one emulator (standard quota), each putting a burst
then waiting for it to be delivered.

Reported: the time until every producer's burst is delivered, against what the quota allows
(total bytes / (streams x bytes per second), the reference), how many requests were
throttled, and each producer's mean ``allowed_share`` sampled every 0.5 s (the adaptive
limiter's view). ``--aimd decrease=0.5,increase_per_second=0.05,cooldown=1`` overrides
``AdaptiveShare``'s parameters in the producers, to compare settings in one script.

    python benchmarks/workers.py [--quick] [--aimd k=v,...]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.emulator_proc import AWS_ENV, EmulatorProcess  # noqa: E402
from benchmarks.report import Row  # noqa: E402

STREAMS = ["w-0", "w-1", "w-2", "w-3"]
STANDARD_BYTES_PER_SECOND = 1024 * 1024


def _producer(endpoint: str, nbytes: int, aimd: dict[str, float], start: Any,
              out: Any) -> None:
    os.environ.update(AWS_ENV)
    # Imported here: a spawned producer pays its own imports, like a fresh worker.
    from firehose_buffer import BufferConfig, FirehoseBuffer  # noqa: PLC0415
    from firehose_buffer._core import ratelimit  # noqa: PLC0415

    if aimd:
        defaults = dict(zip(("floor", "decrease", "increase_per_second", "cooldown"),
                            ratelimit.AdaptiveShare.__init__.__kwdefaults__.values(),
                            strict=True))
        ratelimit.AdaptiveShare.__init__.__kwdefaults__.update({**defaults, **aimd})
    event = {"kind": "burst", "pid": os.getpid(), "payload": "y" * 1000}
    buffer = FirehoseBuffer(BufferConfig(streams=tuple(STREAMS), endpoint_url=endpoint,
                                         region="us-east-1", max_buffer_bytes=2 * nbytes))
    start.wait()
    t0 = time.monotonic()
    for _ in range(nbytes // 1050):
        buffer.put(event)
    samples: list[tuple[float, list[float]]] = []
    deadline = t0 + 600
    while time.monotonic() < deadline:
        stats = buffer.stats()
        samples.append((time.monotonic() - t0, [s.allowed_share for s in stats.streams]))
        if stats.events_buffered == 0:
            break
        time.sleep(0.5)
    done = time.monotonic() - t0
    stats = buffer.stats()
    buffer.close(5)
    out.put(json.dumps({"seconds": done, "delivered": stats.events_delivered,
                        "put": stats.events_put, "failed": stats.events_failed,
                        "throttled_requests": stats.throttled_requests,
                        "throttled_records": stats.throttled_records,
                        "requests": stats.requests_sent, "samples": samples}))


def _next_result(out: Any, procs: list[Any], deadline: float) -> str:
    """The next producer's answer; fails at once when a producer died without one (a crash
    in a child must not hold the run for the whole deadline)."""
    while True:
        try:
            result: str = out.get(timeout=1.0)
            return result
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"{len(dead)} producer(s) exited with {dead[0].exitcode} "
                                   "(their traceback is above)") from None
            if time.monotonic() > deadline:
                raise


def measure(producers: int, nbytes: int, aimd: dict[str, float]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with EmulatorProcess(STREAMS, "standard") as emulator:
        start = ctx.Event()
        out = ctx.Queue()
        procs = [ctx.Process(target=_producer, args=(emulator.endpoint_url, nbytes, aimd, start,
                                                     out)) for _ in range(producers)]
        for p in procs:
            p.start()
        time.sleep(2.0)  # every producer imported and built its buffer
        start.set()
        results = [json.loads(_next_result(out, procs, deadline=time.monotonic() + 700))
                   for _ in procs]
        for p in procs:
            p.join(30)
    return {"results": results,
            "seconds": max(r["seconds"] for r in results),
            "throttled": sum(r["throttled_requests"] for r in results),
            "throttled_records": sum(r["throttled_records"] for r in results),
            "requests": sum(r["requests"] for r in results),
            "lost": sum(r["put"] - r["delivered"] for r in results)}


def _share_timeline(results: list[dict[str, Any]]) -> str:
    """Mean allowed_share over producers and streams, every ~2 s."""
    points = []
    for t in range(0, int(max(r["seconds"] for r in results)) + 1, 2):
        values = [statistics.mean(shares) for r in results for at, shares in r["samples"]
                  if t <= at < t + 0.5 and shares]
        if values:
            points.append(f"{t}s:{statistics.mean(values):.2f}")
    return " ".join(points)


def run(quick: bool, aimd: dict[str, float] | None = None) -> list[Row]:
    producers, nbytes = (4, 5_000_000) if quick else (4, 20_000_000)
    m = measure(producers, nbytes, aimd or {})
    ideal = producers * nbytes / (len(STREAMS) * STANDARD_BYTES_PER_SECOND)
    label = ",".join(f"{k}={v:g}" for k, v in (aimd or {}).items()) or "defaults"
    return [
        Row(f"workers: {producers} producers x {nbytes / 1e6:.0f} MB on {len(STREAMS)} streams "
            f"({label}), time to deliver", m["seconds"], "s", ideal, "bytes / quota",
            goal="<= 1.5x the quota arithmetic", met=m["seconds"] <= 1.5 * ideal,
            notes=f"{m['throttled']} of {m['requests']} requests and {m['throttled_records']} "
            f"records throttled; {m['lost']} "
            f"events not delivered; share {_share_timeline(m['results'])}",
            details={k: v for k, v in m.items() if k != "results"}),
    ]


if __name__ == "__main__":
    from benchmarks.report import table

    overrides: dict[str, float] = {}
    if "--aimd" in sys.argv:
        spec = sys.argv[sys.argv.index("--aimd") + 1]
        overrides = {k: float(v) for k, v in (kv.split("=") for kv in spec.split(","))}
    rows = run("--quick" in sys.argv, overrides)
    print(table(rows))
    for row in rows:
        print(row.notes)
