"""After a fork the child gets a working, empty buffer; the parent's events go once, by it.

Both ways a process forks: ``os.fork()``, which runs Python's fork hooks, and a fork from C
that skips them (as uWSGI does unless told otherwise), made here with libc's ``fork()``
called through ctypes while holding the GIL, exactly as such a server would.

The emulator runs in a process of its own, and the fork from C happens in a fresh interpreter:
such a fork does not reset CPython's own locks (the GIL, the thread-state list), so a thread
of the forking process that runs Python code at that instant (an HTTP server polling, a
metrics exporter, the buffer's worker mid-step) can leave the child's interpreter stuck,
whatever this library does. Servers that fork this way do it while their threads are idle
(or before any start); the test forks with the buffer's threads idle and its lock held.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import firehose_buffer.buffer as buffer_module
from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer._runtime import lifecycle
from firehose_buffer.emulator import EmulatorControl

PARENT_EVENTS = 400
CHILD_EVENTS = 300


ROOT = Path(__file__).resolve().parent.parent


class Emulator:
    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.control = EmulatorControl(endpoint_url)

    def client(self) -> Any:
        import boto3  # noqa: PLC0415

        return boto3.client("firehose", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def delivered_lines(self, stream: str) -> list[bytes]:
        files = self.control.flush().get(stream, [])
        return [line for path in files for line in path.read_bytes().splitlines()]


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[Emulator]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firehose_buffer.emulator", "--port", "0", "--streams", "s,t",
         "--data-dir", str(tmp_path / "delivered"), "--buffer-seconds", "3600"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line
        yield Emulator(line.split()[-1])
    finally:
        proc.terminate()
        proc.wait(30)


def config_for(fh: Emulator) -> BufferConfig:
    # A long linger: the parent's events are still in memory when it forks.
    return BufferConfig(streams=("s", "t"), endpoint_url=fh.endpoint_url, region="us-east-1",
                        linger_seconds=60.0)


def raw_fork() -> int:
    """fork(2) straight from C, holding the GIL: no os.register_at_fork hook runs."""
    libc = ctypes.PyDLL(None)
    pid: int = libc.fork()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "fork failed")
    return pid


def in_child(fork: Callable[[], int], body: Callable[[], None], report: Path) -> int:
    """Fork; the child runs ``body`` and leaves with os._exit (0 if it returned). The parent
    gets the child's pid."""
    pid = fork()
    if pid:
        return pid
    code = 1
    try:
        body()
        code = 0
    except BaseException:
        report.write_text(traceback.format_exc())
    finally:
        os._exit(code)


