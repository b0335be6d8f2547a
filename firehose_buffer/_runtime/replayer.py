"""What a buffer finds in its spool directory, fed through the same append path as put():
spool files, and the durable segments of processes that died (see ``_storage/recovery.py``).
One path for both.

A source is deleted once every event in it reached an outcome that keeps it (delivered, or
failed and written to a spool file). A crash in between leaves it in place: it is sent again
by the next run (at least once, never lost; a dead process's segments marked as being
recovered count as possible duplicates then). Lines that can never be sent (not JSON, too
large for a record) go to ``on_failure`` once, never back to the spool.

Durable buffers look again every ``RESCAN_SECONDS`` while they run, so a sibling process
that dies (a gunicorn worker killed for its timeout) has its events sent by the others,
not only by the next process that starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._core.encoding import is_valid_line
from .._storage.durable import dead_owners
from .._storage.recovery import Claimed, Source
from .lifecycle import start_thread

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("firehose_buffer")

#: How often a durable buffer looks for the segments of processes that died since.
RESCAN_SECONDS = 2.0
#: Lines a block of recovered lines is fed in, at most (whole lines; a longer line alone).
FEED_BYTES = 64 * 1024


class Replayer:
    """The thread that feeds back what was found (spool files, dead processes' durable
    segments): started by the engine on first use when there is any, waited for by flush()
    and close()."""

    def __init__(self, engine: Engine, sources: Sequence[Source], *, rescan: bool = False
                 ) -> None:
        self._engine = engine
        self._sources = list(sources)
        self._rescan = rescan
        #: Set once what was found at start has been replayed.
        self._done = threading.Event()
        #: Set once nothing more will be fed (everything fed, or stopped and the rest moved
        #: to a new spool file); the replay then only waits for outcomes.
        self._fed = threading.Event()
        self._stop = threading.Event()
        #: Whether lines are being fed now; with ``_stop``, under ``_state``: a stop that
        #: comes while the replay only waits for outcomes sets ``_fed`` at once.
        self._feeding = False
        self._state = threading.Lock()
        self._claim: Claimed | None = None

    def start(self) -> None:
        start_thread(self._run, "firehose-buffer-replay")

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)

    def wait_fed(self, timeout: float | None) -> bool:
        """Until nothing more will be fed (what close() waits for: the replay's own last
        flush then ends with close's)."""
        return self._fed.wait(timeout)

    def stop(self) -> None:
        with self._state:
            self._stop.set()
            if not self._feeding:
                self._fed.set()

    def _begin_feeding(self) -> bool:
        with self._state:
            if self._stop.is_set():
                return False
            self._feeding = True
            return True

    def _end_feeding(self) -> None:
        with self._state:
            self._feeding = False
            if self._stop.is_set():
                self._fed.set()

    def after_fork(self) -> None:
        if self._claim is not None:
            self._claim.release()  # our copy only: the parent keeps its lock
            self._claim = None

    def _run(self) -> None:
        try:
            self._pass(self._sources)
        except Exception:
            log.exception("replaying the spool failed; its files stay for the next run")
        finally:
            self._done.set()
        try:
            spool = self._engine.spool
            while self._rescan and spool is not None and not self._stop.wait(RESCAN_SECONDS):
                try:
                    self._pass(dead_owners(spool.directory))
                except Exception:
                    log.exception("recovering durable segments failed; they stay for the "
                                  "next run")
        finally:
            self._fed.set()

    def _pass(self, sources: Sequence[Source]) -> None:
        for source in sources:
            if self._stop.is_set():
                break
            taken = source.claim()
            if taken is None:
                continue  # another process has it, or it is gone
            self._claim = taken
            try:
                self._replay(taken)
            finally:
                self._claim = None
                taken.release()

    def _replay(self, taken: Claimed) -> None:
        engine = self._engine
        spool = engine.spool
        assert spool is not None
        errors_before = spool.errors
        unsendable: dict[str, dict[str, list[bytes]]] = {}
        rest: list[tuple[str, list[bytes]]] = []
        if not self._begin_feeding():
            return  # stopped before this source: it stays, claimable by the next run
        try:
            pieces = taken.pieces()
            for stream, lines in pieces:
                left = self._feed(taken, stream, lines, unsendable)
                if left:
                    rest.append((stream, left))
                    break
            moved = True
            if rest:
                # Closed while replaying: what was not fed moves to this run's spool file, so
                # the source can go once what was fed has an outcome.
                for stream, lines in [*rest, *pieces]:
                    moved = spool.append(stream, lines) and moved
        finally:
            self._end_feeding()
        for stream, by_reason in unsendable.items():
            count = sum(len(v) for v in by_reason.values())
            log.warning("%s holds %d lines for %s that cannot be sent; handed to on_failure, "
                        "not kept", taken.label, count, stream)
            engine.unsendable(stream, by_reason)
        engine.recovered(possible_duplicates=taken.possible_duplicates, torn=taken.torn)
        if taken.torn:
            log.warning("%s ends with a line cut short by a crash; skipped", taken.label)
        if rest:
            self._fed.set()
        result = engine.flush(None)
        if result.pending == 0 and moved and spool.errors == errors_before:
            taken.remove()
            log.info("replayed %s", taken.label)
        else:
            log.warning("%s kept: not every event in it reached an outcome (it will be sent "
                        "again; some events may be duplicated)", taken.label)

    def _feed(self, taken: Claimed, stream: str, pieces: list[bytes],
              unsendable: dict[str, dict[str, list[bytes]]]) -> list[bytes]:
        """Feed ``pieces`` (lines meant for ``stream``); returns what was not fed (closed)."""
        engine = self._engine
        router = engine.router
        index = router.index_of(stream)
        if not taken.validate and index is not None:
            for i, block in enumerate(pieces):
                left = self._feed_block(index, block)
                if left:
                    return [left, *pieces[i + 1:]]
            return []
        max_line = engine.config.max_line_bytes
        intake = engine.intake
        lines = pieces if taken.validate else [
            line for block in pieces for line in block.splitlines(keepends=True)]
        for i, line in enumerate(lines):
            if taken.validate:
                problem = is_valid_line(line, max_line)
                if problem is not None:
                    unsendable.setdefault(stream, {}).setdefault(problem, []).append(line[:-1])
                    continue
            if not intake.replayed(router.for_stream(stream, line[:-1]), line, self._stop):
                return lines[i:]
        return []

    def _feed_block(self, index: int, block: bytes) -> bytes:
        """Whole lines for stream ``index``, fed a few at a time; returns what was not fed."""
        intake = self._engine.intake
        limit = max(1, min(FEED_BYTES, self._engine.acc.segment_bytes // 4))
        pos = 0
        size = len(block)
        while pos < size:
            stop = min(size, pos + limit)
            if stop < size:
                cut = block.rfind(b"\n", pos, stop)
                # A line longer than the limit goes alone.
                stop = block.index(b"\n", stop) + 1 if cut < 0 else cut + 1
            piece = block[pos:stop]
            if not intake.replayed(index, piece, self._stop, events=piece.count(b"\n")):
                return block[pos:]
            pos = stop
        return b""
