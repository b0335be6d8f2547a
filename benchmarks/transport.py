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
from firehose_buffer._service.firehose import FIREHOSE
from firehose_buffer.transport import BotocoreTransport, Outcome
from firehose_buffer.transport.lean import LeanTransport

from .client import make_client
from .emulator_proc import AWS_ENV, EmulatorProcess
from .events import fixed_size
from .report import Row
from .tls_floor import TlsPair

STREAM = "transport-0"
Send = Callable[[str, Sequence[bytes]], Outcome]


def _records(total: int, record: int) -> list[bytes]:
    pool = [orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in fixed_size(500, 4096)]
    out = []
    for k in range(max(1, total // record)):
        out.append(b"".join(pool[(k * 7 + j) % len(pool)] for j in range(record // 4097)))
    return out


def _cpu_once(send: Send, records: list[bytes]) -> float:
    cpu = time.thread_time()
    outcome = send(STREAM, records)
    spent = time.thread_time() - cpu
    if outcome.codes is None or any(outcome.codes):
        raise RuntimeError(f"the emulator refused the batch: {outcome}")
    return spent


def _floor_once(records: list[bytes]) -> float:
    cpu = time.thread_time()
    hashlib.sha256(b"".join([base64.b64encode(r) for r in records])).digest()
    return time.thread_time() - cpu


def _encrypt_once(body: bytes, pair: TlsPair) -> float:
    cpu = time.thread_time()
    pair.encrypt(body)
    return time.thread_time() - cpu


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
    rows = []
    pair = TlsPair()
    with EmulatorProcess([STREAM], "high", *UNLIMITED) as plain_emulator, \
            EmulatorProcess([STREAM], "high", *UNLIMITED, "--tls") as tls_emulator:
        def config(emulator: EmulatorProcess) -> BufferConfig:
            return BufferConfig(streams=(STREAM,), quota=Quota.HIGH,
                                endpoint_url=emulator.endpoint_url, region="us-east-1")

        started = time.perf_counter()
        lean = LeanTransport(config(plain_emulator))
        lean_setup = time.perf_counter() - started
        boto = BotocoreTransport(make_client(config(plain_emulator)))  # with fastbody
        with _environ(tls_emulator.client_env()):  # trust is read when clients are made
            lean_tls = LeanTransport(config(tls_emulator))
            boto_tls = BotocoreTransport(make_client(config(tls_emulator)))
        measures: dict[str, Callable[[list[bytes]], float]] = {
            "lean": lambda r: _cpu_once(lean.send, r),
            "boto": lambda r: _cpu_once(boto.send, r),
            "lean_tls": lambda r: _cpu_once(lean_tls.send, r),
            "boto_tls": lambda r: _cpu_once(boto_tls.send, r),
            "floor": _floor_once,
        }
        for name, records in shapes.items():
            body = FIREHOSE.build_body(STREAM, records)
            measures["encrypt"] = lambda r, body=body: _encrypt_once(body, pair)
            for measure in measures.values():
                for _ in range(2):
                    measure(records)  # connections, handshakes and allocator warm
            # Round robin, so that the machine's moods fall on every figure alike.
            times: dict[str, list[float]] = {k: [] for k in measures}
            for _ in range(calls):
                for key, measure in measures.items():
                    times[key].append(measure(records))
            ns = 1e9 / sum(map(len, records))
            m = {k: statistics.median(v) * ns for k, v in times.items()}
            m["tls_floor"] = m["floor"] + m["encrypt"]
            rows += [
                Row(f"transport: {name}, lean", m["lean"], "CPU ns/byte", m["floor"],
                    "b64+sha256 floor", notes=f"{m['lean'] / ns * 1e3:.2f} ms CPU per call; "
                    f"botocore+fastbody/lean = {m['boto'] / m['lean']:.2f}x",
                    details={"bytes": sum(map(len, records)), "records": len(records),
                             "calls": calls}),
                Row(f"transport: {name}, botocore+fastbody", m["boto"], "CPU ns/byte",
                    m["floor"], "b64+sha256 floor",
                    notes=f"{m['boto'] / ns * 1e3:.2f} ms CPU per call"),
                Row(f"transport: {name}, lean over TLS", m["lean_tls"], "CPU ns/byte",
                    m["tls_floor"], "b64+sha256+TLS floor",
                    notes=f"TLS adds {m['lean_tls'] - m['lean']:.3f} ns/byte to the lean "
                    f"transport, {m['tls_floor'] - m['floor']:.3f} to the floor"),
                Row(f"transport: {name}, botocore+fastbody over TLS", m["boto_tls"],
                    "CPU ns/byte", m["tls_floor"], "b64+sha256+TLS floor"),
                Row(f"transport: {name}, floor with TLS", m["tls_floor"], "CPU ns/byte",
                    m["floor"], "b64+sha256 floor",
                    notes=f"plus encrypting the body ({pair.cipher}, in memory, measured "
                    "apart)"),
            ]
        lean.close()
        lean_tls.close()
    rows.append(Row("transport: lean setup (endpoint given)", lean_setup * 1e3, "ms",
                    notes="wall time of LeanTransport(config) in a warm process"))
    return rows
