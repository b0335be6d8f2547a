"""The worker's wake policy and a buffer's life (new, running, draining, abandoning,
stopped), through the buffer's own seams: a transport answered in this process
(:class:`fakes.LocalTransport`) and a clock the test moves (:class:`fakes.FakeClock`).

Real threads, no network. The clock stands still unless a test advances it, so every
deadline the buffer keeps (linger, close's) is read on it: a test can tell the worker is
asleep (it stops reading the clock), wake it by a put(), a flush() or an answer, and move
time past a deadline without waiting for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from fakes import FakeClock, LocalTransport
from support import Reported, wait_for

from firehose_buffer import (
    BufferClosedError,
    BufferConfig,
    BufferFullError,
    FirehoseBuffer,
    FlushResult,
)
from firehose_buffer.transport import Outcome

STREAM = "engine-0"
#: Seconds of real time the clock's readers must leave it alone to count as asleep: many
#: times the worker's shortest wait while producers write (10 ms).
QUIET_SECONDS = 0.2


def wait_until_asleep(clock: FakeClock, timeout: float = 5.0) -> None:
    """Until nothing has read the clock for QUIET_SECONDS: every thread of the buffer waits
    to be woken (a worker that polled would read it at every look)."""
    deadline = time.monotonic() + timeout
    reads, since = clock.reads, time.monotonic()
    while time.monotonic() - since < QUIET_SECONDS:
        if time.monotonic() > deadline:
            pytest.fail(f"the clock was still being read after {timeout} s")
        time.sleep(0.01)
        if clock.reads != reads:
            reads, since = clock.reads, time.monotonic()


def buffer_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("firehose-buffer-")}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transport(clock: FakeClock) -> Iterator[LocalTransport]:
    transport = LocalTransport(clock)
    yield transport
    transport.release()  # never leave a sender inside a held call


def _buffer(transport: LocalTransport, clock: FakeClock, **options: object) -> FirehoseBuffer:
    config = BufferConfig(streams=(STREAM,), **{"linger_seconds": 30.0, **options})  # type: ignore[arg-type]
    return FirehoseBuffer(config, transport=transport, clock=clock)


# -- the wake policy ----------------------------------------------------------------------------


def test_a_quiet_worker_sleeps_until_a_put_wakes_it(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """Once producers stop, the worker stops looking (no tick until something wakes it),
    and the next put() wakes it: with linger past on the buffer's clock, that put() is
    enough for the lingering event to go, with no flush()."""
    buf = _buffer(transport, clock)
    try:
        buf.put({"n": 1})
        wait_until_asleep(clock)
        assert transport.calls == [], "sent before linger, on a clock that stood still"
        clock.advance(31.0)
        buf.put({"n": 2})  # wakes the worker, which finds n=1 past its linger
        wait_for(lambda: bool(transport.calls), 5.0, "the lingering event to be sent")
        assert transport.lines(STREAM)[:1] == [b'{"n":1}']
        assert transport.calls[0].at >= 1000.0 + 30.0 * 0.95
    finally:
        buf.close(5.0)
    assert sorted(transport.lines(STREAM)) == [b'{"n":1}', b'{"n":2}']


def test_the_worker_wakes_itself_for_a_deadline_on_the_buffers_clock(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """With a linger deadline ahead the worker sleeps until it, as the buffer's clock
    counts: real time passing beyond linger sends nothing; the clock passing it does, with
    nobody putting or flushing."""
    buf = _buffer(transport, clock, linger_seconds=0.2)
    try:
        buf.put({"n": 1})
        reads = clock.reads
        # The worker looks again at each of its timed wakes (0.19 s of real time each);
        # after three of them, real time is well past linger.
        wait_for(lambda: clock.reads >= reads + 9, 5.0, "the worker's timed wakes")
        assert transport.calls == [], "sent on real time, not on the buffer's clock"
        clock.advance(0.2)
        wait_for(lambda: bool(transport.calls), 5.0, "the worker to wake for the deadline")
        assert transport.lines(STREAM) == [b'{"n":1}']
    finally:
        buf.close(5.0)


def test_an_answer_wakes_a_sleeping_worker(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """While a call is out and nothing else is due, the worker sleeps; the answer wakes it,
    so a flush() waiting for that call returns as soon as it is answered."""
    buf = _buffer(transport, clock)
    results: list[FlushResult] = []
    transport.hold()
    try:
        buf.put({"n": 1})
        flusher = threading.Thread(target=lambda: results.append(buf.flush(10.0)))
        flusher.start()
        wait_for(lambda: bool(transport.calls), 5.0, "the flush's call")
        wait_until_asleep(clock)
        transport.release()
        flusher.join(5.0)
        assert results == [FlushResult(delivered=1, failed=0, pending=0)]
    finally:
        transport.release()
        buf.close(5.0)


# -- put() on a full buffer (on_full="block"; the other policies: test_full_buffer.py) ---------

#: A buffer of two 10 KB segments, and events of 600 bytes: about 33 fill it.
SMALL = {"max_record_bytes": 10_000, "max_buffer_bytes": 20_000, "on_full": "block"}
PAD = "p" * 580


def test_a_blocked_put_waits_max_block_seconds_on_the_buffers_clock(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """With every call held (nothing can make room), a put() on the full buffer waits. Real
    time passing beyond max_block_seconds does not end the wait; the buffer's clock passing
    it does, with BufferFullError saying how long it waited."""
    transport.hold()
    buf = _buffer(transport, clock, max_block_seconds=0.1, **SMALL)
    raised: list[tuple[int, BufferFullError]] = []

    def produce() -> None:
        for n in range(1000):
            try:
                buf.put({"n": n, "pad": PAD})
            except BufferFullError as exc:
                raised.append((n, exc))
                return

    producer = threading.Thread(target=produce)
    try:
        producer.start()
        wait_for(lambda: buf.stats().memory_bytes >= 20_000, 5.0, "the buffer to fill")
        since = time.monotonic()
        # Several times max_block_seconds of real time, the blocked put() looking at the
        # clock after each of its waits.
        wait_for(lambda: time.monotonic() - since > 0.5, 5.0, "real time to pass")
        assert raised == [] and producer.is_alive(), "gave up on real time"
        clock.advance(0.1)
        producer.join(5.0)
        assert len(raised) == 1, "the blocked put() never gave up"
        accepted, error = raised[0]
        assert 25 <= accepted <= 40
        assert "stayed full for max_block_seconds=0.1" in str(error)
    finally:
        if producer.is_alive():
            clock.advance(60.0)  # a put() still blocked gives up at its next look
            producer.join(5.0)
        transport.release()
        buf.close(5.0)
    assert buf.stats().events_put == buf.stats().events_delivered == accepted


def test_put_on_an_event_loop_never_blocks_for_room(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """A put() on a thread running an asyncio loop must not block the loop waiting for room:
    with on_full="block" it raises BufferFullError at once (the clock never moves here, so a
    put() that waited would wait for good)."""
    transport.hold()
    buf = _buffer(transport, clock, max_block_seconds=30.0, **SMALL)
    outcome: list[object] = []

    async def fill() -> None:
        for n in range(1000):
            try:
                buf.put({"n": n, "pad": PAD})
            except BufferFullError as exc:
                outcome.append((n, exc))
                return

    loop_thread = threading.Thread(target=asyncio.run, args=(fill(),))
    try:
        loop_thread.start()
        loop_thread.join(5.0)
        blocked = loop_thread.is_alive()
    finally:
        if loop_thread.is_alive():
            clock.advance(60.0)  # lets a blocked put() out
            loop_thread.join(5.0)
        transport.release()
        buf.close(5.0)
    assert not blocked, "put() blocked the event loop waiting for room"
    assert len(outcome) == 1 and 25 <= outcome[0][0] <= 40  # type: ignore[index]


# -- a buffer's life ------------------------------------------------------------------------------


def test_a_buffer_never_used_starts_no_thread_and_closes_at_once(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """New: nothing runs until the first put(); flush() and close() on a buffer never used
    start nothing, and close() still releases the transport."""
    before = buffer_threads()
    buf = _buffer(transport, clock)
    assert buf.flush(1.0) == FlushResult(0, 0, 0)
    assert buffer_threads() == before
    assert buf.close(1.0) == FlushResult(0, 0, 0)
    assert buffer_threads() == before
    assert transport.closed and transport.calls == []
    with pytest.raises(BufferClosedError):
        buf.put({"n": 1})


def test_close_delivers_everything_then_stops(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """Running, then draining: close() cuts everything (linger is far off on a clock that
    stands still), sends it, and returns once all of it is delivered; then the threads end,
    the transport is released, put() raises, flush() and a second close() answer from the
    stopped buffer."""
    before = buffer_threads()
    buf = _buffer(transport, clock, max_events_per_record=7)
    try:
        for n in range(100):
            buf.put({"n": n})
        wait_for(lambda: "firehose-buffer-worker" in buffer_threads(), 5.0, "the worker")
    finally:
        result = buf.close(5.0)
    assert result, result  # (delivered counts what was still out when close() was called)
    assert sorted(transport.lines(STREAM)) == sorted(b'{"n":%d}' % n for n in range(100))
    assert transport.closed
    wait_for(lambda: buffer_threads() == before, 5.0, "the buffer's threads to end")
    with pytest.raises(BufferClosedError):
        buf.put({"n": 100})
    assert buf.flush(1.0) == FlushResult(0, 0, 0)
    assert buf.close(1.0) == result
    stats = buf.stats()
    assert (stats.events_put, stats.events_delivered, stats.events_buffered) == (100, 100, 0)


def test_close_out_of_time_fails_what_is_left_and_hands_it_over(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """Draining, then abandoning: every call is refused with a retryable error, so nothing
    can be delivered; at close()'s deadline (on the buffer's clock: here the real wait is
    the timeout itself) what is left fails as closed_before_delivery and reaches on_failure
    before close() returns, and the result says so."""
    reported = Reported()
    transport.answers.extend(
        Outcome(error="ServiceUnavailableException", retryable=True) for _ in range(1000))
    buf = _buffer(transport, clock, on_failure=reported, max_events_per_record=10)
    for n in range(50):
        buf.put({"n": n})
    result = buf.close(0.5)
    assert result == FlushResult(delivered=0, failed=50, pending=0)
    assert sorted(e for e, _ in reported.events) == sorted(b'{"n":%d}' % n for n in range(50))
    assert {reason for _, reason in reported.events} == {"closed_before_delivery"}
    stats = buf.stats()
    assert stats.failures_by_reason == {"closed_before_delivery": 50}
    assert stats.events_lost == 0 and stats.events_buffered == 0
    assert transport.calls, "close() never tried to deliver"


def test_close_from_on_failure_is_finished_by_the_worker(
    transport: LocalTransport, clock: FakeClock,
) -> None:
    """close() called from on_failure runs on the worker, which cannot wait for itself: it
    returns at once, unfinished, and the worker finishes the close as it stops (threads end,
    the transport is released); a later close() returns the finished result at once."""
    before = buffer_threads()
    transport.answers.append(Outcome(error="ResourceNotFoundException", retryable=False))
    inside: list[FlushResult] = []
    holder: list[FirehoseBuffer] = []

    def on_failure(events: list[bytes], reason: str) -> None:
        inside.append(holder[0].close(5.0))

    buf = _buffer(transport, clock, on_failure=on_failure)
    holder.append(buf)
    buf.put({"n": 1})
    buf.flush(5.0)  # the call fails for good: on_failure runs, and closes
    wait_for(lambda: bool(inside), 5.0, "on_failure to close the buffer")
    assert not inside[0], f"close() on the worker claimed it was done: {inside[0]}"
    wait_for(lambda: buffer_threads() == before, 5.0, "the buffer's threads to end")
    assert transport.closed
    assert buf.close(1.0).pending == 0
    assert buf.stats().failures_by_reason == {"ResourceNotFoundException": 1}
    with pytest.raises(BufferClosedError):
        buf.put({"n": 2})
