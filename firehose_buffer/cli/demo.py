"""Ship realistic tracking traffic through a FirehoseBuffer to a local Firehose, then report.

Starts the emulator in its own process, creates N sharded delivery streams, and runs several
producer threads whose combined rate swings between --min-rate and --max-rate events/s for
--seconds. Reads every delivered file back to count lost and duplicated events, and prices the
traffic against the naive design (one event per record). Exits 1 if any event was lost.

examples:
  firehose-buffer demo
  firehose-buffer demo --seconds 60 --shards 16 --max-rate 4000
  firehose-buffer demo --faults record_service_unavailable=0.05,http_503=0.01
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import orjson

from .._core.compression import decompress_object
from .._core.packing import billed_bytes
from ..buffer import FirehoseBuffer
from ..config import BufferConfig, sharded_stream_names
from ..emulator import EmulatorControl, FaultRates
from ..quota import Quota

GIB = 1024**3
SECONDS_PER_MONTH = 30 * 24 * 3600
_APPS = {
    "shop-web": ["sku", "price_cents", "cart_id", "currency", "coupon"],
    "news-app": ["article_id", "section", "author", "scroll_depth"],
    "game-ios": ["level", "score", "device_model", "session_length_ms"],
    "crm-api": ["account_id", "plan", "seats", "region"],
}
_EVENT_TYPES = ["page_view", "click", "add_to_cart", "purchase", "search", "signup", "heartbeat"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="traffic duration (%(default)s)")
    parser.add_argument("--shards", type=int, default=16, help="delivery streams (%(default)s)")
    parser.add_argument("--stream", default="demo-events", help="stream name base (%(default)s)")
    parser.add_argument("--producers", type=int, default=4, help="producer threads (%(default)s)")
    parser.add_argument("--min-rate", type=float, default=500.0, help="events/s low (%(default)s)")
    parser.add_argument("--max-rate", type=float, default=4000.0,
                        help="events/s peak (%(default)s)")
    parser.add_argument("--price-per-gb", type=float, default=0.033,
                        help="ingestion price per GB, USD (%(default)s)")
    parser.add_argument("--quota", choices=["standard", "high"], default="standard",
                        help="per-stream quota of the emulator and the client (%(default)s)")
    parser.add_argument("--faults", type=FaultRates.parse, default=None,
                        help="random emulator faults, e.g. record_service_unavailable=0.05")
    parser.add_argument("--data-dir", type=Path, default=Path("demo-output"),
                        help="where the emulator writes delivered JSONL files (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (%(default)s)")
    parser.add_argument("--compression", choices=["zstd", "gzip"], default=None,
                        help="send compressed records (streams get a .jsonl.zst/.jsonl.gz "
                             "extension; zstd needs firehose-buffer[zstd] before Python 3.14)")


@dataclass
class _Tally:
    """What the demo's producer threads have sent, under ``lock``: event ids, raw bytes, the
    bytes a one-event-per-record client would be billed for, put() latencies."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: list[str] = field(default_factory=list)
    raw_bytes: int = 0
    naive_billed: int = 0
    latencies_ns: list[int] = field(default_factory=list)


class _EventMaker:
    """Flat string events of 0.5-4 KB: shared fields, plus custom fields per application."""

    def __init__(self, rng: random.Random, producer: int) -> None:
        self._rng = rng
        self._producer = producer
        self._seq = 0

    def make(self) -> dict[str, str]:
        rng = self._rng
        self._seq += 1
        app = rng.choice(list(_APPS))
        event = {
            "event_id": f"p{self._producer}-{self._seq}",
            "event_type": rng.choice(_EVENT_TYPES),
            "app": app,
            "ts": f"{time.time():.6f}",
            "user_id": f"u-{rng.randrange(100_000)}",
            "session_id": f"s-{rng.randrange(1_000_000):07d}",
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
            "page_url": f"https://example.com/{app}/{rng.randrange(10_000)}",
        }
        for name in _APPS[app]:
            event[name] = str(rng.randrange(10**9))
        target = rng.randint(500, 4000)
        pad = target - len(orjson.dumps(event)) - 16
        if pad > 0:
            event["context"] = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=pad))
        return event


def _rate_at(t: float, low: float, high: float, seconds: float) -> float:
    """Spiky traffic: a slow swing between low and high plus short bursts."""
    swing = 0.5 - 0.5 * math.cos(2 * math.pi * t / max(seconds / 2, 1.0))
    burst = 0.3 if int(t * 2) % 7 == 3 else 0.0
    return low + (high - low) * min(1.0, swing + burst)


def _produce(buf: FirehoseBuffer, index: int, args: argparse.Namespace, start: float,
             tally: _Tally) -> None:
    rng = random.Random(args.seed * 1000 + index)
    maker = _EventMaker(rng, index)
    ids: list[str] = []
    latencies: list[int] = []
    raw = naive = 0
    sent = 0.0
    step = 0.01
    now = time.monotonic()
    while now - start < args.seconds:
        share = _rate_at(now - start, args.min_rate, args.max_rate, args.seconds) / args.producers
        sent += share * step
        while sent >= 1.0:
            sent -= 1.0
            event = maker.make()
            t0 = time.perf_counter_ns()
            buf.put(event)
            latencies.append(time.perf_counter_ns() - t0)
            ids.append(event["event_id"])
            size = len(orjson.dumps(event)) + 1
            raw += size
            naive += billed_bytes(size)
        time.sleep(max(0.0, step - (time.monotonic() - now)))
        now = time.monotonic()
    with tally.lock:
        tally.ids.extend(ids)
        tally.latencies_ns.extend(latencies)
        tally.raw_bytes += raw
        tally.naive_billed += naive


