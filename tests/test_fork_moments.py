"""A process forked at any moment of the buffer's cycle gets a buffer that keeps its promises
in the child: every event the child's put() accepts is delivered, or reported (failed,
``on_failure``, counted lost), and the child's close() returns in time.

Each scenario runs in a child Python process (the test process never forks) that serves a
``HostileFirehose`` on 127.0.0.1, brings its buffer to one moment, then forks; the forked
process puts its own events and closes; the server shows what arrived.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

FORKING = """
    import json, os, sys, threading, time
    sys.path.insert(0, sys.argv[2])
    from hostile_server import Answer, Behaviour, HostileFirehose
    from firehose_buffer import BufferConfig, FirehoseBuffer

    moment, spool = sys.argv[1], sys.argv[3]
    CHILD_EVENTS = 500

    def wait_until(predicate, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.01)

    server = HostileFirehose().start()
    reported = []
    extra = {}
    if moment == "closing_while_replaying":
        # A spool left by an earlier run, bigger than the buffer: the replay is still feeding
        # it (waiting for room) when close() starts.
        os.makedirs(os.path.join(spool, "fork-0"))
        with open(os.path.join(spool, "fork-0", "1-1-aaaa.jsonl"), "wb") as f:
            f.write(b"".join(b'{"who":"spool","seq":%d,"pad":"%s"}\\n' % (i, b"s" * 200)
                             for i in range(20000)))
        extra = {"spool_dir": spool, "max_buffer_bytes": 256 * 1024,
                 "max_record_bytes": 64 * 1024}
    buffer = FirehoseBuffer(BufferConfig(
        streams=("fork-0", "fork-1"), router=lambda e: e.get("to", 0),
        endpoint_url=server.endpoint_url, region="us-east-1", linger_seconds=30,
        call_timeout_seconds=3, on_failure=lambda events, reason: reported.extend(events),
        **extra))

    background = None
    if moment == "sleeping":
        for seq in range(1000):
            buffer.put({"who": "parent", "seq": seq, "pad": "p" * 600})
        assert buffer.flush(10.0)
        time.sleep(0.1)  # nothing arrives: the worker sleeps toward a far deadline
    elif moment == "cutting":
        for seq in range(20000):  # a burst the worker is still scanning and cutting
            buffer.put({"who": "parent", "seq": seq, "pad": "p" * 600})
    elif moment in ("sending", "flush_waiting", "closing"):
        server.script(Answer(Behaviour.HANG, store=False))
        for seq in range(1000):
            buffer.put({"who": "parent", "seq": seq, "pad": "p" * 600})
        if moment == "flush_waiting":
            background = threading.Thread(target=buffer.flush, args=(8.0,))
        elif moment == "closing":
            background = threading.Thread(target=buffer.close, args=(8.0,))
        else:
            buffer.flush(0.0)  # cut and hand over now, not after linger
        if background is not None:
            background.start()
        wait_until(lambda: server.requests_received >= 1, "the hanging call")
    elif moment == "closing_while_replaying":
        server.script(Answer(Behaviour.HANG, store=False))
        buffer.put({"who": "parent", "seq": 0, "to": 1})  # stream 1 has a segment with room
        assert not buffer.wait_for_replay(0.5)  # the replay is stuck: the buffer is full
        background = threading.Thread(target=buffer.close, args=(6.0,))
        background.start()
        time.sleep(0.3)  # close() waits up to 4.5 s for the replay to finish

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        report = {"accepted": 0}
        try:
            for seq in range(CHILD_EVENTS):
                if buffer.put({"who": "child", "seq": seq, "to": seq % 2}):
                    report["accepted"] += 1
        except Exception as exc:
            report["put_raised"] = repr(exc)
        started = time.monotonic()
        result = buffer.close(4.0)
        stats = buffer.stats()
        report.update(close_seconds=round(time.monotonic() - started, 2), result=str(result),
                      lost=stats.events_lost,
                      reported=sum(1 for e in reported if b'"child"' in e))
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        child = json.loads(pipe.read() or b"{}")
    if background is not None:
        background.join(15.0)
    buffer.close(5.0)
    server.stop()
    child["arrived"] = len({json.loads(line)["seq"] for s in ("fork-0", "fork-1")
                            for line in server.lines(s) if b'"child"' in line})
    print(json.dumps(child), flush=True)
"""

MOMENTS = ["sleeping", "cutting", "sending", "flush_waiting", "closing",
           "closing_while_replaying"]


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_child_forked_at_any_moment_keeps_every_event_it_accepts(
    moment: str, tmp_path: Path,
) -> None:
    """A prefork server or multiprocessing pool forks whenever it likes: while the buffer's
    worker sleeps, while it cuts a burst, while a call is in flight, while another thread
    waits in flush() or close(). Whatever the moment, the events the child's put() accepts
    must reach Firehose (or be reported: failed, handed to on_failure, counted lost), and
    the child's close() must end within its timeout. A child that ends up with the parent's
    half-closed buffer accepts events into memory no thread of its own will ever read."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORKING), moment, str(ROOT / "tests"),
         str(tmp_path / "spool")],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    child = orjson.loads(done.stdout.splitlines()[-1])
    accounted = child["arrived"] + child["reported"] + child["lost"]
    assert accounted >= child["accepted"], (
        f"forked while the parent was {moment}: the child's put() accepted "
        f"{child['accepted']} events, {child['arrived']} arrived, {child['reported']} were "
        f"reported, {child['lost']} counted lost; the rest vanished ({child})"
    )
    assert child["close_seconds"] <= 4.5, f"the child's close() overran its timeout: {child}"
