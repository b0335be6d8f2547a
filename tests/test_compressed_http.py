"""Compressed records over real HTTP against the emulator: what lands decodes to exactly the
lines put, faults lose nothing, failures reach ``on_failure`` as plain JSON lines, and the
bill counts compressed bytes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from support import Reported

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import Fault, FaultRates, LocalFirehose

pytestmark = pytest.mark.slow

STREAMS = ("cz-0", "cz-1")


def _events(count: int) -> list[dict[str, object]]:
    return [{"event_type": ("page_view", "click", "purchase")[i % 3], "seq": i,
             "user_id": f"u-{i % 97}", "path": f"/products/{i % 40}", "pad": "abc" * (i % 300)}
            for i in range(count)]


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_faults_lose_nothing_and_objects_decode_to_the_lines_put(
    codec: str, tmp_path: Path,
) -> None:
    """Partial failures, 503s and connection resets after storing: every event arrives
    (duplicates only as counted), each delivered file is a multi-frame/member object named
    with the stream's extension, and billed bytes are a fraction of the raw bytes."""
    events = _events(6000)
    rates = FaultRates(record_service_unavailable=0.05, http_503=0.05, reset_after_store=0.03)
    with LocalFirehose(data_dir=tmp_path / "out", fault_rates=rates, seed=3) as fh:
        for name in STREAMS:
            fh.create_stream(name, file_extension=f".jsonl.{'zst' if codec == 'zstd' else 'gz'}")
        config = BufferConfig(
            streams=STREAMS, endpoint_url=fh.endpoint_url, region="us-east-1",
            compression=codec, linger_seconds=0.2, retry_initial_backoff_seconds=0.01,
            retry_max_backoff_seconds=0.05, max_record_bytes=64 * 1024,
        )
        with FirehoseBuffer(config) as buf:
            for event in events:
                buf.put(event)
            assert buf.flush(30.0)
            stats = buf.stats()
        fh.flush_delivery()
        delivered = Counter(line for s in STREAMS for line in fh.delivered_lines(s))
        files = [p for s in STREAMS for p in fh.delivered_files(s)]
    assert set(delivered) == {orjson.dumps(e) for e in events}
    assert sum(delivered.values()) - len(events) <= stats.possible_duplicates
    assert files and all(p.name.endswith(".jsonl.zst" if codec == "zstd" else ".jsonl.gz")
                         for p in files)
    assert stats.events_delivered >= len(events)
    assert stats.bytes_sent < stats.raw_bytes_sent
    assert stats.billed_ratio < 0.5, stats.billed_ratio


def test_failures_reach_on_failure_as_plain_json_lines(tmp_path: Path) -> None:
    """A stream that refuses every call (4xx): the events handed to on_failure are the JSON
    lines put, not compressed bytes."""
    events = _events(500)
    reported = Reported()
    with LocalFirehose(streams=STREAMS) as fh:
        fh.script(*[Fault.http_error(400, code="InvalidArgumentException")] * 50)
        config = BufferConfig(streams=STREAMS[:1], endpoint_url=fh.endpoint_url,
                              region="us-east-1", compression="zstd", on_failure=reported,
                              linger_seconds=0.05)
        with FirehoseBuffer(config) as buf:
            for event in events:
                buf.put(event)
            result = buf.flush(10.0)
    assert result.failed == len(events)
    assert sorted(e for e, _ in reported.events) == sorted(orjson.dumps(e) for e in events)
    assert {reason for _, reason in reported.events} == {"InvalidArgumentException"}


def test_durable_compressed_records_leave_nothing_behind_after_a_clean_close(
    tmp_path: Path,
) -> None:
    """Durable segments with compression: once everything is delivered, close() deletes the
    segment files (every one acknowledged); nothing is left for a later buffer to resend."""
    spool = tmp_path / "spool"
    with LocalFirehose(streams=STREAMS) as fh:
        config = BufferConfig(streams=STREAMS, endpoint_url=fh.endpoint_url, region="us-east-1",
                              compression="zstd", durable=True, spool_dir=str(spool),
                              linger_seconds=0.05)
        buf = FirehoseBuffer(config)
        for event in _events(300):
            buf.put(event)
        assert buf.flush(10.0)
        assert buf.close(10.0)
    left = [p for p in (spool / "@durable").rglob("*") if p.is_file()] if (
        spool / "@durable").exists() else []
    assert left == []
