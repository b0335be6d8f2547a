"""Durable segments in one process: the acknowledgment record under-reports at every store,
recovery reads what a death leaves (torn lines, holes, full segments), and at any moment of
a scheduler's life the files hold every line without an outcome.

The process-death tests (real kills, a stopped owner, gunicorn, a full disk) are in
``test_durable_kills.py``.
"""

from __future__ import annotations

import logging
import mmap
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firehose_buffer import BufferConfig, ConfigurationError, FirehoseBuffer
from firehose_buffer._core.records import Batch, Failure
from firehose_buffer._core.scheduler import Scheduler
from firehose_buffer._service.outcome import Outcome
from firehose_buffer._storage import durable
from firehose_buffer._storage.durable import (
    DurableStore,
    dead_owners,
    read_image,
)
from firehose_buffer.emulator import LocalFirehose
from tests.support import accepted_lines, line_ids, recover_now

# -- configuration --------------------------------------------------------------------------


def test_durable_needs_a_spool_dir_and_is_read_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="spool_dir"):
        BufferConfig(streams=("s",), durable=True)
    env = {"FIREHOSE_BUFFER_STREAMS": "s", "FIREHOSE_BUFFER_SPOOL_DIR": str(tmp_path),
           "FIREHOSE_BUFFER_DURABLE": "true"}
    assert BufferConfig.from_env(env).durable is True
    assert BufferConfig.from_env({**env, "FIREHOSE_BUFFER_DURABLE": "0"}).durable is False
    with pytest.raises(ConfigurationError, match="DURABLE"):
        BufferConfig.from_env({**env, "FIREHOSE_BUFFER_DURABLE": "maybe"})


def test_a_spool_dir_where_files_cannot_be_made_fails_at_construction(tmp_path: Path) -> None:
    blocked = tmp_path / "spool"
    blocked.mkdir()
    (blocked / durable.DIRECTORY).write_text("a file where the directory should be")
    with pytest.raises(ConfigurationError, match="segment files"):
        FirehoseBuffer(BufferConfig(streams=("s",), spool_dir=str(blocked), durable=True,
                                    endpoint_url="http://127.0.0.1:9", region="us-east-1"))


# -- the header: every intermediate state under-reports --------------------------------------


class Recorder:
    """Stands in for a header's words: a snapshot of the page after every single store."""

    def __init__(self, words: memoryview) -> None:
        self.words = words
        self.snapshots: list[bytes] = []

    def __getitem__(self, index: int) -> int:
        value: int = self.words[index]
        return value

    def __setitem__(self, index: int, value: int) -> None:
        self.words[index] = value
        self.snapshots.append(self.words.tobytes())

    def release(self) -> None:
        self.words.release()


def _store(tmp_path: Path) -> Iterator[DurableStore]:
    store = DurableStore(tmp_path, ("s",))
    try:
        yield store
    finally:
        store.close()


def _reported_acked(header: bytes, data: bytes, lines: list[tuple[int, int]]
                    ) -> set[int] | None:
    """Which lines (by index) a recovery reading this header and data would not send."""
    image = read_image(bytearray(header) + data)  # type: ignore[arg-type]
    if image is None:
        return None
    unacked = image.unacked()
    return {k for k, (a, b) in enumerate(lines)
            if b <= image.end and not any(s <= a and b <= e for s, e in unacked)}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=120),
       cuts=st.lists(st.integers(1, 6), min_size=1, max_size=120),
       seed=st.integers(0, 2**32))
