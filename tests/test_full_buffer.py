"""A full buffer and a dead or throttling endpoint: bounded memory, and each on_full policy
as the caller sees it and as stats count it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakes import FakeFirehose

from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer
from firehose_buffer._storage.spool import pending_files
from firehose_buffer.emulator import FaultRates, LocalFirehose

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}
MiB = 1024 * 1024

# Puts 0.5 KB events as fast as it can for a few seconds into a buffer whose endpoint refuses
# everything, and reports its peak resident memory (VmHWM) before and after.
PRESSURE = textwrap.dedent("""
    import sys, time, orjson
    from firehose_buffer import BufferConfig, FirehoseBuffer

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    endpoint, limit, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    config = BufferConfig(streams=("s", "t"), endpoint_url=endpoint, region="us-east-1",
                          max_buffer_bytes=limit, on_full="drop", linger_seconds=0.05,
                          retry_initial_backoff_seconds=0.01, retry_max_backoff_seconds=0.1)
    buf = FirehoseBuffer(config)
    event = {"n": 0, "pad": "x" * 480}
    for i in range(2000):  # warm up every code path before the baseline
        buf.put(event)
    before = hwm()
    attempted = accepted = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(2000):
            event["n"] = attempted
            attempted += 1
            accepted += buf.put(event)
    after = hwm()
    s = buf.stats()
    buf.close(0.5)
    print(orjson.dumps({"before": before, "after": after, "attempted": attempted,
                        "accepted": accepted, "dropped": s.events_dropped,
                        "requests": s.requests_sent, "delivered": s.events_delivered,
                        "bytes_buffered": s.bytes_buffered}).decode())
""")


@pytest.mark.parametrize(
    "refusal",
    [FaultRates(http_503=1.0), FaultRates(record_service_unavailable=1.0)],
    ids=["every-call-503", "every-record-throttled"],
)
def test_memory_stays_bounded_while_the_endpoint_refuses_everything(
    tmp_path: Path, refusal: FaultRates,
) -> None:
    # A few seconds, not the minutes of a real outage: at ~1 M puts/s that is already a
    # hundred times max_buffer_bytes offered, so unbounded growth could not hide.
    limit = 16 * MiB
    with LocalFirehose(streams=["s", "t"], data_dir=tmp_path / "d",
                       fault_rates=refusal, seed=1) as fh:
        done = subprocess.run([sys.executable, "-c", PRESSURE, fh.endpoint_url, str(limit),
                               "3"], env=ENV, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stderr
        refused = fh.stats()
    r = orjson.loads(done.stdout)
    offered = r["attempted"] * 500
    assert offered > 10 * limit, f"the test did not press hard enough: {r}"
    assert r["delivered"] == 0 and r["requests"] > 0
    assert r["dropped"] > 0 and r["dropped"] + r["accepted"] == r["attempted"]
    assert r["bytes_buffered"] <= limit
    growth = r["after"] - r["before"]
    # Lines are Python bytes objects (~40 bytes each on top of the data), records are joined
    # copies and a batch in flight is base64 in a JSON body: about 1.3x the bound, plus a
    # constant for the HTTP stack.
    assert growth < 1.5 * limit + 16 * MiB, (
        f"peak RSS grew by {growth / MiB:.1f} MiB with max_buffer_bytes={limit / MiB:.0f} MiB"
    )
    assert refused.records_accepted == 0 and refused.injected_faults > 0
    print(f"peak RSS growth {growth / MiB:.1f} MiB, offered {offered / MiB:.0f} MiB, "
          f"{r['requests']} refused calls")


class Gate:
    """A Firehose client that holds every call until the gate opens (an endpoint that hangs),
    then behaves like FakeFirehose."""

    def __init__(self, streams: set[str]) -> None:
        self.fake = FakeFirehose(streams)
        self.open = threading.Event()

    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]:
        if not self.open.wait(30):
            raise TimeoutError("the test never opened the gate")
        return self.fake.put_record_batch(**kwargs)


EVENT_PAD = "y" * 480


def small_config(on_full: str, spool: Path | None = None, **options: Any) -> BufferConfig:
    return BufferConfig(streams=("s",), max_record_bytes=10_000, max_buffer_bytes=20_000,
                        on_full=on_full,  # type: ignore[arg-type]
                        spool_dir=None if spool is None else str(spool),
                        linger_seconds=0.01, **options)


def fill(buf: FirehoseBuffer) -> list[int]:
    """Put events until the buffer says it is full; return the accepted ones' numbers."""
    accepted: list[int] = []
    for n in range(1000):
        try:
            if not buf.put({"n": n, "pad": EVENT_PAD}):
                return accepted
        except BufferFullError:
            return accepted
        accepted.append(n)
        if buf.stats().failures_by_reason.get("buffer_full"):
            accepted.pop()
            return accepted
    pytest.fail("the buffer never filled up")


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate({"s"})
    yield g
    g.open.set()


