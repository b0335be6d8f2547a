"""Pure functions from buffered lines to records and from records to batches.

No I/O, no threads, no clock: sizes in, cut points out. Firehose bills each record rounded up
to a 5,120-byte step, so where a record ends decides what it costs; these functions choose.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from .limits import BILLING_STEP_BYTES

#: How far below a full record a cut may move to land closer to a billing step. Four steps
#: give about ten candidate boundaries at 0.5-4 KB lines, so the best one wastes a few hundred
#: bytes instead of 2.5 KB on average, while records stay within 20 KB of full: the byte quota
#: is counted per second and records are indivisible, so two records of half a second's quota
#: that fall 40 KB short each would leave 8% of the quota unused.
ALIGN_WINDOW_BYTES = 4 * BILLING_STEP_BYTES


def billed_bytes(size: int) -> int:
    """What Firehose bills for one record of ``size`` bytes."""
    return -(-size // BILLING_STEP_BYTES) * BILLING_STEP_BYTES


def waste(size: int) -> int:
    """Bytes billed but not sent for one record of ``size`` bytes."""
    return -size % BILLING_STEP_BYTES


def prefix_sums(sizes: Sequence[int]) -> list[int]:
    """``[0, s0, s0+s1, ...]``: the byte offset of every line boundary."""
    return list(accumulate(sizes, initial=0))


def best_cut(prefix: Sequence[int], start: int, low: int, high: int) -> int:
    """The end index in ``[low, high]`` whose record ``lines[start:end]`` wastes least.

    Ties go to the longer record: fewer records, fewer requests.
    """
    base = prefix[start]
    best, best_waste = high, waste(prefix[high] - base)
    for end in range(high - 1, low - 1, -1):
        if best_waste == 0:
            break
        w = waste(prefix[end] - base)
        if w < best_waste:
            best, best_waste = end, w
    return best


def cut_records(
    sizes: Sequence[int],
    must: int,
    max_bytes: int,
    max_events: int,
    window_bytes: int = ALIGN_WINDOW_BYTES,
) -> list[int]:
    """Split buffered lines into records to send now; return each record's end index.

    ``sizes`` are the byte lengths of the lines in order (each at most ``max_bytes``).
    The first ``must`` lines have to leave now (linger expired, or a flush). Lines after the
    last returned end stay buffered for a later, fuller record.

    - A full record (the next line would not fit, or it holds ``max_events`` lines) is always
      cut, at the boundary within ``window_bytes`` of full that wastes least.
    - The rest is cut only as far as ``must`` requires, at the boundary in ``[must, len]`` that
      wastes least: the younger tail waits for the next record.
    """
    n = len(sizes)
    prefix = prefix_sums(sizes)
    ends: list[int] = []
    start = 0
    while start < n:
        fit_end = min(bisect_right(prefix, prefix[start] + max_bytes) - 1, start + max_events)
        fit_end = max(fit_end, start + 1)  # a line alone always fits: put() checked its size
        full = fit_end < n or fit_end - start == max_events or (
            prefix[fit_end] - prefix[start] == max_bytes
        )
        if full:
            floor_offset = prefix[fit_end] - window_bytes
            low = max(start + 1, bisect_right(prefix, floor_offset, start, fit_end))
            end = best_cut(prefix, start, low, fit_end)
        elif must > start:
            end = best_cut(prefix, start, must, n)
        else:
            break
        ends.append(end)
        start = end
    return ends


def take_batch(record_sizes: Sequence[int], max_records: int, max_bytes: int) -> int:
    """How many leading records fit one PutRecordBatch (at least one if any)."""
    total = 0
    count = 0
    for size in record_sizes:
        if count == max_records or (count and total + size > max_bytes):
            break
        total += size
        count += 1
    return count
