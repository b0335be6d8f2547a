"""The services table: events accepted and lost when a real server is stopped as production
stops it, with the examples' documented setups and, for contrast, without them.

    python -m benchmarks.deploy_table [--only name,name] [--events 2000]

Uses the harness of tests/test_examples.py (the emulator in its own process at 100 KB/s per
stream on 4 streams, a burst of 0.5-4 KB events over HTTP with 16 connections, SIGTERM to
the server's process (uvicorn) or master (gunicorn) right after the last answer), and the
Lambda driver of tests/lambda_driver.py (SIGSTOP after each answer, SIGCONT before the next
invocation, SIGKILL after the last). Lost = answered 2xx (or put by an invocation that
answered) and not in the emulator's delivered files. Duplicates are compared with the
buffers' ``possible_duplicates`` where the app reported them (only apps that close).
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "deploy_apps"


def _harness() -> tuple[ModuleType, ModuleType]:
    """tests/test_examples.py and tests/lambda_driver.py's folder (tests/ is no package)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("test_examples"), importlib.import_module("lambda_driver")


examples, _driver = _harness()


@dataclass
class Row:
    setup: str
    accepted: int = 0
    lost: int = 0
    duplicated: int = 0
    counted: str = "-"
    exit_code: str = "-"
    exit_seconds: str = "-"
    notes: list[str] = field(default_factory=list)


def _server_row(setup: str, command: list[str], tmp: Path, events: int,
                **env_extra: str) -> Row:
    emulator = examples.Emulator(tmp / "delivered")
    try:
        port = int(examples.free_port())
        stats_dir = tmp / "stats"
        env = examples.app_env(emulator, stats_dir)
        env.update(env_extra)
        outcome = examples.run_server([c.replace("{port}", str(port)) for c in command], env,
                                      port, tmp, stats_dir, count=events)
        delivered = emulator.delivered_ids()
    finally:
        emulator.stop()
    row = Row(setup, accepted=len(outcome.accepted),
              lost=len(outcome.accepted - set(delivered)),
              duplicated=sum(n - 1 for n in delivered.values()),
              exit_code=str(outcome.returncode), exit_seconds=f"{outcome.stopped_in:.1f}")
    if outcome.stats:
        row.counted = str(sum(s["stats"]["possible_duplicates"] for s in outcome.stats))
        puts = [s["stats"]["events_put"] for s in outcome.stats]
        row.notes.append(f"{len(outcome.stats)} buffers closed and reported (events put {puts})")
    else:
        row.notes.append("no buffer reported a close")
    if outcome.refused:
        row.notes.append(f"{outcome.refused} requests refused")
    return row


def _uvicorn(app: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}",
            "--no-access-log", *extra]


def uvicorn_lifespan(tmp: Path, events: int) -> Row:
    return _server_row("uvicorn, lifespan aclose()", _uvicorn("fastapi_app:app"), tmp, events)


def gunicorn_uvicorn_worker(tmp: Path, events: int) -> Row:
    worker, app, extra = examples.WORKERS["uvicorn-worker"]
    command = examples.gunicorn(0, worker, app, *extra)
    command[command.index("-b") + 1] = "127.0.0.1:{port}"
    return _server_row("gunicorn --preload -w 2 UvicornWorker, lifespan aclose()", command,
                       tmp, events)


def gunicorn_gthread(tmp: Path, events: int) -> Row:
    worker, app, extra = examples.WORKERS["gthread"]
    command = examples.gunicorn(0, worker, app, *extra)
    command[command.index("-b") + 1] = "127.0.0.1:{port}"
    return _server_row("gunicorn --preload -w 2 gthread --threads 4 (Flask), exit hook",
                       command, tmp, events)


def uvicorn_sigterm_handler(tmp: Path, events: int) -> Row:
    return _server_row("uvicorn, no lifespan close, install_sigterm_handler() at import",
                       _uvicorn("fastapi_plain:app", "--app-dir", str(APPS)), tmp, events,
                       FIREHOSE_BENCH_SIGTERM_HANDLER="1")


def uvicorn_neither(tmp: Path, events: int) -> Row:
    return _server_row("uvicorn, no lifespan close, no SIGTERM handler",
                       _uvicorn("fastapi_plain:app", "--app-dir", str(APPS)), tmp, events)


