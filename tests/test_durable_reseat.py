"""A durable stream writes the same few pages again and again: once enough of its segment is
cut into records, it moves to a free segment with the short rest of its lines copied over.

The kernel writes a dirty file page back about every 30 s, and the next write to it faults;
write-back writes every page written since. What a stream writes between two write-backs is
what both cost, so a slow stream must not walk through whole segments. These tests drive the
real scheduler and segment files with simulated time: the furthest byte written into any
file stays a small part of a segment, every line is delivered once and in order, and a
death in the middle of a move leaves every line recoverable, a line found twice counted.
"""

from __future__ import annotations

import collections
import mmap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firehose_buffer import BufferConfig, Quota
from firehose_buffer._core.records import Batch
from firehose_buffer._core.scheduler import Scheduler
from firehose_buffer._service.outcome import Outcome
from firehose_buffer._storage import durable
from firehose_buffer._storage.durable import DurableStore, SegmentFile, read_image
from tests.support import called_from, line_ids, recover_now

TICK = 0.01


class Producer:
    """The real scheduler over real segment files, one stream, driven with simulated time:
    ``rate`` lines of ``size`` bytes per second, a tick every 10 ms, every batch delivered
    at the next tick."""

    def __init__(self, spool: Path | None, quota: Quota = Quota.HIGH, **options: int) -> None:
        config = BufferConfig(streams=("s",), spool_dir=None if spool is None else str(spool),
                              durable=spool is not None, quota=quota, **options)
        self.store = DurableStore(spool, config.streams) if spool is not None else None
        self.sched = (Scheduler.for_config(config, 0.0, backing=self.store)
                      if self.store is not None else Scheduler.for_config(config, 0.0))
        self.now = 0.0
        self.next_id = 0
        self.delivered: list[int] = []
        self._answers: list[tuple[Batch, Outcome]] = []

    def run(self, seconds: float, rate: int, size: int,
            after_tick: object = None) -> Iterator[None]:
        """Yields after every tick."""
        pad = "x" * max(0, size - 20)
        due = 0.0
        end = self.now + seconds
        while self.now < end:
            due += rate * TICK
            while due >= 1:
                self.sched.acc.append(0, orjson.dumps({"i": self.next_id, "p": pad}) + b"\n")
                self.next_id += 1
                due -= 1
            self.tick()
            yield
            self.now += TICK

    def tick(self) -> None:
        answers, self._answers = self._answers, []
        for batch, _ in answers:
            for record in batch.records:
                self.delivered.extend(line_ids(record.data))
        result = self.sched.tick(self.now, answers)
        self._answers = [(b, Outcome(codes=[None] * len(b.records))) for b in result.batches]

    def furthest_written(self) -> int:
        """The end of the data in every segment file being filled, at its furthest."""
        furthest = 0
        assert self.store is not None and self.store.owner is not None
        for path in self.store.owner.glob(f"s*{durable.SUFFIX}"):
            image = read_image_of(path)
            if image is not None:
                furthest = max(furthest, image.end)
        return furthest

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def read_image_of(path: Path) -> durable.SegmentImage | None:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return read_image(m)


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[Producer]:
    p = Producer(tmp_path)
    yield p
    p.close()


@pytest.mark.parametrize("rate", [500, 4000])
def test_a_steady_stream_writes_a_small_part_of_its_segments(producer: Producer,
                                                            rate: int) -> None:
    """500 B lines for 20 simulated seconds (5-40 MB, 1-10 segments of 4 MB): the data of
    any segment file never reaches a quarter of it, every line is delivered exactly once, in
    put order, and nothing is counted as a possible duplicate."""
    segment = producer.sched.acc.segment_bytes
    furthest = 0
    for k, _ in enumerate(producer.run(20.0, rate, 500)):
        if k % 25 == 0:
            furthest = max(furthest, producer.furthest_written())
    while not producer.sched.idle or producer._answers:
        producer.now += TICK
        producer.tick()
    written = producer.next_id * 500
    assert written > segment
    assert furthest < segment // 4, (furthest, segment)
    assert producer.delivered == list(range(producer.next_id))
    assert producer.sched.snapshot().possible_duplicates == 0


