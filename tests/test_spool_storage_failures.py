"""A spool directory removed while the buffer runs (a tmp cleaner, an operator tidying up)
must not turn later failures into events that are counted as kept but exist nowhere.

The buffer's stream does not exist (every call is answered 4xx
``ResourceNotFoundException``), so every event fails and goes to the spool, as a real
outage of a stream would make it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Reported

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

STREAM = "gone-0"
FIRST = 50
SECOND = 70


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
