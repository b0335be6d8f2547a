"""Durable segments against real deaths: a producing process is killed (SIGKILL, SIGSEGV in
C code, os.abort, an OOM-like SIGKILL while it allocates), on tmpfs and on the disk's file
system, and another process recovers: every event put() accepted is delivered, none is
corrupt, and every duplicate is counted. A stopped owner's files are never taken; a forked
child does not keep a dead parent's files; `firehose-buffer replay` recovers them; a full
disk never kills with SIGBUS; a gunicorn worker killed for its timeout loses nothing.

The producer is ``tests/durable_child.py``; the emulator runs in this process (the producer
reaches it over HTTP) and refuses 5% of records, so records are retried and acknowledged out
of order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose_buffer import BufferConfig, ConfigurationError, FirehoseBuffer
from firehose_buffer._storage import durable
from firehose_buffer.emulator import FaultRates, LocalFirehose
from tests import durable_child
from tests.support import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "durable_child.py"
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def firehose(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFirehose]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with LocalFirehose(streams=list(durable_child.STREAMS), keep_records=True,
                       fault_rates=FaultRates(record_service_unavailable=0.05), seed=7) as fh:
        yield fh


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or durable._fs_type(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    path = shm / f"firehose-buffer-test-{os.getpid()}-{tmp_path.name}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Child:
    """A producing process (see ``tests/durable_child.py``)."""

    def __init__(self, fh: LocalFirehose, spool: Path, how: str, seed: int,
                 logs: Path | None = None) -> None:
        logs = spool.parent if logs is None else logs
        self.report = logs / f"report-{seed}"
        #: Its stderr, in a file: a pipe nobody reads would stop it once full.
        self.stderr = logs / f"stderr-{seed}"
        self.seed = seed
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), fh.endpoint_url, str(spool), str(self.report),
                 how, str(seed)], stdout=subprocess.PIPE, stderr=err, text=True, env=ENV)

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def accepted(self) -> dict[int, set[int]]:
        """Per producing thread, the numbers of the events put() accepted."""
        out: dict[int, set[int]] = defaultdict(set)
        with contextlib.suppress(FileNotFoundError):
            for line in self.report.read_bytes().splitlines():
                thread, n = line.split()
                out[int(thread)].add(int(n))
        return out

    def progress(self) -> int:
        return sum(len(v) for v in self.accepted().values())

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.stdout.close()  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


def delivered(fh: LocalFirehose, run: int) -> Counter[tuple[int, int]]:
    """How often each event of ``run`` was stored; every line must parse (none corrupt)."""
    got: Counter[tuple[int, int]] = Counter()
    for stream in durable_child.STREAMS:
        for record in fh.accepted_records(stream):
            for line in record[:-1].split(b"\n"):
                event = orjson.loads(line)
                assert set(event) == {"run", "t", "n", "pad"}, line[:200]
                if event["run"] == run:
                    got[(event["t"], event["n"])] += 1
    return got


def recover(fh: LocalFirehose, spool: Path, **options: Any) -> FirehoseBuffer:
    """Another process's buffer on the same spool directory: it sends what the dead one left
    (flush covers it, as it covers a spool found at start), then closes."""
    buffer = FirehoseBuffer(durable_child.config(fh.endpoint_url, str(spool), **options))
    assert buffer.flush(30)
    buffer.close(30)
    return buffer


def assert_recovered(child: Child, fh: LocalFirehose, recoverer: FirehoseBuffer) -> None:
    accepted = child.accepted()
    got = delivered(fh, child.seed)
    lost = [(t, n) for t, ns in accepted.items() for n in ns if (t, n) not in got]
    assert not lost, f"{len(lost)} of {sum(map(len, accepted.values()))} lost: {lost[:5]}"
    # Nothing delivered that was never put: a line cut short is dropped, never sent.
    for t, n in got:
        assert n <= max(accepted.get(t, {0})) + 1, (t, n)
    duplicates = sum(count - 1 for count in got.values())
    stats = recoverer.stats()
    # The child's own calls had known outcomes (no lost answers): every duplicate comes
    # from the recovery, which counts what was in flight at the death.
    assert duplicates <= stats.possible_duplicates
    assert stats.events_replayed > 0


KILLS = [("sigkill", "tmpfs"), ("sigkill", "disk"), ("segv", "disk"), ("abort", "tmpfs"),
         ("oom", "disk")]


@pytest.mark.parametrize(("how", "where"), KILLS, ids=[f"{h}-{w}" for h, w in KILLS])
def test_a_killed_producer_loses_nothing_and_counts_its_duplicates(
    firehose: LocalFirehose, tmp_path: Path, how: str, where: str, request: Any,
) -> None:
    base = request.getfixturevalue("tmpfs_dir") if where == "tmpfs" else tmp_path
    spool = base / "spool"
    seed = KILLS.index((how, where)) + 1
    child = Child(firehose, spool, "wait" if how == "sigkill" else how, seed)
    try:
        assert child.line() == "ready"
        if how == "sigkill":
            wait_for(lambda: child.progress() > 300, 20, "the child to put events")
            child.kill()
        elif how == "oom":
            # Allocating when the kernel's OOM killer picks it: SIGKILL.
            assert child.line() == "allocating"
            time.sleep(0.05)
            child.kill()
        # segv, abort: the child dies by itself, after a random delay.
        returncode = child.wait()
    finally:
        child.kill()
    expected = {"sigkill": -signal.SIGKILL, "segv": -signal.SIGSEGV,
                "abort": -signal.SIGABRT, "oom": -signal.SIGKILL}[how]
    assert returncode == expected
    assert child.progress() > 100
    assert durable.dead_owners(spool), "the dead child's segments are there to recover"
    recoverer = recover(firehose, spool)
    assert_recovered(child, firehose, recoverer)
    assert durable.dead_owners(spool) == []
    assert os.listdir(spool / durable.DIRECTORY) == []


def test_a_stopped_owner_is_never_claimed_and_sends_its_own_events_once(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    """SIGSTOP freezes a process, not its lock: a running buffer on the same directory (which
    meanwhile recovers a producer that was killed, so its rescans demonstrably run) and the
    replay command leave the stopped one's files alone; resumed, it delivers its events
    itself, once."""
    spool = tmp_path / "spool"
    stopped = Child(firehose, spool, "term", 11)
    other = None
    try:
        assert stopped.line() == "ready"
        wait_for(lambda: stopped.progress() > 300, 20, "the child to put events")
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        owners = sorted(os.listdir(spool / durable.DIRECTORY))
        assert len(owners) == 1
        assert durable.dead_owners(spool) == []
        other = FirehoseBuffer(durable_child.config(firehose.endpoint_url, str(spool)))
        other.put({"run": 0, "t": 0, "n": 0, "pad": ""})  # running: it rescans
        killed = Child(firehose, spool, "wait", 17)
        assert killed.line() == "ready"
        wait_for(lambda: killed.progress() > 100, 20, "the second child to put events")
        killed.kill()
        assert killed.wait() == -signal.SIGKILL
        accepted = {(t, n) for t, ns in killed.accepted().items() for n in ns}
        wait_for(lambda: accepted <= set(delivered(firehose, 17)), 20,
                 "the running buffer to recover the killed child")
        assert owners[0] in os.listdir(spool / durable.DIRECTORY)
        replay = subprocess.run(
            [sys.executable, "-m", "firehose_buffer.cli", "replay", "--spool-dir", str(spool),
             "--endpoint-url", firehose.endpoint_url, "--region", "us-east-1", "--timeout",
             "10"], check=False, capture_output=True, text=True, env=ENV, timeout=60)
        assert replay.returncode == 0, replay.stderr
        assert owners[0] in os.listdir(spool / durable.DIRECTORY)
        os.kill(stopped.proc.pid, signal.SIGCONT)
        stopped.proc.send_signal(signal.SIGTERM)
        assert stopped.wait() == 143
    finally:
        stopped.kill()
        if other is not None:
            other.close(10)
    accepted = {(t, n) for t, ns in stopped.accepted().items() for n in ns}
    got = delivered(firehose, 11)
    assert accepted <= set(got)
    assert max(got.values()) == 1  # nobody else sent any of them
    assert os.listdir(spool / durable.DIRECTORY) == []


def test_a_line_handed_over_by_a_reentrant_put_survives_a_kill(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    """put() re-entering on a thread that holds the buffer's lock (a signal handler, a
    finalizer) hands its line to the worker; durable, the line is in a file of its own
    before put() returns, so a death before the worker takes it loses nothing."""
    spool = tmp_path / "spool"
    child = Child(firehose, spool, "reentrant", 12)
    assert child.wait() == -signal.SIGKILL
    assert child.accepted() == {7: {0}}
    recoverer = recover(firehose, spool)
    assert delivered(firehose, 12) == {(7, 0): 1}
    assert recoverer.stats().events_replayed == 1


def test_a_forked_child_does_not_keep_its_dead_parents_segments(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    """The parent forks, then dies; its child lives on with a buffer (and segment files)
    of its own. The parent's files are recovered while the child lives: its lock was never
    the child's (lockf locks are not inherited)."""
    spool = tmp_path / "spool"
    parent = Child(firehose, spool, "fork", 13)
    child_pid = -1
    try:
        assert parent.line() == "ready"
        assert parent.line() == "child ready"
        parent.kill()
        assert parent.wait() == -signal.SIGKILL
        child_pid = max(int(owner.split("-")[1]) for owner in
                        os.listdir(spool / durable.DIRECTORY))
        os.kill(child_pid, 0)  # the forked child is alive
        assert len(durable.dead_owners(spool)) == 1
        recoverer = recover(firehose, spool)
        assert recoverer.stats().events_replayed > 0
        accepted = parent.accepted()
        got = delivered(firehose, 13)
        assert {(t, n) for t, ns in accepted.items() if t != 5 for n in ns} <= set(got)
        os.kill(child_pid, signal.SIGTERM)
        wait_for(lambda: not _alive(child_pid), 20, "the forked child to exit")
    finally:
        parent.kill()
        if child_pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
    got = delivered(firehose, 13)
    # The child's events were sent by the child, once: not by the recovery of its parent.
    assert [got[(5, n)] for n in range(300)] == [1] * 300
    assert os.listdir(spool / durable.DIRECTORY) == []


