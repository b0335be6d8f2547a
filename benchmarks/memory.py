"""How far a producer's memory goes over max_buffer_bytes during a long outage.

    python -m benchmarks.memory [--seconds 180] [--quota standard,high] [--bound-mib 16]

A producer process with ``max_buffer_bytes`` = the bound and ``on_full="drop"`` puts 0.5 KB
events as fast as it can against an emulator (its own process) that answers every call HTTP
503, for ``--seconds``. This process samples the producer's VmRSS and VmHWM from /proc every
second. Reported per quota preset (``Quota.HIGH`` makes batches bigger): the producer's RSS
once warmed (buffer started, client made, first calls failed) and at its peak, the peak
growth over that baseline and over the bound, and whether it plateaus: the peak of the
last third of the run against the peak of the middle third.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.emulator_proc import AWS_ENV, EmulatorProcess  # noqa: E402

MIB = 1024 * 1024

PRODUCER = textwrap.dedent("""
    import json, sys, time
    from firehose_buffer import BufferConfig, FirehoseBuffer, Quota

    endpoint, quota, bound, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    imported = rss()
    buffer = FirehoseBuffer(BufferConfig(
        streams=("mem-0", "mem-1", "mem-2", "mem-3"), endpoint_url=endpoint,
        region="us-east-1", quota=Quota.named(quota), max_buffer_bytes=bound,
        on_full="drop", on_failure=lambda events, reason: None,
    ))
    event = {"kind": "memory", "pad": "m" * 480}
    # Warm: threads started, the client made, the first calls answered 503.
    for _ in range(100):
        buffer.put(event)
    time.sleep(2.0)
    print(json.dumps({"imported": imported, "warm": rss()}), flush=True)
    end = time.monotonic() + seconds
    next_report = time.monotonic() + 1.0
    puts = 0
    while True:
        for _ in range(1000):
            buffer.put(event)
        puts += 1000
        now = time.monotonic()
        if now >= next_report:
            s = buffer.stats()
            print(json.dumps({"t": now, "puts": puts, "bytes_buffered": s.bytes_buffered,
                              "events_buffered": s.events_buffered,
                              "dropped": s.events_dropped, "failed": s.events_failed,
                              "requests": s.requests_sent}), flush=True)
            next_report = now + 1.0
            if now >= end:
                break
    buffer.close(1.0)
    print(json.dumps({"done": True}), flush=True)
""")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    return values


@dataclass
class Run:
    quota: str
    bound: int
    seconds: float
    imported: int = 0
    warm: int = 0
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # t, rss, hwm
    last: dict[str, int] = field(default_factory=dict)

    def peak(self, start: float = 0.0, end: float = 1.0) -> int:
        n = len(self.samples)
        part = self.samples[int(n * start):max(int(n * start) + 1, int(n * end))]
        return max((rss for _, rss, _ in part), default=0)

    def reached(self, slack: int = MIB) -> float:
        """When RSS first came within ``slack`` of its peak (seconds into the run)."""
        top = self.peak()
        return next((t for t, rss, _ in self.samples if rss >= top - slack), 0.0)

    @property
    def hwm(self) -> int:
        return max((h for _, _, h in self.samples), default=0)


def _read_progress(stream: IO[str], run: Run) -> None:
    """Keep the producer's latest progress line (its stats)."""
    for line in stream:
        data = orjson.loads(line)
        if "puts" in data:
            run.last = data


def measure(quota: str, seconds: float, bound: int) -> Run:
    run = Run(quota, bound, seconds)
    with EmulatorProcess(["mem-0", "mem-1", "mem-2", "mem-3"], quota,
                         "--fault-rates", "http_503=1.0") as emulator:
        env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, emulator.endpoint_url, quota, str(bound),
             str(seconds)],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        try:
            first = orjson.loads(proc.stdout.readline())
            run.imported, run.warm = first["imported"], first["warm"]
            started = time.monotonic()
            reader = threading.Thread(target=_read_progress, args=(proc.stdout, run),
                                      daemon=True)
            reader.start()
            while proc.poll() is None:
                with contextlib.suppress(FileNotFoundError, KeyError):
                    status = proc_status(proc.pid)
                    run.samples.append((time.monotonic() - started, status["VmRSS"],
                                        status["VmHWM"]))
                time.sleep(1.0)
            reader.join(5.0)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
    return run


def render(runs: list[Run]) -> str:
    head = ("| quota | seconds | RSS after import | RSS warm | peak RSS (VmHWM) | "
            "peak over warm | over the bound | peak, middle third | peak, last third | "
            "within 1 MiB of peak at | "
            "events put | dropped | buffered at end |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in runs:
        over_warm = r.hwm - r.warm
        lines.append(
            f"| {r.quota} | {r.seconds:.0f} | {r.imported / MIB:.1f} MiB | {r.warm / MIB:.1f} MiB "
            f"| {r.hwm / MIB:.1f} MiB | {over_warm / MIB:.1f} MiB "
            f"| {(over_warm - r.bound) / MIB:+.1f} MiB "
            f"| {r.peak(1 / 3, 2 / 3) / MIB:.1f} MiB | {r.peak(2 / 3, 1.0) / MIB:.1f} MiB "
            f"| {r.reached():.0f} s "
            f"| {r.last.get('puts', 0):,} | {r.last.get('dropped', 0):,} "
            f"| {r.last.get('bytes_buffered', 0) / MIB:.1f} MiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="memory over a long outage")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--quota", default="standard,high")
    parser.add_argument("--bound-mib", type=int, default=16)
    parser.add_argument("--json", default="", help="also write every sample here")
    options = parser.parse_args(argv)
    runs = []
    for quota in filter(None, (q.strip() for q in options.quota.split(","))):
        print(f"[{quota}] {options.seconds:.0f} s ...", file=sys.stderr, flush=True)
        runs.append(measure(quota, options.seconds, options.bound_mib * MIB))
    print(render(runs))
    if options.json:
        Path(options.json).write_bytes(orjson.dumps(
            [{"quota": r.quota, "imported": r.imported, "warm": r.warm, "samples": r.samples,
              "last": r.last} for r in runs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
