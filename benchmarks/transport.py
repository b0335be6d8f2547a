"""CPU per byte of one PutRecordBatch through each transport, against the floor of a signed
request (base64 of the records plus SHA-256 of the body), the emulator in its own process
with signature checks off. Two shapes: one 4 MiB batch (4 records of ~1 MB) and one 512 KiB
record. Then the same over TLS (the emulator with ``--tls``), against the floor plus
encrypting the body (:mod:`.tls_floor`). Every figure is a ratio within the run.
"""

from __future__ import annotations

import base64
import hashlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import orjson

from firehose_buffer import BufferConfig, Quota
from firehose_buffer.client import make_client
from firehose_buffer.transport import BotocoreTransport, Outcome
from firehose_buffer.transport.lean import LeanTransport

from .emulator_proc import AWS_ENV, EmulatorProcess
from .events import fixed_size
from .report import Row
from .tls_floor import TlsPair, floor_seconds

STREAM = "transport-0"
Send = Callable[[str, Sequence[bytes]], Outcome]


def _records(total: int, record: int) -> list[bytes]:
    pool = [orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in fixed_size(500, 4096)]
    out = []
    for k in range(max(1, total // record)):
        out.append(b"".join(pool[(k * 7 + j) % len(pool)] for j in range(record // 4097)))
    return out


def _cpu(send: Send, records: list[bytes], calls: int) -> float:
    times = []
    for _ in range(calls):
        cpu = time.thread_time()
        outcome = send(STREAM, records)
        times.append(time.thread_time() - cpu)
        if outcome.codes is None or any(outcome.codes):
            raise RuntimeError(f"the emulator refused the batch: {outcome}")
    return statistics.median(times)


def _floor(records: list[bytes], calls: int) -> float:
    times = []
    for _ in range(calls):
        cpu = time.thread_time()
        hashlib.sha256(b"".join([base64.b64encode(r) for r in records])).digest()
        times.append(time.thread_time() - cpu)
    return statistics.median(times)


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


UNLIMITED = ("--requests-per-second", "1e6", "--bytes-per-second", "1e13",
             "--records-per-second", "1e9")


def run(quick: bool) -> list[Row]:
    calls = 5 if quick else 25
    for key, value in AWS_ENV.items():
        os.environ.setdefault(key, value)
    shapes = {"4 MiB batch": _records(4_000_000, 1_000_000),
              "512 KiB record": _records(512 * 1024, 512 * 1024)}
    unlimited = UNLIMITED
    rows = []
    plain: dict[str, float] = {}
    with EmulatorProcess([STREAM], "high", *unlimited) as emulator:
        config = BufferConfig(streams=(STREAM,), quota=Quota.HIGH,
                              endpoint_url=emulator.endpoint_url, region="us-east-1")
        started = time.perf_counter()
        lean = LeanTransport(config)
        lean_setup = time.perf_counter() - started
        boto = BotocoreTransport(make_client(config))  # botocore with fastbody's bodies
        for name, records in shapes.items():
            nbytes = sum(map(len, records))
            for send in (lean.send, boto.send):
                _cpu(send, records, 2)  # connections and caches warm
            lean_s = _cpu(lean.send, records, calls)
            boto_s = _cpu(boto.send, records, calls)
            floor_s = _floor(records, calls)
            ns = 1e9 / nbytes
            plain[name] = lean_s * ns
            rows += [
                Row(f"transport: {name}, lean", lean_s * ns, "CPU ns/byte", floor_s * ns,
                    "b64+sha256 floor", notes=f"{lean_s * 1e3:.2f} ms CPU per call; "
                    f"botocore+fastbody/lean = {boto_s / lean_s:.2f}x",
                    details={"bytes": nbytes, "records": len(records), "calls": calls}),
                Row(f"transport: {name}, botocore+fastbody", boto_s * ns, "CPU ns/byte",
                    floor_s * ns, "b64+sha256 floor", notes=f"{boto_s * 1e3:.2f} ms CPU per call"),
            ]
        lean.close()
    rows.append(Row("transport: lean setup (endpoint given)", lean_setup * 1e3, "ms",
                    notes="wall time of LeanTransport(config) in a warm process"))
    rows += _over_tls(shapes, calls, plain)
    return rows


def _over_tls(shapes: dict[str, list[bytes]], calls: int,
              plain: dict[str, float]) -> list[Row]:
    """The same calls over HTTPS: what TLS adds, against a floor that encrypts the body."""
    rows = []
    pair = TlsPair()
    with EmulatorProcess([STREAM], "high", *UNLIMITED, "--tls") as emulator:
        config = BufferConfig(streams=(STREAM,), quota=Quota.HIGH,
                              endpoint_url=emulator.endpoint_url, region="us-east-1")
        with _environ(emulator.client_env()):  # trust is read when the clients are made
            lean = LeanTransport(config)
            boto = BotocoreTransport(make_client(config))
        for name, records in shapes.items():
            nbytes = sum(map(len, records))
            for send in (lean.send, boto.send):
                _cpu(send, records, 2)  # connections (and their handshakes) warm
            lean_s = _cpu(lean.send, records, calls)
            boto_s = _cpu(boto.send, records, calls)
            floor_s = floor_seconds(records, calls)
            tls_floor_s = floor_seconds(records, calls, pair)
            ns = 1e9 / nbytes
            rows += [
                Row(f"transport: {name}, lean over TLS", lean_s * ns, "CPU ns/byte",
                    tls_floor_s * ns, "b64+sha256+TLS floor",
                    notes=f"plain HTTP {plain[name]:.3f} ns/byte: TLS adds "
                    f"{lean_s * ns - plain[name]:.3f}; botocore+fastbody/lean = "
                    f"{boto_s / lean_s:.2f}x",
                    details={"bytes": nbytes, "records": len(records), "calls": calls}),
                Row(f"transport: {name}, botocore+fastbody over TLS", boto_s * ns,
                    "CPU ns/byte", tls_floor_s * ns, "b64+sha256+TLS floor"),
                Row(f"transport: {name}, floor with TLS", tls_floor_s * ns, "CPU ns/byte",
                    floor_s * ns, "b64+sha256 floor",
                    notes=f"encrypting the body ({pair.cipher}, in memory)"),
            ]
        lean.close()
    return rows
