"""put() called while the fork hook of the child is making the buffer anew.

The fork hook runs user code: ``client_factory`` (README: "pass client_factory if you bring
your own client, so the child can make a fresh one"), and whatever the garbage collector or a
logging handler runs meanwhile. Applications ship their logs through
``firehose_buffer.logging.FirehoseHandler``, so a factory that logs (``log.info("making a
Firehose client")``) calls put() on the buffer being made anew. README promises put() may be
re-entered ("a put() that re-enters one in progress on the same thread never waits for it"),
and that after ``os.fork()`` the child gets a working buffer.

The scenario forks, so it runs in a child Python process (the test process never forks).
"""

from __future__ import annotations

import textwrap

import pytest
from children import run_child

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, logging, os, time
    from firehose_buffer import BufferConfig, FirehoseBuffer
    from firehose_buffer.emulator import LocalFirehose
    from firehose_buffer.logging import FirehoseHandler

    with LocalFirehose(streams=["fork-log-0"]) as fh:
        app = logging.getLogger("app")
        app.setLevel(logging.INFO)

        def make_client():
            app.info("making a Firehose client in process %d", os.getpid())
            return fh.client()

        buf = FirehoseBuffer(BufferConfig(streams=("fork-log-0",), region="us-east-1",
                                          linger_seconds=0.05), client_factory=make_client)
        app.addHandler(FirehoseHandler(buf))
        buf.put({"parent": 1})
        assert buf.flush(5)
        pid = os.fork()
        if pid == 0:
            buf.put({"child": 1})
            os._exit(0 if buf.close(5) else 3)
        status = None
        deadline = time.monotonic() + 5
        while status is None and time.monotonic() < deadline:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
            else:
                time.sleep(0.05)
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        buf.close(5)
        lines = fh.delivered_lines("fork-log-0")
    print(json.dumps({"hung": status is None, "status": status,
                      "child_event": b'{"child":1}' in lines}))
""")


def test_a_client_factory_that_logs_through_the_buffer_does_not_hang_the_child() -> None:
    """The child's fork hook calls the factory, which logs through a FirehoseHandler on the
    same buffer: put() re-entered the hook and waited for the hook's own non-reentrant lock,
    so the child hung inside ``os.fork()`` for good."""
    out = run_child(SCRIPT, deadline=30)
    assert not out["hung"], "the forked child hung in the fork hook (killed after 5 s)"
    assert out["status"] == 0, f"the child's close() failed: exit status {out['status']}"
    assert out["child_event"], "the child's event was not delivered"
