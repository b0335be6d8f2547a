"""Flush barriers: which records a flush() waits for, and what became of them.

A flush asks for a generation; the next tick cuts everything seen into records and marks
the generation with the newest record id (every record up to it is covered, since ids
grow). The mark is ripe when each of those records has an outcome, and done once the
failures among them are reported (spooled, or handed to ``on_failure``), which the worker
does right after the tick. One mark answers every request made since the previous mark.

With compressed records, lines become records only once the worker has compressed them,
outside the tick, and may have to wait for room in the memory bound: the mark is then made
*held* at once (counting the records outstanding, whose outcomes may come first), covers
every record made while it is held, and is released with the newest record id once every
line it covers is in a record. Requests made while it is held join it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..stats import FlushResult

#: Results of finished flushes kept for their callers to read (each caller reads its own
#: soon after it is woken; the oldest go first).
RESULTS_KEPT = 256


@dataclass(slots=True)
class FlushMark:
    """One marked generation: the records it waits for and their outcomes so far."""

    generation: int
    #: The newest record id covered.
    marker: int
    remaining: int
    events: int
    delivered: int = 0
    failed: int = 0

    def result(self, *, unreported: bool = False) -> FlushResult:
        pending = self.events - self.delivered - self.failed
        # Every record may have an outcome while failures are still being reported: not
        # done until they are.
        return FlushResult(self.delivered, self.failed,
                           max(int(unreported and self.failed > 0), pending))


class Flushes:
    """The flush generations of one buffer (state of the scheduler, under the engine lock)."""

    __slots__ = ("_done", "_marked", "_open", "_ripe", "done_generation", "held", "requested")

    def __init__(self) -> None:
        #: The newest generation asked for.
        self.requested = 0
        self._marked = 0
        #: Marked; some of their records have no outcome yet.
        self._open: list[FlushMark] = []
        #: Every record has an outcome; failures not yet reported.
        self._ripe: list[FlushMark] = []
        self._done: dict[int, FlushMark] = {}
        #: The newest generation whose mark is done.
        self.done_generation = 0
        #: A mark whose lines are not all in records yet (see the module's doc).
        self.held: FlushMark | None = None

    def request(self) -> int:
        self.requested += 1
        return self.requested

    def due(self) -> int | None:
        """The generation a tick must mark now, if any was asked for since the last mark."""
        if self.requested > self._marked:
            self._marked = self.requested
            return self._marked
        return None

    def mark(self, generation: int, marker: int, records: int, events: int, *,
             held: bool = False) -> None:
        """Mark ``generation``: the ``records`` outstanding (``events`` in them), ids up to
        ``marker``. ``held``: more lines it covers are still to become records."""
        if self.held is not None:
            self.held.generation = generation  # joins the held mark, which covers it
            return
        mark = FlushMark(generation, sys.maxsize if held else marker, records, events)
        if held:
            self.held = mark
            self._open.append(mark)
        elif records == 0 and not self._open:
            self._ripe.append(mark)
        else:
            self._open.append(mark)

    def created(self, events: int) -> None:
        """A record was made while a mark is held: it covers it."""
        held = self.held
        if held is not None:
            held.remaining += 1
            held.events += events

    def release(self, marker: int) -> None:
        """Every line the held mark covers is in a record, the newest ``marker``."""
        held = self.held
        if held is None:
            return
        self.held = None
        held.marker = marker
        self._ripen()

    def resolved(self, record_id: int, events: int, *, delivered: bool) -> None:
        """A record has an outcome."""
        if not self._open:
            return
        for mark in self._open:
            if record_id <= mark.marker:
                mark.remaining -= 1
                if delivered:
                    mark.delivered += events
                else:
                    mark.failed += events
        self._ripen()

    def _ripen(self) -> None:
        while self._open and self._open[0].remaining <= 0 and self._open[0] is not self.held:
            self._ripe.append(self._open.pop(0))

    def publish(self) -> bool:
        """The failures of the last tick are reported: ripe marks are done. True if any."""
        if not self._ripe:
            return False
        for mark in self._ripe:
            self._done[mark.generation] = mark
            self.done_generation = max(self.done_generation, mark.generation)
        self._ripe.clear()
        while len(self._done) > RESULTS_KEPT:
            del self._done[min(self._done)]
        return True

    def is_done(self, generation: int) -> bool:
        return self.done_generation >= generation

    def result(self, generation: int, pending_events: int) -> FlushResult:
        """What became of the events flush request ``generation`` covers. A request's mark
        is the first whose generation is at least its own (each tick marks the newest
        request). ``pending_events``: the answer for a request no tick has marked yet."""
        done = [g for g in self._done if g >= generation]
        if done:
            return self._done[min(done)].result()
        waiting = [m for m in (*self._ripe, *self._open) if m.generation >= generation]
        if waiting:
            return min(waiting, key=lambda m: m.generation).result(unreported=True)
        return FlushResult(0, 0, pending_events)
