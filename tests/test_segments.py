"""The accumulator (``_storage/segments.py``) on its own: where put() leaves its lines, under a
memory bound, with exceptions landing anywhere inside an append.

A hypothesis state machine appends lines of every size (longer than a segment too) to a few
streams, takes them as the worker does, releases what it took, borrows segments for its own
use, closes, and raises an exception at a random signal check point inside an append or a
close (as Ctrl-C or a signal handler's exception would: :mod:`signal_points`). After every
step: the memory counted never exceeds ``max_buffer_bytes`` and covers every segment in
use, and no segment is both free and in use. At the end: every line whose append returned
was read exactly once, one whose append was interrupted at most once, nothing else ever; and
once everything is released the bound admits as many segments as it ever did (segments an
exception stranded are found again). Random search meets that last case rarely, so sweeps
over every check point of one append pin it too, for new segments and for lines kept apart.

Two cases the machine meets rarely are pinned apart as well: the first segment respects the
bound when lines kept apart are held, and an exception while a line is kept apart leaks none
of the bound.

The test is the worker here: :class:`Reader` reads what ``take()`` hands out as the scheduler
does (a sealed segment from where it had read to, the current one up to ``tell()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from signal_points import SignalPoints

from firehose_buffer._storage.segments import (
    MIN_SEGMENT_BYTES,
    Accumulator,
    Full,
    Oversized,
    Segment,
)

#: Every example's segments are one page: lines up to twice that, so some are kept apart.
RECORD_BYTES = MIN_SEGMENT_BYTES // 4


class Interrupt(BaseException):
    """What a signal handler raises (a BaseException, like KeyboardInterrupt and SystemExit:
    no ``except Exception`` in the library swallows it)."""


def _interrupt() -> None:
    raise Interrupt


def _interrupted(points: SignalPoints, at: int, fn: Callable[..., object], *args: object) -> bool:
    """``fn(*args)`` with an :class:`Interrupt` raised at its ``at``-th signal check point;
    whether it was (False: the call has fewer points, and ran to its end)."""
    with contextlib.suppress(Interrupt):
        points.run(at, _interrupt, fn, *args)
    return points.hit


@dataclass
class Reader:
    """What the worker does with ``take()``: every line handed out, read once."""

    acc: Accumulator
    #: Per stream: the current segment and how far it has been read.
    current: dict[int, tuple[Segment, int]] = field(default_factory=dict)
    #: Sealed segments and lines kept apart, read and not yet released.
    held: list[Segment] = field(default_factory=list)
    held_apart: list[int] = field(default_factory=list)
    seen: list[bytes] = field(default_factory=list)

    def take(self, index: int) -> None:
        sealed, current = self.acc.take(index)
        for entry in sealed:
            if type(entry) is Oversized:
                self._read(entry.line)
                self.held_apart.append(len(entry.line))
                continue
            assert type(entry) is Segment
            self._read_segment(index, entry)
            if self._is_current(index, entry):
                del self.current[index]
            self.held.append(entry)
        if current is not None:
            end = self._read_segment(index, current)
            self.current[index] = (current, end)

    def _is_current(self, index: int, segment: Segment) -> bool:
        known = self.current.get(index)
        return known is not None and known[0] is segment

    def _read_segment(self, index: int, segment: Segment) -> int:
        start = self.current[index][1] if self._is_current(index, segment) else 0
        end = segment.tell()
        self._read(segment[start:end])
        return end

    def _read(self, data: bytes) -> None:
        assert not data or data.endswith(b"\n"), f"a line cut short: {data[-40:]!r}"
        self.seen.extend(line + b"\n" for line in data[:-1].split(b"\n") if data)


class AccumulatorMachine(RuleBasedStateMachine):
    @initialize(streams=st.integers(1, 3), segments=st.integers(2, 8))
    def make(self, streams: int, segments: int) -> None:
        self.acc = Accumulator(streams, segments * MIN_SEGMENT_BYTES, RECORD_BYTES)
        assert self.acc.segment_bytes == MIN_SEGMENT_BYTES
        self.streams = streams
        self.reader = Reader(self.acc)
        self.borrowed: list[Segment] = []
        #: Lines whose append returned; lines an exception cut short (maybe appended).
        self.accepted: set[bytes] = set()
        self.maybe: set[bytes] = set()
        self.points = SignalPoints(only="firehose_buffer")
        self.serial = 0
        self.discarded = False

    def _line(self, size: int) -> bytes:
        self.serial += 1
        head = b'{"n":%d,"p":"' % self.serial
        return head + b"x" * max(0, size - len(head) - 3) + b'"}\n'

    # -- producers ---------------------------------------------------------------------------

    @rule(stream=st.integers(0, 2), size=st.integers(10, 2 * MIN_SEGMENT_BYTES),
          at=st.none() | st.integers(1, 16) | st.integers(17, 80))
    def append(self, stream: int, size: int, at: int | None) -> None:
        """put() of one line (the caller checks ``closed`` first, as put()'s slow path
        does); ``at``: raise at that signal check point inside the append."""
        acc = self.acc
        index = stream % self.streams
        line = self._line(size)
        if acc.closed:
            return
        apart_before = acc.oversized_bytes
        try:
            if at is None:
                acc.append(index, line)
            else:
                self.points.run(at, _interrupt, acc.append, index, line)
        except Full:
            self._refused_only_when_full()
        except Interrupt:
            self.maybe.add(line)
            assert not _leaked_apart(acc, index, line, apart_before), "bytes leaked"
        else:
            self.accepted.add(line)

    @rule(at=st.none() | st.integers(1, 30))
    def close(self, at: int | None) -> None:
        """close(), maybe interrupted; the caller that saw the exception closes again."""
        if at is not None:
            _interrupted(self.points, at, self.acc.close)
        self.acc.close()

    # -- the worker --------------------------------------------------------------------------

    @rule(stream=st.integers(0, 2))
    def take(self, stream: int) -> None:
        self.reader.take(stream % self.streams)
        assert len(set(self.reader.seen)) == len(self.reader.seen), "a line was read twice"

    @precondition(lambda self: self.reader.held or self.reader.held_apart)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """Every record cut from a sealed segment (or a line kept apart) has an outcome."""
        reader = self.reader
        if reader.held and (not reader.held_apart or data.draw(st.booleans())):
            segment = reader.held.pop(data.draw(st.integers(0, len(reader.held) - 1)))
            self.acc.release(segment)
        else:
            self.acc.release_oversized(reader.held_apart.pop())

    @rule()
    def borrow(self) -> None:
        """A segment for the worker's own use (compressed records are written into one)."""
        try:
            self.borrowed.append(self.acc.borrow())
        except Full:
            self._refused_only_when_full()

    @precondition(lambda self: self.borrowed)
    @rule()
    def give_back(self) -> None:
        self.acc.release(self.borrowed.pop(0))

    # -- after every step ----------------------------------------------------------------------

    def _in_rings(self) -> list[Segment]:
        return [e for ring in self.acc.rings for e in ring if type(e) is Segment]

    def _refused_only_when_full(self) -> None:
        """Refused: no segment is free, and none is stranded (an exception left it in
        neither a ring nor the free list): the bound looked for those first."""
        in_use = {id(s) for s in self._in_rings() + self.reader.held + self.borrowed}
        idle = [s for s in self.acc._all if id(s) not in in_use]
        assert idle == [], f"refused with {len(idle)} segments neither in use nor reused"

    @invariant()
    def memory_is_bounded_and_counts_every_segment_in_use(self) -> None:
        acc = self.acc
        over = acc.held_bytes() - acc.max_buffer_bytes
        # Only a first segment larger than the bound itself, when it holds all there is.
        assert over <= 0 or (len(acc._all) == 1 and not acc.oversized_bytes), over
        in_use = self._in_rings() + self.reader.held + self.borrowed
        assert len({id(s) for s in in_use}) == len(in_use), "one segment used twice"
        counted = {id(s) for s in acc._all}
        assert all(id(s) in counted for s in in_use), "a segment in use is not counted"
        apart = sum(len(e.line) for ring in acc.rings for e in ring
                    if type(e) is Oversized and not e.taken) + sum(self.reader.held_apart)
        assert acc.oversized_bytes == apart

    @invariant()
    def no_segment_is_both_free_and_in_use(self) -> None:
        free = self.acc._free
        assert len({id(s) for s in free}) == len(free), "a segment is listed free twice"
        in_use = {id(s) for s in self._in_rings() + self.reader.held + self.borrowed}
        assert not [s for s in free if id(s) in in_use], "a free segment is in use"
        assert all(s.tell() == 0 for s in free), "a free segment was not rewound"

    def teardown(self) -> None:
        if not hasattr(self, "acc") or self.discarded:
            return
        acc, reader = self.acc, self.reader
        for index in range(self.streams):
            reader.take(index)
        seen = reader.seen
        assert len(set(seen)) == len(seen), "a line was read twice"
        assert self.accepted <= set(seen), (
            f"{len(self.accepted - set(seen))} accepted lines were never read")
        assert set(seen) <= self.accepted | self.maybe, "a refused line was read"
        # Everything released: the bound admits as many segments as ever, minus the
        # current ones (streams not closed keep theirs).
        while reader.held:
            acc.release(reader.held.pop())
        while reader.held_apart:
            acc.release_oversized(reader.held_apart.pop())
        while self.borrowed:
            acc.release(self.borrowed.pop())
        capacity = acc.max_buffer_bytes // acc.segment_bytes
        missing = capacity - len(self._in_rings()) - _borrowable(acc)
        assert missing == 0, f"{missing} segments stranded by an exception were never found"


