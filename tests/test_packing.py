"""Properties of the packer: limits, order, whole lines, billing, cut choice, linger."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from simulation import Simulation

from firehose_buffer import billed_bytes
from firehose_buffer._core.packing import ALIGN_WINDOW_BYTES, cut_records, take_batch, waste
from firehose_buffer._core.scheduler import Batch
from firehose_buffer._service.firehose import FIREHOSE
from firehose_buffer.config import BufferConfig

BILLING_STEP_BYTES = FIREHOSE.billing_step
MAX_BATCH_BYTES = FIREHOSE.max_batch_bytes
MAX_BATCH_RECORDS = FIREHOSE.max_batch_records
MAX_RECORD_BYTES = FIREHOSE.max_record_bytes

FAST = settings(max_examples=300, deadline=None)


@st.composite
def packing_inputs(draw: st.DrawFn) -> tuple[list[int], int, int, int, int]:
    """Line sizes, must, max_bytes, max_events, window: small enough that records fill."""
    max_bytes = draw(st.integers(min_value=64, max_value=6 * BILLING_STEP_BYTES))
    max_events = draw(st.integers(min_value=1, max_value=60))
    sizes = draw(st.lists(st.integers(min_value=1, max_value=max_bytes), max_size=120))
    must = draw(st.integers(min_value=0, max_value=len(sizes)))
    window = draw(st.sampled_from([0, 1, BILLING_STEP_BYTES, 3 * BILLING_STEP_BYTES,
                                   ALIGN_WINDOW_BYTES]))
    return sizes, must, max_bytes, max_events, window


def _records(sizes: Sequence[int], ends: Sequence[int]) -> list[tuple[int, int]]:
    starts = [0, *ends[:-1]] if ends else []
    return list(zip(starts, ends, strict=True))


def _is_full(sizes: Sequence[int], start: int, max_bytes: int, max_events: int) -> bool:
    """Whether lines from ``start`` on hold a record that cannot grow: cutting is due."""
    total = 0
    for count, size in enumerate(sizes[start:], start=1):
        total += size
        if total > max_bytes:
            return True
        if count == max_events or total == max_bytes:
            return True
    return False


@given(st.integers(min_value=0, max_value=10**9))
@example(0)
@example(1)
@example(BILLING_STEP_BYTES)
@example(BILLING_STEP_BYTES + 1)
def test_billed_bytes_rounds_up_to_the_5120_byte_step(n: int) -> None:
    assert billed_bytes(n) == math.ceil(n / 5120) * 5120
    assert waste(n) == billed_bytes(n) - n
    assert 0 <= waste(n) < BILLING_STEP_BYTES


@FAST
@given(packing_inputs())
def test_records_respect_limits_and_keep_every_line_whole_and_in_order(
    args: tuple[list[int], int, int, int, int],
) -> None:
    sizes, must, max_bytes, max_events, window = args
    ends = cut_records(sizes, must, max_bytes, max_events, window)
    assert ends == sorted(set(ends)), "ends strictly increase"
    assert all(0 < e <= len(sizes) for e in ends)
    for start, end in _records(sizes, ends):
        assert 1 <= end - start <= max_events
        assert sum(sizes[start:end]) <= max_bytes
    # Lines are indices, so a cut can never split one; joining the records' lines gives
    # exactly the leading lines in order, and the rest stays behind as a suffix.
    sent = ends[-1] if ends else 0
    assert [i for s, e in _records(sizes, ends) for i in range(s, e)] == list(range(sent))


@FAST
@given(packing_inputs())
def test_lines_due_leave_and_younger_lines_stay_only_when_allowed(
    args: tuple[list[int], int, int, int, int],
) -> None:
    sizes, must, max_bytes, max_events, window = args
    ends = cut_records(sizes, must, max_bytes, max_events, window)
    sent = ends[-1] if ends else 0
    assert sent >= must, "every line past its linger deadline goes now"
    # What stays behind is a record still able to grow: not full in bytes nor in events.
    assert not _is_full(sizes, sent, max_bytes, max_events)


@FAST
@given(packing_inputs())
def test_each_cut_wastes_least_among_the_boundaries_it_was_allowed(
    args: tuple[list[int], int, int, int, int],
) -> None:
    sizes, must, max_bytes, max_events, window = args
    ends = cut_records(sizes, must, max_bytes, max_events, window)
    for start, end in _records(sizes, ends):
        if _is_full(sizes, start, max_bytes, max_events):
            # A full record may end anywhere within ``window`` bytes of the longest that fits.
            fit = start
            while (fit < len(sizes) and fit - start < max_events
                   and sum(sizes[start:fit + 1]) <= max_bytes):
                fit += 1
            longest = sum(sizes[start:fit])
            allowed = [e for e in range(start + 1, fit + 1)
                       if sum(sizes[start:e]) > longest - window or e == fit]
        else:
            # A forced cut: it must take every due line, and may take any younger one.
            allowed = list(range(max(must, start + 1), len(sizes) + 1))
        assert end in allowed
        assert waste(sum(sizes[start:end])) == min(waste(sum(sizes[start:e])) for e in allowed)


@FAST
@given(
    st.lists(st.integers(min_value=1, max_value=MAX_RECORD_BYTES), max_size=1200),
    st.integers(min_value=1, max_value=MAX_BATCH_RECORDS),
    st.integers(min_value=MAX_RECORD_BYTES, max_value=MAX_BATCH_BYTES),
)
def test_batches_hold_at_most_500_records_and_4_mib(
    sizes: list[int], max_records: int, max_bytes: int,
) -> None:
    rest = sizes
    while rest:
        count = take_batch(rest, max_records, max_bytes)
        assert 1 <= count <= min(max_records, MAX_BATCH_RECORDS)
        assert sum(rest[:count]) <= min(max_bytes, MAX_BATCH_BYTES)
        if count < len(rest) and count < max_records:
            assert sum(rest[:count + 1]) > max_bytes, "a batch takes every record that fits"
        rest = rest[count:]
    assert take_batch([], max_records, max_bytes) == 0


line_bytes = st.binary(min_size=1, max_size=3000).map(
    lambda b: b.replace(b"\n", b" ") + b"\n"
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(line_bytes, max_size=40), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=3000, max_value=40_000),
)
def test_scheduler_records_concatenate_to_the_stream_events_in_order(
    chunks: list[list[bytes]], max_events: int, max_record: int,
) -> None:

    """Through the scheduler (as the worker drives it, with simulated time): what was put
    comes out as records of whole lines, within the configured limits, in put order, and
    close takes everything."""
    config = BufferConfig(streams=("s",), max_events_per_record=max_events,
                          max_record_bytes=max_record, linger_seconds=1.0)
    assume(all(len(line) <= config.record_target_bytes for c in chunks for line in c))
    sim = Simulation(config, keyed=True)
    records: list[bytes] = []

    def keep(batch: Batch) -> None:
        records.extend(bytes(r.data) for r in batch.records)
        assert all(bytes(r.data).count(b"\n") == r.events for r in batch.records)
        assert 1 <= len(batch.records) <= config.max_batch_records

    sim.on_batch = keep
    now = 0.0
    for chunk in chunks:
        for line in chunk:
            sim.put(now, line, 0)
        now += 0.3
        sim.advance(now)
    sim.drain()
    for data in records:
        assert data.endswith(b"\n")
        assert len(data) <= config.record_target_bytes <= MAX_RECORD_BYTES
        assert 1 <= data.count(b"\n") <= max_events
    assert b"".join(records) == b"".join(b"".join(c) for c in chunks)
    assert sim.scheduler.ledger.events_delivered == sum(map(len, chunks))
    assert sim.scheduler.idle and not sim.failures
