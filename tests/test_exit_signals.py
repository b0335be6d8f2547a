"""Exit, SIGTERM and the threads: nothing lost, nothing stuck.

Subprocesses run the real thing: an interpreter exiting with events in memory, a SIGTERM
from outside. In-process tests cover the threads: failed construction, callbacks that
flush, close or raise.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakes import FakeFirehose

from firehose_buffer import BufferConfig, ConfigurationError, FirehoseBuffer
from firehose_buffer._storage.spool import pending_files
from firehose_buffer.emulator import FaultRates, LocalFirehose

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}
COUNT = 2_000
THREAD_PREFIX = "firehose-buffer-"


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=["s"], data_dir=tmp_path / "delivered") as fh:
        yield fh


def delivered(fh: LocalFirehose) -> list[int]:
    return sorted(orjson.loads(line)["n"] for line in fh.delivered_lines("s"))


def spooled(spool: Path) -> list[int]:
    return sorted(orjson.loads(line)["n"] for f in pending_files(spool)
                  for line in f.path.read_bytes().splitlines())


# -- interpreter exit without close() ------------------------------------------------------

EXIT_CHILD = textwrap.dedent("""
    import sys, time
    from firehose_buffer import BufferConfig, FirehoseBuffer
    endpoint, spool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = BufferConfig(streams=("s",), endpoint_url=endpoint, region="us-east-1",
                          linger_seconds=60.0, exit_timeout_seconds=2.0, spool_dir=spool,
                          read_timeout_seconds=30.0)
    buffer = FirehoseBuffer(config)
    for n in range(count):
        buffer.put({"n": n, "pad": "x" * 300})
    print(time.monotonic(), flush=True)
    # No close(): the interpreter exits with every event in memory.
""")


def run_exit_child(fh: LocalFirehose, spool: Path) -> float:
    """Run the child; return seconds from its last put to the end of its exit."""
    done = subprocess.run([sys.executable, "-c", EXIT_CHILD, fh.endpoint_url, str(spool),
                           str(COUNT)], env=ENV, capture_output=True, text=True, timeout=60,
                          check=False)
    ended = time.monotonic()
    assert done.returncode == 0, done.stderr
    return ended - float(done.stdout.split()[0])


def test_exit_delivers_everything_when_the_endpoint_is_up(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    run_exit_child(firehose, tmp_path / "spool")
    assert delivered(firehose) == list(range(COUNT))
    assert spooled(tmp_path / "spool") == []


def test_exit_with_a_hanging_endpoint_spools_everything_within_the_deadline(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    # Every call hangs (longer than the child lives): the worst case, worse than a refusal.
    firehose.set_fault_rates(FaultRates(latency=1.0, latency_seconds=60.0))
    took = run_exit_child(firehose, tmp_path / "spool")
    assert spooled(tmp_path / "spool") == list(range(COUNT))
    assert delivered(firehose) == []
    # exit_timeout_seconds=2: a hang would run into the read timeout (30 s) or forever.
    assert took < 2.0 + 8.0, f"exit took {took:.1f} s with exit_timeout_seconds=2"


# -- SIGTERM ---------------------------------------------------------------------------------

SIGTERM_CHILD = textwrap.dedent("""
    import signal, sys, time
    import firehose_buffer
    from firehose_buffer import BufferConfig, FirehoseBuffer
    endpoint, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "chained":
        def app_handler(signum, frame):
            print("app handler ran", flush=True)
            raise SystemExit(0)
        signal.signal(signal.SIGTERM, app_handler)
    if mode != "default":
        assert firehose_buffer.install_sigterm_handler()
    config = BufferConfig(streams=("s",), endpoint_url=endpoint, region="us-east-1",
                          linger_seconds=60.0, exit_timeout_seconds=10.0)
    buffer = FirehoseBuffer(config)
    for n in range(count):
        buffer.put({"n": n})
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""")


@pytest.mark.parametrize(("mode", "status", "kept"), [
    ("default", -signal.SIGTERM, False),   # Python's default: killed, memory lost
    ("installed", 128 + signal.SIGTERM, True),
    ("chained", 0, True),                  # the app's own handler decides how to exit
])
def test_sigterm(firehose: LocalFirehose, mode: str, status: int, kept: bool) -> None:
    child = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, firehose.endpoint_url,
                              str(COUNT), mode], env=ENV, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == status
    assert delivered(firehose) == (list(range(COUNT)) if kept else [])
    assert ("app handler ran" in out) == (mode == "chained")


SIGKILL_CHILD = textwrap.dedent("""
    import sys, time
    from firehose_buffer import BufferConfig, FirehoseBuffer
    config = BufferConfig(streams=("s",), endpoint_url=sys.argv[1], region="us-east-1",
                          linger_seconds=0.2)
    buffer = FirehoseBuffer(config)
    start = time.monotonic()
    n = 0
    told = False
    while True:
        buffer.put({"n": n, "t": time.monotonic()})
        n += 1
        time.sleep(0.002)  # a steady producer, ~400 events/s
        if not told and time.monotonic() - start > 2.0:
            print("go", flush=True)
            told = True
