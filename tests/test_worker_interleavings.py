"""Interleavings a busy process can produce, replayed on purpose: a producer sealing a segment
while the worker gathers, flushes the worker merges, close() from the worker's own thread.

CPython may switch threads wherever a loop jumps back or a call is made, so a worker can be
paused at any of those points while producers run. Some of these tests make such a pause
happen exactly where it hurts: a trace function (``threading.settrace``, installed before the
buffer starts its threads) parks the worker thread at one line until the test lets it go.
The trace only chooses the interleaving; every assertion is on what a user sees (the lines
Firehose received, ``stats()``, the ``FlushResult``, the threads left running).
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pytest
from support import wait_for

from firehose_buffer import BufferConfig, FirehoseBuffer, Quota
from firehose_buffer._core.scheduler import Scheduler
from firehose_buffer._runtime.worker import Worker
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

#: Far above what these tests send: no throttling gets in the way of the interleavings.
ROOMY = Quota(100_000.0, 500.0 * 2**20, 10_000_000.0)
STREAM = "hostile"


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=(STREAM,), quota=ROOMY, data_dir=tmp_path / "delivered",
                       keep_records=True) as fh:
        yield fh


def _received(firehose: LocalFirehose) -> list[bytes]:
    return [line for record in firehose.accepted_records(STREAM)
            for line in record[:-1].split(b"\n")]


class Gate:
    """Parks the worker thread once at ``text`` inside ``func`` when ``when(frame)`` holds."""

    def __init__(self, func: Callable[..., Any], text: str,
                 when: Callable[[FrameType], bool] = lambda frame: True) -> None:
        lines, first = inspect.getsourcelines(func)
        matches = [first + i for i, line in enumerate(lines) if line.strip() == text]
        assert len(matches) == 1, f"{text!r} not found once in {func.__qualname__}"
        self.code = func.__code__
        self.line = matches[0]
        self.when = when
        self.armed = False
        self.paused = threading.Event()
        self.resume = threading.Event()

    def hit(self, frame: FrameType) -> None:
        if self.armed and frame.f_lineno == self.line and self.when(frame):
            self.armed = False
            self.paused.set()
            self.resume.wait(10.0)

    def wait_paused(self, timeout: float = 10.0) -> None:
        assert self.paused.wait(timeout), f"the worker never reached line {self.line}"


class Gates:
    """``threading.settrace`` for the threads the buffer starts, looking only at the gated
    functions' frames."""

    def __init__(self, *gates: Gate) -> None:
        self.by_code = {g.code: [x for x in gates if x.code is g.code] for g in gates}

    def __enter__(self) -> Gates:
        threading.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        threading.settrace(None)
        for gates in self.by_code.values():
            for g in gates:
                g.armed = False
                g.resume.set()

    def _global(self, frame: FrameType, event: str, arg: object) -> Any:
        gates = self.by_code.get(frame.f_code)
        if gates is None:
            return None

        def local(frame: FrameType, event: str, arg: object) -> Any:
            if event == "line":
                for g in gates:
                    g.hit(frame)
            return local

        return local


# -- 1. a segment sealed while the worker is gathering ---------------------------------------


def test_a_segment_sealed_during_a_tick_is_not_sent_twice(firehose: LocalFirehose) -> None:
    """The worker takes the sealed segments (``acc.take``), scans them, then reads the
    stream's current segment. A producer may seal that current segment in between (the scan
    loops give CPython room to switch), so the segment the worker holds a span of is handed
    over sealed at the next tick as well. Each event must still be delivered once and
    counted once in ``events_put``: scanning that segment again from byte 0 would send its
    lines twice, counted nowhere as possible duplicates."""
    config = BufferConfig(
        streams=(STREAM,), partition_key="k", endpoint_url=firehose.endpoint_url,
        region="us-east-1", quota=ROOMY, linger_seconds=0.2,
        # Segments of 200 KB: about 65 of these events each.
        max_record_bytes=50_000, max_buffer_bytes=4_000_000,
    )
    # Parked between reading the stream's current segment and scanning it: the window in
    # which a producer can seal that segment.
    gate = Gate(Scheduler._gather_stream, "for item in sealed:",
                when=lambda frame: frame.f_locals.get("current") is not None)
    puts = 0

    def put(buf: FirehoseBuffer) -> None:
        nonlocal puts
        buf.put({"k": "same", "n": puts, "pad": "y" * 3000})
        puts += 1

    with Gates(gate):
        buf = FirehoseBuffer(config)
        try:
            gate.armed = True
            deadline = time.monotonic() + 10.0
            while not gate.paused.is_set() and time.monotonic() < deadline:
                put(buf)
                time.sleep(0.001)
            gate.wait_paused()
            for _ in range(100):  # one segment and a half: the current one is sealed
                put(buf)
            gate.resume.set()
            assert buf.flush(20.0)
            stats = buf.stats()
        finally:
            buf.close(10.0)

    counts = collections.Counter(orjson.loads(line)["n"] for line in _received(firehose))
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert sorted(counts) == list(range(puts))
    assert twice == [], f"{len(twice)} events delivered twice, e.g. {twice[:5]}"
    assert stats.possible_duplicates == 0
    assert stats.events_put == puts