def test_a_child_forked_from_c_does_not_keep_its_dead_parents_segments(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    """A fork that skips Python's hooks (uWSGI without --py-call-osafterfork): the child
    never learns it was forked and keeps every descriptor it inherited, the lock file's too.
    An flock or OFD lock would then stay held by the child after the parent's death, and
    the parent's events could not be recovered while the child lives; a lockf lock is the
    parent's alone."""
    spool = tmp_path / "spool"
    parent = Child(firehose, spool, "cfork", 18)
    child_pid = -1
    try:
        assert parent.line() == "ready"
        forked = parent.line()
        assert forked.startswith("forked ")
        child_pid = int(forked.split()[1])
        parent.kill()
        assert parent.wait() == -signal.SIGKILL
        assert _alive(child_pid)
        lock = next((spool / durable.DIRECTORY).iterdir()) / durable.LOCK
        assert any(os.path.realpath(f"/proc/{child_pid}/fd/{fd}") == str(lock)
                   for fd in os.listdir(f"/proc/{child_pid}/fd")), "it holds the lock's fd"
        assert len(durable.dead_owners(spool)) == 1
        recover(firehose, spool)
        accepted = parent.accepted()
        assert {(t, n) for t, ns in accepted.items() for n in ns} <= set(delivered(firehose, 18))
    finally:
        parent.kill()
        if child_pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not our child, so never reaped here) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def test_the_replay_command_recovers_a_dead_process(firehose: LocalFirehose,
                                                    tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    child = Child(firehose, spool, "wait", 14)
    assert child.line() == "ready"
    wait_for(lambda: child.progress() > 300, 20, "the child to put events")
    child.kill()
    assert child.wait() == -signal.SIGKILL
    replay = subprocess.run(
        [sys.executable, "-m", "firehose_buffer.cli", "replay", "--spool-dir", str(spool),
         "--endpoint-url", firehose.endpoint_url, "--region", "us-east-1", "--timeout", "30"],
        check=False, capture_output=True, text=True, env=ENV, timeout=90)
    assert replay.returncode == 0, replay.stderr
    assert "-> d-0, d-1" in replay.stderr
    accepted = child.accepted()
    got = delivered(firehose, 14)
    assert {(t, n) for t, ns in accepted.items() for n in ns} <= set(got)
    assert os.listdir(spool / durable.DIRECTORY) == []


# -- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (mounting needs root, as in CI; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_falls_back_to_memory_with_a_warning_never_sigbus(
    firehose: LocalFirehose, small_fs: Path, tmp_path: Path,
) -> None:
    """Once the file system is full, new segments cannot be files: they are memory, a
    WARNING says so, and put() goes on. Segments made before are fully allocated, so
    writing into them never faults (a sparse file would kill the process with SIGBUS)."""
    spool = small_fs / "spool"
    child = Child(firehose, spool, "full", 15, logs=tmp_path)
    returncode = child.proc.wait(60)
    assert child.proc.stdout is not None
    out, err = child.proc.stdout.read(), child.stderr.read_text()
    child.wait()
    assert returncode == 0, err[-2000:]
    assert "closed True" in out
    assert "durable segment file could not be made" in err
    got = delivered(firehose, 15)
    assert set(got) == {(0, n) for n in range(20)} | {(1, n) for n in range(2000)}


