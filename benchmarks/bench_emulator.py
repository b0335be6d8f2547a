"""How much the local Firehose accepts when it runs in its own process.

Starts ``python -m firehose_buffer.emulator --port 0`` with a quota too high to matter and
delivery to a temporary directory, then drives it from a few threads over keep-alive
``http.client`` connections with pre-built PutRecordBatch bodies, one scenario at a time for a
bounded time. Prints requests/s, records/s and MB/s (10^6 bytes of decoded ``Data``) accepted,
and the CPU the emulator process used: below ~100% of a core, the emulator was not the
bottleneck (the Python client driving it was).

    python benchmarks/bench_emulator.py --seconds 5
    python benchmarks/bench_emulator.py --quick
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
STREAM = "bench"
TARGET = "Firehose_20150804.PutRecordBatch"


@dataclass(frozen=True)
class Scenario:
    name: str
    records: int
    record_bytes: int

    @property
    def batch_bytes(self) -> int:
        return self.records * self.record_bytes

    def body(self) -> bytes:
        line = (b'{"event":"bench","pad":"' + b"x" * max(0, self.record_bytes - 26) + b'"}\n')
        data = base64.b64encode(line[: self.record_bytes]).decode()
        return orjson.dumps({"DeliveryStreamName": STREAM,
                             "Records": [{"Data": data}] * self.records})


SCENARIOS = [
    Scenario("500 KB batches (500 x 1 KB)", 500, 1_000),
    Scenario("4 MB batches (4 x 1 MB)", 4, 1_000_000),
    Scenario("small batches (10 x 100 B)", 10, 100),
]


def start_emulator(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "firehose_buffer.emulator", "--port", "0",
         "--data-dir", str(data_dir), "--streams", STREAM,
         "--requests-per-second", "1e9", "--bytes-per-second", "1e15",
         "--records-per-second", "1e12", "--no-verify-signatures"],  # bodies are not signed
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return proc, line.split()[-1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(port: int, body: bytes, seconds: float, threads: int) -> tuple[int, int]:
    """Send ``body`` from ``threads`` connections for ``seconds``; (requests, failed ones)."""
    counts = [[0, 0] for _ in range(threads)]
    deadline = time.monotonic() + seconds
    headers = {"X-Amz-Target": TARGET, "Content-Type": "application/x-amz-json-1.1"}

    def worker(slot: list[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < deadline:
                conn.request("POST", "/", body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                slot[0] += 1
                # A substring test, not a parse: keep the client's CPU for sending.
                if response.status != 200 or b'"FailedPutCount":0,' not in answer:
                    slot[1] += 1
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, args=(slot,)) for slot in counts]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per scenario")
    parser.add_argument("--quick", action="store_true", help="about 2 s in all")
    parser.add_argument("--threads", type=int, default=4, help="client connections")
    args = parser.parse_args()
    scenarios = [SCENARIOS[0], SCENARIOS[2]] if args.quick else SCENARIOS
    seconds = 1.0 if args.quick else args.seconds

    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        proc, endpoint = start_emulator(Path(tmp))
        port = int(endpoint.rsplit(":", 1)[1])
        print(f"emulator {endpoint} (pid {proc.pid}), {args.threads} client threads, "
              f"{seconds:g} s per scenario, {os.cpu_count()} CPUs")
        print(f"{'scenario':32} {'req/s':>9} {'records/s':>11} {'MB/s':>8} "
              f"{'emulator CPU':>13} {'client CPU':>11} {'failed':>7}")
        try:
            for scenario in scenarios:
                body = scenario.body()
                drive(port, body, 0.2, args.threads)  # warm up connections and caches
                emulator_cpu = cpu_seconds(proc.pid)
                client_cpu = time.process_time()
                started = time.perf_counter()
                requests, failed = drive(port, body, seconds, args.threads)
                elapsed = time.perf_counter() - started
                emulator_share = (cpu_seconds(proc.pid) - emulator_cpu) / elapsed
                client_share = (time.process_time() - client_cpu) / elapsed
                ok = requests - failed
                print(f"{scenario.name:32} {requests / elapsed:9.0f} "
                      f"{ok * scenario.records / elapsed:11.0f} "
                      f"{ok * scenario.batch_bytes / elapsed / 1e6:8.1f} "
                      f"{emulator_share:12.0%} {client_share:11.0%} {failed:7d}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