# -- 2. flushes that the worker merges --------------------------------------------------------


def test_every_caller_of_concurrent_flushes_gets_its_own_result(
    firehose: LocalFirehose,
) -> None:
    """Two flush() calls that reach the worker in the same tick are marked together. Each
    caller must get the result of its own flush: truthy, with its events counted delivered,
    whatever was put after it. An older caller answered with whatever is pending at that
    moment would read ``delivered=0`` although its events were delivered, and a falsy
    result as soon as anybody put an event since."""
    config = BufferConfig(
        streams=(STREAM,), endpoint_url=firehose.endpoint_url, region="us-east-1",
        quota=ROOMY, linger_seconds=30.0,
    )
    before_tick = Gate(Worker._step, "sched = engine.scheduler")
    after_newer_flush = Gate(Worker._step, "engine.progress.notify_all()",
                             when=lambda frame: frame.f_locals["sched"].flushes.done_generation
                             >= 3)
    results: dict[str, Any] = {}

    def flush(name: str) -> None:
        results[name] = buf.flush(20.0)

    with Gates(before_tick, after_newer_flush):
        buf = FirehoseBuffer(config)
        try:
            buf.put({"warm": "up"})  # starts the worker (traced)
            assert buf.flush(10.0)
            before_tick.armed = True
            buf.put({"who": "a"})  # the put wakes the sleeping worker into the gate
            before_tick.wait_paused()
            older = threading.Thread(target=flush, args=("older",))
            older.start()
            wait_for(lambda: buf._engine.scheduler.flushes.requested >= 2, 5.0, "the older flush")
            buf.put({"who": "b"})
            newer = threading.Thread(target=flush, args=("newer",))
            newer.start()
            wait_for(lambda: buf._engine.scheduler.flushes.requested >= 3, 5.0, "the newer flush")
            after_newer_flush.armed = True
            before_tick.resume.set()
            after_newer_flush.wait_paused()
            buf.put({"who": "late"})  # after both flushes: covered by neither
            after_newer_flush.resume.set()
            older.join(30.0)
            newer.join(30.0)
        finally:
            buf.close(10.0)

    assert results["newer"], results["newer"]
    # {"who": "a"} was put before the older flush and delivered after it started.
    assert results["older"].delivered >= 1, results["older"]
    assert results["older"], results["older"]


def test_flushes_from_many_threads_are_all_truthy_while_producers_write(
    firehose: LocalFirehose,
) -> None:
    """The same merge with real threads only: six threads flushing while two others put.
    Firehose refuses nothing here, so every flush must come back truthy."""
    config = BufferConfig(
        streams=(STREAM,), endpoint_url=firehose.endpoint_url, region="us-east-1",
        quota=ROOMY, linger_seconds=0.5,
    )
    stop = threading.Event()
    falsy: list[object] = []

    with FirehoseBuffer(config) as buf:
        def produce() -> None:
            i = 0
            while not stop.is_set():
                buf.put({"i": i, "pad": "x" * 500})
                i += 1
                time.sleep(0.0005)

        def flusher() -> None:
            for _ in range(20):
                buf.put({"flusher": 1})
                result = buf.flush(20.0)
                if not result:
                    falsy.append(result)

        producers = [threading.Thread(target=produce) for _ in range(2)]
        flushers = [threading.Thread(target=flusher) for _ in range(6)]
        for t in producers + flushers:
            t.start()
        for t in flushers:
            t.join(60.0)
        stop.set()
        for t in producers:
            t.join(10.0)
        assert buf.flush(20.0)
        failed = buf.stats().events_failed

    assert failed == 0
    assert falsy == [], f"{len(falsy)} of 120 flushes falsy, e.g. {falsy[:3]}"


# -- 3. close() from the worker thread --------------------------------------------------------


def test_close_from_on_failure_leaves_no_thread_running(tmp_path: Path) -> None:
    """close() called from on_failure (the worker thread) asks the worker to stop and
    returns; once the worker ends, the close is finished on its thread: the sender threads
    stop and the transport is closed, as after a close() from any other thread, so no
    thread of the buffer is left running."""
    with LocalFirehose(streams=["present"], data_dir=tmp_path / "d") as fh:
        closed: list[object] = []
        holder: list[FirehoseBuffer] = []

        def on_failure(events: list[bytes], reason: str) -> None:
            closed.append(holder[0].close(5.0))

        buf = FirehoseBuffer(BufferConfig(
            streams=("absent",), endpoint_url=fh.endpoint_url, region="us-east-1",
            linger_seconds=0.05, on_failure=on_failure,
        ))
        holder.append(buf)
        buf.put({"a": 1})  # its stream does not exist: a 4xx, then on_failure
        wait_for(lambda: bool(closed), 10.0, "on_failure to close the buffer")
        worker = buf._worker.thread
        assert worker is not None
        worker.join(5.0)
        assert not worker.is_alive()

        def ours() -> list[str]:
            return [t.name for t in threading.enumerate()
                    if t.name.startswith("firehose-buffer-") and t.is_alive()]

        deadline = time.monotonic() + 3.0
        while ours() and time.monotonic() < deadline:
            time.sleep(0.02)
        left = ours()
        buf.close(5.0)  # lets the fixture see a clean end; the assertion is on `left`
    assert left == []