""")


def test_sigkill_loses_at_most_the_last_linger_of_events(firehose: LocalFirehose) -> None:
    child = subprocess.Popen([sys.executable, "-c", SIGKILL_CHILD, firehose.endpoint_url],
                             env=ENV, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "go\n"
    finally:
        child.kill()
        killed_at = time.monotonic()
        child.wait()
    events = [orjson.loads(line) for line in firehose.delivered_lines("s")]
    assert len(events) > 300
    got = {e["n"] for e in events}
    assert len(got) == len(events), "nothing is delivered twice"
    # Every event older than linger (0.2 s) plus a generous allowance for the request in
    # flight and a loaded machine was delivered; only the newest can be lost.
    newest_lost_allowed = killed_at - 0.2 - 2.0
    last = max(got)
    assert got == set(range(last + 1)), "what was delivered is a prefix: no gap"
    assert max(e["t"] for e in events) > newest_lost_allowed, (
        "events older than linger + 2 s were lost on SIGKILL"
    )


def test_sigterm_handler_needs_the_main_thread() -> None:
    from firehose_buffer import install_sigterm_handler  # noqa: PLC0415

    errors: list[BaseException] = []

    def call() -> None:
        try:
            install_sigterm_handler()
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    t.join()
    assert len(errors) == 1


# -- threads and callbacks -------------------------------------------------------------------

def buffer_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)}


def test_a_buffer_whose_construction_fails_leaves_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = buffer_threads()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(ConfigurationError, match="spool_dir"):
        FirehoseBuffer(BufferConfig(streams=("s",), spool_dir=str(not_a_dir)), FakeFirehose({"s"}))

    def broken_factory() -> Any:
        raise RuntimeError("no client today")

    with pytest.raises(RuntimeError, match="no client today"):
        FirehoseBuffer(BufferConfig(streams=("s",)), client_factory=broken_factory)
    with pytest.raises(ConfigurationError):
        FirehoseBuffer(BufferConfig(streams=("s",)), FakeFirehose({"s"}),
                       client_factory=lambda: FakeFirehose({"s"}))

    # The worker's Thread cannot be started: the work is done all the same (on the bare
    # thread that was to start it), and nothing is left running after close().
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name == "firehose-buffer-worker":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    buf = FirehoseBuffer(BufferConfig(streams=("s", "t")), FakeFirehose({"s", "t"}))
    buf.put({"first": "use starts the threads"})
    assert buf.flush(5)
    monkeypatch.undo()
    buf.close(1)

    # No thread at all (as CPython says when the process is out of threads): put() says so,
    # the event is not taken, and the next use starts the worker.
    def start_new_thread(*args: Any) -> int:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_thread, "start_new_thread", start_new_thread)
    buf = FirehoseBuffer(BufferConfig(streams=("s", "t")), FakeFirehose({"s", "t"}))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        buf.put({"first": "use starts the threads"})
    monkeypatch.undo()
    assert buf.put({"second": "use starts them"})
    assert buf.flush(5)
    buf.close(1)
    deadline = time.monotonic() + 5
    while buffer_threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert buffer_threads() - before == set()


def test_flush_and_close_inside_on_failure_do_not_deadlock() -> None:
    fake = FakeFirehose({"s"})
    fake.script.extend(["access_denied"])
    results: list[tuple[str, bool]] = []
    holder: list[FirehoseBuffer] = []

    def on_failure(events: list[bytes], reason: str) -> None:
        results.append(("flush", bool(holder[0].flush(5))))
        results.append(("close", bool(holder[0].close(5))))

    buf = FirehoseBuffer(BufferConfig(streams=("s",), linger_seconds=0.01,
                                      on_failure=on_failure), fake)
    holder.append(buf)
    try:
        buf.put({"n": 1})
        assert buf.flush(10).pending == 0
    finally:
        assert buf.close(10)
    # From the worker neither can wait for the worker: they ask and return False at once.
    assert results == [("flush", False), ("close", False)]
    assert buf.stats().events_failed == 1


def test_an_exception_in_on_failure_is_logged_and_the_worker_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "firehose_buffer")
    fake = FakeFirehose({"s"})
    fake.script.extend(["access_denied"])

    def on_failure(events: list[bytes], reason: str) -> None:
        raise ZeroDivisionError("a bug in the callback")

    with FirehoseBuffer(BufferConfig(streams=("s",), linger_seconds=0.01,
                                     on_failure=on_failure), fake) as buf:
        buf.put({"n": 1})
        assert buf.flush(10).pending == 0
        buf.put({"n": 2})
        assert buf.flush(10)
        s = buf.stats()
    assert (s.events_failed, s.events_delivered) == (1, 1)
    assert [orjson.loads(line) for line in fake.lines()] == [{"n": 2}]
    assert any("on_failure callback raised" in r.getMessage() and r.exc_info
               for r in caplog.records)
