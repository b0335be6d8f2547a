"""The lead: what one 4 MB PutRecordBatch costs in botocore, against the floor of a signed
request (base64 of the records plus SHA-256 of the body), with a cProfile of the call and a
fix (``benchmarks/fastbody.py``, installed on the clients ``benchmarks/client.py`` makes),
which keeps boto3's credentials, signing and endpoint resolution and builds only the body.
"""

from __future__ import annotations

import base64
import cProfile
import hashlib
import io
import os
import pstats
import statistics
import time
from typing import Any

import boto3
import orjson
from botocore.config import Config

from firehose_buffer import BufferConfig, Quota

from .client import make_client
from .emulator_proc import AWS_ENV, EmulatorProcess
from .events import fixed_size
from .report import Row

STREAM = "profile-0"


def _records(total: int = 4_000_000, record: int = 1_000_000) -> list[bytes]:
    pool = [orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in fixed_size(500, 4096)]
    out = []
    for k in range(total // record):
        data = b"".join(pool[(k * 7 + j) % len(pool)] for j in range(record // 4097))
        out.append(data)
    return out


def _cpu_per_call(client: Any, records: list[bytes], calls: int) -> float:
    times = []
    for _ in range(calls):
        cpu = time.thread_time()
        response = client.put_record_batch(DeliveryStreamName=STREAM,
                                           Records=[{"Data": r} for r in records])
        times.append(time.thread_time() - cpu)
        if response["FailedPutCount"] or len(response["RequestResponses"]) != len(records):
            raise RuntimeError(f"emulator refused the profile batch: {response}")
    return statistics.median(times)


def signing_records() -> list[bytes]:
    """The records the signing floor is measured on (4 x ~1 MB of 4 KB events)."""
    return _records()


def signing_floor_ns_per_byte(calls: int = 5) -> float:
    """CPU ns per record byte of base64 plus SHA-256: what any signed request must spend."""
    records = _records()
    return _floor(records, calls) * 1e9 / sum(map(len, records))


def _floor(records: list[bytes], calls: int) -> float:
    times = []
    for _ in range(calls):
        cpu = time.thread_time()
        encoded = [base64.b64encode(r) for r in records]
        hashlib.sha256(b"".join(encoded)).digest()
        times.append(time.thread_time() - cpu)
    return statistics.median(times)


def run(quick: bool) -> list[Row]:
    calls = 5 if quick else 20
    for key, value in AWS_ENV.items():
        os.environ.setdefault(key, value)
    records = _records()
    nbytes = sum(map(len, records))
    unlimited = ("--requests-per-second", "1e6", "--bytes-per-second", "1e13",
                 "--records-per-second", "1e9")
    with EmulatorProcess([STREAM], "high", *unlimited) as emulator:
        config = BufferConfig(streams=(STREAM,), quota=Quota.HIGH,
                              endpoint_url=emulator.endpoint_url, region="us-east-1")
        # Stock botocore: the library's client settings without its body builder.
        stock: Any = boto3.client(
            "firehose", endpoint_url=emulator.endpoint_url, region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 1}),
        )
        fast: Any = make_client(config)  # with benchmarks/fastbody.py installed
        _cpu_per_call(stock, records, 2)  # warm up connections and caches
        _cpu_per_call(fast, records, 2)
        stock_s = _cpu_per_call(stock, records, calls)
        fast_s = _cpu_per_call(fast, records, calls)
        floor_s = _floor(records, calls)
        profiler = cProfile.Profile()
        profiler.enable()
        _cpu_per_call(stock, records, 3)
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    top = [line for line in text.getvalue().splitlines() if line.strip()][-13:]
    ns = 1e9 / nbytes
    return [
        Row(
            figure="lead: PutRecordBatch 4 MB via botocore",
            measured=stock_s * ns,
            unit="CPU ns/byte",
            reference=floor_s * ns,
            reference_label="b64+sha256 floor",
            notes=f"{stock_s * 1e3:.1f} ms CPU per 4 MB call",
            details={"bytes": nbytes, "records": len(records), "calls": calls,
                     "cprofile_top_tottime": top},
        ),
        Row(
            figure="lead: same, fastbody",
            measured=fast_s * ns,
            unit="CPU ns/byte",
            reference=floor_s * ns,
            reference_label="b64+sha256 floor",
            notes=f"{fast_s * 1e3:.1f} ms CPU per call; stock/hook = {stock_s / fast_s:.2f}x",
            details={"stock_over_hook": stock_s / fast_s},
        ),
    ]
