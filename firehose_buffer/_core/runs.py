"""Compressed records: the lines the scheduler hands out to be compressed, and what comes back.

A compressed record's size is only known once compressed, so with ``compression`` set the
scheduler does not cut records itself: a tick hands the worker :class:`Run`\\s (a stream's
staged lines, which may span several segments), the worker compresses them outside the lock
(zlib and zstd release the GIL; producers keep writing), and the next call into the scheduler
turns each result into records and consumes exactly the lines they hold. Lines a result
leaves (a record would not be full, and nothing obliges them to leave yet) stay staged.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from .records import Source


@dataclass(slots=True, eq=False)
class Run:
    """A stream's staged lines, in order, as the compressor reads them."""

    stream: int
    #: Slices of segments, read as one run of bytes.
    views: list[memoryview]
    #: The same slices as (segment, start, end), and where each begins in the run.
    pieces: list[Source]
    offsets: list[int]
    #: Offsets in the run just past each line.
    ends: list[int]
    #: Lines that must leave now (linger, a flush, closing), counted from the first; the
    #: rest only in full records. May exceed the run's lines: the rest follow in further
    #: runs of the same tick.
    must: int
    #: (index of a line in the run, when the worker first saw it), for each group of lines
    #: seen together: a record is as old as its first line.
    stamps: list[tuple[int, float]]

    def sources(self, first: int, last: int) -> tuple[Source, ...]:
        """Where lines ``first .. last`` (inclusive) live: one range per segment they span."""
        start = self.ends[first - 1] if first else 0
        end = self.ends[last]
        out: list[Source] = []
        i = bisect_right(self.offsets, start) - 1
        while start < end:
            segment, seg_start, seg_end = self.pieces[i]
            piece_start = self.offsets[i]
            a = seg_start + (start - piece_start)
            b = min(seg_end, seg_start + (end - piece_start))
            out.append((segment, a, b))
            start += b - a
            i += 1
        return tuple(out)

    def born(self, line: int) -> float:
        """When line ``line`` was first seen."""
        k = bisect_right(self.stamps, (line, float("inf"))) - 1
        return self.stamps[max(0, k)][1]
