"""User code the buffer runs (logging handlers, ``on_failure``) may call back into it: that
never deadlocks it, never makes the worker wait for room only it can make, and the errors say
what happened.

Nothing that can run user code may run under one of the library's locks. Every wait here has
a deadline; a deadlock fails the test instead of hanging it (the logging scenarios run in a
child process, which is killed at its deadline).
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
from children import run_child
from counters import identity_gap
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
    """A FirehoseHandler (with a custom exclude that leaves out firehose_buffer) on the same
    buffer: the worker's log line about a 4xx becomes a put() into the buffer. A worker that
    logged while holding the buffer's lock would deadlock itself and every later put() on
    the first 4xx. No deadlock, and every event accepted (the handler's included) is
    delivered or reported."""
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


SPILL_LOGGING_CHILD = textwrap.dedent("""
    import dataclasses, json, logging, os, resource, signal, sys
    from firehose_buffer import BufferConfig, FirehoseBuffer
    from firehose_buffer.logging import FirehoseHandler

    endpoint, spool, how = sys.argv[1:4]
    buf = FirehoseBuffer(BufferConfig(
        streams=("reentry-good",), endpoint_url=endpoint, region="us-east-1",
        max_record_bytes=10_000, max_buffer_bytes=20_000, on_full="spill", spool_dir=spool,
        linger_seconds=0.05))
    if how == "cannot-create":
        # A file where the stream's spool directory goes: no spool file can be made.
        open(os.path.join(spool, "reentry-good"), "w").close()
    else:
        # The disk fills after 8 KB: writes fail with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    logging.getLogger("firehose_buffer").addHandler(FirehoseHandler(buf, exclude=()))
    out = {"accepted": [], "refused": 0}
    # 3,000 events of 40 bytes into a 20 KB buffer: most of them spill. When one does not
    # fit, the log record that says the spill failed (200 bytes) does not fit either.
    for n in range(3000):
        heartbeat()
        if buf.put({"b": "user", "n": n, "pad": "x" * 16}):
            out["accepted"].append(n)
        else:
            out["refused"] += 1
    heartbeat(12)
    out["flushed"] = bool(buf.flush(10))
    heartbeat(12)
    buf.close(10)
    s = buf.stats()
    out["counters"] = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                       if isinstance(getattr(s, f.name), int)}
    print(json.dumps(out))
""")


def _user_events(lines: list[bytes]) -> list[int]:
    return [e["n"] for e in map(orjson.loads, lines) if e.get("b") == "user"]


@pytest.mark.parametrize("failure", ["cannot-create", "cannot-write"])
def test_a_handler_shipping_the_librarys_logs_does_not_deadlock_a_failing_spill(
    firehose: LocalFirehose, tmp_path: Path, failure: str,
) -> None:
    """With ``on_full="spill"``, put() on a full buffer writes the event to the spool; when
    the spool cannot keep it (no file can be created, the disk is full) it logs why. A
    handler shipping every logger's records into the same buffer turns that log record into
    another put(), which spills again, on the same thread, while the first spill is still in
    progress: a spool that logged under its lock would wait for that lock forever. The
    process goes on; what could be neither buffered nor spilled is refused with a count; the
    rest is delivered or kept in the spool."""
    spool = tmp_path / "spool"
    spool.mkdir()
    out = run_child(SPILL_LOGGING_CHILD, firehose.endpoint_url, str(spool), failure,
                    deadline=30)
    assert out["refused"] > 0, "the spool never failed: the test did not test anything"
    delivered = _user_events(_delivered(firehose))
    spooled = _user_events([line for path in sorted(spool.glob(f"{GOOD}/*.jsonl"))
                            for line in path.read_bytes().splitlines()])
    missing = sorted(set(out["accepted"]) - set(delivered) - set(spooled))
    assert missing == [], f"accepted, then neither delivered nor spooled: {missing[:10]}"
    counters = out["counters"]
    assert counters["events_dropped"] >= out["refused"], counters
    assert counters["events_buffered"] == 0 and out["flushed"]
    assert identity_gap(counters) is None, identity_gap(counters)


def test_put_from_on_failure_never_waits_for_room_only_the_worker_can_make(
    firehose: LocalFirehose,
) -> None:
    """put() from on_failure (the worker thread) with the buffer full and on_full="block":
    only the worker makes room, and it is busy running the callback. A put() that waited
    max_block_seconds there would stop deliveries meanwhile, make producers' puts fail and
    drop the re-put events. It takes the event or refuses it at once, with a
    BufferFullError that does not claim the buffer "stayed full for max_block_seconds"
    (which would send whoever reads it after the wrong cause); what it took is delivered."""
    max_block = 3.0
    #: (what became of the event, seconds put() took, the error's message)
    outcomes: list[tuple[str, float, str]] = []
    done = threading.Event()
    holder: list[FirehoseBuffer] = []

    def on_failure(events: list[bytes], reason: str) -> None:
        # Re-route each failed event to the good stream twice, 7 KB each: twenty of them
        # need more room than max_buffer_bytes, and only the worker (running this) can make
        # room.
        for event in events:
            for copy in range(2):
                started = time.monotonic()
                message = ""
                try:
                    again = {"again": orjson.loads(event)["seq"], "copy": copy,
                             "pad": "r" * 7000}
                    outcome = "taken" if holder[0].put(again) else "dropped"
                except BufferFullError as exc:
                    outcome, message = "refused", str(exc)
                outcomes.append((outcome, time.monotonic() - started, message))
        if len(outcomes) >= 20:
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
    assert len(outcomes) == 20, outcomes
    kinds = {o for o, _, _ in outcomes}
    assert "refused" in kinds, "the buffer never filled: the test did not test anything"
    waited = [(o, round(t, 2)) for o, t, _ in outcomes if t >= max_block / 3]
    assert waited == [], (
        f"put() on the worker thread waited for room only the worker could make: {waited}"
    )
    false_claims = [m for o, _, m in outcomes if o == "refused" and "stayed full" in m]
    assert false_claims == [], f"put() raised at once but said it had waited: {false_claims[:2]}"
    assert "dropped" not in kinds
    assert flushed
    again = [e for e in map(orjson.loads, _delivered(firehose)) if "again" in e]
    taken = sum(1 for o, _, _ in outcomes if o == "taken")
    assert len(again) == taken, (again, outcomes)
