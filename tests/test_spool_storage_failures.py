"""The spool's storage failing under a running buffer: a directory removed (a tmp cleaner, an
operator tidying up) must not turn later failures into events counted as kept that exist
nowhere; a full disk must not flood the log.

The buffer's stream does not exist (every call is answered 4xx
``ResourceNotFoundException``), so every event fails and goes to the spool, as a real
outage of a stream would make it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from support import Reported

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

STREAM = "gone-0"
FIRST = 50
SECOND = 70
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    # The stream is never created: every call fails for good and its events are spooled.
    with LocalFirehose(data_dir=tmp_path / "delivered") as fh:
        yield fh


def _spool_lines(spool: Path) -> list[bytes]:
    if not spool.exists():
        return []
    return [line for path in sorted(spool.rglob("*.jsonl")) if path.is_file()
            for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("removed", ["spool_dir", "stream_dir"])
def test_failures_after_the_spool_directory_was_removed_are_kept_or_reported(
    firehose: LocalFirehose, tmp_path: Path, caplog: pytest.LogCaptureFixture, removed: str,
) -> None:
    """A user whose spool directory (or the stream's folder in it) was deleted while the
    buffer ran finds the events that failed afterwards nowhere: not on disk, not handed to
    ``on_failure``, not counted lost, and nothing logged, while ``events_spooled`` says they
    were kept. Every failed event must end in a spool file that exists, or in
    ``on_failure``, or be reported as lost; ``events_spooled`` must not count lines that are
    on no disk."""
    spool = tmp_path / "spool"
    reported = Reported()
    buffer = FirehoseBuffer(BufferConfig(
        streams=(STREAM,), endpoint_url=firehose.endpoint_url, region="us-east-1",
        spool_dir=str(spool), linger_seconds=0.05, on_failure=reported,
    ))
    try:
        for seq in range(FIRST):
            buffer.put({"batch": 1, "seq": seq})
        buffer.flush(10.0)
        assert buffer.stats().events_spooled == FIRST
        assert len(_spool_lines(spool)) == FIRST  # the spool works before the removal

        shutil.rmtree(spool if removed == "spool_dir" else spool / STREAM)
        with caplog.at_level(logging.WARNING, logger="firehose_buffer"):
            for seq in range(SECOND):
                buffer.put({"batch": 2, "seq": seq})
            buffer.flush(10.0)
    finally:
        buffer.close(10.0)

    stats = buffer.stats()
    on_disk = [line for line in _spool_lines(spool) if b'"batch":2' in line]
    handed = [e for e, _ in reported.events if b'"batch":2' in e]
    kept = len(on_disk) + len(handed) + stats.events_lost
    assert kept >= SECOND, (
        f"{SECOND} events failed after the {removed} was removed: {len(on_disk)} are in a "
        f"spool file on disk, {len(handed)} went to on_failure, {stats.events_lost} were "
        f"counted lost; the rest exist nowhere (events_spooled={stats.events_spooled}, "
        f"log: {[r.getMessage() for r in caplog.records]})"
    )
    assert stats.events_spooled - FIRST <= len(on_disk), (
        f"events_spooled counts {stats.events_spooled - FIRST} events after the removal, "
        f"but only {len(on_disk)} of them are in a spool file that exists"
    )


FULL_DISK_CHILD = textwrap.dedent("""
    import json, logging, resource, signal, sys
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(levelname)s %(name)s %(message)s")
    from firehose_buffer import BufferConfig, FirehoseBuffer

    endpoint, spool, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    reported = []
    if mode == "failed":
        # The stream is missing: every record fails at once and goes to the spool.
        config = BufferConfig(streams=("gone-0",), endpoint_url=endpoint, region="us-east-1",
                              spool_dir=spool, linger_seconds=0.01, max_events_per_record=1,
                              on_failure=lambda events, reason: reported.extend(events))
    else:
        # Nothing answers and the buffer is tiny: put() spills nearly every event to the spool.
        config = BufferConfig(streams=("gone-0",), endpoint_url=endpoint, region="us-east-1",
                              spool_dir=spool, linger_seconds=60.0, on_full="spill",
                              max_record_bytes=1024, max_buffer_bytes=1024,
                              connect_timeout_seconds=0.5,
                              on_failure=lambda events, reason: reported.extend(events))
    buffer = FirehoseBuffer(config)
    # The disk is full from now on: a write to any file fails with EFBIG instead of a signal.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    accepted = sum(bool(buffer.put({"seq": seq, "pad": "f" * 60})) for seq in range(count))
    buffer.flush(2.0)
    buffer.close(1.0)
    print(json.dumps({"accepted": accepted, "reported": len(reported)}), flush=True)
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["failed", "spill"])
def test_full_spool_disk_logs_a_few_errors_not_one_per_event(
    firehose: LocalFirehose, tmp_path: Path, mode: str,
) -> None:
    """A full spool filesystem: README promises the error is logged at most once every 10
    seconds, not once per event (thousands of lines a second). The full disk is
    RLIMIT_FSIZE=0 set after the buffer started (writes fail with EFBIG; portable, no mount,
    works as root). A run of a few seconds may log a few ERROR lines, not hundreds; what the
    spool could not keep still goes to on_failure."""
    endpoint = firehose.endpoint_url if mode == "failed" else f"http://127.0.0.1:{_free_port()}"
    count = 300
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, endpoint, str(tmp_path / "spool"), mode,
         str(count)],
        env=ENV, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines()
              if re.match(r"ERROR firehose_buffer\b", line)]
    assert len(errors) <= 5, (
        f"{len(errors)} ERROR lines from firehose_buffer for {count} events, e.g. {errors[:2]}"
    )
    result = orjson.loads(done.stdout)
    if mode == "failed":
        assert result == {"accepted": count, "reported": count}, result
