"""The examples as real processes: a burst of HTTP requests, then SIGTERM the way a
platform stops a service (to uvicorn's process; to gunicorn's master), and every event the
app accepted (answered 2xx) must be in the emulator's delivered files.

The emulator runs in its own process; the servers are the real uvicorn and gunicorn.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from firehose_buffer.emulator import EmulatorControl

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
STREAMS = ("events-0", "events-1", "events-2", "events-3")
EVENTS = 2_000
CONCURRENCY = 16
START_DEADLINE = 60.0
EXIT_DEADLINE = 60.0
#: The app's close may take this long (FIREHOSE_BUFFER_EXIT_TIMEOUT_SECONDS); the servers'
#: own grace periods are longer.
CLOSE_SECONDS = 20.0
#: Each stream's byte quota, in the emulator and in the apps' config: below what the burst
#: offers, so that a backlog of a few MB waits in the buffers when SIGTERM comes.
STREAM_BYTES_PER_SECOND = 100_000


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this checkout importable, AWS pointed nowhere
    real."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    env.pop("AWS_PROFILE", None)
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], bool], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline} s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the emulator in its own process --------------------------------------------------------


class Emulator:
    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firehose_buffer.emulator", "--port", "0",
             "--streams", ",".join(STREAMS), "--data-dir", str(data_dir),
             "--bytes-per-second", str(STREAM_BYTES_PER_SECOND)],
            stdout=subprocess.PIPE, text=True, env=child_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.endpoint_url = line.removeprefix("listening on ")
        self.control = EmulatorControl(self.endpoint_url, timeout=30.0)

    def delivered_ids(self) -> Counter[str]:
        """How many times each event id was delivered, over every stream."""
        files = self.control.flush()
        ids: Counter[str] = Counter()
        for paths in files.values():
            for path in paths:
                for line in Path(path).read_bytes().splitlines():
                    ids[orjson.loads(line)["id"]] += 1
        return ids

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path / "delivered")
    try:
        yield emu
    finally:
        emu.stop()


# -- a server under load ---------------------------------------------------------------------


@dataclass
class Outcome:
    accepted: set[str]
    refused: int
    returncode: int
    stopped_in: float
    stats: list[dict[str, Any]]
    log: str


def app_env(emulator: Emulator, stats_dir: Path) -> dict[str, str]:
    stats_dir.mkdir(exist_ok=True)
    return child_env(
        FIREHOSE_BUFFER_STREAMS=",".join(STREAMS),
        AWS_ENDPOINT_URL_FIREHOSE=emulator.endpoint_url,
        FIREHOSE_BUFFER_EXIT_TIMEOUT_SECONDS=str(CLOSE_SECONDS),
        FIREHOSE_BUFFER_BYTES_PER_SECOND=str(STREAM_BYTES_PER_SECOND),
        FIREHOSE_EXAMPLE_STATS_DIR=str(stats_dir),
    )


async def _burst(port: int, run: str, count: int) -> tuple[set[str], int]:
    """POST ``count`` events of 0.5-4 KB with bounded concurrency; the ids answered 2xx."""
    rng = random.Random(run)
    bodies = [(f"{run}-{i}", rng.randint(500, 4000)) for i in range(count)]
    accepted: set[str] = set()
    refused = 0
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                 timeout=30.0) as client:

        async def sender() -> None:
            nonlocal refused
            while not queue.empty():
                event_id, size = queue.get_nowait()
                body = {"id": event_id, "event_type": "page_view", "pad": "x" * size}
                response = await client.post("/events", json=body)
                if 200 <= response.status_code < 300:
                    accepted.add(event_id)
                else:
                    refused += 1

        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return accepted, refused


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def run_server(command: list[str], env: dict[str, str], port: int, tmp_path: Path,
               stats_dir: Path, *, count: int = EVENTS) -> Outcome:
    """Start ``command`` in examples/, send the burst, SIGTERM its process right after the
    last answer, and wait for it to exit."""
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=EXAMPLES, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: healthy(port) or proc.poll() is not None, START_DEADLINE,
                   "the server to answer /health")
        assert proc.poll() is None, log_path.read_text()
        accepted, refused = asyncio.run(_burst(port, tmp_path.name, count))
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(EXIT_DEADLINE)
        stopped_in = time.monotonic() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stats = [orjson.loads(p.read_bytes()) for p in sorted(stats_dir.glob("*.json"))]
    return Outcome(accepted, refused, returncode, stopped_in, stats, log_path.read_text())


def assert_nothing_lost(outcome: Outcome, emulator: Emulator) -> None:
    delivered = emulator.delivered_ids()
    lost = outcome.accepted - set(delivered)
    assert len(outcome.accepted) > EVENTS // 2, (outcome.refused, outcome.log[-3000:])
    assert not lost, (
        f"{len(lost)} of {len(outcome.accepted)} accepted events never delivered "
        f"(exit {outcome.returncode} after {outcome.stopped_in:.1f} s)\n{outcome.log[-3000:]}"
    )
    duplicates = sum(n - 1 for n in delivered.values())
    possible = sum(s["stats"]["possible_duplicates"] for s in outcome.stats)
    assert duplicates <= possible
    # Nothing delivered that the app did not accept, bar requests cut off by the stop.
    assert set(delivered) - outcome.accepted == set()


# -- the tests --------------------------------------------------------------------------------


def test_fastapi_under_uvicorn_loses_nothing_on_sigterm(
    emulator: Emulator, tmp_path: Path
) -> None:
    port = free_port()
    stats_dir = tmp_path / "stats"
    outcome = run_server(
        [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log"],
        app_env(emulator, stats_dir), port, tmp_path, stats_dir,
    )
    assert_nothing_lost(outcome, emulator)
    # The lifespan closed the buffer (and wrote its numbers) before uvicorn exited.
    assert len(outcome.stats) == 1
    assert outcome.stats[0]["result"]["pending"] == 0


def gunicorn(port: int, worker: str, app: str, *extra: str,
             conf: Path = EXAMPLES / "gunicorn_conf.py") -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", str(conf), "--preload", "-w", "2",
            "-k", worker, *extra, "-b", f"127.0.0.1:{port}", app]


WORKERS = {
    "uvicorn-worker": ("uvicorn.workers.UvicornWorker", "fastapi_app:app", ()),
    "gthread": ("gthread", "flask_app:app", ("--threads", "4")),
}


@pytest.mark.parametrize("kind", list(WORKERS))
def test_gunicorn_preload_loses_nothing_when_the_master_gets_sigterm(
    emulator: Emulator, tmp_path: Path, kind: str
) -> None:
    worker, app, extra = WORKERS[kind]
    port = free_port()
    stats_dir = tmp_path / "stats"
    outcome = run_server(gunicorn(port, worker, app, *extra), app_env(emulator, stats_dir),
                         port, tmp_path, stats_dir)
    assert outcome.returncode == 0, outcome.log[-3000:]
    assert_nothing_lost(outcome, emulator)
    # Each worker closed its own buffer and reported (which worker took the requests is
    # gunicorn's accept race: one may have taken them all; the --preload master, which put
    # nothing, may report too).
    assert len(outcome.stats) >= 2, outcome.stats
    assert sum(s["stats"]["events_put"] for s in outcome.stats) == len(outcome.accepted)
    assert all(s["result"]["pending"] == 0 for s in outcome.stats)


@pytest.mark.parametrize("kind", list(WORKERS))
def test_gunicorn_preload_master_runs_no_buffer_thread(
    emulator: Emulator, tmp_path: Path, kind: str
) -> None:
    """The master builds the buffer at import (``--preload``) and forks the workers: it
    must hold no running buffer thread to fork (threads start on first use)."""
    worker, app, extra = WORKERS[kind]
    report = tmp_path / "master-threads.json"
    conf = tmp_path / "gunicorn_probe.py"
    conf.write_text(
        f"exec(compile(open({str(EXAMPLES / 'gunicorn_conf.py')!r}).read(), "
        "'gunicorn_conf.py', 'exec'))\n"
        "def when_ready(server):\n"
        "    import json, threading\n"
        f"    with open({str(report)!r}, 'w') as f:\n"
        "        json.dump([t.name for t in threading.enumerate()], f)\n"
    )
    port = free_port()
    stats_dir = tmp_path / "stats"
    outcome = run_server(gunicorn(port, worker, app, *extra, conf=conf),
                         app_env(emulator, stats_dir), port, tmp_path, stats_dir, count=20)
    assert outcome.returncode == 0, outcome.log[-3000:]
    names = orjson.loads(report.read_bytes())
    assert "MainThread" in names
    assert [n for n in names if n.startswith("firehose-buffer-")] == []


# -- Lambda: freezes between invocations, a kill after the last ------------------------------

INVOCATIONS = 6
EVENTS_PER_INVOCATION = 60
FREEZES = (1.0, 2.0, 1.5)


def read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], deadline)
    assert ready, f"no answer within {deadline} s"
    line = proc.stdout.readline()
    assert line, "the driver exited"
    return line


def test_lambda_handler_loses_nothing_through_freezes_and_a_final_kill(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = child_env(FIREHOSE_BUFFER_STREAMS=",".join(STREAMS),
                    FIREHOSE_BUFFER_BYTES_PER_SECOND=str(STREAM_BYTES_PER_SECOND),
                    AWS_ENDPOINT_URL_FIREHOSE=emulator.endpoint_url)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), env["PYTHONPATH"]])
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "lambda_driver.py"), "lambda_handler:handler"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    rng = random.Random(7)
    sent: set[str] = set()
    stats: dict[str, Any] = {}
    try:
        assert read_line(proc, START_DEADLINE).strip() == "ready"
        assert proc.stdin is not None
        for n in range(INVOCATIONS):
            if n:
                # Lambda thaws the environment for the next invocation.
                os.kill(proc.pid, signal.SIGCONT)
            ids = [f"{n}-{i}" for i in range(EVENTS_PER_INVOCATION)]
            events = [{"id": i, "pad": "x" * rng.randint(500, 4000)} for i in ids]
            proc.stdin.write(orjson.dumps({"event": {"events": events}, "timeout": 3.0})
                             .decode() + "\n")
            proc.stdin.flush()
            reply = orjson.loads(read_line(proc, 30.0))
            assert reply["answer"] == {"statusCode": 200, "accepted": len(events)}
            sent.update(ids)
            stats = reply["stats"]
            if n < INVOCATIONS - 1:
                # Frozen the moment it answered, as Lambda does, for a while.
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(FREEZES[n % len(FREEZES)])
        # After the last answer the environment is destroyed without warning.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    delivered = emulator.delivered_ids()
    lost = sent - set(delivered)
    assert not lost, f"{len(lost)} of {len(sent)} events lost"
    assert sum(n - 1 for n in delivered.values()) <= stats["possible_duplicates"]
