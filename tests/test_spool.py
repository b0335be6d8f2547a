"""The spool: undeliverable events kept on disk, crash-safe, re-sent once by a later run."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer._storage.spool import Spool, claim, pending_files
from firehose_buffer.emulator import Fault, FaultRates, LocalFirehose
from tests.fakes import FakeFirehose

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=["s", "t"], data_dir=tmp_path / "delivered") as fh:
        yield fh


def http_config(fh: LocalFirehose, spool: Path, **options: Any) -> BufferConfig:
    values: dict[str, Any] = {"streams": ("s",), "endpoint_url": fh.endpoint_url,
                              "region": "us-east-1", "spool_dir": str(spool),
                              "linger_seconds": 0.05, "retry_initial_backoff_seconds": 0.01,
                              "retry_max_backoff_seconds": 0.05}
    values.update(options)
    return BufferConfig(**values)


def spooled_lines(spool: Path) -> list[bytes]:
    lines: list[bytes] = []
    for f in pending_files(spool):
        data = f.path.read_bytes()
        lines.extend(data.splitlines())
    return lines


def events(n: int, tag: str = "e") -> list[dict[str, Any]]:
    return [{"id": f"{tag}{i}", "pad": "x" * (i % 300)} for i in range(n)]


def ids(lines: list[bytes]) -> list[str]:
    return [orjson.loads(line)["id"] for line in lines]


def wait_until(condition: Any, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_rejected_events_are_spooled_owner_only_then_replayed_once_by_the_next_run(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    firehose.script(Fault.http_error(400, code="AccessDeniedException"))
    called: list[int] = []
    config = http_config(firehose, spool, on_failure=lambda evs, reason: called.append(len(evs)))
    sent = events(300)
    with FirehoseBuffer(config) as first:
        for e in sent:
            first.put(e)
        assert first.flush(10).pending == 0
        s = first.stats()
    assert s.failures_by_reason == {"AccessDeniedException": 300}
    assert s.events_spooled == s.events_failed == 300
    assert called == [], "on_failure gets only what the spool could not keep"
    files = pending_files(spool)
    assert [f.stream for f in files] == ["s"]
    assert stat.S_IMODE(files[0].path.stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert ids(spooled_lines(spool)) == [e["id"] for e in sent]
    assert firehose.delivered_lines("s") == []

    with FirehoseBuffer(config) as second:
        assert second.wait_for_replay(10)
        assert second.flush(10)
        s = second.stats()
    assert (s.events_replayed, s.events_put, s.events_delivered) == (300, 300, 300)
    assert pending_files(spool) == []
    assert sorted(ids(firehose.delivered_lines("s"))) == sorted(e["id"] for e in sent)


def test_expired_events_are_spooled() -> None:
    fake = FakeFirehose({"s"}, record_failure_rate=1.0)
    with _tmp() as spool:
        config = BufferConfig(streams=("s",), spool_dir=str(spool), linger_seconds=0.02,
                              record_ttl_seconds=0.3, retry_initial_backoff_seconds=0.01,
                              retry_max_backoff_seconds=0.05)
        with FirehoseBuffer(config, fake) as buf:
            for e in events(50):
                buf.put(e)
            assert buf.flush(10).pending == 0
            s = buf.stats()
        assert s.failures_by_reason == {"record_ttl_expired": 50}
        assert s.events_spooled == 50
        assert sorted(ids(spooled_lines(spool))) == sorted(e["id"] for e in events(50))


def test_close_deadline_spools_everything_left_and_counts_add_up(tmp_path: Path) -> None:
    fake = FakeFirehose({"s", "t"}, record_failure_rate=1.0)  # throttles every record
    spool = tmp_path / "spool"
    config = BufferConfig(streams=("s", "t"), spool_dir=str(spool), linger_seconds=0.02,
                          retry_initial_backoff_seconds=0.01, retry_max_backoff_seconds=0.05)
    buf = FirehoseBuffer(config, fake)
    sent = events(2_000)
    for e in sent:
        buf.put(e)
    assert not buf.close(timeout=0.5)
    s = buf.stats()
    assert s.events_buffered == 0
    assert s.events_put == s.events_delivered + s.events_failed + s.events_dropped
    assert s.failures_by_reason == {"closed_before_delivery": 2_000}
    assert s.events_spooled == 2_000
    assert sorted(ids(spooled_lines(spool))) == sorted(e["id"] for e in sent)
    assert {f.stream for f in pending_files(spool)} <= {"s", "t"}


def test_spool_dir_comes_from_the_environment(tmp_path: Path) -> None:
    config = BufferConfig.from_env({"FIREHOSE_BUFFER_STREAMS": "s",
                                    "FIREHOSE_BUFFER_SPOOL_DIR": str(tmp_path / "sp")})
    assert config.spool_dir == str(tmp_path / "sp")


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.lists(st.binary(min_size=1, max_size=40).map(
        lambda b: b.replace(b"\n", b"_").replace(b"\r", b"_").replace(b" ", b"_")),
        min_size=1, max_size=5), min_size=1, max_size=6),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_a_crash_mid_write_loses_at_most_the_line_being_written(
    batches: list[list[bytes]], cut: float,
) -> None:
    with _tmp() as directory:
        spool = Spool(directory)
        for batch in batches:
            assert spool.append("s", b"".join(line + b"\n" for line in batch))
        spool.close()
        [f] = pending_files(directory)
        data = f.path.read_bytes()
        size = int(len(data) * cut)
        os.truncate(f.path, size)  # the file as a crash at that byte would leave it
        taken = claim(f)
        assert taken is not None
        read = [line for chunk in taken.chunks(chunk_bytes=7) for line in chunk]
        taken.release()
        whole = data[:size].count(b"\n")
        assert read == [line + b"\n" for line in data.split(b"\n")[:whole]]
        assert taken.torn_bytes == size - len(b"".join(read))


KILLED_WRITER = textwrap.dedent("""
    import sys
    from firehose_buffer._storage.spool import Spool
    spool = Spool(sys.argv[1])
    i = 0
    while True:
        lines = b"".join(b'{"n":%d,"pad":"%s"}\\n' % (i + k, b"x" * ((i + k) % 5000))
                         for k in range(50))
        spool.append("s", lines, sync=False)
        i += 50
        if i == 5000:
            print("going", flush=True)
