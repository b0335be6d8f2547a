"""Replaying the spool: what earlier runs kept goes out once, within flush() and close(), and
only as valid JSON lines.

Spool files are made the way a user's would be: a buffer whose stream does not exist yet
(every call answered 4xx ``ResourceNotFoundException``) keeps its events in ``spool_dir``;
the stream is then created and a later buffer on the same ``spool_dir`` re-sends them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import Reported, wait_for

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

STREAM = "spool-0"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    # The stream is not created: tests create it once the spool holds what they need.
    with LocalFirehose(data_dir=tmp_path / "delivered", keep_records=True) as fh:
        yield fh


def _config(firehose: LocalFirehose, spool: Path, **extra: Any) -> BufferConfig:
    return BufferConfig(
        streams=(STREAM,), endpoint_url=firehose.endpoint_url, region="us-east-1",
        spool_dir=str(spool), linger_seconds=0.05, **extra,
    )


def _spool_events(firehose: LocalFirehose, spool: Path, *parts: range) -> None:
    """Buffers (one per part, alive together, so none replays another's file) whose stream
    is missing: every event ends in the spool, one file per buffer."""
    buffers = [FirehoseBuffer(_config(firehose, spool)) for _ in parts]
    try:
        for buffer, seqs in zip(buffers, parts, strict=True):
            for seq in seqs:
                buffer.put({"seq": seq, "pad": "s" * 60})
            buffer.flush(10.0)
    finally:
        for buffer in buffers:
            buffer.close(10.0)
    for buffer, seqs in zip(buffers, parts, strict=True):
        assert buffer.stats().events_spooled == len(seqs), buffer.stats()


def _spool_lines(spool: Path) -> list[bytes]:
    """Whole lines in every spool file (the spool is JSON Lines, one file per stream)."""
    return [
        line
        for path in sorted(spool.rglob("*.jsonl")) if path.is_file()
        for line in path.read_bytes().splitlines()
    ]


def _wire_lines(firehose: LocalFirehose) -> list[bytes]:
    return [
        line
        for record in firehose.accepted_records(STREAM)
        for line in record[:-1].split(b"\n")
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


SHORT_LIVED_CHILD = textwrap.dedent("""
    import json, sys
    from firehose_buffer import BufferConfig, FirehoseBuffer

    endpoint, spool = sys.argv[1], sys.argv[2]
    buffer = FirehoseBuffer(BufferConfig(streams=("spool-0",), endpoint_url=endpoint,
                                         region="us-east-1", spool_dir=spool))
    # Puts nothing: a cron job, a CLI command, a Lambda cold start with no events of its own.
    flushed = buffer.flush(10.0)
    after_flush = buffer.stats()
    closed = buffer.close(10.0)
    print(json.dumps({"flushed": bool(flushed), "closed": bool(closed),
                      "delivered_after_flush": after_flush.events_delivered,
                      "delivered": buffer.stats().events_delivered}))
""")


def test_short_lived_buffer_replays_the_spool_within_flush_and_close(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    """A process that starts a buffer with spool_dir and puts nothing (a cron job, a CLI
    command, a Lambda cold start), then flush() and close(): both cover the spool files
    found at start, within their timeouts, rather than returning True at once with the
    spooled events unsent."""
    spool = tmp_path / "spool"
    _spool_events(firehose, spool, range(0, 1000), range(1000, 2000))
    assert len(_spool_lines(spool)) == 2000
    assert len(list(spool.rglob("*.jsonl"))) == 2
    firehose.create_stream(STREAM)

    done = subprocess.run(
        [sys.executable, "-c", SHORT_LIVED_CHILD, firehose.endpoint_url, str(spool)],
        env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    delivered = {orjson.loads(line)["seq"] for line in _wire_lines(firehose)}
    left = len(_spool_lines(spool))
    assert result["delivered_after_flush"] == 2000, (
        f"flush() returned {result['flushed']} with {result['delivered_after_flush']} of 2000 "
        f"spooled events delivered"
    )
    assert delivered == set(range(2000)), (
        f"after close(): {len(delivered)} of 2000 spooled events delivered, {left} still "
        f"in the spool"
    )
    assert left == 0
    assert result["flushed"] and result["closed"]


def _damaged_lines() -> list[bytes]:
    """51 lines that are not one JSON value each, as a damaged disk or a bad edit leaves."""
    kinds = [
        lambda i: b'{"seq":%d,"user":"\xff\xfe"}' % i,   # not UTF-8
        lambda i: b'{"seq":%d}{"seq":%d}' % (i, i),       # two values
        lambda i: b"plain text %d" % i,
        lambda i: b'{"seq":%d}\x00' % i,                  # trailing NUL
        lambda i: b'{"seq":%d,"cut' % i,                  # truncated
        lambda i: b"\x00" * (i + 1),                      # zeroed blocks
    ]
    return [kinds[i % len(kinds)](i) for i in range(51)]


def test_replay_never_ships_corrupt_or_oversized_spool_lines(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    """A damaged spool file (51 lines that are not one JSON value each, and one line over the
    record limit): the wire only ever carries valid JSON, and each bad line goes to
    on_failure (or a quarantine file) once, never back into a new spool file to be replayed
    again on every start."""
    spool = tmp_path / "spool"
    _spool_events(firehose, spool, range(100))
    damaged = _damaged_lines()
    oversized = orjson.dumps({"seq": "big", "pad": "o" * 1_100_000})
    bad = [*damaged, oversized]
    files = sorted(spool.rglob("*.jsonl"))
    assert len(files) == 1, files
    with files[0].open("ab") as f:
        for i, line in enumerate(damaged):
            f.write(line + b"\n")
            if i == 25:
                f.write(oversized + b"\n")
    firehose.create_stream(STREAM)

    reported = Reported()
    runs = []
    for _ in range(2):  # the start that finds the damage, then the next one
        buffer = FirehoseBuffer(_config(firehose, spool, on_failure=reported))
        try:
            buffer.flush(10.0)  # first use: starts the replay, which the flush covers
            wait_for(lambda: len(_wire_lines(firehose)) >= 100, 15.0,
                      "the spool's 100 valid events to be delivered")
            buffer.flush(10.0)
        finally:
            buffer.close(10.0)
        runs.append(buffer.stats())

    wire = _wire_lines(firehose)
    invalid_on_wire = [line[:40] for line in wire if not _is_json(line)]
    assert invalid_on_wire == [], (
        f"{len(invalid_on_wire)} invalid lines shipped from the spool, e.g. {invalid_on_wire[:3]}"
    )
    assert sorted(orjson.loads(line)["seq"] for line in wire) == list(range(100))
    handed = Counter(e for e, _ in reported.events)
    twice = [line[:40] for line in bad if handed[line] > 1]
    assert twice == [], f"reported more than once: {twice}"
    leftover = _spool_lines(spool)
    quarantined = {line for path in spool.rglob("*") if path.is_file()
                   for line in path.read_bytes().splitlines()}
    nowhere = [line[:40] for line in bad if handed[line] == 0 and line not in quarantined]
    assert nowhere == [], f"{len(nowhere)} damaged lines neither reported nor quarantined"
    assert handed[oversized] == 1 or oversized not in leftover, (
        "the oversized line is still in the spool, to be replayed and written back forever"
    )
    assert runs[1].events_replayed == 0, (
        f"the second start replayed {runs[1].events_replayed} lines the first already handled"
    )


def _is_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


CLOSE_ONLY_CHILD = textwrap.dedent("""
    import json, sys
    from firehose_buffer import BufferConfig, FirehoseBuffer

    buffer = FirehoseBuffer(BufferConfig(streams=(sys.argv[3],), endpoint_url=sys.argv[1],
                                         region="us-east-1", spool_dir=sys.argv[2]))
    closed = buffer.close(30.0)   # nothing put, no flush(): close() alone
    print(json.dumps({"closed": bool(closed), "replayed": buffer.stats().events_replayed}))
""")


def test_close_alone_covers_the_spool_found_at_start(
    firehose: LocalFirehose, tmp_path: Path,
) -> None:
    """A buffer whose only call is close() still sends what the spool held when it started
    (its threads start on first use, and close() is one)."""
    spool = tmp_path / "spool"
    _spool_events(firehose, spool, range(0, 500))
    firehose.create_stream(STREAM)
    done = subprocess.run(
        [sys.executable, "-c", CLOSE_ONLY_CHILD, firehose.endpoint_url, str(spool), STREAM],
        env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    delivered = {orjson.loads(line)["seq"] for line in _wire_lines(firehose)}
    assert delivered == set(range(500)), (result, len(delivered))
    assert _spool_lines(spool) == []
    assert result["replayed"] == 500
