"""A durable stream's move to a free segment (``Accumulator.reseat``) that fails part way.

A move is only an economy (fewer pages written between two write-backs): when one raises,
the stream must go on as if it had not been tried. The worker ticks the scheduler, which
dispatches batches and THEN moves streams: a failed move must not take the tick's batches,
or the failures it found, with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer._storage.durable import DurableStore
from firehose_buffer._storage.segments import Segment
from firehose_buffer.emulator import LocalFirehose
from tests.support import accepted_lines, called_from


@pytest.fixture
def firehose(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFirehose]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with LocalFirehose(streams=["s"], keep_records=True) as fh:
        yield fh


def test_a_move_that_raises_loses_nothing_and_the_stream_goes_on(
    firehose: LocalFirehose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real durable buffer, one stream, lines put at a steady pace so that the stream
    moves; the first move raises inside the accumulator (marking the new segment the
    stream's fails). Every line put, before and after, reaches Firehose, flush() says so,
    and later moves still happen."""
    failed = threading.Event()
    moves_after = [0]
    original = DurableStore.filling

    def filling(self: DurableStore, segment: Segment, index: int) -> None:
        if called_from("reseat"):
            if not failed.is_set():
                failed.set()
                raise OSError(5, "injected: the header page could not be written")
            moves_after[0] += 1
        original(self, segment, index)

    monkeypatch.setattr(DurableStore, "filling", filling)
    config = BufferConfig(streams=("s",), spool_dir=str(tmp_path / "spool"), durable=True,
                          endpoint_url=firehose.endpoint_url, region="us-east-1",
                          linger_seconds=0.02, max_buffer_bytes=1024 * 1024)
    n = 0
    buffer = FirehoseBuffer(config)
    try:
        def put_for(seconds: float, until: threading.Event | None = None) -> None:
            nonlocal n
            stop = time.monotonic() + seconds
            while time.monotonic() < stop and not (until is not None and until.is_set()):
                buffer.put({"i": n, "pad": "x" * 400})
                n += 1
                time.sleep(0.0005)

        put_for(10.0, failed)
        assert failed.is_set(), "the stream never moved"
        put_for(0.5)
        result = buffer.flush(5)
        assert result, f"flush after a failed move: {result}"
    finally:
        closed = buffer.close(2)
    assert closed, closed
    got = [orjson.loads(line)["i"] for line in accepted_lines(firehose, "s")]
    assert sorted(got) == list(range(n)), "lost or doubled"
    assert moves_after[0] > 0, "the stream never moved again"
    left = sorted(p.name for p in (tmp_path / "spool").rglob("*.seg"))
    assert not left, f"segment files left after a clean close: {left}"
