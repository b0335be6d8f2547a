"""Flush barriers: which records a flush() waits for, and what became of them.

A flush asks for a generation; the next tick cuts everything seen into records and marks
the generation with the newest record id (every record up to it is covered, since ids
grow). The mark is ripe when each of those records has an outcome, and done once the
failures among them are reported (spooled, or handed to ``on_failure``), which the worker
does right after the tick. One mark answers every request made since the previous mark.
"""

from __future__ import annotations

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

    __slots__ = ("_done", "_marked", "_open", "_ripe", "done_generation", "requested")

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

    def request(self) -> int:
        self.requested += 1
        return self.requested

    def due(self) -> int | None:
        """The generation a tick must mark now, if any was asked for since the last mark."""
        if self.requested > self._marked:
            self._marked = self.requested
            return self._marked
        return None

    def defer(self, generation: int) -> None:
        """A due generation could not be marked yet (some of the lines it covers could not
        become records): :meth:`due` returns it again."""
        self._marked = min(self._marked, generation - 1)

    def waiting(self) -> bool:
        """A generation is due and not yet marked."""
        return self.requested > self._marked

    def mark(self, generation: int, marker: int, records: int, events: int) -> None:
        mark = FlushMark(generation, marker, records, events)
        if records == 0 and not self._open:
            self._ripe.append(mark)
        else:
            self._open.append(mark)

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
        while self._open and self._open[0].remaining <= 0:
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