def _leaked_apart(acc: Accumulator, index: int, line: bytes, before: int) -> bool:
    """An interrupted append counted ``line`` as kept apart, and it is not in the ring."""
    kept = any(type(e) is Oversized and e.line is line for e in acc.rings[index])
    return acc.oversized_bytes == before + len(line) and not kept


# The explain phase traces execution, which the signal points' tracing would switch off.
AccumulatorMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=20, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
test_accumulator = AccumulatorMachine.TestCase


def _borrowable(acc: Accumulator) -> int:
    """How many segments the bound admits now (each borrowed, then given back)."""
    got = []
    while len(got) <= acc.max_buffer_bytes // acc.segment_bytes:
        try:
            got.append(acc.borrow())
        except Full:
            break
    for segment in got:
        acc.release(segment)
    assert len(got) <= acc.max_buffer_bytes // acc.segment_bytes
    return len(got)


def _drained(acc: Accumulator) -> int:
    """Take and release everything, as the worker does once every record has an outcome;
    how many segments streams still write to."""
    reader = Reader(acc)
    for index in range(len(acc.rings)):
        reader.take(index)
    for segment in reader.held:
        acc.release(segment)
    for size in reader.held_apart:
        acc.release_oversized(size)
    return sum(type(e) is Segment for ring in acc.rings for e in ring)


