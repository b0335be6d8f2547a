"""put() racing close() on another thread: once close() has returned, put() raises
BufferClosedError; it never accepts an event that nothing will send.

Keyless buffers move a short remainder left on a stream the route has moved away from onto the
sticky stream (``_merge_tails``, in the worker's tick). A tick that began before close() sealed
the streams against put() can do that move after, and the move opens a new segment on the
sticky stream: put() writes there without a lock, close() returns, the worker stops, and the
events put() accepted from then on are neither sent nor counted lost.

The interleaving is made exact with the buffer's ``clock=`` (a public parameter): the worker's
tick is held at its first reading of the clock until close() has sealed the streams (seen by
put() raising BufferClosedError on another thread).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from firehose_buffer import BufferClosedError, BufferConfig, FirehoseBuffer, FlushResult
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

STREAMS = ("race-0", "race-1")
WORKER = "firehose-buffer-worker"


def test_put_after_close_returned_is_refused_even_when_a_tick_moved_a_remainder(
    tmp_path: Path,
) -> None:
    """The tick held at the clock sees 15 events on stream 0 (more than
    ``max_events_per_record``: the route moves to stream 1) and moves them to stream 1 after
    close() sealed both streams; put() after close() then returned True and the event was
    never delivered."""
    armed = threading.Event()
    trapped = threading.Event()
    release = threading.Event()
    closer_calls = [0]
    holder: list[FirehoseBuffer] = []

    def clock() -> float:
        now = time.monotonic()
        thread = threading.current_thread()
        if thread.name == "closer":
            closer_calls[0] += 1
            # close() reads the clock for its deadline, then (a replay found at start) once
            # more after it has provided for the hand-over, just before it seals the streams.
            if closer_calls[0] == 2:
                armed.set()
                for i in range(15):
                    holder[0].put({"tail": i})  # wakes the worker, which ticks
                trapped.wait(5.0)
        elif thread.name == WORKER and armed.is_set() and not trapped.is_set():
            caller = sys._getframe(1)
            # The first reading of a tick, before it reads the state (a later one holds no
            # tick open).
            if caller.f_code.co_name == "_step" and "now" not in caller.f_locals:
                trapped.set()
                release.wait(5.0)
        return now

    spool = tmp_path / "spool"
    (spool / STREAMS[0]).mkdir(parents=True, mode=0o700)
    (spool / STREAMS[0] / "1-1-0000.jsonl").write_bytes(b'{"old":1}\n')
    with LocalFirehose(streams=STREAMS) as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=STREAMS, endpoint_url=fh.endpoint_url, region="us-east-1",
            spool_dir=str(spool), linger_seconds=5.0, max_events_per_record=10,
        ), clock=clock)
        holder.append(buffer)
        after: list[object] = []
        try:
            assert buffer.wait_for_replay(10.0)
            assert buffer.flush(10.0)
            results: list[FlushResult] = []
            closer = threading.Thread(target=lambda: results.append(buffer.close(10.0)),
                                      name="closer")
            closer.start()
            assert trapped.wait(5.0), "the worker's tick was never held (test out of date)"
            # Sealed by close() now, or (close() waiting for the tick first) never.
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                try:
                    buffer.put({"before_seal": 1})
                except BufferClosedError:
                    break
                time.sleep(0.01)
            release.set()
            closer.join(15.0)
            assert results and results[0], f"close() did not deliver: {results}"
            with contextlib.suppress(BufferClosedError):
                after.append(buffer.put({"after": 1}))
        finally:
            release.set()
            buffer.close(5.0)
        delivered = fh.delivered_lines(STREAMS[0]) + fh.delivered_lines(STREAMS[1])
    stats = buffer.stats()
    assert not after, (
        f"put() after close() returned {after[0]}; the event was delivered: "
        f"{orjson.dumps({'after': 1}) in delivered}, events_buffered {stats.events_buffered}, "
        f"events_lost {stats.events_lost}"
    )
