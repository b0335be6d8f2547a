"""The real Scheduler driven by simulated time, the way the buffer's worker drives it.

No threads and no sleeps. Lines go in exactly as put() writes them
(:meth:`Accumulator.append`), routed by the real :class:`Router`. The simulated worker ticks
when the last tick asked to be woken, when a call completes (a sender wakes it), and, after a
tick that said to sleep (``Tick.sleep``, the worker's own rule), at the next put (put() wakes
a sleeping worker). With ``compression`` the runs a tick hands out are compressed through
the worker's own :func:`compress_runs`, and the worker ticks again at once. A fake service
acknowledges every record of every batch ``latency`` seconds after it was sent.

What is the real code: the scheduler's tick (every decision: cuts, pacing, retries, the wake
time and ``Tick.sleep``), the accumulator's append, the router, the compressor. What is
restated here, because it lives inline in ``Worker._step`` next to the engine's lock, state
and threads: turning a tick into the next look (``wake_at``, or at once after runs, or
asleep until a put() when ``Tick.sleep``), put() waking a sleeping worker, and draining
(``everything=True`` until nothing is pending). A pure "tick -> next look" function in the
worker would let both call it; ``tests/test_engine.py`` pins the same rule on the real worker
(asleep once quiet, woken by a put(), a deadline or an answer).
"""

from __future__ import annotations

import contextlib
import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from firehose_buffer._core.routing import Router
from firehose_buffer._core.runs import compress_runs, compressor_for
from firehose_buffer._core.scheduler import Batch, Failure, Scheduler
from firehose_buffer.config import BufferConfig
from firehose_buffer.transport import Outcome

#: Ticks in a row at one simulated instant before the scheduler is declared stuck: it keeps
#: asking to be woken now without sending anything.
MAX_TICKS_AT_ONE_INSTANT = 1_000


class Stuck(AssertionError):
    pass


@dataclass(frozen=True, slots=True)
class Request:
    time: float
    nbytes: int
    records: int
    events: int


class Simulation:
    def __init__(self, config: BufferConfig, *, keyed: bool, latency: float = 0.03) -> None:
        self.config = config
        self.latency = latency
        # Keyed: every line names its stream (put() would hash a key to it).
        router = Router(config.streams, partition_key="key" if keyed else None)
        self.scheduler = Scheduler.for_config(config, 0.0, router=router)
        self.acc = self.scheduler.acc
        self.router = router
        self.now = 0.0
        self.wake: float | None = 0.0
        self._sent: list[tuple[float, int, Batch]] = []
        self._done: list[Batch] = []
        self.closing = False
        n = len(config.streams)
        self.requests: list[list[Request]] = [[] for _ in range(n)]
        self.put_times: list[deque[float]] = [deque() for _ in range(n)]
        #: Seconds from put() to the call that carried the event, for every event sent.
        self.waits: list[float] = []
        self._put_at: dict[bytes, deque[float]] = {}
        self.failures: list[Failure] = []
        self.ticks = 0
        #: Called with every batch as it is sent (its records still hold their bytes).
        self.on_batch: Callable[[Batch], None] | None = None
        self._compressor = compressor_for(config) if config.compression else None

    def put(self, t: float, line: bytes, stream: int | None = None) -> int:
        """put() of ``line`` at time ``t`` (to ``stream``, or sticky when None)."""
        self.advance(t)
        index = self.router.sticky if stream is None else stream
        self.acc.append(index, line)
        self.put_times[index].append(t)
        self._put_at.setdefault(line, deque()).append(t)
        if self.sleeping:
            self.sleeping = False
            self.wake = t if self.wake is None else min(self.wake, t)
        return index

    def advance(self, until: float) -> None:
        """Let the worker and the service run up to ``until``."""
        while True:
            done_at = self._sent[0][0] if self._sent else math.inf
            wake = self.wake if self.wake is not None else math.inf
            t = min(done_at, wake)
            if t > until:
                break
            if done_at <= wake:
                self._done.append(heapq.heappop(self._sent)[2])
                self.wake = done_at
                continue
            self._tick(t)
        self.now = max(self.now, until)

    def drain(self, limit: float = 600.0) -> None:
        """What close() does: cut everything, send it, wait for every outcome."""
        self.closing = True
        self.wake = self.now
        deadline = self.now + limit
        # pending_events() counts lines written since the last tick too: close() ticks once
        # at least, so those are cut and sent as well.
        while self.scheduler.pending_events() or self._sent or self._done:
            nxt = min(self._sent[0][0] if self._sent else math.inf,
                      self.wake if self.wake is not None else math.inf)
            if nxt > deadline:
                raise Stuck(f"not drained within {limit} simulated seconds")
            self.advance(nxt)

    def _tick(self, now: float) -> None:
        outcomes = [(b, Outcome(codes=[None] * len(b.records))) for b in self._done]
        self._done = []
        same_instant = now == self.now and self.ticks
        self.now = now
        tick = self.scheduler.tick(now, outcomes, everything=self.closing)
        self.ticks += 1
        self.failures.extend(tick.failures)
        if tick.runs:
            assert self._compressor is not None
            self.failures.extend(compress_runs(self.scheduler, self._compressor, tick.runs,
                                               lambda: now, contextlib.nullcontext()))
        for batch in tick.batches:
            events = sum(r.events for r in batch.records)
            self.requests[batch.stream].append(
                Request(now, batch.nbytes, len(batch.records), events))
            # By content: keyless remainders may move to another stream (the scheduler
            # merges short tails), so a stream's lines are not only its own puts.
            for r in batch.records:
                for text in b"".join(r.plain())[:-1].split(b"\n"):
                    self.waits.append(now - self._put_at[text + b"\n"].popleft())
            if self.on_batch is not None:
                self.on_batch(batch)
            heapq.heappush(self._sent, (now + self.latency, id(batch), batch))
        if tick.runs:
            # As the worker: the records just made go at the next tick, at once.
            self.wake = now
            self.sleeping = False
            return
        if tick.wake_at is not None and tick.wake_at <= now and not tick.batches:
            self._spins = self._spins + 1 if same_instant else 1
            if self._spins > MAX_TICKS_AT_ONE_INSTANT:
                raise Stuck(f"tick at {now} keeps asking to be woken at {tick.wake_at}")
        self.wake = None if tick.wake_at is None else max(now, tick.wake_at)
        # As the worker: after a tick that says so, the next put() wakes it.
        self.sleeping = tick.sleep

    _spins = 0
    sleeping = True
