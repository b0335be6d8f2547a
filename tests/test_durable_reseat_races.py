"""A durable stream's move to a free segment (``Accumulator.reseat``) while producers keep
writing: put() never takes a lock for a line that fits, so a producer thread can run while
the worker moves the stream on. Whatever it writes meanwhile must leave in put order, as
keyed lines always do within a stream (except for retried records)."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer._storage import segments
from firehose_buffer._storage.durable import DurableStore
from firehose_buffer._storage.segments import Segment
from firehose_buffer.emulator import LocalFirehose
from tests.support import accepted_lines, called_from
from tests.test_durable_reseat import Producer


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[Producer]:
    p = Producer(tmp_path)
    yield p
    p.close()


def test_lines_put_while_a_stream_moves_leave_in_put_order(
    producer: Producer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real scheduler over real segment files: while the worker moves the stream (it
    holds the accumulator's lock, in the middle of ``reseat``), a producer thread puts a
    line the way put() does (``ring[-1].write`` without a lock; the slow path, which waits
    for the lock, if that write fails). Every line is delivered once and in put order."""
    assert segments.LOCK_FREE, "the lock-free path is the one that can run during a move"
    acc = producer.sched.acc
    moves = [0]
    producers: list[threading.Thread] = []
    original = DurableStore.filling

    def filling(self: DurableStore, segment: Segment, index: int) -> None:
        original(self, segment, index)
        if not called_from("reseat"):
            return
        moves[0] += 1
        line = orjson.dumps({"i": producer.next_id, "p": "during a move"}) + b"\n"
        producer.next_id += 1
        tried = threading.Event()

        def put() -> None:  # put()'s two paths
            try:
                acc.rings[0][-1].write(line)
                return
            except ValueError:
                pass
            finally:
                tried.set()
            with acc.lock:
                acc.slow_append(0, line)

        thread = threading.Thread(target=put)
        producers.append(thread)
        thread.start()
        assert tried.wait(10)

    def join_producers() -> None:
        while producers:
            thread = producers.pop()
            thread.join(10)
            assert not thread.is_alive()

    monkeypatch.setattr(DurableStore, "filling", filling)
    for _ in producer.run(6.0, 1000, 500):
        join_producers()  # its line is put before the next one
    while not producer.sched.idle or producer._answers:
        producer.now += 0.01
        producer.tick()
        join_producers()
    assert moves[0] >= 2, "the stream never moved"
    delivered = producer.delivered
    assert sorted(delivered) == list(range(producer.next_id)), "lost or doubled"
    out_of_order = [(a, b) for a, b in itertools.pairwise(delivered) if b < a]
    assert not out_of_order, f"{len(out_of_order)} lines out of put order: {out_of_order[:5]}"
    assert producer.sched.snapshot().possible_duplicates == 0


@pytest.fixture
def firehose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFirehose]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with LocalFirehose(streams=["s"], keep_records=True) as fh:
        yield fh


RATE = 2000


@pytest.mark.slow
def test_a_real_buffer_delivers_each_producers_lines_in_put_order_across_moves(
    firehose: LocalFirehose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real durable buffer, one stream (so every line is in one stream's order), two
    producer threads each putting about 2,000 events/s for 3 s (so the stream moves to a
    free segment every few hundred lines). Threads switch as often as the interpreter allows,
    as on a busy server. Each thread's lines reach Firehose in the order it put them."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    moves = [0]
    original = segments.Accumulator.reseat

    def reseat(self: segments.Accumulator, *args: Any) -> int | None:
        end = original(self, *args)
        moves[0] += end is not None
        return end

    monkeypatch.setattr(segments.Accumulator, "reseat", reseat)
    config = BufferConfig(streams=("s",), spool_dir=str(tmp_path / "spool"), durable=True,
                          endpoint_url=firehose.endpoint_url, region="us-east-1",
                          linger_seconds=0.05, max_buffer_bytes=1024 * 1024)
    counts = [0, 0]
    try:
        with FirehoseBuffer(config) as buffer:
            stop = time.monotonic() + 3.0

            def produce(t: int) -> None:
                n = 0
                due = time.monotonic()
                while due < stop:
                    # Busy between puts, as a server thread doing its work: always runnable.
                    while time.monotonic() < due:
                        pass
                    buffer.put({"t": t, "n": n, "pad": "x" * 400})
                    n += 1
                    due += 1 / RATE
                counts[t] = n

            threads = [threading.Thread(target=produce, args=(t,)) for t in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert buffer.flush(30)
    finally:
        sys.setswitchinterval(previous)
    assert moves[0] >= 10, moves
    got: dict[int, list[int]] = {0: [], 1: []}
    for line in accepted_lines(firehose, "s"):
        event = orjson.loads(line)
        got[event["t"]].append(event["n"])
    for t in (0, 1):
        assert sorted(got[t]) == list(range(counts[t])), "lost or doubled"
        late = [(a, b) for a, b in itertools.pairwise(got[t]) if b < a]
        assert not late, f"thread {t}: {len(late)} lines out of put order: {late[:5]}"
