"""Spool files found at start, fed through the same append path as put().

A file is deleted once every event in it reached an outcome that keeps it (delivered, or
failed again and written to a new spool file). A crash in between leaves it in place: it is
sent again by the next run (at least once, never lost). Lines that can never be sent (not
JSON, too large for a record) go to ``on_failure`` once, never back to the spool.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .._core.encoding import is_valid_line
from .._storage.spool import Claim, SpoolFile, claim
from .lifecycle import start_thread

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("firehose_buffer")


class Replayer:
    """The thread that feeds spool files found at start back into the buffer: started by the
    engine on first use when the spool holds files, waited for by flush() and close()."""

    def __init__(self, engine: Engine, files: list[SpoolFile]) -> None:
        self._engine = engine
        self._files = files
        self._done = threading.Event()
        #: Set once nothing more will be fed (everything fed, or stopped and the rest moved
        #: to a new spool file); the replay then only waits for outcomes.
        self._fed = threading.Event()
        self._stop = threading.Event()
        self._claim: Claim | None = None

    def start(self) -> None:
        start_thread(self._run, "firehose-buffer-replay")

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)

    def wait_fed(self, timeout: float | None) -> bool:
        """Until nothing more will be fed (what close() waits for: the replay's own last
        flush then ends with close's)."""
        return self._fed.wait(timeout)

    def stop(self) -> None:
        self._stop.set()

    def after_fork(self) -> None:
        if self._claim is not None:
            self._claim.release()  # our copy only: the parent keeps its lock
            self._claim = None

    def _run(self) -> None:
        try:
            for spool_file in self._files:
                if self._stop.is_set():
                    break
                taken = claim(spool_file)
                if taken is None:
                    continue  # another process has it, or it is gone
                self._claim = taken
                try:
                    self._replay(taken)
                finally:
                    self._claim = None
                    taken.release()
        except Exception:
            log.exception("replaying the spool failed; its files stay for the next run")
        finally:
            self._fed.set()
            self._done.set()

    def _replay(self, taken: Claim) -> None:
        engine = self._engine
        spool = engine.spool
        assert spool is not None
        max_line = engine.config.max_line_bytes
        router = engine.router
        intake = engine.intake
        errors_before = spool.errors
        unsendable: dict[str, list[bytes]] = {}
        fed = 0
        rest: list[bytes] = []
        chunks = taken.chunks()
        for chunk in chunks:
            for i, line in enumerate(chunk):
                problem = is_valid_line(line, max_line)
                if problem is not None:
                    unsendable.setdefault(problem, []).append(line[:-1])
                    continue
                index = router.for_stream(taken.stream, line[:-1])
                if not intake.replayed(index, line, self._stop):
                    rest = chunk[i:]
                    break
                fed += 1
            if rest:
                break
        moved = True
        if rest:
            # Closed while replaying: what was not fed moves to this run's spool file, so the
            # original can go once what was fed has an outcome.
            moved = spool.append(taken.stream, rest)
            for chunk in chunks:
                moved = spool.append(taken.stream, chunk) and moved
        if unsendable:
            count = sum(len(v) for v in unsendable.values())
            log.warning("spool file %s holds %d lines that cannot be sent; handed to "
                        "on_failure, not kept", taken.path, count)
            engine.unsendable(taken.stream, unsendable)
        if taken.torn_bytes:
            log.warning("spool file %s ends with %d bytes of a line cut short by a crash; "
                        "skipped", taken.path, taken.torn_bytes)
        if rest:
            self._fed.set()
        result = engine.flush(None)
        if result.pending == 0 and moved and spool.errors == errors_before:
            taken.remove()
            log.info("replayed %d events from spool file %s", fed, taken.path)
        else:
            log.warning("spool file %s kept: not every event in it reached an outcome "
                        "(it will be sent again; some events may be duplicated)", taken.path)
