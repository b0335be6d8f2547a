"""Durable compressed records that find no room, while records fail: flush() and close() hang.

With ``durable=True`` every compressed record's frame is held apart (``hold_apart``), and a
line longer than a segment whose frame finds no room waits in ``Scheduler._unframed``; the
scheduler is then *starved* until memory is freed (``acc.freed`` moves). A durable record
that fails is not let go in the tick: its memory is freed only once the failure sink has
spooled its lines (``Engine.let_go`` -> ``Scheduler.settle``), after the tick. That tick saw
the scheduler still starved, so it asked for no wake-up (``_next_wake`` skips a held flush
and staged lines while starved), and nothing wakes the worker once ``settle`` frees the
memory: the waiting line is never framed, the held flush mark never released, and flush()
runs out its whole timeout with the line pending (close() likewise uses up its flush time
and fails the line as ``closed``). Without compression the same run answers at once.
"""

from __future__ import annotations

import base64
import contextlib
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import FaultRates, LocalFirehose

pytestmark = pytest.mark.slow

STREAM = "ds-0"
#: One stream's segment is a quarter of the bound (64 KiB), and so is the worker's reserve.
BOUND = 256 * 1024


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@contextlib.contextmanager
def _two_events_put(tmp_path: Path, codec: str | None) -> Iterator[FirehoseBuffer]:
    """Every call answered 503: a small event's record is sent (and will be retried), then
    one incompressible 120 KB event is put; the buffer is closed by the caller."""
    rnd = random.Random(7)
    big = {"pad": base64.b64encode(rnd.randbytes(90_000)).decode()}
    with LocalFirehose(streams=[STREAM], fault_rates=FaultRates(http_503=1.0), seed=1) as fh:
        buffer = FirehoseBuffer(BufferConfig(
            streams=(STREAM,), endpoint_url=fh.endpoint_url, region="us-east-1",
            compression=codec, durable=True, spool_dir=str(tmp_path / "spool"),  # type: ignore[arg-type]
            max_buffer_bytes=BOUND, max_record_bytes=250_000, linger_seconds=0.05,
            record_ttl_seconds=1.0, retry_initial_backoff_seconds=0.05,
            retry_max_backoff_seconds=0.1, max_block_seconds=2.0,
        ))
        assert buffer.put({"n": 1})
        assert _wait_for(lambda: buffer.stats().requests_sent >= 1, 5.0), \
            "the first record was never sent"
        assert buffer.put(big)
        yield buffer


@pytest.mark.parametrize("codec", ["zstd", "gzip", None], ids=["zstd", "gzip", "plain"])
def test_a_durable_line_waiting_for_room_is_framed_once_a_failure_frees_it(
    tmp_path: Path, codec: str | None,
) -> None:
    """Every call answered 503, record_ttl_seconds=1. A small event's record is retried
    (outstanding); then one incompressible 120 KB event (longer than the 64 KiB segment) is
    put: the line fits the bound with the reserve, its ~90 KB frame does not (64 KiB segment
    + 120 KB line + 90 KB frame > 256 KiB) while the first record is outstanding, so it
    waits. The first record expires after 1 s and is spooled, which frees the memory. The
    flush covers both events: within 5 s both must have an outcome (both expire; both are
    spooled). Compressed (zstd and gzip), it returned FlushResult(delivered=0, failed=1,
    pending=1) after its full 5 s (the long line never left the worker: framed at once by
    the next flush, which wakes it); without compression, (0, 2, 0) after about 1 s."""
    with _two_events_put(tmp_path, codec) as buffer:
        try:
            started = time.monotonic()
            result = buffer.flush(5.0)
            took = time.monotonic() - started
            stats = buffer.stats()
        finally:
            buffer.close(2.0)
    assert result.pending == 0, (
        f"flush(5.0) returned {result} after {took:.1f} s ({codec}): 2 events put, "
        f"{stats.events_failed} failed, {stats.events_buffered} still buffered")
    assert (result.delivered, result.failed) == (0, 2), result
    assert stats.events_spooled == 2, stats


@pytest.mark.parametrize("codec", ["zstd", "gzip", None], ids=["zstd", "gzip", "plain"])
def test_close_gives_a_durable_line_waiting_for_room_its_chance(
    tmp_path: Path, codec: str | None,
) -> None:
    """The same two events, then close(5.0) instead of flush(): it has time for both to
    expire (record_ttl_seconds=1) and be spooled, as without compression (about 1 s, both
    ``record_ttl_expired``). Compressed, close() waited out its flush time (4.0 s of 5) and
    then failed the long line as ``closed_before_delivery``: it was never sent."""
    with _two_events_put(tmp_path, codec) as buffer:
        started = time.monotonic()
        result = buffer.close(5.0)
        took = time.monotonic() - started
        stats = buffer.stats()
    reasons = {str(k): v for k, v in stats.failures_by_reason.items()}
    assert reasons == {"record_ttl_expired": 2}, (
        f"close(5.0) took {took:.1f} s and returned {result} ({codec}): failures {reasons}")
    assert result.pending == 0, result
    assert stats.events_spooled == 2, stats
