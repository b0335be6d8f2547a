"""The producer side of ``compressed_e2e``, run in a process of its own.

``python -m benchmarks.compressed_load --endpoint URL --streams a,b --compression zstd
--mb-s 16 --warmup 2 --seconds 5`` offers JSON events (``--events tracking``: tracking-like,
``worst``: ``benchmarks/events.py``) at a constant rate of raw bytes from producer threads,
each ``put()`` of a dict (so put() encodes it, as in production), for ``warmup + seconds``,
then closes the buffer and prints one JSON object.

Measured over the steady window (after the warm-up), every figure a delta between two reads:

- raw bytes offered (each event's encoded line, newline included) and the buffer's counters
  (``raw_bytes_sent``, ``bytes_sent``, ``billed_bytes``);
- CPU per thread kind: the time producers spend inside put() (``time.thread_time`` around each
  call), the worker, the senders, the transport's deadline thread (from /proc, per thread),
  the benchmark's own threads apart;
- minor page faults: the process's (``getrusage``), each thread's (from /proc), and with
  ``--probe`` the sender's phases (body, the base64 inside it, signing, sending the request,
  waiting for the answer, reading it): ``RUSAGE_THREAD`` read before and after each, by
  wrappers around the functions the lean transport calls (a few system calls per request).

``--stamp`` puts a copy of each event with a unique ``"seq"`` (for the loss check: the parent
reads every delivered object back and looks for each number).
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from firehose_buffer import BufferConfig, FirehoseBuffer, Quota

from . import events, tracking_events

POOL = 4000
THREADS = 4
#: Events put per look at the clock at most, so a producer behind cannot run past the end.
BURST = 64


def thread_kind(name: str) -> str:
    if name.startswith("producer"):
        return "producers"
    if name.startswith("firehose-buffer-sender"):
        return "senders"
    if name == "firehose-buffer-worker":
        return "worker"
    if name.startswith("firehose-transport"):
        return "deadline"
    if name == "MainThread":
        return "main (sampling)"
    return name


def _minor_faults(tid: int) -> int:
    """Minor faults of one thread of this process, from /proc (an exact count)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def threads_snapshot() -> dict[int, tuple[str, float, int]]:
    """Per live thread: its kind, CPU seconds (its own CPU clock, to the nanosecond: /proc
    counts in 10 ms ticks, too coarse for 16 senders over a few seconds) and minor faults."""
    out: dict[int, tuple[str, float, int]] = {}
    for t in threading.enumerate():
        if t.native_id is None or t.ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            faults = _minor_faults(t.native_id)
        except OSError:
            continue
        out[t.native_id] = (thread_kind(t.name), cpu, faults)
    return out


def by_kind(start: dict[int, tuple[str, float, int]],
            end: dict[int, tuple[str, float, int]]) -> tuple[dict[str, float], dict[str, int]]:
    """CPU seconds and faults per thread kind between two snapshots (a thread born in between
    counts from zero; one that ended in between is lost, and none does in a steady run)."""
    cpu: dict[str, float] = {}
    faults: dict[str, int] = {}
    for tid, (kind, c1, f1) in end.items():
        _, c0, f0 = start.get(tid, (kind, 0.0, 0))
        cpu[kind] = cpu.get(kind, 0.0) + c1 - c0
        faults[kind] = faults.get(kind, 0) + f1 - f0
    return cpu, faults


