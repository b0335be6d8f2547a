"""Compressed records through the real scheduler and the worker's own compression step, with
simulated time: every line put leaves exactly once, in put order within its stream, inside
records that are each one complete frame or member; quotas and billing count wire bytes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simulation import Simulation

from firehose_buffer._core.compression import decompress_object, sniff
from firehose_buffer._core.scheduler import Batch
from firehose_buffer._storage.segments import Full
from firehose_buffer.config import BufferConfig
from firehose_buffer.quota import Quota

STREAMS = ("z0", "z1", "z2")


def _line(stream: int, seq: int, size: int, rng: random.Random) -> bytes:
    # Half repeated text, half random: compressible, as tracking events are, but not wholly.
    body = (b"page_view,checkout," * 40)[: size // 2] + rng.randbytes(size // 4).hex().encode()
    head = b'{"s":%d,"n":%d,"p":"' % (stream, seq)
    return head + body[: max(0, size - len(head) - 3)] + b'"}\n'


@settings(max_examples=25, deadline=None)
@given(
    codec=st.sampled_from(["zstd", "gzip"]),
    seed=st.integers(0, 2**32),
    rate=st.sampled_from([50.0, 400.0, 2_000.0]),
    max_buffer=st.sampled_from([256 * 1024, 1_000_000, 8 * 1024 * 1024]),
    seconds=st.sampled_from([1.0, 3.0]),
)
def test_every_line_leaves_once_in_order_in_whole_frames(
    codec: str, seed: int, rate: float, max_buffer: int, seconds: float,
) -> None:
    """Keyed lines of 0.2-4 KB at a few rates, segments small enough that runs span several
    of them and are cut short: each stream receives exactly its lines, in order, and every
    record decodes alone to whole lines."""
    config = BufferConfig(
        streams=STREAMS, compression=codec, linger_seconds=0.3,  # type: ignore[arg-type]
        max_buffer_bytes=max_buffer, quota=Quota.STANDARD.scaled(0.2),
        max_record_bytes=60_000,
    )
    sim = Simulation(config, keyed=True)
    received: dict[int, list[bytes]] = {i: [] for i in range(len(STREAMS))}

    def on_batch(batch: Batch) -> None:
        for record in batch.records:
            wire = bytes(record.data)
            assert sniff(wire) == codec
            assert len(wire) <= config.max_record_bytes
            lines = decompress_object(wire)
            assert lines.endswith(b"\n")
            received[batch.stream].extend(lines[:-1].split(b"\n"))

    sim.on_batch = on_batch
    rng = random.Random(seed)
    sent: dict[int, list[bytes]] = {i: [] for i in range(len(STREAMS))}
    t = 0.0
    seq = 0
    while t < seconds:
        t += rng.expovariate(rate)
        stream = rng.randrange(len(STREAMS))
        data = _line(stream, seq, rng.randint(200, 4096), rng)
        seq += 1
        while True:
            try:
                sim.put(t, data, stream)
                break
            except Full:  # put() would block (on_full="block") until the worker makes room
                t += 0.01
                sim.advance(t)
        sent[stream].append(data[:-1])
    sim.drain()
    assert sim.failures == []
    for i in range(len(STREAMS)):
        assert received[i] == sent[i], f"stream {i}: lines lost, repeated or reordered"
    ledger = sim.scheduler.ledger
    assert ledger.events_delivered == seq
    assert ledger.raw_bytes_sent == sum(len(x) + 1 for v in sent.values() for x in v)
    assert ledger.bytes_sent < ledger.raw_bytes_sent  # counted on the wire, compressed


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_compressed_records_bill_a_fraction_of_the_raw_bytes(codec: str) -> None:
    """One simulated minute of repetitive events at 500 events/s on 2 streams: billed bytes
    (compressed, rounded up per record) are well under the raw bytes, and no one-second window
    of a stream carries more wire bytes than its quota."""
    config = BufferConfig(streams=STREAMS[:2], compression=codec,  # type: ignore[arg-type]
                          quota=Quota.STANDARD.scaled(0.1))
    sim = Simulation(config, keyed=False)
    rng = random.Random(7)
    t = 0.0
    seq = 0
    while t < 60.0:
        t += rng.expovariate(500.0)
        sim.put(t, _line(0, seq, rng.randint(500, 4096), rng))
        seq += 1
    sim.drain()
    ledger = sim.scheduler.ledger
    assert ledger.events_delivered == seq
    assert ledger.billed_bytes / ledger.raw_bytes_sent < 0.7
    limit = config.quota.bytes_per_second
    for requests in sim.requests:
        times = [r.time for r in requests]
        for i, first in enumerate(requests):
            window = [r for r in requests[i:] if r.time < first.time + 1.0]
            assert sum(r.nbytes for r in window) <= limit + 1, times[i]
