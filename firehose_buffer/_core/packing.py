"""Pure functions from buffered lines to records and from records to batches.

No I/O, no threads, no clock: sizes in, cut points out. Firehose bills each record rounded up
to a 5,120-byte step, so where a record ends decides what it costs; these functions choose.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from .._service.firehose import FIREHOSE

BILLING_STEP_BYTES = FIREHOSE.billing_step
billed_bytes = FIREHOSE.billed
waste = FIREHOSE.waste

#: How far below a full record a cut may move to land closer to a billing step. Four steps
#: give about ten candidate boundaries at 0.5-4 KB lines, so the best one wastes a few hundred
#: bytes instead of 2.5 KB on average, while records stay within 20 KB of full: the byte quota
#: is counted per second and records are indivisible, so two records of half a second's quota
#: that fall 40 KB short each would leave 8% of the quota unused.
ALIGN_WINDOW_BYTES = 4 * BILLING_STEP_BYTES


def prefix_sums(sizes: Sequence[int]) -> list[int]:
    """``[0, s0, s0+s1, ...]``: the byte offset of every line boundary."""
    return list(accumulate(sizes, initial=0))


def best_cut(ends: Sequence[int], base: int, low: int, high: int) -> int:
    """The index ``k`` in ``[low, high]`` whose record ``[base, ends[k])`` wastes least.

    Ties go to the longer record: fewer records, fewer requests.
    """
    best, best_waste = high, waste(ends[high] - base)
    for k in range(high - 1, low - 1, -1):
        if best_waste == 0:
            break
        w = waste(ends[k] - base)
        if w < best_waste:
            best, best_waste = k, w
    return best


def cut_lines(  # noqa: PLR0917  (positions, bounds, limits: all numbers, all needed)
    ends: Sequence[int],
    first: int,
    base: int,
    must: int,
    max_bytes: int,
    max_events: int,
    window_bytes: int = ALIGN_WINDOW_BYTES,
) -> list[int]:
    """Split buffered lines into records to send now; return each record's last line index.

    ``ends[k]`` is the byte offset just past line ``k`` (the prefix sums of the line sizes);
    the lines not yet in a record are ``ends[first:]`` and the first of them starts at
    ``base``. Lines ``first .. must-1`` have to leave now (linger expired, or a flush); the
    lines after the last returned index stay for a later, fuller record. Only the lines
    looked at are touched, so the cost follows what is cut, not what is buffered.

    - A full record (the next line would not fit, or it holds ``max_events`` lines) is always
      cut, at the boundary within ``window_bytes`` of full that wastes least.
    - The rest is cut only as far as ``must`` requires, at the boundary in ``[must-1, last]``
      that wastes least: the younger tail waits for the next record.
    """
    n = len(ends)
    cuts: list[int] = []
    start = first
    while start < n:
        # Last line index that fits: a line alone always fits (put() checked its size).
        fit = min(bisect_right(ends, base + max_bytes, start, n) - 1, start + max_events - 1)
        fit = max(fit, start)
        full = fit < n - 1 or fit - start + 1 == max_events or ends[fit] - base == max_bytes
        if full:
            low = max(start, bisect_right(ends, ends[fit] - window_bytes, start, fit))
            k = best_cut(ends, base, low, fit)
        elif must > start:
            k = best_cut(ends, base, must - 1, n - 1)
        else:
            break
        cuts.append(k)
        base = ends[k]
        start = k + 1
    return cuts


def cut_records(
    sizes: Sequence[int],
    must: int,
    max_bytes: int,
    max_events: int,
    window_bytes: int = ALIGN_WINDOW_BYTES,
) -> list[int]:
    """:func:`cut_lines` over line sizes; returns each record's end index (exclusive)."""
    ends = prefix_sums(sizes)[1:]
    return [k + 1 for k in cut_lines(ends, 0, 0, must, max_bytes, max_events, window_bytes)]


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