def wait_child(pid: int, report: Path, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            detail = report.read_text() if report.exists() else ""
            pytest.fail(f"the child hung (a deadlock after fork?) {detail}")
        time.sleep(0.01)
    detail = report.read_text() if report.exists() else ""
    assert os.waitstatus_to_exitcode(status) == 0, f"the child failed:\n{detail}"


def put_events(buf: FirehoseBuffer, tag: str, n: int) -> list[str]:
    ids = [f"{tag}{i}" for i in range(n)]
    for i in ids:
        buf.put({"id": i, "pad": "z" * 200})
    return ids


def delivered_ids(fh: Emulator) -> Counter[str]:
    return Counter(orjson.loads(line)["id"] for stream in ("s", "t")
                   for line in fh.delivered_lines(stream))


def child_puts_and_flushes(buf: FirehoseBuffer, extra: Callable[[], None] = lambda: None
                           ) -> Callable[[], None]:
    def body() -> None:
        # put() first: it alone must notice the fork (a server's worker just puts).
        put_events(buf, "c", CHILD_EVENTS)
        assert buf.flush(30), "the child's flush timed out"
        s = buf.stats()
        assert (s.events_put, s.events_delivered) == (CHILD_EVENTS, CHILD_EVENTS), (
            f"the child's buffer should hold its own events only: {s}")
        extra()
        assert buf.close(10)

    return body


@pytest.mark.parametrize("with_factory", [False, True], ids=["own-client", "client_factory"])
def test_os_fork_child_starts_empty_and_every_event_goes_once(
    firehose: Emulator, tmp_path: Path, with_factory: bool,
) -> None:
    report = tmp_path / "child.txt"
    made: list[Any] = []

    def factory() -> Any:
        made.append(1)
        return firehose.client()

    options: dict[str, Any] = {"client_factory": factory} if with_factory else {}
    with FirehoseBuffer(config_for(firehose), **options) as buf:
        parent_ids = put_events(buf, "p", PARENT_EVENTS)
        assert buf.stats().events_buffered == PARENT_EVENTS

        def the_child_made_its_own_client() -> None:
            if with_factory:
                assert len(made) == 2, "client_factory should have been called in the child"

        pid = in_child(os.fork, child_puts_and_flushes(buf, the_child_made_its_own_client),
                       report)
        wait_child(pid, report)
        assert buf.flush(30)
        s = buf.stats()
    assert (s.events_put, s.events_delivered) == (PARENT_EVENTS, PARENT_EVENTS)
    child_ids = [f"c{i}" for i in range(CHILD_EVENTS)]
    assert delivered_ids(firehose) == Counter(parent_ids + child_ids)


def wait_until_idle(buf: FirehoseBuffer) -> None:
    """Until the worker has taken every line and waits (for a deadline a minute away)."""
    deadline = time.monotonic() + 10
    while True:
        worker = buf._worker.thread
        frame = sys._current_frames().get(worker.ident or 0) if worker else None
        # Sleeping: waiting for a deadline, not for its next look at new lines in a few ms
        # (a thread waiting for the GIL when fork() is called from C hangs the child).
        if frame is not None and frame.f_code.co_name == "_wait" and buf._worker.sleeping and (
                buf._engine.scheduler.unseen_events() == 0):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the worker never went idle")
        time.sleep(0.01)


def raw_fork_scenario(endpoint_url: str, flag: str, report: Path) -> None:
    """Run in a fresh interpreter (see below): the buffer's idle threads are its only ones."""
    if flag == "pid comparison":
        # The fallback where MADV_WIPEONFORK is missing (not Linux, or an old kernel).
        # Both names of the flag: put() reads the buffer module's, the fork handling its own.
        buffer_module._ARMED = lifecycle.ARMED = lifecycle._PidFlag()
    with FirehoseBuffer(config_for(Emulator(endpoint_url))) as buf:
        put_events(buf, "p", PARENT_EVENTS)
        wait_until_idle(buf)
        # The lock is held at the moment of the fork, as the worker might hold it: in the
        # child nobody will ever release it, and put() must not wait for it.
        buf._engine.lock.acquire()
        try:
            pid = in_child(raw_fork, child_puts_and_flushes(buf), report)
        finally:
            buf._engine.lock.release()  # the parent's; the child's copy stays held
        wait_child(pid, report)
        assert buf.flush(30)
        s = buf.stats()
    assert (s.events_put, s.events_delivered) == (PARENT_EVENTS, PARENT_EVENTS), s


@pytest.mark.parametrize("flag", ["wipe-on-fork page", "pid comparison"])
def test_fork_without_hooks_while_the_lock_is_held_still_works(
    firehose: Emulator, tmp_path: Path, flag: str,
) -> None:
    if flag != "pid comparison" and isinstance(lifecycle.ARMED, lifecycle._PidFlag):
        pytest.skip("MADV_WIPEONFORK is not available here")
    # A fresh interpreter: pytest's process may run other threads (telemetry exporters,
    # servers of other tests) that a fork from C could catch holding the GIL.
    script = ("import sys; from pathlib import Path; from tests.test_fork import "
              "raw_fork_scenario as run; run(sys.argv[1], sys.argv[2], Path(sys.argv[3]))")
    report = tmp_path / "child.txt"
    done = subprocess.run([sys.executable, "-c", script, firehose.endpoint_url, flag,
                           str(report)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    parent_ids = [f"p{i}" for i in range(PARENT_EVENTS)]
    child_ids = [f"c{i}" for i in range(CHILD_EVENTS)]
    assert delivered_ids(firehose) == Counter(parent_ids + child_ids)