def test_a_full_disk_at_construction_is_a_configuration_error(small_fs: Path) -> None:
    durable_child.fill(str(small_fs))
    config = BufferConfig(streams=("s",), spool_dir=str(small_fs / "spool"), durable=True,
                          endpoint_url="http://127.0.0.1:9", region="us-east-1")
    with pytest.raises(ConfigurationError, match="No space left"):
        FirehoseBuffer(config)


# -- gunicorn: a sync worker killed the way its --timeout kills ---------------------------------

STUCK_APP = '''
from flask_app import app


@app.get("/stuck")
def stuck():
    # Stuck in C code that never returns to the interpreter (a ReDoS, a C extension
    # spinning): no signal handler can run, so gunicorn's SIGABRT at --timeout does not end
    # the worker, and its SIGKILL a second later does. The GIL is held all the while: the
    # buffer's threads cannot ship anything either.
    sum(range(10**15))
    return {}
'''


def test_a_gunicorn_worker_killed_for_its_timeout_loses_nothing(tmp_path: Path) -> None:
    """examples/gunicorn_durable.py, one sync worker with --timeout 2 and a linger of 5 s
    (events stay in memory): a burst, then a request that hangs the worker while more
    requests queue behind it. gunicorn SIGKILLs the worker; the worker started in its place
    takes the queued requests and sends what the dead one had accepted."""
    from tests.test_examples import (  # noqa: PLC0415  (slow imports, this test only)
        EXAMPLES,
        Emulator,
        child_env,
        free_port,
        healthy,
        wait_until,
    )

    emulator = Emulator(tmp_path / "delivered")
    (tmp_path / "stuck_app.py").write_text(STUCK_APP)
    stats_dir = tmp_path / "stats"
    stats_dir.mkdir()
    env = child_env(
        FIREHOSE_BUFFER_STREAMS="events-0,events-1,events-2,events-3",
        AWS_ENDPOINT_URL_FIREHOSE=emulator.endpoint_url,
        FIREHOSE_BUFFER_SPOOL_DIR=str(tmp_path / "spool"),
        FIREHOSE_BUFFER_LINGER_SECONDS="5",
        FIREHOSE_EXAMPLE_STATS_DIR=str(stats_dir),
        GUNICORN_TIMEOUT="2",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(EXAMPLES), env["PYTHONPATH"]])
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn_durable.py", "-w", "1", "-k",
             "sync", "-b", f"127.0.0.1:{port}", "stuck_app:app"],
            cwd=EXAMPLES, env=env, stdout=log, stderr=subprocess.STDOUT)
    accepted: set[str] = set()
    try:
        import httpx  # noqa: PLC0415

        wait_until(lambda: healthy(port) or server.poll() is not None, 60, "gunicorn")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(300):
                if client.post("/events", json={"id": f"a-{i}", "pad": "p" * (i % 900)}
                               ).status_code == 202:
                    accepted.add(f"a-{i}")

        def queued(i: int) -> None:
            with contextlib.suppress(httpx.HTTPError), httpx.Client(base_url=url,
                                                                    timeout=60) as c:
                if c.post("/events", json={"id": f"b-{i}"}).status_code == 202:
                    accepted.add(f"b-{i}")

        import threading  # noqa: PLC0415

        hang = threading.Thread(target=_get, args=(url + "/stuck",), daemon=True)
        hang.start()
        time.sleep(0.3)
        behind = [threading.Thread(target=queued, args=(i,)) for i in range(20)]
        for t in behind:
            t.start()
        for t in behind:
            t.join(60)
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log_text = log_path.read_text(errors="replace")
    try:
        assert "was sent SIGKILL" in log_text, log_text[-3000:]
        assert len(accepted) >= 310, (len(accepted), log_text[-3000:])
        ids = emulator.delivered_ids()
        lost = accepted - set(ids)
        assert not lost, (sorted(lost)[:10], log_text[-3000:])
        stats = [orjson.loads(p.read_bytes())["stats"] for p in stats_dir.glob("*.json")]
        assert sum(s["events_replayed"] for s in stats) > 0  # the next worker recovered
        assert sum(n - 1 for n in ids.values()) <= sum(s["possible_duplicates"] for s in stats)
    finally:
        emulator.stop()


def _get(url: str) -> None:
    import httpx  # noqa: PLC0415

    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=60)


def test_a_running_sibling_recovers_a_dead_process_within_seconds(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    """A durable buffer that runs looks for dead processes' files every few seconds: a
    sibling that dies (a gunicorn worker among others) has its events sent by the others,
    without waiting for a restart."""
    spool = tmp_path / "spool"
    sibling = FirehoseBuffer(durable_child.config(firehose.endpoint_url, str(spool)))
    try:
        sibling.put({"run": 0, "t": 0, "n": 0, "pad": ""})  # running
        child = Child(firehose, spool, "wait", 16)
        assert child.line() == "ready"
        wait_for(lambda: child.progress() > 300, 20, "the child to put events")
        child.kill()
        assert child.wait() == -signal.SIGKILL
        accepted = {(t, n) for t, ns in child.accepted().items() for n in ns}
        wait_for(lambda: accepted <= set(delivered(firehose, 16)), 15,
                 "the sibling to send the dead process's events")
        assert sibling.stats().events_replayed > 0
    finally:
        sibling.close(10)
    assert os.listdir(spool / durable.DIRECTORY) == []
