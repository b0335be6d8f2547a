"""Where failed events go: the spool if there is one, then ``on_failure``, then a log line.

Runs on the worker thread with no lock held (the callback and logging handlers are user
code, and may put() into a buffer). Failures are merged per stream and reason first, so a
slow callback is called once per kind of failure, not once per record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from .._core.ledger import Ledger, Reason
from .._core.scheduler import Failure
from .._storage.spool import Spool
from .logs import RateLimitedLog

log = logging.getLogger("firehose_buffer")
_OURS = frozenset(r.value for r in Reason)


def merge(failures: Sequence[Failure]) -> list[Failure]:
    """One failure per stream and reason (in linear time: closing can fail thousands)."""
    events: dict[tuple[str, str], list[bytes]] = {}
    for f in failures:
        events.setdefault((f.stream, f.reason), []).extend(f.events)
    return [Failure(stream, lines, reason) for (stream, reason), lines in events.items()]


class FailureSink:
    def __init__(
        self,
        spool: Spool | None,
        on_failure: Callable[[list[bytes], str], None] | None,
        ledger: Ledger,
        lock: threading.Lock,
    ) -> None:
        self.spool = spool
        self.on_failure = on_failure
        self._ledger = ledger
        self._lock = lock
        self._logs: dict[tuple[str, str], RateLimitedLog] = {}
        #: Events given to this sink and not yet kept in the spool or handed to on_failure:
        #: what close() counts as lost if its deadline comes first.
        self.in_hand = 0

    def report(self, failures: Sequence[Failure], *, respool: bool = True) -> None:
        """Keep or hand over every event; ``respool=False`` skips the spool (lines that
        came from it and cannot be sent would otherwise go round forever)."""
        merged = merge(failures)
        with self._lock:
            self.in_hand += sum(len(f.events) for f in merged)
        for failure in merged:
            self._one(failure, respool)

    def _one(self, failure: Failure, respool: bool) -> None:
        count = len(failure.events)
        if failure.reason not in _OURS:
            self._log(failure).error(
                "PutRecordBatch to %s failed with %s, which waiting cannot fix: %d events "
                "failed", failure.stream, failure.reason, count)
        spool = self.spool
        if spool is not None and respool and failure.events:
            data = b"\n".join(failure.events) + b"\n"
            kept = spool.append(failure.stream, data)
            if kept:
                with self._lock:
                    self._ledger.events_spooled += count
                    self.in_hand -= count
                self._log(failure).warning(
                    "%d events for %s could not be delivered (%s): kept in the spool %s",
                    count, failure.stream, failure.reason, spool.directory)
                return
        with self._lock:
            self.in_hand -= count  # handed over now (or only logged: nowhere to keep them)
        if self.on_failure is None:
            self._log(failure).warning(
                "%d events for %s failed (%s); set on_failure or spool_dir to keep them",
                count, failure.stream, failure.reason)
            return
        try:
            self.on_failure(failure.events, failure.reason)
        except Exception:
            log.exception("on_failure callback raised; the worker carries on")

    def _log(self, failure: Failure) -> RateLimitedLog:
        key = (failure.stream, failure.reason)
        limited = self._logs.get(key)
        if limited is None:
            limited = self._logs[key] = RateLimitedLog(log, interval=10.0)
        return limited
