"""``event_id_field``: every mapping event without that field gets a unique, time-ordered UUIDv7;
events that have one, and bytes events, are sent as they are; the caller's dict is untouched."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer import BufferConfig, EventTooLargeError, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

STREAM = "ids-0"


@pytest.fixture(scope="module")
def firehose() -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=(STREAM,)) as fh:
        yield fh


def _buffer(fh: LocalFirehose, **options: Any) -> FirehoseBuffer:
    return FirehoseBuffer(BufferConfig(streams=(STREAM,), endpoint_url=fh.endpoint_url,
                                       region="us-east-1", event_id_field="event_id",
                                       linger_seconds=0.05, **options))


def _sent(fh: LocalFirehose, since: int) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in fh.delivered_lines(STREAM)[since:]]


fields = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k != "event_id"),
                         st.one_of(st.text(max_size=20), st.integers(-2**63, 2**63 - 1),
                                   st.booleans()),
                         max_size=6)


@settings(max_examples=30, deadline=None)
@given(events=st.lists(fields, min_size=1, max_size=40))
def test_every_event_without_one_gets_a_unique_time_ordered_id(
    firehose: LocalFirehose, events: list[dict[str, Any]],
) -> None:
    """Each event arrives as put, plus an ``event_id`` that is a UUIDv7: unique, and in put
    order (ids of one process sort by time, then by put order); the dicts put are unchanged."""
    before = len(firehose.delivered_lines(STREAM))
    copies = [dict(e) for e in events]
    started_ms = time.time_ns() // 1_000_000
    with _buffer(firehose, partition_key=None) as buf:
        for event in events:
            assert buf.put(event)
        assert buf.flush(10)
    assert events == copies
    sent = _sent(firehose, before)
    ids = [e.pop("event_id") for e in sent]
    assert sent == events
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(int(u.hex[:12], 16) >= started_ms for u in parsed)


def test_an_event_with_the_field_and_bytes_events_are_sent_as_they_are(
    firehose: LocalFirehose,
) -> None:
    before = len(firehose.delivered_lines(STREAM))
    with _buffer(firehose) as buf:
        buf.put({"event_id": "mine", "n": 1})
        buf.put(b'{"n":2}')
        buf.put({})
        assert buf.flush(10)
    sent = _sent(firehose, before)
    assert sent[0] == {"event_id": "mine", "n": 1}
    assert sent[1] == {"n": 2}
    assert set(sent[2]) == {"event_id"}


def test_the_id_counts_against_the_size_limit(firehose: LocalFirehose) -> None:
    """An event that fits only without its id is refused, typed, at the call."""
    with _buffer(firehose, max_record_bytes=100) as buf:
        with pytest.raises(EventTooLargeError):
            buf.put({"pad": "x" * 80})  # 91 bytes with its newline; 143 with an id
        assert buf.put({"pad": "x" * 20})
        assert buf.flush(10)


def test_a_forked_child_draws_its_own_ids(firehose: LocalFirehose, tmp_path: Any) -> None:
    """Parent and child put the same number of events after a fork: no id is shared."""
    before = len(firehose.delivered_lines(STREAM))
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent
    script = (
        "import os, sys\n"
        "from firehose_buffer import BufferConfig, FirehoseBuffer\n"
        "buf = FirehoseBuffer(BufferConfig(streams=('ids-0',), endpoint_url=sys.argv[1],\n"
        "    region='us-east-1', event_id_field='event_id', linger_seconds=0.05))\n"
        "buf.put({'who': 'warm'}); buf.flush(10)\n"
        "pid = os.fork()\n"
        "who = 'child' if pid == 0 else 'parent'\n"
        "for i in range(200): buf.put({'who': who, 'i': i})\n"
        "buf.close(10)\n"
        "if pid == 0: os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    done = subprocess.run([sys.executable, "-c", script, firehose.endpoint_url], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    sent = _sent(firehose, before)
    by_who: dict[str, set[str]] = {}
    for e in sent:
        by_who.setdefault(e["who"], set()).add(e["event_id"])
    assert len(by_who["parent"]) == len(by_who["child"]) == 200
    assert not by_who["parent"] & by_who["child"]