def test_every_store_of_the_acknowledgment_record_under_reports(
    tmp_path: Path, sizes: list[int], cuts: list[int], seed: int,
) -> None:
    """Lines are cut into records acknowledged in a random order (more disjoint ranges than
    the header has slots, at times); after EVERY 8-byte store, a recovery reading the file
    would resend every line not yet acknowledged. Once all are, it resends nothing."""
    for store in _store(tmp_path / str(seed)):
        segment = store.allocate(64 * 1024)
        file = segment.file
        assert file is not None
        store.filling(segment, 0)
        lines: list[tuple[int, int]] = []
        for k, size in enumerate(sizes):
            line = orjson.dumps({"k": k, "p": "x" * size}) + b"\n"
            start = segment.tell()
            segment.write(line)
            lines.append((start, segment.tell()))
        records: list[list[int]] = []
        k = 0
        for c in cuts * len(sizes):
            if k >= len(lines):
                break
            records.append(list(range(k, min(len(lines), k + c))))
            k += c
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        recorder = Recorder(file._words)
        file._words = recorder  # type: ignore[assignment]
        data = bytes(segment)
        acked: set[int] = set()
        for r in order:
            members = records[r]
            acked.update(members)  # delivered: true before anything is stored
            recorder.snapshots.clear()
            file.acked(lines[members[0]][0], lines[members[-1]][1])
            for snapshot in recorder.snapshots:
                reported = _reported_acked(snapshot, data, lines)
                assert reported is not None
                assert reported <= acked, sorted(reported - acked)
        reported = _reported_acked(recorder.words.tobytes(), data, lines)
        assert reported == set(range(len(lines)))
        # Reuse: FREE from the first store on (nothing recovered), zeroed, then filling anew.
        recorder.snapshots.clear()
        file.recycle(segment.tell())
        assert recorder.snapshots
        assert all(_reported_acked(s, data, lines) is None for s in recorder.snapshots)
        assert bytes(segment) == bytes(len(segment))


# -- what recovery reads -----------------------------------------------------------------------


def _image(tmp_path: Path, data: bytes, *, acked: tuple[int, int] | None = None,
           sent: int = 0) -> Any:
    for store in _store(tmp_path):
        segment = store.allocate(8192)
        file = segment.file
        assert file is not None
        store.filling(segment, 0)
        segment.write(data)
        if acked is not None:
            file.acked(*acked)
        file.in_flight(sent)
        with open(file.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return read_image(m)
    raise AssertionError("unreachable")


def test_data_ends_at_the_first_nul_and_a_line_cut_short_is_dropped(tmp_path: Path) -> None:
    whole = b'{"a":1}\n{"a":2}\n'
    # Killed mid-copy: the head of the third line written, not its end.
    image = _image(tmp_path / "1", whole + b'{"a":')
    assert (image.end, image.unacked(), image.torn) == (len(whole), [(0, len(whole))], 1)
    # The tail written before the head (a copy is not made front to back): a hole, then
    # bytes; only what precedes the hole counts, and the line is counted as torn.
    image = _image(tmp_path / "2", whole + b"\0\0\0" + b'3}\n')
    assert (image.end, image.torn) == (len(whole), 1)
    # Nothing cut short.
    image = _image(tmp_path / "3", whole, acked=(0, 8), sent=8)
    assert (image.unacked(), image.torn, image.sent) == ([(8, len(whole))], 0, 8)


def test_a_full_segment_has_no_nul_and_loses_no_line(tmp_path: Path) -> None:
    line = b'{"pad":"' + b"y" * 8181 + b'"}\n'
    assert len(line) == 8192
    image = _image(tmp_path, line)
    assert (image.end, image.unacked(), image.torn) == (8192, [(0, 8192)], 0)


# -- the scheduler's life: at any moment, the files hold every line without an outcome -------


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_recovery_at_any_moment_finds_every_line_without_an_outcome(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject,
) -> None:
    """The real scheduler with durable segments, driven step by step with simulated time:
    puts (some longer than a segment), ticks, answers (delivered, refused and retried,
    failed), the failure sink settling late. After every step, reading the files as a
    recovery would must find every accepted line that is neither delivered nor kept by the
    sink; a line found that already had an outcome must be counted as a possible duplicate;
    no line may be found twice uncounted (remainders moved between streams)."""
    spool = tmp_path_factory.mktemp("spool")
    config = BufferConfig(streams=("a", "b"), spool_dir=str(spool), durable=True,
                          max_buffer_bytes=1_024_000, max_record_bytes=20_000,
                          linger_seconds=1.0, retry_initial_backoff_seconds=0.1,
                          retry_max_backoff_seconds=0.2, record_ttl_seconds=30.0)
    store = DurableStore(spool, config.streams)
    sched = Scheduler.for_config(config, 0.0, backing=store)
    acc = sched.acc
    now = 0.0
    accepted: set[int] = set()
    done: set[int] = set()  # delivered, or kept by the failure sink
    in_flight: list[Batch] = []
    failed: list[Failure] = []
    next_id = 0

    def tick(outcomes: list[tuple[Batch, Outcome]] = ()) -> None:  # type: ignore[assignment]
        for batch, outcome in outcomes:
            codes = outcome.codes
            for r, code in zip(batch.records, codes or [], strict=False):
                if code is None:
                    done.update(line_ids(r.data))
        result = sched.tick(now, outcomes)
        in_flight.extend(result.batches)
        failed.extend(result.failures)

    for _ in range(data.draw(st.integers(10, 60), label="steps")):
        action = data.draw(st.sampled_from(
            ["put", "put", "put", "tick", "answer", "answer", "settle", "later"]))
        if action == "put":
            for _ in range(data.draw(st.integers(1, 40))):
                big = data.draw(st.integers(0, 30)) == 0
                size = 300_000 if big else data.draw(st.integers(1, 900))
                line = orjson.dumps({"i": next_id, "p": "x" * size}) + b"\n"
                index = sched.router.sticky if data.draw(st.booleans()) else \
                    data.draw(st.integers(0, 1))
                try:
                    acc.append(index, line)
                except Exception:
                    break
                accepted.add(next_id)
                next_id += 1
        elif action == "tick":
            tick()
        elif action == "answer" and in_flight:
            batch = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1)))
            kind = data.draw(st.sampled_from(["ok", "ok", "mixed", "reject"]))
            if kind == "reject":
                outcome = Outcome(error="AccessDeniedException")
            else:
                outcome = Outcome(codes=[
                    None if kind == "ok" or data.draw(st.booleans())
                    else "ServiceUnavailableException" for _ in batch.records])
            tick([(batch, outcome)])
        elif action == "settle" and failed:
            failure = failed.pop(0)
            done.update(orjson.loads(line)["i"] for line in failure.lines())
            sched.settle(failure.records)
        elif action == "later":
            now += data.draw(st.sampled_from([0.05, 0.3, 1.0]))
            tick()
        assert store.owner is not None or not accepted
        if store.owner is None:
            continue
        found = recover_now(store.owner)
        ids = [i for i, _ in found]
        missing = accepted - done - set(ids)
        assert not missing, sorted(missing)[:10]
        assert set(ids) <= accepted
        # Firehose may have stored what is in flight (the answer lost with the process).
        maybe = done | {i for batch in in_flight for r in batch.records for i in line_ids(r.data)}
        for i, counted in found:
            assert counted or i not in maybe, i
        assert len(ids) == len(set(ids))  # a moved remainder is acknowledged where it was
    store.close()