def _start_emulator(args: argparse.Namespace, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "firehose_buffer.emulator", "--port", "0",
           "--data-dir", str(data_dir), "--quota", args.quota, "--buffer-seconds", "2",
           # The demo's clients sign with whatever credentials the environment has; a
           # secret never goes on a command line for the emulator to check them against.
           "--no-verify-signatures"]
    if args.faults is not None:
        cmd += ["--fault-rates", ",".join(f"{k}={v}" for k, v in args.faults.to_json().items()),
                "--seed", str(args.seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def run(args: argparse.Namespace) -> int:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")
    data_dir = args.data_dir.resolve() / time.strftime("%Y%m%d-%H%M%S")
    data_dir.mkdir(parents=True, exist_ok=True)
    emulator, endpoint = _start_emulator(args, data_dir)
    try:
        return _run(args, endpoint, data_dir)
    finally:
        emulator.send_signal(signal.SIGTERM)
        try:
            emulator.wait(10)
        except subprocess.TimeoutExpired:
            emulator.kill()


def _run(args: argparse.Namespace, endpoint: str, data_dir: Path) -> int:
    streams = sharded_stream_names(args.stream, args.shards)
    control = EmulatorControl(endpoint)
    admin = boto3.client("firehose", endpoint_url=endpoint, region_name="us-east-1")
    extension = {"zstd": ".jsonl.zst", "gzip": ".jsonl.gz"}.get(args.compression or "")
    for name in streams:
        if extension:
            admin.create_delivery_stream(
                DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                ExtendedS3DestinationConfiguration={
                    "BucketARN": "arn:aws:s3:::demo", "FileExtension": extension,
                    "RoleARN": "arn:aws:iam::123456789012:role/demo"})
        else:
            admin.create_delivery_stream(DeliveryStreamName=name,
                                         DeliveryStreamType="DirectPut")
    config = BufferConfig(streams=streams, quota=Quota.named(args.quota),
                          endpoint_url=endpoint, region="us-east-1",
                          compression=args.compression)
    print(f"emulator at {endpoint}: {len(streams)} streams {streams[0]}..{streams[-1]}; "
          f"{args.producers} producers, {args.min_rate:.0f}-{args.max_rate:.0f} events/s "
          f"for {args.seconds:.0f} s", file=sys.stderr)
    tally = _Tally()
    buf = FirehoseBuffer(config)
    start = time.monotonic()
    producers = [threading.Thread(target=_produce, args=(buf, i, args, start, tally),
                                  name=f"demo-producer-{i}")
                 for i in range(args.producers)]
    for t in producers:
        t.start()
    while any(t.is_alive() for t in producers):
        time.sleep(1.0)
        s = buf.stats()
        print(f"  t={time.monotonic() - start:5.1f}s put={s.events_put:>7} "
              f"delivered={s.events_delivered:>7} buffered={s.events_buffered:>6} "
              f"requests={s.requests_sent:>5} throttled={s.throttled_records} "
              f"sent={s.bytes_sent / 1e6:7.1f} MB", file=sys.stderr)
    for t in producers:
        t.join()
    closed = buf.close(timeout=60.0)
    stats = buf.stats()
    control.flush()
    elapsed = max(args.seconds, 1e-9)
    seen: Counter[str] = Counter()
    invalid = 0
    files = 0
    for name in streams:
        for path in control.files(name):
            files += 1
            for line in decompress_object(path.read_bytes()).splitlines():
                try:
                    seen[orjson.loads(line)["event_id"]] += 1
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    invalid += 1
    put_ids = set(tally.ids)
    lost = len(put_ids - seen.keys())
    duplicated = sum(n - 1 for i, n in seen.items() if n > 1)
    service = control.stats()
    billed_month = stats.billed_bytes / elapsed * SECONDS_PER_MONTH / GIB * args.price_per_gb
    naive_month = tally.naive_billed / elapsed * SECONDS_PER_MONTH / GIB * args.price_per_gb
    rows = [
        ("events put", f"{len(tally.ids):,}"),
        ("events delivered (read back)", f"{len(seen):,} unique, {invalid} invalid lines"),
        ("events lost", f"{lost:,}"),
        ("events duplicated", f"{duplicated:,} (client counted "
                              f"{stats.possible_duplicates:,} possible)"),
        ("records / requests", f"{stats.records_sent:,} / {stats.requests_sent:,}"),
        ("raw bytes / billed bytes", f"{stats.raw_bytes_sent:,} / {stats.billed_bytes:,} "
                                     f"({stats.billed_ratio:.4f}x)"),
        ("bytes sent (compressed)" if args.compression else "bytes sent",
         f"{stats.bytes_sent:,}"),
        ("one event per record would bill",
         f"{tally.naive_billed:,} ({tally.naive_billed / max(1, tally.raw_bytes):.2f}x)"),
        (f"monthly cost at this rate (${args.price_per_gb}/GB)",
         f"${billed_month:,.2f} packed vs ${naive_month:,.2f} one event per record"),
        ("throttles", f"client saw {stats.throttled_records} records, "
                      f"{stats.throttled_requests} calls; emulator quota refusals "
                      f"{service.throttled_records + service.throttled_requests}"),
        ("faults injected by the emulator", f"{service.injected_faults}"),
        ("put() latency", f"p50 {_percentile(tally.latencies_ns, 0.5):.1f} us, "
                          f"p99 {_percentile(tally.latencies_ns, 0.99):.1f} us"),
        ("close() delivered everything", str(closed)),
        ("delivered JSONL files", f"{files} under {data_dir}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nfirehose-buffer demo report")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 1 if lost or invalid else 0