class FaultProbe:
    """Counts the minor faults of the calling thread inside the functions the lean transport
    calls while sending, by phase. Installed by wrapping; phases nest (base64 runs inside the
    body), so ``body`` includes ``base64``."""

    def __init__(self) -> None:
        self.faults: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.active = False

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        getrusage = resource.getrusage
        who = resource.RUSAGE_THREAD

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = getrusage(who).ru_minflt
            try:
                return fn(*args, **kwargs)
            finally:
                if self.active:
                    spent = getrusage(who).ru_minflt - before
                    with self._lock:
                        self.faults[name] = self.faults.get(name, 0) + spent
                        self.calls[name] = self.calls.get(name, 0) + 1
        return wrapper

    def install(self) -> None:
        import base64  # noqa: PLC0415

        from firehose_buffer._service.firehose import FIREHOSE  # noqa: PLC0415
        from firehose_buffer.transport.lean import LeanTransport  # noqa: PLC0415

        profile = type(FIREHOSE)
        # The body is built by FIREHOSE.build_body, which looks up base64.b64encode per call.
        profile.build_body = staticmethod(self.wrap("body", profile.build_body))  # type: ignore[method-assign]
        base64.b64encode = self.wrap("base64", base64.b64encode)
        LeanTransport._send = self.wrap("send (whole call)", LeanTransport._send)  # type: ignore[method-assign]
        LeanTransport._sign = self.wrap("sign", LeanTransport._sign)  # type: ignore[method-assign]
        conn = http.client.HTTPConnection
        conn.request = self.wrap("request (headers and body out)", conn.request)  # type: ignore[method-assign]
        conn.getresponse = self.wrap("getresponse (wait, headers)", conn.getresponse)  # type: ignore[method-assign]
        http.client.HTTPResponse.read = self.wrap(  # type: ignore[method-assign]
            "response read", http.client.HTTPResponse.read)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.faults)