def _line_of(size: int) -> bytes:
    return b'{"p":"' + b"x" * (size - 9) + b'"}\n'


@pytest.mark.parametrize("source", ["a new segment", "a free segment"])
@pytest.mark.parametrize("then", ["segments", "a line kept apart"])
def test_a_segment_an_exception_stranded_is_found_again(source: str, then: str) -> None:
    """Ctrl-C at each point of an append that moves a stream to another segment: the
    segment may end up neither in the ring nor free. Once everything is released, the
    bound must still admit all the room it allows: as segments, or as one line kept apart
    as long as all the room left."""
    points = SignalPoints(only="firehose_buffer")
    segments = 4
    for at in range(1, 200):
        acc = Accumulator(1, segments * MIN_SEGMENT_BYTES, RECORD_BYTES)
        acc.append(0, _line_of(MIN_SEGMENT_BYTES))  # fills the first segment
        if source == "a free segment":
            acc.append(0, _line_of(100))
            _drained(acc)  # the first one is free again; the second is the stream's
            acc.append(0, _line_of(MIN_SEGMENT_BYTES - 100))
        if not _interrupted(points, at, acc.append, 0, _line_of(100)):
            break
        current = _drained(acc)
        if then == "segments":
            assert _borrowable(acc) == segments - current, f"stranded at {points.where}"
        else:
            # Every free segment is unmapped to make room for it.
            acc.append(0, _line_of(acc.max_buffer_bytes - current * MIN_SEGMENT_BYTES))
            assert acc.held_bytes() == acc.max_buffer_bytes
    assert at > 5, "the sweep never reached the end of the append"


def test_the_first_segment_respects_the_bound() -> None:
    """Two pages of bound, one line of a page and a byte kept apart (longer than a segment):
    no segment fits beside it, so a short line must be refused, not take memory past the
    bound."""
    acc = Accumulator(1, 2 * MIN_SEGMENT_BYTES, RECORD_BYTES)
    acc.append(0, b'{"p":"' + b"x" * (MIN_SEGMENT_BYTES - 8) + b'"}\n')
    with pytest.raises(Full):
        acc.append(0, b'{"a":1}\n')
    assert acc.held_bytes() <= acc.max_buffer_bytes


def test_an_exception_while_a_line_is_kept_apart_leaks_no_room() -> None:
    """Ctrl-C (or a signal handler's exception) at any point of put()'s append of a line
    longer than a segment: once everything is taken and released, the bound admits as
    many segments as before, whether the line was kept or not."""
    line = b'{"p":"' + b"x" * (2 * MIN_SEGMENT_BYTES) + b'"}\n'
    points = SignalPoints(only="firehose_buffer")
    leaked = []
    for at in range(1, 200):
        acc = Accumulator(1, 8 * MIN_SEGMENT_BYTES, RECORD_BYTES)
        capacity = _borrowable(acc)
        if not _interrupted(points, at, acc.append, 0, line):
            break
        reader = Reader(acc)
        reader.take(0)
        for size in reader.held_apart:
            acc.release_oversized(size)
        if _borrowable(acc) != capacity:
            leaked.append(points.where)
    assert at > 10, "the sweep never reached the end of the append"
    assert leaked == []