# -- a clean close leaves nothing; a failure goes to the spool before it is acknowledged -----


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=["s"], data_dir=tmp_path / "delivered", keep_records=True) as fh:
        yield fh


def test_a_clean_close_deletes_the_segment_files(
    firehose: LocalFirehose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    spool = tmp_path / "spool"
    config = BufferConfig(streams=("s",), spool_dir=str(spool), durable=True,
                          endpoint_url=firehose.endpoint_url, region="us-east-1",
                          linger_seconds=0.05, max_buffer_bytes=2_048_000)
    with FirehoseBuffer(config) as buffer:
        for i in range(2000):
            buffer.put({"i": i, "pad": "z" * 500})
        buffer.put({"i": 2000, "pad": "z" * 600_000})  # longer than a segment: a file of its own
        owners = os.listdir(spool / durable.DIRECTORY)
        assert len(owners) == 1
        assert "lock" in os.listdir(spool / durable.DIRECTORY / owners[0])
        assert buffer.flush(10)
    assert os.listdir(spool / durable.DIRECTORY) == []
    assert sorted(orjson.loads(line)["i"] for line in accepted_lines(firehose, "s")) == \
        list(range(2001))


def test_failed_events_are_spooled_and_only_then_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream that does not exist fails every record: the lines go to the spool, and the
    segments are acknowledged (so a recovery would not send them a second time) and reused."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    spool = tmp_path / "spool"
    with LocalFirehose(streams=["other"]) as fh:
        config = BufferConfig(streams=("s",), spool_dir=str(spool), durable=True,
                              endpoint_url=fh.endpoint_url, region="us-east-1",
                              linger_seconds=0.05)
        buffer = FirehoseBuffer(config)
        for i in range(500):
            buffer.put({"i": i})
        with caplog.at_level(logging.ERROR):
            result = buffer.flush(10)
        assert result.failed == 500
        store = buffer._engine.store
        assert store is not None and store.owner is not None
        assert dead_owners(spool) == []  # ours: never taken for a dead one
        assert recover_now(store.owner) == []
        buffer.close()
    assert buffer.stats().events_spooled == 500
