"""The default timeouts nest: one call that never finishes (a server trickling its answer a
byte at a time, which no per-read timeout trips) is cut off and retried in time for the
default ``flush()`` and the exit hook's default ``exit_timeout_seconds`` to deliver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_server import Answer, Behaviour, HostileFirehose

from firehose_buffer import BufferConfig, FirehoseBuffer

ROOT = Path(__file__).resolve().parent.parent
STREAM = "nest-0"
COUNT = 50


@pytest.fixture
def trickling_firehose() -> Iterator[HostileFirehose]:
    # The first call's answer trickles for ever; its records are not stored, so the retry
    # that a timeout allows delivers them once.
    with HostileFirehose(trickle_interval=0.5) as server:
        server.script(Answer(Behaviour.TRICKLE, store=False))
        yield server


@pytest.mark.slow
def test_default_flush_outlasts_one_trickling_call(trickling_firehose: HostileFirehose) -> None:
    """``flush()`` with its default timeout, while the service trickles one answer: the user
    expects the call to be cut off (``call_timeout_seconds``) and retried within the flush.
    A default call timeout longer than the default flush (10 s) would make the flush give
    up with everything pending while the call is still trickling."""
    buffer = FirehoseBuffer(BufferConfig(
        streams=(STREAM,), endpoint_url=trickling_firehose.endpoint_url, region="us-east-1",
    ))
    try:
        for seq in range(COUNT):
            buffer.put({"seq": seq})
        result = buffer.flush()
    finally:
        buffer.close(1.0)
    config = buffer.config
    assert result, (
        f"the default flush() returned {result}: one call trickling its answer outlasted it "
        f"(call_timeout_seconds={config.call_timeout_seconds})"
    )
    assert len(trickling_firehose.lines(STREAM)) == COUNT


EXITING_CHILD = """
    import sys
    from firehose_buffer import BufferConfig, FirehoseBuffer
    buffer = FirehoseBuffer(BufferConfig(streams=("nest-0",), endpoint_url=sys.argv[1],
                                         region="us-east-1"))
    for seq in range(int(sys.argv[2])):
        buffer.put({"seq": seq})
    # The process ends here: the exit hook closes the buffer within exit_timeout_seconds.
"""


@pytest.mark.slow
def test_default_exit_outlasts_one_trickling_call(trickling_firehose: HostileFirehose) -> None:
    """A script that puts events and ends, with every setting at its default, while the
    service trickles one answer: the exit hook should cut the call off, retry and deliver
    within ``exit_timeout_seconds``: a call timeout longer than the exit timeout (5 s) would
    fail the events at exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXITING_CHILD), trickling_firehose.endpoint_url,
         str(COUNT)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    delivered = len(trickling_firehose.lines(STREAM))
    assert delivered == COUNT, (
        f"{delivered} of {COUNT} events delivered at exit with default timeouts; "
        f"log: {done.stderr[-600:]!r}"
    )