def _lambda_row(setup: str, handler: str, app_dir: Path, tmp: Path,
                freezes: tuple[float, ...]) -> Row:
    emulator = examples.Emulator(tmp / "delivered")
    invocations, per_invocation = examples.INVOCATIONS, examples.EVENTS_PER_INVOCATION
    env = examples.child_env(
        FIREHOSE_BUFFER_STREAMS=",".join(examples.STREAMS),
        FIREHOSE_BUFFER_BYTES_PER_SECOND=str(examples.STREAM_BYTES_PER_SECOND),
        AWS_ENDPOINT_URL_FIREHOSE=emulator.endpoint_url)
    env["PYTHONPATH"] = os.pathsep.join([str(app_dir), env["PYTHONPATH"]])
    rng = random.Random(7)
    sent: set[str] = set()
    stats: dict[str, Any] = {}
    handler_ms: list[float] = []
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "lambda_driver.py"), handler],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert examples.read_line(proc, examples.START_DEADLINE).strip() == "ready"
        assert proc.stdin is not None
        for n in range(invocations):
            if n:
                os.kill(proc.pid, signal.SIGCONT)
            ids = [f"{n}-{i}" for i in range(per_invocation)]
            batch = [{"id": i, "pad": "x" * rng.randint(500, 4000)} for i in ids]
            started = time.monotonic()
            proc.stdin.write(orjson.dumps({"event": {"events": batch}, "timeout": 3.0})
                             .decode() + "\n")
            proc.stdin.flush()
            reply = orjson.loads(examples.read_line(proc, 30.0))
            handler_ms.append((time.monotonic() - started) * 1000)
            sent.update(ids)
            stats = reply["stats"]
            if n < invocations - 1:
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(freezes[n % len(freezes)])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        delivered = emulator.delivered_ids()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        emulator.stop()
    return Row(setup, accepted=len(sent), lost=len(sent - set(delivered)),
               duplicated=sum(n - 1 for n in delivered.values()),
               counted=str(stats.get("possible_duplicates", "-")), exit_code="SIGKILL",
               notes=[f"{invocations} invocations of {per_invocation}, freezes "
                      f"{'/'.join(f'{f:g}' for f in freezes)} s; invocation round trip "
                      f"median {sorted(handler_ms)[len(handler_ms) // 2]:.1f} ms, "
                      f"max {max(handler_ms):.1f} ms"])


def lambda_flush_after(tmp: Path, events: int) -> Row:
    return _lambda_row("Lambda-style freezes + final SIGKILL, @flush_after",
                       "lambda_handler:handler", examples.EXAMPLES, tmp, examples.FREEZES)


def lambda_no_flush(tmp: Path, events: int) -> Row:
    return _lambda_row("Lambda-style freezes + final SIGKILL, no flush", "lambda_noflush:handler",
                       APPS, tmp, examples.FREEZES)


SETUPS: dict[str, Callable[[Path, int], Row]] = {
    "uvicorn_lifespan": uvicorn_lifespan,
    "gunicorn_uvicorn_worker": gunicorn_uvicorn_worker,
    "gunicorn_gthread": gunicorn_gthread,
    "lambda_flush_after": lambda_flush_after,
    "uvicorn_sigterm_handler": uvicorn_sigterm_handler,
    "uvicorn_neither": uvicorn_neither,
    "lambda_no_flush": lambda_no_flush,
}

COLUMNS = ("setup", "accepted", "lost", "duplicated", "possible_duplicates", "exit status",
           "exit time (s)", "notes")


def render(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r.setup, f"{r.accepted:,}", f"{r.lost:,}", f"{r.duplicated:,}", r.counted,
                 r.exit_code, r.exit_seconds, "; ".join(r.notes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="events lost when services stop")
    parser.add_argument("--only", default="", help=f"comma-separated of {', '.join(SETUPS)}")
    parser.add_argument("--events", type=int, default=int(examples.EVENTS),
                        help="HTTP requests per server burst")
    options = parser.parse_args(argv)
    names = [n.strip() for n in options.only.split(",") if n.strip()] or list(SETUPS)
    unknown = sorted(set(names) - set(SETUPS))
    if unknown:
        parser.error(f"unknown setups: {unknown}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fb-deploy-") as tmp:
        for name in names:
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            work = Path(tmp) / name
            work.mkdir()
            try:
                rows.append(SETUPS[name](work, options.events))
            except Exception as exc:  # one broken setup must not hide the others' rows
                rows.append(Row(name, notes=[f"crashed: {exc!r}"]))
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
