"""Where failed events go: the spool if there is one, then ``on_failure``, then a log line.

Runs on the worker thread (and the replayer's) with no lock held: the callback and logging
handlers are user code, and may put() into a buffer. Failures are merged per stream and
reason first, so a slow callback is called once per kind of failure, not once per record;
the spool gets whole records (they are JSON lines already), never an object per event. Each
batch of events, once kept or handed over, is settled with the engine, in one critical
section with the count close() reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .._core.ledger import Reason
from .._core.records import Failure
from .._logs import RateLimitedLog
from .._storage.spool import Spool

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("firehose_buffer")
_OURS = frozenset(r.value for r in Reason)


def merge(failures: Sequence[Failure]) -> list[Failure]:
    """One failure per stream and reason (in linear time: closing can fail thousands)."""
    merged: dict[tuple[str, str], Failure] = {}
    for f in failures:
        into = merged.get((f.stream, f.reason))
        if into is None:
            merged[(f.stream, f.reason)] = Failure(f.stream, f.reason, list(f.chunks), f.count,
                                                   list(f.records))
        else:
            into.chunks.extend(f.chunks)
            into.count += f.count
            into.records.extend(f.records)
    return list(merged.values())


class FailureSink:
    """The one funnel for every event that will not be delivered (see the module's doc); one
    per engine, called on the worker thread (and the replayer's) with no lock held."""

    def __init__(
        self,
        spool: Spool | None,
        on_failure: Callable[[list[bytes], str], None] | None,
        engine: Engine,
    ) -> None:
        self.spool = spool
        self.on_failure = on_failure
        self._engine = engine
        self._logs: dict[tuple[str, str], RateLimitedLog] = {}

    def report(self, failures: Sequence[Failure], *, respool: bool = True) -> None:
        """Keep or hand over every event; ``respool=False`` skips the spool (lines that
        came from it and cannot be sent would otherwise go round forever)."""
        for failure in merge(failures):
            self._one(failure, respool)

    def _one(self, failure: Failure, respool: bool) -> None:
        if not self._engine.handing(failure.count):
            return  # close() gave up: counted as lost (or left in the durable files)
        kept = False
        try:
            kept = self._keep_or_hand(failure, respool)
        finally:
            if not kept:
                self._engine.settled(failure.count, spooled=False)
            if failure.records:
                # Durable: kept or handed over: acknowledged only now.
                self._engine.let_go(failure.records)

    def _keep_or_hand(self, failure: Failure, respool: bool) -> bool:
        """True when the spool kept the events; else they were handed to on_failure, or
        only logged (the caller settles them)."""
        count = failure.count
        if failure.reason not in _OURS:
            self._log(failure).error(
                "PutRecordBatch to %s failed with %s, which waiting cannot fix: %d events "
                "failed", failure.stream, failure.reason, count)
        spool = self.spool
        if spool is not None and respool and count and spool.append(failure.stream,
                                                                     failure.chunks):
            self._engine.settled(count, spooled=True)
            self._log(failure).warning(
                "%d events for %s could not be delivered (%s): kept in the spool %s",
                count, failure.stream, failure.reason, spool.directory)
            return True
        if self.on_failure is None:
            self._log(failure).warning(
                "%d events for %s failed (%s); set on_failure or spool_dir to keep them",
                count, failure.stream, failure.reason)
            return False
        try:
            self.on_failure(failure.lines(), failure.reason)
        except Exception:
            log.exception("on_failure callback raised; the worker carries on")
        return False

    def _log(self, failure: Failure) -> RateLimitedLog:
        key = (failure.stream, failure.reason)
        limited = self._logs.get(key)
        if limited is None:
            limited = self._logs[key] = RateLimitedLog(log, interval=10.0)
        return limited
