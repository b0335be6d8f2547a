"""Routing: stable keyed hashing, spread, router callables and their errors, sticky keyless."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from fakes import FakeFirehose
from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer import BufferConfig, EventValueError, FirehoseBuffer
from firehose_buffer._core.packing import ALIGN_WINDOW_BYTES
from firehose_buffer._core.routing import roomiest, stable_index
from firehose_buffer._core.scheduler import MERGE_TAIL_BYTES

STREAMS = ("s0", "s1", "s2", "s3")
KEYS = [f"user-{i}" for i in range(200)] + ["", "é", "日本", "\U0001f600", "a\x00b"]


def test_same_key_same_stream_in_another_process() -> None:
    """hash() differs between processes (PYTHONHASHSEED); the routing must not."""
    here = [stable_index(k, 7) for k in KEYS]
    code = (
        "import json, sys; from firehose_buffer._core.routing import stable_index; "
        "print(json.dumps([stable_index(k, 7) for k in json.load(sys.stdin)]))"
    )
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(KEYS), env=env,
            capture_output=True, text=True, check=True, timeout=60,
        )
        assert json.loads(out.stdout) == here


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary()), st.integers(min_value=1, max_value=64))
def test_stable_index_is_in_range_and_str_equals_its_utf8_bytes(key: str | bytes, n: int) -> None:
    index = stable_index(key, n)
    assert 0 <= index < n
    if isinstance(key, str):
        assert index == stable_index(key.encode("utf-8", "surrogatepass"), n)


@pytest.mark.parametrize("n", [2, 7, 16])
def test_keys_spread_roughly_evenly(n: int) -> None:
    keys = 20_000
    counts = Counter(stable_index(f"customer-{i:08d}", n) for i in range(keys))
    expected = keys / n
    # Generous: a fair hash stays within a few percent at this sample size.
    assert set(counts) == set(range(n))
    assert max(abs(c - expected) for c in counts.values()) <= 0.15 * expected, counts


@given(st.integers(min_value=0, max_value=20),
       st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=20))
def test_roomiest_takes_another_stream_with_the_most_headroom_ties_in_turn(
    current: int, headroom: list[int],
) -> None:
    n = len(headroom)
    current %= n
    chosen = roomiest(current, headroom)
    if n == 1:
        assert chosen == 0
        return
    # Never the stream just filled; among the others the most headroom, ties in turn.
    order = [(current + k) % n for k in range(1, n)]
    best = max(headroom[i] for i in order)
    assert chosen != current and headroom[chosen] == best
    assert chosen == next(i for i in order if headroom[i] == best)


def _delivered_streams(fake: FakeFirehose) -> dict[int, str]:
    """Event sequence number -> stream it was delivered to."""
    where: dict[int, str] = {}
    for stream, records in fake.stored.items():
        for data in records:
            for line in data[:-1].split(b"\n"):
                where[orjson.loads(line)["seq"]] = stream
    return where


@pytest.fixture
def fake() -> FakeFirehose:
    return FakeFirehose(streams=set(STREAMS))


def _buffer(fake: FakeFirehose, **kwargs: Any) -> FirehoseBuffer:
    config = BufferConfig(streams=STREAMS, linger_seconds=0.05, **kwargs)
    return FirehoseBuffer(config, client=fake)


def test_partition_key_routes_each_key_to_its_stable_stream(fake: FakeFirehose) -> None:
    with _buffer(fake, partition_key="user") as buf:
        for seq in range(300):
            buf.put({"seq": seq, "user": f"u{seq % 37}"})
        assert buf.flush(10)
    where = _delivered_streams(fake)
    assert len(where) == 300
    for seq, stream in where.items():
        assert stream == STREAMS[stable_index(f"u{seq % 37}", len(STREAMS))]


def _by_index(event: Mapping[str, Any] | bytes) -> int | str:
    assert isinstance(event, Mapping)
    return int(event["seq"]) % 3


def _by_name(event: Mapping[str, Any] | bytes) -> int | str:
    assert isinstance(event, Mapping)
    return "s3" if event["seq"] % 2 else "s1"


@pytest.mark.parametrize(("router", "expected"), [
    (_by_index, lambda seq: STREAMS[seq % 3]),
    (_by_name, lambda seq: "s3" if seq % 2 else "s1"),
])
def test_router_callable_by_index_and_by_name(
    fake: FakeFirehose, router: Any, expected: Any,
) -> None:
    with _buffer(fake, router=router) as buf:
        for seq in range(100):
            buf.put({"seq": seq})
        assert buf.flush(10)
    where = _delivered_streams(fake)
    assert where == {seq: expected(seq) for seq in range(100)}


def _raises(event: Mapping[str, Any] | bytes) -> int | str:
    raise KeyError("tenant")


@pytest.mark.parametrize("result", [4, -1, "nope", None, 1.0, b"s0"])
def test_bad_router_results_raise_and_keep_what_was_buffered(
    fake: FakeFirehose, result: object,
) -> None:
    def router(event: Mapping[str, Any] | bytes) -> Any:
        return 0 if isinstance(event, Mapping) and event.get("ok") else result

    with _buffer(fake, router=router) as buf:
        buf.put({"seq": 0, "ok": True})
        with pytest.raises(EventValueError, match="router"):
            buf.put({"seq": 1})
        assert buf.flush(10)
        assert buf.stats().events_put == 1
    assert _delivered_streams(fake) == {0: "s0"}


def test_router_that_raises_becomes_event_value_error(fake: FakeFirehose) -> None:
    with _buffer(fake, router=_raises) as buf, pytest.raises(EventValueError) as info:
        buf.put({"seq": 0})
    assert isinstance(info.value.__cause__, KeyError)


def _runs(order: list[str]) -> Iterator[tuple[str, int, int]]:
    """(stream, first seq, end seq) for each run of consecutive events on one stream."""
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or order[i] != order[start]:
            yield order[start], start, i
            start = i


def test_keyless_stays_on_a_stream_for_a_record_then_moves_and_uses_every_stream(
    fake: FakeFirehose,
) -> None:
    """Keyless events go to one stream until it holds a record's worth (bytes or events),
    then to another (the worker looks once per tick): the first visit to each stream brings
    at least a record, the route moves at most once per full record cut, every stream is
    used, nothing is lost."""
    events = [{"seq": seq, "pad": "x" * (300 + (seq * 37) % 700)} for seq in range(6000)]
    sizes = [len(orjson.dumps(e)) + 1 for e in events]
    with _buffer(fake) as buf:
        target = buf.config.record_target_bytes
        max_events = buf.config.max_events_per_record
        for seq, event in enumerate(events):
            buf.put(event)
            if seq % 50 == 49:
                # Pacing only: spread the puts over a dozen worker ticks or more.
                time.sleep(0.001)
        assert buf.flush(10)
    where = _delivered_streams(fake)
    assert sorted(where) == list(range(len(events)))
    order = [where[seq] for seq in range(len(events))]
    runs = list(_runs(order))
    assert {stream for stream, _, _ in runs} == set(STREAMS)
    seen: set[str] = set()
    for stream, start, end in runs[:-1]:
        if stream not in seen:
            # A visit ends at a record's worth (bytes or events) counting a remainder merged
            # into it, and may lose its own remainder to the next: short by at most that.
            merged = MERGE_TAIL_BYTES // min(sizes)
            assert (sum(sizes[start:end]) >= target - MERGE_TAIL_BYTES
                    or end - start >= max_events - merged), (stream, start, end)
            seen.add(stream)
    # Each move follows a full record (max_events lines, or bytes within the alignment window
    # of the target) cut from the stream left: the route cannot move more often than records
    # fill.
    full_records = sum(sizes) // (target - ALIGN_WINDOW_BYTES) + len(events) // max_events
    assert len(runs) - 1 <= full_records, (len(runs), sum(sizes), target)