def numbers(lines: list[bytes]) -> list[int]:
    return [orjson.loads(line)["n"] for line in lines]


def test_block_waits_for_room_then_raises_or_succeeds(gate: Gate) -> None:
    with FirehoseBuffer(small_config("block", max_block_seconds=0.2), gate) as buf:
        accepted = fill(buf)  # the put after these waited 0.2 s and raised
        assert 30 <= len(accepted) <= 41
        s = buf.stats()
        assert (s.events_put, s.events_dropped) == (len(accepted), 0), "a raise counts nothing"
        gate.open.set()
        assert buf.flush(10)

    with FirehoseBuffer(small_config("block", max_block_seconds=30), gate) as buf:
        gate.open.clear()
        for n in range(len(accepted)):
            assert buf.put({"n": n, "pad": EVENT_PAD})
        result: list[bool] = []
        waiter = threading.Thread(
            target=lambda: result.append(buf.put({"n": 999, "pad": EVENT_PAD})))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive(), "put() on a full buffer should be waiting for room"
        gate.open.set()
        waiter.join(10)
        assert result == [True]
        assert buf.flush(10)
        s = buf.stats()
    assert s.events_put == s.events_delivered == len(accepted) + 1


def test_drop_returns_false_counts_and_warns(
    gate: Gate, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "firehose_buffer")
    with FirehoseBuffer(small_config("drop"), gate) as buf:
        accepted = fill(buf)
        assert [buf.put({"n": 1000 + i, "pad": EVENT_PAD}) for i in range(5)] == [False] * 5
        gate.open.set()
        assert buf.flush(10)
        s = buf.stats()
    assert s.events_dropped == 6
    assert s.events_delivered == len(accepted)
    # Dropped events were put too: README's identity holds.
    assert s.events_put == s.events_delivered + s.events_dropped
    assert sorted(numbers(gate.fake.lines())) == accepted
    assert any("event dropped" in r.getMessage() for r in caplog.records)


def test_raise_raises_at_once_and_counts_nothing(gate: Gate) -> None:
    with FirehoseBuffer(small_config("raise", max_block_seconds=60), gate) as buf:
        accepted = fill(buf)
        start = time.monotonic()
        with pytest.raises(BufferFullError):
            buf.put({"n": -1, "pad": EVENT_PAD})
        assert time.monotonic() - start < 10, "raise must not wait for max_block_seconds"
        gate.open.set()
        assert buf.flush(10)
        s = buf.stats()
    assert (s.events_put, s.events_dropped, s.events_failed) == (len(accepted), 0, 0)


def test_spill_keeps_overflow_on_disk_and_the_next_run_sends_it(
    gate: Gate, tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    config = small_config("spill", spool)
    with FirehoseBuffer(config, gate) as buf:
        accepted = fill(buf)  # fill() stops at the first spilled event
        spilled = [len(accepted) + i for i in range(200)]
        assert all(buf.put({"n": n, "pad": EVENT_PAD}) for n in spilled[1:])
        gate.open.set()
        assert buf.flush(10)
        s = buf.stats()
    assert s.events_put == len(accepted) + 200
    assert s.events_spooled == s.events_failed == 200
    assert s.failures_by_reason == {"buffer_full": 200}
    assert s.events_put == s.events_delivered + s.events_failed + s.events_dropped
    assert len(pending_files(spool)) == 1
    with FirehoseBuffer(config, gate) as buf:
        assert buf.wait_for_replay(10)
        assert buf.flush(10)
    assert Counter(numbers(gate.fake.lines())) == Counter(accepted + spilled)
    assert pending_files(spool) == []
