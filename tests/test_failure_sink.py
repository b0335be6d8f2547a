"""The failure sink: where every event that will not be delivered goes.

Failures are merged per stream and reason (a slow ``on_failure`` is called once per kind of
failure, not once per record), kept in the spool first, handed to ``on_failure`` when there
is no spool or it cannot keep them, and settled with the buffer's counters before any user
code runs. The sink is the one a real buffer wires (``buf._engine.sink``), fed failures as
the worker feeds it; what it did is read from ``stats()``, the spool's files and what
``on_failure`` got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import FakeClock, LocalTransport
from hypothesis import given
from hypothesis import strategies as st

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer._core.records import Failure
from firehose_buffer._runtime.failures import merge

STREAMS = ("sink-0", "sink-1")


def _failure(stream: str, reason: str, *seqs: int) -> Failure:
    return Failure.of_lines(stream, reason, [b'{"seq":%d}' % n for n in seqs])


FAILURES = [
    _failure("sink-0", "Throttled", 1, 2),
    _failure("sink-1", "Throttled", 3),
    _failure("sink-0", "Throttled", 4, 5, 6),
    _failure("sink-0", "AccessDeniedException", 7),
]


class Calls:
    """An ``on_failure`` that keeps each call, and what the buffer had in hand meanwhile."""

    def __init__(self, buf: list[FirehoseBuffer]) -> None:
        self.calls: list[tuple[list[bytes], str]] = []
        self.in_hand: list[int] = []
        self._buf = buf

    def __call__(self, events: list[bytes], reason: str) -> None:
        self.calls.append((events, reason))
        self.in_hand.append(self._buf[0]._engine.ledger.in_hand)


@pytest.fixture
def holder() -> list[FirehoseBuffer]:
    return []


@pytest.fixture
def on_failure(holder: list[FirehoseBuffer]) -> Calls:
    return Calls(holder)


def _make(holder: list[FirehoseBuffer], on_failure: Callable[[list[bytes], str], None],
          spool: Path | None) -> FirehoseBuffer:
    buf = FirehoseBuffer(
        BufferConfig(streams=STREAMS, on_failure=on_failure,
                     spool_dir=None if spool is None else str(spool)),
        transport=LocalTransport(), clock=FakeClock())
    holder.append(buf)
    return buf


@pytest.fixture
def buffer(holder: list[FirehoseBuffer], on_failure: Calls) -> Iterator[FirehoseBuffer]:
    buf = _make(holder, on_failure, None)
    yield buf
    buf.close(5.0)


def _report(buf: FirehoseBuffer, failures: list[Failure], *, respool: bool = True) -> None:
    """What the worker does with a tick's failures: counted as failed (under the engine's
    lock, with the state change), then handed to the sink with no lock held."""
    engine = buf._engine
    with engine.lock:
        for f in failures:
            engine.ledger.failed(f.reason, f.count)
    engine.sink.report(failures, respool=respool)


def _spooled(spool: Path, stream: str) -> list[bytes]:
    return [line for path in sorted((spool / stream).glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]


failures = st.lists(
    st.builds(_failure, st.sampled_from(STREAMS), st.sampled_from(["a", "b", "c"]),
              st.integers(0, 99), st.integers(100, 199)),
    max_size=20,
)


@given(failures)
def test_merge_keeps_one_failure_per_stream_and_reason_and_every_line_in_order(
    given_failures: list[Failure],
) -> None:
    merged = merge(given_failures)
    keys = [(f.stream, f.reason) for f in merged]
    assert len(set(keys)) == len(keys)
    assert keys == list(dict.fromkeys((f.stream, f.reason) for f in given_failures))
    for m in merged:
        same = [f for f in given_failures if (f.stream, f.reason) == (m.stream, m.reason)]
        assert m.lines() == [line for f in same for line in f.lines()]
        assert m.count == sum(f.count for f in same)


def test_without_a_spool_on_failure_is_called_once_per_stream_and_reason(
    buffer: FirehoseBuffer, on_failure: Calls,
) -> None:
    _report(buffer, FAILURES)
    assert on_failure.calls == [
        ([b'{"seq":1}', b'{"seq":2}', b'{"seq":4}', b'{"seq":5}', b'{"seq":6}'], "Throttled"),
        ([b'{"seq":3}'], "Throttled"),
        ([b'{"seq":7}'], "AccessDeniedException"),
    ]
    stats = buffer.stats()
    assert stats.events_failed == 7 and stats.events_spooled == 0
    # Settled once on_failure returned (while it runs they count as being handed over: a
    # close() timing out meanwhile does not count them lost, see test_close_deadline).
    assert buffer._engine.ledger.in_hand == 0


def test_the_spool_keeps_them_first(
    holder: list[FirehoseBuffer], on_failure: Calls, tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    buf = _make(holder, on_failure, spool)
    try:
        _report(buf, FAILURES)
        stats = buf.stats()
    finally:
        buf.close(5.0)
    assert on_failure.calls == []
    assert _spooled(spool, "sink-0") == [b'{"seq":%d}' % n for n in (1, 2, 4, 5, 6, 7)]
    assert _spooled(spool, "sink-1") == [b'{"seq":3}']
    assert (stats.events_failed, stats.events_spooled) == (7, 7)
    assert buf._engine.ledger.in_hand == 0


def test_what_the_spool_cannot_keep_goes_to_on_failure(
    holder: list[FirehoseBuffer], on_failure: Calls, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream whose spool folder cannot be made (a file is in its place): its events go
    to on_failure and are not counted as spooled; the other stream's are kept."""
    spool = tmp_path / "spool"
    buf = _make(holder, on_failure, spool)
    (spool / "sink-0").write_bytes(b"")
    try:
        with caplog.at_level(logging.ERROR, logger="firehose_buffer"):
            _report(buf, FAILURES)
        stats = buf.stats()
    finally:
        buf.close(5.0)
    assert [(len(events), reason) for events, reason in on_failure.calls] == [
        (5, "Throttled"), (1, "AccessDeniedException")]
    assert _spooled(spool, "sink-1") == [b'{"seq":3}']
    assert (stats.events_failed, stats.events_spooled) == (7, 1)
    assert any("spool" in r.getMessage() for r in caplog.records)


def test_lines_from_the_spool_are_not_spooled_again(
    holder: list[FirehoseBuffer], on_failure: Calls, tmp_path: Path,
) -> None:
    """``respool=False`` (lines the replay found unsendable): they would go round forever."""
    spool = tmp_path / "spool"
    buf = _make(holder, on_failure, spool)
    try:
        _report(buf, FAILURES[:1], respool=False)
    finally:
        buf.close(5.0)
    assert on_failure.calls == [([b'{"seq":1}', b'{"seq":2}'], "Throttled")]
    assert _spooled(spool, "sink-0") == []


def test_an_on_failure_that_raises_is_logged_and_the_rest_still_go(
    holder: list[FirehoseBuffer], on_failure: Calls, caplog: pytest.LogCaptureFixture,
) -> None:
    def raising(events: list[bytes], reason: str) -> None:
        on_failure(events, reason)
        raise RuntimeError("dead-letter store down")

    buf = _make(holder, raising, None)
    try:
        with caplog.at_level(logging.ERROR, logger="firehose_buffer"):
            _report(buf, FAILURES)
    finally:
        buf.close(5.0)
    assert len(on_failure.calls) == 3
    assert sum("on_failure callback raised" in r.getMessage() for r in caplog.records) == 3
    assert buf._engine.ledger.in_hand == 0
