"""Durable segments with compressed records: a clean close() leaves nothing behind.

README (durable mode): the segment files are deleted when close() finds everything in them
has an outcome; otherwise close() warns that they "still hold events without an outcome" and
the next buffer on the spool directory sends them. With compression, the segment each stream
was writing to when close() sealed it had no new line after its last record, and was never
released: close() warned about events that were all delivered, and left the files for the
next process to scan.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

STREAMS = ("dz-0", "dz-1")


@pytest.mark.parametrize("codec", ["zstd", "gzip", None], ids=["zstd", "gzip", "plain"])
def test_a_clean_close_deletes_every_segment_file(
    tmp_path: Path, codec: str | None, caplog: pytest.LogCaptureFixture,
) -> None:
    spool = tmp_path / "spool"
    with LocalFirehose(streams=STREAMS) as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=STREAMS, endpoint_url=fh.endpoint_url, region="us-east-1",
            spool_dir=str(spool), durable=True, compression=codec, linger_seconds=0.05,
            max_buffer_bytes=512 * 1024, max_record_bytes=200_000,
        ))
        with caplog.at_level(logging.WARNING, logger="firehose_buffer"):
            for i in range(3000):
                assert buffer.put({"i": i, "pad": "x" * (i % 1500)})
            assert buffer.flush(10.0)
            assert buffer.close(10.0) is not None
        stats = buffer.stats()
    assert stats.events_delivered == 3000
    left = sorted(str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file())
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not left, f"files left after a clean close ({codec}): {left[:4]}; logs: {warnings}"
    assert not warnings, warnings
