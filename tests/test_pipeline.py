"""The pipeline driven with simulated time: quota compliance, linger, billed/raw ratio.

No threads and no sleeps: the test plays the worker (stage, pack, dispatch) and a fake
service (each batch completes successfully after a fixed latency), tick by tick, and measures
what the service received.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

import pytest

from firehose_buffer.config import BufferConfig
from firehose_buffer.pipeline import Batch, Pipeline
from firehose_buffer.quota import Quota
from firehose_buffer.routing import roomiest
from firehose_buffer.sender import Outcome

TICK = 0.01
LATENCY = 0.03
SECONDS = 60.0
STREAMS = tuple(f"s{i}" for i in range(16))
_LINES: dict[int, bytes] = {}


def line(size: int) -> bytes:
    """A line of ``size`` bytes with its newline (shared: content does not matter here)."""
    if size not in _LINES:
        _LINES[size] = b"x" * (size - 1) + b"\n"
    return _LINES[size]


@dataclass
class Request:
    time: float
    nbytes: int
    records: int


@dataclass
class Sim:
    """One simulated producer: events in, requests out, every event's wait measured."""

    config: BufferConfig
    now: float = 0.0
    pipeline: Pipeline = field(init=False)
    requests: list[list[Request]] = field(init=False)
    put_times: list[deque[float]] = field(init=False)
    waits: list[float] = field(default_factory=list)
    in_flight: deque[tuple[float, Batch]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(self.config, self.now)
        n = len(self.config.streams)
        self.requests = [[] for _ in range(n)]
        self.put_times = [deque() for _ in range(n)]

    def tick(
        self, staged: dict[int, list[tuple[float, bytes]]], everything: bool = False,
        merge_into: int | None = None,
    ) -> None:
        p = self.pipeline
        self.now += TICK
        while self.in_flight and self.in_flight[0][0] <= self.now:
            _, batch = self.in_flight.popleft()
            assert not p.complete(batch, Outcome(codes=[None] * len(batch.records)), self.now)
        for stream, events in staged.items():
            if events:
                lines = [data for _, data in events]
                p.stage(stream, lines, sum(map(len, lines)), oldest=events[0][0])
                self.put_times[stream].extend(t for t, _ in events)
        if merge_into is not None:
            self.merge(merge_into)
        p.pack(self.now, everything=everything)
        batches, failures = p.dispatch(self.now)
        assert not failures
        for batch in batches:
            self.requests[batch.stream].append(
                Request(self.now, batch.nbytes, len(batch.records))
            )
            # Nothing fails here, so records leave in put order: the oldest events are theirs.
            for _ in range(sum(r.events for r in batch.records)):
                self.waits.append(self.now - self.put_times[batch.stream].popleft())
            self.in_flight.append((self.now + LATENCY, batch))

    def merge(self, into: int) -> None:
        """What the buffer does for keyless events. Put times move with the lines merged,
        after the events of the records the target stream already has waiting; lines cut in
        place keep theirs."""
        p = self.pipeline
        moved = p.settle_keyless(into)
        target = self.put_times[into]
        waiting = sum(r.events for r in p.streams[into].ready)
        for i, count in moved.items():
            times = [self.put_times[i].pop() for _ in range(count)][::-1]
            for k, t in enumerate(times):
                target.insert(waiting + k, t)
            waiting += count

    def drain(self) -> None:
        """What close() does: send everything left, then wait for every outcome."""
        for _ in range(int(120 / TICK)):
            if self.pipeline.idle:
                return
            self.tick({}, everything=True)
        raise AssertionError("the pipeline did not drain within 120 simulated seconds")


def worst_window(requests: list[Request]) -> tuple[int, int, int]:
    """The most requests, bytes and records in any 1-second window [t, t + 1)."""
    times = [r.time for r in requests]
    most = (0, 0, 0)
    for i, first in enumerate(requests):
        window = requests[i:bisect_left(times, first.time + 1.0 - 1e-9, lo=i)]
        counts = (len(window), sum(r.nbytes for r in window), sum(r.records for r in window))
        most = tuple(max(a, b) for a, b in zip(most, counts, strict=True))  # type: ignore[assignment]
    return most


@dataclass(frozen=True)
class Scenario:
    name: str
    quota: Quota
    event_sizes: tuple[int, int]
    #: Events per second per stream that load the binding quota exactly.
    full_load: float
    max_record_bytes: int = 1_024_000
    max_batch_records: int = 500


SCENARIOS = [
    # Bytes bind: a tenth of the standard quota, 0.5-4 KB events.
    Scenario("bytes", Quota.STANDARD.scaled(0.1), (512, 4096), 104_857.6 / 2304),
    # Records bind: small records (two or three events each), 15 records/s.
    Scenario("records", Quota(100.0, 1e6, 15.0), (200, 1000), 15 * 2000 / 600,
             max_record_bytes=2000),
    # Requests bind: 2 requests/s of at most 5 records of at most 4 KB.
    Scenario("requests", Quota(2.0, 1e6, 1e5), (200, 1000), 2 * 5 * 4096 / 600,
             max_record_bytes=4096, max_batch_records=5),
]


def run(scenario: Scenario, load: float, seed: int) -> Sim:
    config = BufferConfig(
        streams=STREAMS, quota=scenario.quota, max_record_bytes=scenario.max_record_bytes,
        max_batch_records=scenario.max_batch_records,
    )
    sim = Sim(config)
    rng = random.Random(seed)
    rate = scenario.full_load * load
    owed = [rng.random() for _ in STREAMS]
    low, high = scenario.event_sizes
    for _ in range(int(SECONDS / TICK)):
        staged: dict[int, list[tuple[float, bytes]]] = {}
        for s in range(len(STREAMS)):
            owed[s] += rate * TICK
            count = int(owed[s])
            owed[s] -= count
            stamps = sorted(sim.now + rng.random() * TICK for _ in range(count))
            staged[s] = [(t, line(rng.randint(low, high))) for t in stamps]
        sim.tick(staged)
    return sim


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize("load", [0.5, 1.6])
def test_no_stream_exceeds_its_quota_in_any_one_second_window(
    scenario: Scenario, load: float,
) -> None:
    sim = run(scenario, load, seed=7)
    q = scenario.quota
    sent = sum(len(r) for r in sim.requests)
    assert sent > 16 * SECONDS * 0.5, "every stream was busy (else the test proves nothing)"
    for name, requests in zip(STREAMS, sim.requests, strict=True):
        n_req, n_bytes, n_records = worst_window(requests)
        assert n_req <= q.requests_per_second, f"{name}: {n_req} requests in 1 s"
        assert n_bytes <= q.bytes_per_second, f"{name}: {n_bytes} bytes in 1 s"
        assert n_records <= q.records_per_second, f"{name}: {n_records} records in 1 s"
    if load < 1:
        worst = max(sim.waits)
        assert worst <= sim.config.linger_seconds + TICK, (
            f"below quota an event waited {worst:.3f} s before its record was sent"
        )
    else:
        # Above quota the backlog grows, but the quota is used. Not all of it: records are
        # indivisible and, here, a third to a half of a second's bytes each, so the one-second
        # window often has room left that the next record does not fit (at the real standard
        # quota, with 0.5 MB records, about 91% is used).
        binding = {"bytes": 1, "records": 2, "requests": 0}[scenario.name]
        used = [sum(
            (1, r.nbytes, r.records)[binding] for r in reqs if r.time >= SECONDS / 2
        ) / (SECONDS / 2) for reqs in sim.requests]
        limit = (q.requests_per_second, q.bytes_per_second, q.records_per_second)[binding]
        assert min(used) >= 0.7 * limit, f"used {min(used):.1f} of {limit}/s"


def sticky_billed_ratio(
    events_per_second: float, seed: int, merge: bool = True
) -> tuple[float, int, Sim]:
    """Keyless events routed the way FirehoseBuffer does (sticky until a record's worth,
    then the roomiest stream, due tails merged into the sticky stream), default settings,
    one simulated minute, then close."""
    config = BufferConfig(streams=("a", "b", "c", "d"))
    sim = Sim(config)
    p = sim.pipeline
    rng = random.Random(seed)
    sticky, sticky_bytes, sticky_events = 0, 0, 0
    owed = 0.0
    events = raw = 0
    for _ in range(int(SECONDS / TICK)):
        owed += events_per_second * TICK
        count = int(owed)
        owed -= count
        staged: dict[int, list[tuple[float, bytes]]] = {}
        for t in sorted(sim.now + rng.random() * TICK for _ in range(count)):
            data = line(rng.randint(512, 4096))
            staged.setdefault(sticky, []).append((t, data))
            sticky_bytes += len(data)
            sticky_events += 1
            if (sticky_bytes >= config.record_target_bytes
                    or sticky_events >= config.max_events_per_record):
                pending = [sum(len(d) for _, d in staged.get(i, [])) for i in range(4)]
                headroom = [s.limiter.affordable_bytes(sim.now) - s.backlog_bytes - pending[i]
                            for i, s in enumerate(p.streams)]
                sticky, sticky_bytes, sticky_events = roomiest(sticky, headroom), 0, 0
        events += count
        raw += sum(len(d) for batch in staged.values() for _, d in batch)
        sim.tick(staged, merge_into=sticky if merge else None)
    sim.drain()
    c = p.counters
    assert c.events_delivered == events
    assert c.bytes_sent == raw, "the ratio's denominator is exactly the events' bytes"
    return c.billed_bytes / c.bytes_sent, c.records_sent, sim


@pytest.mark.parametrize("rate", [500, 4_000])
def test_billed_over_raw_stays_within_half_a_percent(rate: int) -> None:
    ratio, records, _ = sticky_billed_ratio(rate, seed=3)
    unmerged, unmerged_records, _ = sticky_billed_ratio(rate, seed=3, merge=False)
    print(f"\nbilled/raw at {rate} events/s (0.5-4 KB, default settings, 4 streams, "
          f"60 simulated s): {ratio:.5f} over {records} records "
          f"({unmerged:.5f} over {unmerged_records} without merging tails)")
    assert ratio <= 1.005  # the project's goal
    if rate == 500:
        # Below quota, small leftover records are what packing loses: merging must help.
        assert ratio < unmerged


def test_merged_tails_still_leave_within_linger() -> None:
    # 500 events/s of 0.5-4 KB is a quarter of 4 streams' quota: nothing waits for quota,
    # so every wait is linger's doing.
    _, _, sim = sticky_billed_ratio(500, seed=5)
    assert max(sim.waits) <= sim.config.linger_seconds + 2 * TICK
