"""Time a process does not run does not count against ``record_ttl_seconds``.

AWS Lambda freezes an execution environment between invocations, and an operator may
SIGSTOP a process: events put before the freeze never had a chance to be sent, and a
healthy endpoint must get them all after the thaw, none failed as ``record_ttl_expired``.
The child is a real Python process, frozen with SIGSTOP and thawed with SIGCONT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from support import accepted_lines

from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
STREAM = "freeze-0"


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=[STREAM], data_dir=tmp_path / "delivered",
                       keep_records=True) as fh:
        yield fh


FREEZE_CHILD = textwrap.dedent("""
    import json, sys
    from firehose_buffer import BufferConfig, FirehoseBuffer

    reported = []
    buffer = FirehoseBuffer(BufferConfig(
        streams=("freeze-0",), endpoint_url=sys.argv[1], region="us-east-1",
        linger_seconds=1.0, record_ttl_seconds=3.0,
        on_failure=lambda events, reason: reported.extend((e.decode(), reason) for e in events),
    ))
    for seq in range(200):
        buffer.put({"seq": seq})
    print("put", flush=True)
    sys.stdin.readline()   # frozen and thawed by the parent in between
    flushed = buffer.flush(10.0)
    stats = buffer.stats()
    buffer.close(5.0)
    print(json.dumps({"flushed": bool(flushed), "delivered": stats.events_delivered,
                      "failures": dict(stats.failures_by_reason),
                      "reported": len(reported)}), flush=True)
""")


def test_freeze_does_not_expire_events_that_never_had_a_chance(
    firehose: LocalFirehose,
) -> None:
    """200 events put with linger_seconds=1 (still in memory), then SIGSTOP for 4 s, longer
    than record_ttl_seconds=3, then SIGCONT: all 200 are delivered, none failed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    child = subprocess.Popen(
        [sys.executable, "-c", FREEZE_CHILD, firehose.endpoint_url],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "put"
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(4.0)  # the freeze itself, longer than record_ttl_seconds=3
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate("go\n", timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-3000:]
    result = orjson.loads(out.strip().splitlines()[-1])
    delivered = {int(orjson.loads(line)["seq"]) for line in accepted_lines(firehose, STREAM)}
    assert result["failures"] == {}, (
        f"after a freeze, with a healthy endpoint: {result['failures']} "
        f"({len(delivered)} of 200 delivered)"
    )
    assert delivered == set(range(200))
    assert result["flushed"]
