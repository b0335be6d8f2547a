"""The real Scheduler.tick with simulated time: quota compliance, linger, billed/raw ratio.

No threads and no sleeps: ``simulation.Simulation`` plays put() (the accumulator's own append)
and the worker (ticking when the scheduler asks), and a fake service acknowledges every batch
after a fixed latency; the tests measure what the service received.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from dataclasses import dataclass

import pytest
from simulation import Request, Simulation

from firehose_buffer._core.scheduler import MERGE_TAIL_BYTES, TICK_SECONDS, Batch
from firehose_buffer.config import BufferConfig
from firehose_buffer.quota import Quota

SLOT = 0.01
SECONDS = 60.0
STREAMS = tuple(f"s{i}" for i in range(16))


def line(seq: int, size: int) -> bytes:
    """A line of ``size`` bytes (newline included) that starts with its sequence number."""
    return b"%09d " % seq + b"x" * (size - 11) + b"\n"


def seqs(data: bytes) -> list[int]:
    return [int(x[:9]) for x in data[:-1].split(b"\n")]


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


def offer(sim: Simulation, rates: list[float], sizes: tuple[int, int], seconds: float,
          rng: random.Random, *, keyed: bool = False) -> tuple[int, int]:
    """Put ``rates[k]`` events/s (to stream k when ``keyed``, else keyless) with
    random times within each 10 ms slot; returns (events, bytes) put."""
    owed = [rng.random() for _ in rates]
    low, high = sizes
    events = raw = 0
    for slot in range(int(seconds / SLOT)):
        start = slot * SLOT
        batch: list[tuple[float, int]] = []
        for k, rate in enumerate(rates):
            owed[k] += rate * SLOT
            count = int(owed[k])
            owed[k] -= count
            batch.extend((start + rng.random() * SLOT, k) for _ in range(count))
        batch.sort()
        for t, k in batch:
            data = line(events, rng.randint(low, high))
            sim.put(t, data, k if keyed else None)
            events += 1
            raw += len(data)
    sim.advance(seconds)
    return events, raw


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize("load", [0.5, 1.6])
def test_no_stream_exceeds_its_quota_in_any_one_second_window(
    scenario: Scenario, load: float,
) -> None:
    config = BufferConfig(
        streams=STREAMS, quota=scenario.quota, max_record_bytes=scenario.max_record_bytes,
        max_batch_records=scenario.max_batch_records,
        # Room for a minute's backlog above quota: what is measured here is pacing.
        max_buffer_bytes=256 * 1024 * 1024,
    )
    sim = Simulation(config, keyed=True)
    rate = scenario.full_load * load
    offer(sim, [rate] * len(STREAMS), scenario.event_sizes, SECONDS, random.Random(7),
          keyed=True)
    q = scenario.quota
    assert not sim.failures
    sent = sum(len(r) for r in sim.requests)
    assert sent > 16 * SECONDS * 0.5, "every stream was busy (else the test proves nothing)"
    for name, requests in zip(STREAMS, sim.requests, strict=True):
        n_req, n_bytes, n_records = worst_window(requests)
        assert n_req <= q.requests_per_second, f"{name}: {n_req} requests in 1 s"
        assert n_bytes <= q.bytes_per_second, f"{name}: {n_bytes} bytes in 1 s"
        assert n_records <= q.records_per_second, f"{name}: {n_records} records in 1 s"
    if load < 1:
        worst = max(sim.waits)
        assert worst <= config.linger_seconds + TICK_SECONDS, (
            f"below quota an event waited {worst:.3f} s before its record was sent"
        )
    else:
        # Above quota the backlog grows, but the quota is used. Not all of it: records are
        # indivisible and, here, a third to a half of a second's bytes each, so the one-second
        # window often has room left that the next record does not fit.
        binding = {"bytes": 1, "records": 2, "requests": 0}[scenario.name]
        used = [sum(
            (1, r.nbytes, r.records)[binding] for r in reqs if r.time >= SECONDS / 2
        ) / (SECONDS / 2) for reqs in sim.requests]
        limit = (q.requests_per_second, q.bytes_per_second, q.records_per_second)[binding]
        print(f"\n{scenario.name} at {load}x: the least used stream used "
              f"{min(used) / limit:.3f} of its quota")
        assert min(used) >= 0.7 * limit, f"used {min(used):.1f} of {limit}/s"


#: As the benchmark's cost figure: 4,000 events/s of ~2.3 KB (~9 MB/s) needs more than
#: four streams' 1 MiB/s, and above quota the memory bound fills instead of the bill growing.
KEYLESS_STREAMS = 16
#: The project's goal for billed/raw; the old core (which moved short tails of keyless
#: streams into the sticky one) gave 1.0016.
BILLED_GOAL = 1.005


def keyless_minute(events_per_second: float, seed: int,
                   streams: int = KEYLESS_STREAMS) -> tuple[Simulation, list[tuple[int, int]]]:
    """Keyless 0.5-4 KB events routed as put() routes them, default settings, one simulated
    minute, then close. Checks that every event was delivered once, in put order within its
    stream, and that the bytes sent are exactly the events' bytes. Returns the simulation
    and (stream, size) of every put, in order."""
    config = BufferConfig(streams=tuple(f"k{i}" for i in range(streams)))
    sim = Simulation(config, keyed=False)
    delivered: list[list[int]] = [[] for _ in range(streams)]

    def check(batch: Batch) -> None:
        for r in batch.records:
            delivered[batch.stream].extend(seqs(bytes(r.data)))

    sim.on_batch = check
    placed: list[list[int]] = [[] for _ in range(streams)]
    log: list[tuple[int, int]] = []
    put = sim.put

    def tracking_put(t: float, data: bytes, stream: int | None = None) -> int:
        index = put(t, data, stream)
        placed[index].append(int(data[:9]))
        log.append((index, len(data)))
        return index

    sim.put = tracking_put  # type: ignore[method-assign]
    events, raw = offer(sim, [events_per_second], (512, 4096), SECONDS,
                        random.Random(seed))
    sim.drain()
    c = sim.scheduler.ledger
    assert not sim.failures
    # Keyless streams are interchangeable: a short remainder may move to the sticky stream,
    # so only "every event once" holds across streams (order holds for keyed events).
    every = sorted(seq for got in delivered for seq in got)
    assert every == sorted(seq for put in placed for seq in put), "every event once"
    assert c.events_delivered == events
    assert c.bytes_sent == raw, "the ratio's denominator is exactly the events' bytes"
    return sim, log


@pytest.mark.parametrize("rate", [500, 4_000])
def test_billed_over_raw_stays_within_half_a_percent(rate: int) -> None:
    sim, log = keyless_minute(rate, seed=3)
    c = sim.scheduler.ledger
    ratio = c.billed_bytes / c.bytes_sent
    print(f"\nbilled/raw at {rate} events/s (0.5-4 KB, default settings, "
          f"{KEYLESS_STREAMS} streams, 60 simulated s): {ratio:.5f} over {c.records_sent} "
          f"records, {c.requests_sent} requests, {len(log)} events")
    assert ratio <= BILLED_GOAL


def test_keyless_events_leave_within_linger_below_quota() -> None:
    # 500 events/s of 0.5-4 KB is a fourteenth of 16 streams' quota: nothing waits for
    # quota, so every wait is linger's doing.
    sim, _ = keyless_minute(500, seed=5)
    assert max(sim.waits) <= sim.config.linger_seconds + TICK_SECONDS


@pytest.mark.parametrize("rate", [500, 4_000])
def test_keyless_events_stay_on_a_stream_for_a_record_then_move(rate: int) -> None:
    """Sticky routing as the worker runs it (a look every tick): a stream is left once it
    holds a record's worth, so a first visit brings at least a record; later visits at least
    most of one (the stream may still hold the tail of the last); every stream is used."""
    sim, log = keyless_minute(rate, seed=11)
    target = sim.config.record_target_bytes
    runs: list[list[int]] = []
    for stream, size in log:
        if runs and runs[-1][0] == stream:
            runs[-1][1] += size
        else:
            runs.append([stream, size])
    assert {stream for stream, _ in runs} == set(range(KEYLESS_STREAMS))
    seen: set[int] = set()
    # A visit ends once the stream holds a record's worth, merged remainders included, so
    # its own puts may be a remainder short of one.
    for stream, size in runs[:-1]:
        if stream not in seen:
            assert size >= target - MERGE_TAIL_BYTES, (stream, size)
            seen.add(stream)
        assert size >= 0.75 * target - MERGE_TAIL_BYTES, (stream, size)
