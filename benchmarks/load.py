"""The producer side of the end-to-end benchmarks, run in a process of its own.

``python -m benchmarks.load --endpoint URL --streams 16 --quota standard --step RATE:SECONDS``
offers 4 KB events at RATE events/s for SECONDS (several ``--step`` run one after the
other, for the search of figure 5) from producer threads, then closes the buffer and prints
one JSON object: per step what was offered and delivered, backlog samples, put() latency
percentiles, freshness (put to acknowledged), CPU by thread and peak RSS.

Freshness is sampled by the client wrapper: each event carries its put time, and when a
PutRecordBatch returns, the first (oldest) and last (youngest) event of each acknowledged
record are read, so the p99 is of the oldest events in records: an upper bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer, Quota
from firehose_buffer.transport import Outcome, Transport, make_transport

from .emulator_proc import proc_cpu_seconds
from .events import PUT_NS_FIELD, fixed_size

_MARK = f'"{PUT_NS_FIELD}":"'.encode()


class FreshnessProbe:
    """Wraps the transport the buffer made (the lean one, as in production): notes the
    put-to-ack age of the first event of each acknowledged record, from a small prefix of
    the record, so the probe adds little to what it measures."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.ages_ns: list[int] = []

    def send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome:
        outcome = self._inner.send(stream, records)
        now = time.time_ns()
        codes = outcome.codes or ()
        for record, code in zip(records, codes, strict=False):
            if code is not None:
                continue
            head = bytes(record[:8192])
            end = head.find(b"\n")
            at = head.rfind(_MARK, 0, end if end >= 0 else len(head))
            if at >= 0:
                start = at + len(_MARK)
                self.ages_ns.append(now - int(head[start:start + 19]))
        return outcome

    def after_fork(self) -> None:
        self._inner.after_fork()

    def close(self) -> None:
        self._inner.close()


def percentiles(values: list[int], points: tuple[float, ...]) -> dict[str, float]:
    if not values:
        return {f"p{p:g}": float("nan") for p in points}
    ordered = sorted(values)
    n = len(ordered)
    return {f"p{p:g}": float(ordered[min(n - 1, int(p / 100 * n))]) for p in points}


