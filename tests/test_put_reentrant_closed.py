"""A put() re-entering on a thread that holds one of the buffer's locks, after close().

put() from a signal handler (or a finalizer) that interrupts the same thread inside
``stats()``, ``flush()`` or ``close()`` finds the buffer's lock held by its own thread, and
hands its line to the worker instead of waiting (README: "a put() that re-enters one in
progress on the same thread never waits for it"). Once close() has returned the worker is
gone: put() must raise BufferClosedError, as it does everywhere else, and never accept an
event nothing will send or count.

The scenario uses signals, so it runs in a child process.
"""

from __future__ import annotations

import textwrap

import pytest
from children import run_child

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, signal, time
    from firehose_buffer import BufferClosedError, BufferConfig, FirehoseBuffer
    from firehose_buffer.emulator import LocalFirehose

    with LocalFirehose(streams=["closed-0"]) as fh:
        buf = FirehoseBuffer(BufferConfig(streams=("closed-0",), endpoint_url=fh.endpoint_url,
                                          region="us-east-1", linger_seconds=0.05))
        buf.put({"before": 1})
        assert buf.close(5)
        seen = {"accepted": 0, "closed": 0, "other": []}

        def handler(signum, frame):
            try:
                if buf.put({"after": 1}):
                    seen["accepted"] += 1
            except BufferClosedError:
                seen["closed"] += 1
            except Exception as exc:
                seen["other"].append(repr(exc))

        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            buf.stats()  # holds the engine's lock while it builds the snapshot
        signal.setitimer(signal.ITIMER_REAL, 0)
        stats = buf.stats()
        seen["events_put"] = stats.events_put
        seen["delivered"] = len(fh.delivered_lines("closed-0"))
    print(json.dumps(seen))
""")


def test_put_from_a_signal_handler_after_close_is_refused_not_dropped() -> None:
    """SIGALRM every 0.5 ms for 0.5 s while the closed buffer's stats() runs in a loop:
    every put() from the handler must raise BufferClosedError. 900 of ~1,000 returned True
    (handed to a worker that had stopped): not delivered, not in ``events_put``, not lost
    by any count."""
    out = run_child(SCRIPT, deadline=30)
    assert out["other"] == [], out["other"][:3]
    assert out["closed"] > 0, "the handler never ran"
    assert out["accepted"] == 0, (
        f"put() after close() returned True {out['accepted']} times; delivered after close: "
        f"{out['delivered'] - 1}, events_put {out['events_put']}"
    )