def slope(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of ``points`` (per second)."""
    if len(points) < 2:
        return float("nan")
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else float("nan")


def event_pool(kind: str, count: int, seed: int) -> list[dict[str, Any]]:
    if kind == "tracking":
        return tracking_events.mixed(count, seed=seed)
    return events.mixed(count, seed=seed)


def run(endpoint: str, streams: list[str], quota: Quota, compression: str | None, *,
        mb_s: float, warmup: float, seconds: float, kind: str, stamp: bool, probe: bool,
        threads: int = THREADS, seed: int = 7) -> dict[str, Any]:
    pool = event_pool(kind, POOL, seed)
    sizes = [len(orjson.dumps(e)) + 1 for e in pool]
    mean = sum(sizes) / len(sizes)
    rate = mb_s * 1e6 / mean  # events per second, all producers together
    config = BufferConfig(streams=tuple(streams), quota=quota, endpoint_url=endpoint,
                          region="us-east-1", compression=compression)  # type: ignore[arg-type]
    fault_probe = FaultProbe()
    if probe:
        fault_probe.install()
    buffer = FirehoseBuffer(config)
    put_cpu = [0.0] * threads
    put_faults = [0] * threads  # with --probe
    put_raw = [0] * threads
    put_count = [0] * threads
    start = time.perf_counter() + 0.2
    end = start + warmup + seconds
    ready = threading.Barrier(threads + 1)
    # Producers keep going until the window's last reads are taken.
    stop = threading.Event()

    def produce(k: int) -> None:
        put = buffer.put
        clock = time.thread_time
        getrusage = resource.getrusage
        who = resource.RUSAGE_THREAD
        interval = threads / rate
        n = len(pool)
        i = k
        done = 0
        ready.wait()
        while not stop.is_set():
            now = time.perf_counter()
            due = int((now - start) / interval) + 1
            if due <= done:
                time.sleep(min(0.002, max(0.0, start + done * interval - now)))
                continue
            for _ in range(min(due - done, BURST)):
                event = pool[i % n]
                if stamp:
                    event = {**event, "seq": i}
                if probe:
                    f0 = getrusage(who).ru_minflt
                    t0 = clock()
                    put(event)
                    put_cpu[k] += clock() - t0
                    if fault_probe.active:
                        put_faults[k] += getrusage(who).ru_minflt - f0
                else:
                    t0 = clock()
                    put(event)
                    put_cpu[k] += clock() - t0
                put_raw[k] += sizes[i % n] + (len(f',"seq":{i}') if stamp else 0)
                put_count[k] += 1
                i += threads
                done += 1

    workers = [threading.Thread(target=produce, args=(k,), name=f"producer-{k}", daemon=True)
               for k in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    samples: list[tuple[float, int, int]] = []

    def sample() -> None:
        s = buffer.stats()
        samples.append((round(time.perf_counter() - start, 3), s.bytes_buffered,
                        s.raw_bytes_sent))

    while time.perf_counter() < start + warmup:
        sample()
        time.sleep(0.25)
    # The steady window.
    t0 = time.perf_counter()
    s0 = buffer.stats()
    threads0 = threads_snapshot()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu0 = time.process_time()
    put_cpu0, put_raw0, put_count0 = sum(put_cpu), sum(put_raw), sum(put_count)
    fault_probe.active = True
    while time.perf_counter() < end:
        sample()
        time.sleep(0.25)
    fault_probe.active = False
    t1 = time.perf_counter()
    s1 = buffer.stats()
    threads1 = threads_snapshot()
    faults1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu1 = time.process_time()
    put_cpu1, put_raw1, put_count1 = sum(put_cpu), sum(put_raw), sum(put_count)
    stop.set()
    for w in workers:
        w.join()
    elapsed = t1 - t0
    window = [x for x in samples if x[0] >= t0 - start]
    cpu_kind, faults_kind = by_kind(threads0, threads1)
    closed = buffer.close(120)
    final = buffer.stats()
    return {
        "compression": compression,
        "level": config.compression_level,
        "events": kind,
        "streams": len(streams),
        "target_mb_s": mb_s,
        "mean_line_bytes": mean,
        "window_seconds": elapsed,
        "offered_raw_mb_s": (put_raw1 - put_raw0) / elapsed / 1e6,
        "delivered_raw_mb_s": (s1.raw_bytes_sent - s0.raw_bytes_sent) / elapsed / 1e6,
        # Records leave in lumps (a 512 KiB record per stream at a time): a fitted slope over
        # the window's samples says more than its two ends.
        "delivered_raw_slope_mb_s": slope([(x[0], x[2]) for x in window]) / 1e6,
        "backlog_slope_mb_s": slope([(x[0], x[1]) for x in window]) / 1e6,
        "wire_mb_s": (s1.bytes_sent - s0.bytes_sent) / elapsed / 1e6,
        "window_raw_put": put_raw1 - put_raw0,
        "window_events_put": put_count1 - put_count0,
        "window_raw_sent": s1.raw_bytes_sent - s0.raw_bytes_sent,
        "window_wire_sent": s1.bytes_sent - s0.bytes_sent,
        "window_billed": s1.billed_bytes - s0.billed_bytes,
        "window_records": s1.records_sent - s0.records_sent,
        "window_requests": s1.requests_sent - s0.requests_sent,
        "backlog_start_bytes": s0.bytes_buffered,
        "backlog_end_bytes": s1.bytes_buffered,
        "put_cpu_seconds": put_cpu1 - put_cpu0,
        "cpu_by_kind": cpu_kind,
        "process_cpu_seconds": cpu1 - cpu0,
        "faults_process": faults1 - faults0,
        "faults_by_kind": faults_kind,
        "faults_by_sender_phase": fault_probe.snapshot() if probe else {},
        "faults_inside_put": sum(put_faults) if probe else None,
        "sender_phase_calls": dict(fault_probe.calls) if probe else {},
        "samples": samples,
        "closed_cleanly": bool(closed),
        "events_put": final.events_put,
        "events_delivered": final.events_delivered,
        "events_failed": final.events_failed,
        "events_dropped": final.events_dropped,
        "events_lost": final.events_lost,
        "failures_by_reason": dict(final.failures_by_reason),
        "possible_duplicates": final.possible_duplicates,
        "retried_records": final.retried_records,
        "throttled_records_seen": final.throttled_records,
        "throttled_requests_seen": final.throttled_requests,
        "raw_bytes_sent": final.raw_bytes_sent,
        "bytes_sent": final.bytes_sent,
        "billed_bytes": final.billed_bytes,
        "threads": threads,
        "put_counts": put_count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compressed_load")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--streams", required=True, help="comma-separated stream names")
    parser.add_argument("--quota", choices=["standard", "high"], default="standard")
    parser.add_argument("--compression", choices=["none", "zstd", "gzip"], default="zstd")
    parser.add_argument("--mb-s", type=float, default=16.0, help="raw MB/s offered")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="the measured window")
    parser.add_argument("--events", choices=["tracking", "worst"], default="tracking")
    parser.add_argument("--stamp", action="store_true", help="a unique seq in each event")
    parser.add_argument("--probe", action="store_true", help="faults per sender phase")
    args = parser.parse_args(argv)
    result = run(args.endpoint, args.streams.split(","), Quota.named(args.quota),
                 None if args.compression == "none" else args.compression,
                 mb_s=args.mb_s, warmup=args.warmup, seconds=args.seconds, kind=args.events,
                 stamp=args.stamp, probe=args.probe)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