def test_a_stream_whose_records_wait_fills_its_segments_as_in_memory(tmp_path: Path) -> None:
    """3 MB/s into a stream allowed 1 MiB/s: records wait for the quota, segments are not
    freed soon, so a durable stream does not move early; its memory (what the bound counts)
    stays what the same stream holds in memory mode, give or take the segment being filled."""
    durable_one = Producer(tmp_path, quota=Quota.STANDARD)
    memory_one = Producer(None, quota=Quota.STANDARD)
    segment = durable_one.sched.acc.segment_bytes
    try:
        for _ in zip(durable_one.run(8.0, 6000, 500), memory_one.run(8.0, 6000, 500),
                     strict=True):
            held = durable_one.sched.snapshot().memory_bytes
            assert held <= memory_one.sched.snapshot().memory_bytes + segment
        assert durable_one.sched.snapshot().memory_bytes >= 8 * segment  # it did back up
    finally:
        durable_one.close()
        memory_one.close()


class Died(BaseException):
    """The process died here: nothing after this point ran (not an Exception: nothing
    may catch it and carry on)."""


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=st.sampled_from([300, 1000, 3000]), size=st.integers(50, 1200),
       moves=st.integers(0, 3), where=st.sampled_from(["filling", "acked"]))
def test_a_death_in_the_middle_of_a_move_loses_nothing_and_counts_the_copies(
    tmp_path_factory: pytest.TempPathFactory, rate: int, size: int, moves: int, where: str,
) -> None:
    """At the ``moves``-th move, the files are read as a recovery would read them at the
    moment the new segment is made the stream's (``filling``), or just before the lines'
    old place is acknowledged (``acked``): every line without an outcome is found, and a
    line found twice (its copy and its old place) is counted as a possible duplicate."""
    producer = Producer(tmp_path_factory.mktemp("spool"), max_buffer_bytes=4 * 1024 * 1024,
                        max_record_bytes=64_000)
    found: list[list[tuple[int, bool]]] = []
    seen = [0]
    original = getattr(SegmentFile, where)

    def hooked(self: SegmentFile, *args: object) -> None:
        if called_from("reseat"):
            if where == "filling":
                original(self, *args)
            if seen[0] == moves:
                assert producer.store is not None and producer.store.owner is not None
                found.append(recover_now(producer.store.owner))
                raise Died
            seen[0] += 1
            if where == "filling":
                return
        original(self, *args)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SegmentFile, where, hooked)
            with pytest.raises(Died):
                collections.deque(producer.run(60.0, rate, size), maxlen=0)
        assert found, "no move happened"
        delivered = set(producer.delivered)
        ids = [i for i, _ in found[0]]
        missing = set(range(producer.next_id)) - delivered - set(ids)
        assert not missing, sorted(missing)[:10]
        copies: dict[int, list[bool]] = {}
        for i, counted in found[0]:
            copies.setdefault(i, []).append(counted)
        twice = {i: c for i, c in copies.items() if len(c) > 1}
        assert all(len(c) == 2 and any(c) for c in twice.values()), twice
        if where == "acked":
            assert twice, "the copy and its old place are both in the files"
    finally:
        producer.close()


def test_lines_never_move_out_of_their_file_into_memory(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once no segment file can be made (a full disk, no descriptors left), new segments are
    memory (with a WARNING). A stream whose lines are in a file must not move them into
    such a segment: after every tick, a recovery finds every line that was ever in a file
    and has no outcome yet."""
    producer = Producer(tmp_path, max_buffer_bytes=4 * 1024 * 1024, max_record_bytes=64_000)

    def no_file(*args: object, **kwargs: object) -> object:
        raise OSError(24, "Too many open files")

    try:
        collections.deque(producer.run(0.05, 1000, 500), maxlen=0)  # the first file exists
        monkeypatch.setattr(durable, "_open_segment", no_file)
        assert producer.store is not None and producer.store.owner is not None
        in_file: set[int] = set()
        for _ in producer.run(5.0, 1000, 500):
            found = {i for i, _ in recover_now(producer.store.owner)}
            in_file |= found
            missing = in_file - set(producer.delivered) - found
            assert not missing, sorted(missing)[:10]
        assert in_file
    finally:
        producer.close()
