"""User code that calls back into the buffer never deadlocks it: regression tests for the
hardening issue, items 4 and 5.

Nothing that can run user code (logging handlers, ``on_failure``) may run under the buffer's
lock, and the worker thread never waits for room only it can make. Every wait here has a
deadline; a deadlock fails the test instead of hanging it (item 4 runs in a child process,
which is killed at its deadline).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import accepted_lines, wait_for

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
GOOD, MISSING = "reentry-good", "reentry-missing"


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    # MISSING is never created: every call to it is answered 4xx ResourceNotFoundException.
    with LocalFirehose(streams=[GOOD], data_dir=tmp_path / "delivered",
                       keep_records=True) as fh:
        yield fh


def _delivered(firehose: LocalFirehose, stream: str = GOOD) -> list[bytes]:
    return accepted_lines(firehose, stream)




LOGGING_CHILD = textwrap.dedent("""
    import json, logging, sys
    from collections.abc import Mapping
    from firehose_buffer import BufferConfig, FirehoseBuffer
    from firehose_buffer.logging import FirehoseHandler

    endpoint = sys.argv[1]
    reported = []
    buffer = FirehoseBuffer(BufferConfig(
        streams=("reentry-good", "reentry-missing"), endpoint_url=endpoint, region="us-east-1",
        router=lambda e: 1 if isinstance(e, Mapping) and e.get("bad") else 0,
        linger_seconds=0.05, on_failure=lambda events, reason: reported.extend(events),
    ))
    # A custom exclude that leaves out firehose_buffer: the library's own log records go
    # into the same buffer.
    handler = FirehoseHandler(buffer, exclude=("botocore", "boto3", "urllib3", "s3transfer"))
    logging.getLogger("firehose_buffer").addHandler(handler)

    def step(name):
        print("step", name, flush=True)

    step("put-bad")
    buffer.put({"bad": True, "seq": -1})      # its stream is missing: the worker logs a 4xx
    step("flush-1")
    first = buffer.flush(5.0)
    step("put-good")
    for seq in range(50):
        buffer.put({"seq": seq})
    step("flush-2")
    second = buffer.flush(5.0)
    step("close")
    closed = buffer.close(5.0)
    stats = buffer.stats()
    # first covers the failed event: done (nothing pending), not all delivered.
    print(json.dumps({"first": first.pending == 0 and first.failed == 1, "second": bool(second),
                      "closed": bool(closed),
                      "put": stats.events_put, "delivered": stats.events_delivered,
                      "failed": stats.events_failed, "reported": len(reported),
                      "reported_seqs": sorted(json.loads(e).get("seq", 0) for e in reported)}),
          flush=True)
""")


def test_logging_handler_that_puts_into_the_same_buffer_does_not_deadlock(
    firehose: LocalFirehose,
) -> None:
    """Issue item 4: the worker logged while holding the buffer's lock, so a FirehoseHandler
    (with a custom exclude that leaves out firehose_buffer) putting into the same buffer
    deadlocked the worker and every later put() forever on the first 4xx. No deadlock, and
    every event accepted (the handler's included) is delivered or reported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    child = subprocess.Popen(
        [sys.executable, "-c", LOGGING_CHILD, firehose.endpoint_url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = child.communicate(timeout=12)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        steps = [line for line in out.splitlines() if line.startswith("step ")]
        pytest.fail(f"deadlocked: the child was still at {steps[-1:]} after 12 s")
    assert child.returncode == 0, err[-3000:]
    result = orjson.loads(out.splitlines()[-1])
    assert result["first"] and result["second"] and result["closed"], result
    assert result["reported_seqs"] == [-1], result
    assert result["failed"] == result["reported"] == 1
    assert result["put"] == result["delivered"] + result["failed"], result
    good = [orjson.loads(line) for line in _delivered(firehose)]
    assert sorted(e["seq"] for e in good if "seq" in e) == list(range(50))
    assert len(good) == result["delivered"]


def test_put_from_on_failure_never_waits_for_room_only_the_worker_can_make(
    firehose: LocalFirehose,
) -> None:
    """Issue item 5: put() from on_failure, with the buffer full and on_full="block", blocked
    the worker on itself for max_block_seconds: no deliveries meanwhile, producers got
    BufferFullError, the re-put events were dropped. On the worker thread put() must never
    wait for room: it takes the event or refuses it at once; what it took is delivered."""
    max_block = 3.0
    outcomes: list[tuple[str, float]] = []
    done = threading.Event()
    holder: list[FirehoseBuffer] = []

    def on_failure(events: list[bytes], reason: str) -> None:
        # Re-route each failed event to the good stream, 7 KB each: ten of them need more
        # room than max_buffer_bytes, and only the worker (running this) can make room.
        for event in events:
            started = time.monotonic()
            try:
                taken = holder[0].put({"again": orjson.loads(event)["seq"], "pad": "r" * 7000})
                outcome = "taken" if taken else "dropped"
            except BufferFullError:
                outcome = "refused"
            outcomes.append((outcome, time.monotonic() - started))
        done.set()

    def router(event: Any) -> int:
        return 1 if isinstance(event, Mapping) and event.get("bad") else 0

    buffer = FirehoseBuffer(BufferConfig(
        streams=(GOOD, MISSING), endpoint_url=firehose.endpoint_url, region="us-east-1",
        router=router, linger_seconds=0.05, max_record_bytes=16_384,
        max_buffer_bytes=65_536, on_full="block", max_block_seconds=max_block,
        on_failure=on_failure,
    ))
    holder.append(buffer)
    try:
        for seq in range(10):
            buffer.put({"bad": True, "seq": seq})
        wait_for(done.is_set, 4 * max_block + 5, "on_failure to finish re-putting")
        for seq in range(100, 105):
            assert buffer.put({"seq": seq})
        flushed = buffer.flush(10.0)
    finally:
        buffer.close(5.0)
    assert len(outcomes) == 10, outcomes
    waited = [(o, round(t, 2)) for o, t in outcomes if t >= max_block / 3]
    assert waited == [], (
        f"put() on the worker thread waited for room only the worker could make: {waited}"
    )
    assert "dropped" not in {o for o, _ in outcomes}
    assert flushed
    again = sorted(orjson.loads(line).get("again", -1) for line in _delivered(firehose))
    taken = sum(1 for o, _ in outcomes if o == "taken")
    assert len([a for a in again if a >= 0]) == taken, (again, outcomes)
