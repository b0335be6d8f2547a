"""What a close() that ran out of time leaves behind.

README: close() "returns within timeout"; what it could not hand over "is logged with its
number and counted in events_lost"; then the threads stop. Here the worker is held in a slow
``on_failure`` (handing over an earlier failure) when close()'s time runs out: close() counts
the events it still holds as lost, and the buffer must not go on sending afterwards (events
counted lost turning up delivered), nor keep threads running once close() has returned.
"""

from __future__ import annotations

import threading
import time

import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import Fault, LocalFirehose

pytestmark = pytest.mark.slow

STREAM = "gave-up-0"
CALLBACK_SECONDS = 2.0


def test_after_close_gave_up_nothing_counted_lost_is_sent_and_no_thread_runs() -> None:
    """100 events fail (a 400) and go to an on_failure that takes 2 s; 100 more are put;
    close(0.5) gives up and counts those 100 as lost. Once the callback returns, the worker
    went on in the STOPPED state, delivered the 100 events counted lost, started a new
    sender thread, and never ended."""
    handed: list[bytes] = []
    in_callback = threading.Event()
    callback_done = threading.Event()

    def on_failure(events: list[bytes], reason: str) -> None:
        handed.extend(events)
        in_callback.set()
        time.sleep(CALLBACK_SECONDS)  # a slow callback: what the scenario is about
        callback_done.set()

    with LocalFirehose(streams=[STREAM]) as fh:
        fh.script(Fault.http_error(400, code="InvalidArgumentException"))
        buffer = FirehoseBuffer(BufferConfig(
            streams=(STREAM,), endpoint_url=fh.endpoint_url, region="us-east-1",
            linger_seconds=0.05, on_failure=on_failure,
        ))
        try:
            for seq in range(100):
                buffer.put({"first": seq})
            assert in_callback.wait(5.0), "the first call did not fail"
            for seq in range(100):
                buffer.put({"second": seq})
            buffer.close(0.5)
            lost = buffer.stats().events_lost
            assert lost == 100, f"close(0.5) counted {lost} lost, expected the 100 it held"
            assert callback_done.wait(CALLBACK_SECONDS + 5.0)
            # The worker returns from the callback and must end; it had 2 s more to send.
            deadline = time.monotonic() + 2.0
            while _threads() and time.monotonic() < deadline:
                time.sleep(0.02)
            running = _threads()
            stats = buffer.stats()
            delivered = len(fh.delivered_lines(STREAM))
        finally:
            buffer.close(1.0)
    assert delivered == 0 and stats.events_delivered == 0, (
        f"{delivered} events delivered after close() counted {lost} lost "
        f"(events_delivered {stats.events_delivered})"
    )
    assert not running, f"threads still running after close() returned: {running}"


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("firehose-buffer-"))