def peak_rss_kb() -> int:
    """VmHWM of this process. Not ru_maxrss: Linux carries that across execve, so a child
    of a big parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _thread_cpu() -> dict[str, float]:
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            cpu = proc_cpu_seconds("self", t.native_id)
        except (OSError, TypeError):
            continue
        key = t.name.rsplit("-", 1)[0] if t.name.startswith("firehose-buffer-sender") else t.name
        key = "producer" if key.startswith("producer") else key
        out[key] = out.get(key, 0.0) + cpu
    return out


def run_load(endpoint: str, quota: Quota, steps: list[tuple[float, float]], *, streams: int,
             size: int, threads: int, stop_when_behind: bool = False) -> dict[str, Any]:
    config = BufferConfig(
        streams=tuple(f"bench-{k}" for k in range(streams)),
        quota=quota, endpoint_url=endpoint, region="us-east-1",
    )
    base = fixed_size(4000, size, seed=11, stamped=True)
    rss_before = peak_rss_kb()
    # The transport the buffer would make itself (the lean one), observed.
    client = FreshnessProbe(make_transport(config))
    buffer = FirehoseBuffer(config, transport=client)
    latencies: list[list[int]] = [[] for _ in range(threads)]
    put_counts = [0] * threads
    refused = [0] * threads
    target = {"rate": 0.0, "start": 0.0, "end": 0.0}
    go = threading.Barrier(threads + 1)
    step_done = threading.Barrier(threads + 1)
    stop = threading.Event()

    def produce(k: int) -> None:
        put = buffer.put
        lat = latencies[k]
        perf_ns = time.perf_counter_ns
        time_ns = time.time_ns
        n = len(base)
        i = k
        while True:
            go.wait()
            if stop.is_set():
                return
            interval = threads / target["rate"]
            start, end = target["start"], target["end"]
            done = 0
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                due = int((now - start) / interval) + 1
                if due <= done:
                    time.sleep(min(0.002, start + done * interval - now))
                    continue
                # At most a small burst before looking at the clock again, so a producer
                # that fell behind cannot run past the end of the step.
                for _ in range(min(due - done, 64)):
                    event = base[i % n].copy()
                    event[PUT_NS_FIELD] = f"{time_ns():019d}"
                    t0 = perf_ns()
                    try:
                        put(event)
                    except BufferFullError:
                        refused[k] += 1  # counted, and the run goes on
                    lat.append(perf_ns() - t0)
                    i += threads
                    done += 1
            put_counts[k] += done
            step_done.wait()

    workers = [threading.Thread(target=produce, args=(k,), name=f"producer-{k}", daemon=True)
               for k in range(threads)]
    for w in workers:
        w.start()
    results: list[dict[str, Any]] = []
    samples: list[tuple[float, int, int]] = []
    t_origin = time.perf_counter()
    cpu_start = time.process_time()
    threads_cpu_start = _thread_cpu()
    for rate, seconds in steps:
        before = buffer.stats()
        put_before = sum(put_counts)
        lat_before = [len(x) for x in latencies]
        cpu0 = time.process_time()
        target.update(rate=rate, start=time.perf_counter(), end=time.perf_counter() + seconds)
        go.wait()
        while time.perf_counter() < target["end"]:
            s = buffer.stats()
            samples.append((round(time.perf_counter() - t_origin, 3), s.bytes_buffered,
                            s.bytes_sent))
            time.sleep(0.25)
        step_done.wait()
        elapsed = time.perf_counter() - target["start"]
        after = buffer.stats()
        cpu = time.process_time() - cpu0
        offered = sum(put_counts) - put_before
        lat = [v for k, x in enumerate(latencies) for v in x[lat_before[k]:]]
        delivered = after.bytes_sent - before.bytes_sent
        results.append({
            "rate_target": rate,
            "seconds": elapsed,
            "events_offered": offered,
            "offered_mb_s": offered * size / elapsed / 1e6,
            "delivered_mb_s": delivered / elapsed / 1e6,
            "backlog_end_bytes": after.bytes_buffered,
            "cpu_seconds": cpu,
            "cpu_share": cpu / elapsed,
            "put_latency_ns": percentiles(lat, (50, 99, 99.9)),
            "put_latency_max_ns": max(lat, default=0),
            # Time inside put() (it never waits here): the callers' share of the library.
            "put_seconds": sum(lat) / 1e9,
            "throttled_records_seen": after.throttled_records - before.throttled_records,
        })
        step = results[-1]
        if stop_when_behind and (step["offered_mb_s"] < 0.97 * rate * size / 1e6
                                 or step["delivered_mb_s"] < 0.9 * step["offered_mb_s"]):
            break
    offer_end = time.perf_counter()
    cpu_offer = time.process_time() - cpu_start
    threads_cpu_end = _thread_cpu()
    stop.set()
    go.wait()
    closed = buffer.close(120)
    drain_seconds = time.perf_counter() - offer_end
    cpu_total = time.process_time() - cpu_start
    final = buffer.stats()
    return {
        "steps": results,
        "backlog_samples": samples,
        "closed_cleanly": bool(closed),
        "drain_seconds": drain_seconds,
        "events_put": final.events_put,
        "events_refused_full": sum(refused),
        "events_delivered": final.events_delivered,
        "events_failed": final.events_failed,
        "events_dropped": final.events_dropped,
        "bytes_sent": final.bytes_sent,
        "billed_bytes": final.billed_bytes,
        "requests_sent": final.requests_sent,
        "records_sent": final.records_sent,
        "throttled_records_seen": final.throttled_records,
        "throttled_requests_seen": final.throttled_requests,
        "cpu_seconds_offering": cpu_offer,
        "cpu_seconds_total": cpu_total,
        "cpu_by_thread_offering": {k: v - threads_cpu_start.get(k, 0.0)
                          for k, v in threads_cpu_end.items()},
        "freshness_ns": percentiles(client.ages_ns, (50, 99)),
        "freshness_samples": len(client.ages_ns),
        "rss_before_buffer_kb": rss_before,
        "peak_rss_kb": peak_rss_kb(),
        "linger_seconds": config.linger_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--quota", choices=["standard", "high"], default="standard")
    parser.add_argument("--step", action="append", required=True,
                        help="RATE:SECONDS, events/s for that long; repeatable")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--stop-when-behind", action="store_true",
                        help="skip the remaining steps once one does not keep up")
    args = parser.parse_args(argv)
    steps = [(float(r), float(s)) for r, s in (x.split(":") for x in args.step)]
    result = run_load(args.endpoint, Quota.named(args.quota), steps, streams=args.streams,
                      size=args.size, threads=args.threads,
                      stop_when_behind=args.stop_when_behind)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