""")


def test_spool_file_survives_sigkill_mid_write_with_every_whole_line_intact(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(spool)], env=ENV,
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"going\n"
        wait_until(lambda: sum(f.path.stat().st_size for f in pending_files(spool)) > 20e6,
                   "the writer to write 20 MB")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [f] = pending_files(spool)
    taken = claim(f)  # the kernel released the dead writer's lock
    assert taken is not None
    numbers = [orjson.loads(line)["n"] for chunk in taken.chunks() for line in chunk]
    taken.release()
    assert numbers == list(range(len(numbers)))
    assert len(numbers) >= 5000


def test_a_claimed_file_is_left_to_its_holder_and_a_torn_tail_is_skipped(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    for tag in ("a", "b"):
        writer = Spool(spool)
        writer.append("s", b"".join(orjson.dumps(e) + b"\n" for e in events(100, tag)))
        writer.close()
    files = pending_files(spool)
    with files[1].path.open("ab") as f:
        f.write(b'{"id": "torn", "pa')  # a line a crash cut short
    held = claim(files[0])  # as another process replaying it would
    assert held is not None
    fake = FakeFirehose({"s"})
    config = BufferConfig(streams=("s",), spool_dir=str(spool), linger_seconds=0.02)
    with FirehoseBuffer(config, fake) as buf:
        assert buf.wait_for_replay(10)
        assert buf.flush(10)
        assert buf.stats().events_replayed == 100
    assert sorted(ids(fake.lines())) == sorted(e["id"] for e in events(100, "b"))
    assert pending_files(spool) == [files[0]], "the held file stays, the replayed one goes"
    held.release()
    with FirehoseBuffer(config, fake) as buf:
        assert buf.wait_for_replay(10)
        assert buf.flush(10)
    assert Counter(ids(fake.lines())) == Counter(e["id"] for e in events(100, "a") +
                                                 events(100, "b"))
    assert pending_files(spool) == []


def test_replayed_events_that_fail_again_go_back_to_the_spool_without_duplicates(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    for tag in ("a", "b", "c"):
        writer = Spool(spool)
        writer.append("s", b"".join(orjson.dumps(e) + b"\n" for e in events(200, tag)))
        writer.close()
    originals = pending_files(spool)
    # Files are replayed one at a time, each flushed: the first call is the first file's.
    firehose.script(Fault.http_error(400, code="AccessDeniedException"))
    with FirehoseBuffer(http_config(firehose, spool)) as buf:
        assert buf.wait_for_replay(10)
        assert buf.flush(10)
        s = buf.stats()
    assert (s.events_replayed, s.events_delivered, s.events_spooled) == (600, 400, 200)
    left = pending_files(spool)
    assert len(left) == 1 and left[0] not in originals
    delivered = ids(firehose.delivered_lines("s"))
    respooled = ids(spooled_lines(spool))
    assert sorted(delivered + respooled) == sorted(
        e["id"] for tag in "abc" for e in events(200, tag))
    assert respooled == [e["id"] for e in events(200, "a")]


def test_closing_during_a_replay_moves_what_was_not_sent_to_a_new_spool_file(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    writer = Spool(spool)
    sent = events(20_000)
    writer.append("s", b"".join(orjson.dumps(e) + b"\n" for e in sent))
    writer.close()
    [original] = pending_files(spool)
    fake = FakeFirehose({"s"}, record_failure_rate=1.0)  # nothing gets through
    config = BufferConfig(streams=("s",), spool_dir=str(spool), linger_seconds=0.02,
                          max_buffer_bytes=1_100_000, retry_initial_backoff_seconds=0.01,
                          retry_max_backoff_seconds=0.05)
    buf = FirehoseBuffer(config, fake)
    buf.wait_for_replay(0)  # threads start on first use
    wait_until(lambda: buf.stats().events_replayed > 0, "the replay to start")
    buf.close(timeout=3.0)  # delivery cannot succeed: 0.75 s is kept for the hand-over
    assert buf.wait_for_replay(5)
    s = buf.stats()
    assert 0 < s.events_replayed < 20_000, "the buffer's bound stopped the replay midway"
    assert not original.path.exists()
    assert sorted(ids(spooled_lines(spool))) == sorted(e["id"] for e in sent)


TWO_PROCESSES = textwrap.dedent("""
    import sys, orjson
    from firehose_buffer import BufferConfig, FirehoseBuffer
    config = BufferConfig(streams=("s",), endpoint_url=sys.argv[1], region="us-east-1",
                          spool_dir=sys.argv[2], linger_seconds=0.05)
    with FirehoseBuffer(config) as buf:
        buf.wait_for_replay(60)
        buf.flush(30)
        print(orjson.dumps({"replayed": buf.stats().events_replayed}).decode(), flush=True)
""")


def test_two_processes_sharing_a_spool_send_each_file_once(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    expected: list[str] = []
    for tag in "abcdefgh":
        writer = Spool(spool)
        batch = events(400, tag)
        writer.append("s", b"".join(orjson.dumps(e) + b"\n" for e in batch))
        writer.close()
        expected += [e["id"] for e in batch]
    # Slow calls keep each process on its file for a while, so the two overlap.
    firehose.set_fault_rates(FaultRates(latency=1.0, latency_seconds=0.3))
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESSES, firehose.endpoint_url,
                               str(spool)], env=ENV, stdout=subprocess.PIPE)
             for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    replayed = [orjson.loads(out)["replayed"] for out in outputs]
    assert sum(replayed) == len(expected)
    assert all(replayed), f"both processes should have had a share: {replayed}"
    assert Counter(ids(firehose.delivered_lines("s"))) == Counter(expected)
    assert pending_files(spool) == []


def run_replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firehose_buffer.cli", "replay", *args],
                          env=ENV, capture_output=True, text=True, timeout=60, check=False)


def test_replay_command_sends_the_spool_and_says_so(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    for stream, tag in (("s", "a"), ("t", "b")):
        writer = Spool(spool)
        writer.append(stream, b"".join(orjson.dumps(e) + b"\n" for e in events(250, tag)))
        writer.close()
    done = run_replay("--spool-dir", str(spool), "--endpoint-url", firehose.endpoint_url,
                      "--region", "us-east-1")
    assert done.returncode == 0, done.stderr
    assert "500 of 500 events delivered" in done.stderr
    # Keyless streams are interchangeable (the worker may move a short remainder to the
    # stream it is filling), so what counts is every event once, across the streams.
    delivered = ids(firehose.delivered_lines("s")) + ids(firehose.delivered_lines("t"))
    assert sorted(delivered) == sorted(e["id"] for tag in "ab" for e in events(250, tag))
    assert pending_files(spool) == []


def test_replay_command_exits_non_zero_and_keeps_the_events_when_they_cannot_go(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    writer = Spool(spool)
    writer.append("s", b"".join(orjson.dumps(e) + b"\n" for e in events(250)))
    writer.close()
    done = run_replay("--spool-dir", str(spool), "--stream", "no-such-stream",
                      "--endpoint-url", firehose.endpoint_url, "--region", "us-east-1")
    assert done.returncode == 1, done.stderr
    assert "ResourceNotFoundException" in done.stderr
    assert sorted(ids(spooled_lines(spool))) == sorted(e["id"] for e in events(250))


class _tmp:
    """A temporary directory usable inside hypothesis examples (tmp_path is per test)."""

    def __enter__(self) -> Path:
        import tempfile  # noqa: PLC0415

        self._dir = tempfile.TemporaryDirectory()
        return Path(self._dir.name)

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()
