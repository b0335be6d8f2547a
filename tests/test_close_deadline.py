"""close() (or the exit hook, which is close(exit_timeout_seconds)) with a deadline it cannot
meet by delivering: what it holds must be handed over (spool, ``on_failure``) or reported
lost, exactly, before it returns; its result must say what happened; events that may have
been stored are counted as possible duplicates; and nothing it leaves behind may block the
next buffer.

An event is *lost* when put() accepted it and it is in none of: delivered, spooled, handed to
``on_failure``; each lost event must be in the count of the ERROR line close() logs. The
endpoint is a closed port on 127.0.0.1 (connection refused at once, as when a service's
network to Firehose is down at shutdown), a stream that does not exist, or a call held by
the emulator. Scenarios that end with the process exiting run in a child Python process
(the exit hook, daemon threads dying at exit).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hostile_server import HostileFirehose
from support import Reported, accepted_lines, wait_for

from firehose_buffer import BufferConfig, FirehoseBuffer, FlushResult
from firehose_buffer.emulator import Fault, LocalFirehose

ROOT = Path(__file__).resolve().parent.parent
STREAM = "close-0"
LOST = re.compile(r"close\(\) timed out: (\d+) events")


def _run_child(script: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _spool_lines(spool: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in spool.rglob("*.jsonl")
               if path.is_file())


#: Puts ``count`` small events into a buffer with a spool against a refused endpoint, lets a
#: flush try them, then ends: through close(timeout) and a normal exit, or through the exit
#: hook alone.
CLOSING_CHILD = """
    import json, logging, sys
    from firehose_buffer import BufferConfig, FirehoseBuffer
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    endpoint, spool, count, timeout, how = sys.argv[1:6]
    buffer = FirehoseBuffer(BufferConfig(
        streams=("close-0",), endpoint_url=endpoint, region="us-east-1", spool_dir=spool,
        max_buffer_bytes=256 << 20, exit_timeout_seconds=float(timeout)))
    for seq in range(int(count)):
        buffer.put(b'{"seq":%d}' % seq)
    # Every event is cut into records and has been tried (refused): what close() holds is
    # ready to hand over, and the worker is idle, waiting out the backoff.
    assert not buffer.flush(1.0)
    if how == "close":
        result = buffer.close(float(timeout))
        print(json.dumps({"lost": buffer.stats().events_lost}), flush=True)
    # how == "exit": the exit hook closes it within exit_timeout_seconds
"""


def _close_in_child(endpoint: str, spool: Path, count: int, timeout: float,
                    how: str) -> tuple[int, int, str]:
    """(lines in the spool after the child exited, events it logged as lost, its stderr)."""
    done = _run_child(CLOSING_CHILD, endpoint, str(spool), str(count), str(timeout), how)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [int(m.group(1)) for m in LOST.finditer(done.stderr)]
    return _spool_lines(spool), sum(logged), done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how", ["close", "exit"])
def test_close_out_of_time_accounts_for_every_event(
    refused_endpoint: str, tmp_path: Path, how: str,
) -> None:
    """A service shutting down with a million events held and Firehose unreachable, given
    0.2 s to close (or ``exit_timeout_seconds=0.2``): afterwards each event must be in the
    spool or counted in the ERROR line that says how many were lost, and none counted lost
    may be in the spool after all. If close() looked between the worker failing everything
    and handing it over, it would see nothing, return, and the process would exit with the
    spool empty and nothing logged: the operator's numbers would be wrong."""
    count = 1_000_000
    spool = tmp_path / "spool"
    on_disk, lost, stderr = _close_in_child(refused_endpoint, spool, count, 0.2, how)
    assert on_disk + lost >= count, (
        f"{count - on_disk - lost} of {count} events vanished silently: {on_disk} in the "
        f"spool, {lost} reported lost; log: {stderr[-600:]!r}"
    )
    assert on_disk + lost == count, (
        f"{on_disk} events in the spool and {lost} reported lost: "
        f"{on_disk + lost - count} counted lost were kept after all"
    )


@pytest.mark.slow
def test_close_with_a_dead_endpoint_keeps_everything_in_the_spool(
    refused_endpoint: str, tmp_path: Path,
) -> None:
    """close(0.6) holding a million small events (about 9 MB) with Firehose unreachable and a
    spool: writing 9 MB of JSON Lines takes a small part of a second, so nothing may be
    lost. close() must keep enough of its timeout for the hand-over, not spend it waiting
    for a flush that cannot succeed."""
    count = 1_000_000
    spool = tmp_path / "spool"
    on_disk, lost, stderr = _close_in_child(refused_endpoint, spool, count, 0.6, "close")
    assert (on_disk, lost) == (count, 0), (
        f"close(0.6) kept {on_disk} of {count} events in the spool and reported {lost} "
        f"lost; log: {stderr[-600:]!r}"
    )


def _refused_buffer(endpoint: str, reported: Reported) -> FirehoseBuffer:
    return FirehoseBuffer(BufferConfig(
        streams=(STREAM,), endpoint_url=endpoint, region="us-east-1", on_failure=reported,
        linger_seconds=0.05,
    ))


def test_close_result_counts_the_events_it_failed(refused_endpoint: str) -> None:
    """close() that fails every event (handing each to ``on_failure`` before it returns)
    must say so in its result: the caller reads ``FlushResult`` to decide whether to alert.
    The result of the flush that timed out (``pending=N, failed=0``) would say the events
    were still somewhere."""
    reported = Reported()
    buffer = _refused_buffer(refused_endpoint, reported)
    count = 2_000
    for seq in range(count):
        buffer.put({"seq": seq})
    result = buffer.close(2.0)
    handed = len(reported.events)
    assert handed == count  # every event reached on_failure before close() returned
    assert result == FlushResult(delivered=0, failed=count, pending=0), (
        f"close() returned {result} after handing all {count} events to on_failure"
    )


def test_concurrent_close_calls_return_the_same_result(refused_endpoint: str) -> None:
    """Two threads closing the same buffer at once (a signal handler and the main thread, a
    lifespan and an atexit hook) must get the same answer about the same events, not one
    saying everything is pending and the other that nothing is."""
    reported = Reported()
    buffer = _refused_buffer(refused_endpoint, reported)
    count = 2_000
    for seq in range(count):
        buffer.put({"seq": seq})
    start = threading.Barrier(2)
    results: list[FlushResult] = []

    def close() -> None:
        start.wait()
        results.append(buffer.close(2.0))

    threads = [threading.Thread(target=close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10.0)
    assert len(reported.events) == count
    assert len(results) == 2 and results[0] == results[1], (
        f"two concurrent close() calls returned {results}"
    )
    assert results[0] == FlushResult(delivered=0, failed=count, pending=0), results


@pytest.fixture
def firehose() -> Iterator[HostileFirehose]:
    with HostileFirehose() as server:
        yield server


#: Buffer A (endpoint refused) closes out of time, then its worker finishes spooling in the
#: background; buffer B, later in the same process, on a healthy endpoint and the same spool,
#: must be able to replay A's files.
RELEASING_CHILD = """
    import json, sys, time
    from firehose_buffer import BufferConfig, FirehoseBuffer
    refused, healthy, spool, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    a = FirehoseBuffer(BufferConfig(streams=("close-0",), endpoint_url=refused,
                                    region="us-east-1", spool_dir=spool,
                                    max_buffer_bytes=256 << 20))
    for seq in range(count):
        a.put(b'{"seq":%d}' % seq)
    a.close(0.1)  # far too short: the worker goes on handing over after it returns
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = a.stats()
        if stats.events_buffered == 0 and stats.events_spooled + stats.events_lost >= count:
            break
        time.sleep(0.05)
    a_stats = a.stats()
    time.sleep(0.2)  # A's worker has nothing left to do; give it a moment to end
    b = FirehoseBuffer(BufferConfig(streams=("close-0",), endpoint_url=healthy,
                                    region="us-east-1", spool_dir=spool))
    replayed_all = b.wait_for_replay(15.0)
    b.close(15.0)
    print(json.dumps({"a_spooled": a_stats.events_spooled, "a_lost": a_stats.events_lost,
                      "b_replayed": b.stats().events_replayed,
                      "b_delivered": b.stats().events_delivered,
                      "replay_done": replayed_all}), flush=True)
"""


@pytest.mark.slow
def test_spool_files_of_a_timed_out_close_can_be_replayed_in_the_same_process(
    refused_endpoint: str, firehose: HostileFirehose, tmp_path: Path,
) -> None:
    """After a close() that ran out of time, the worker finishes writing the spool in the
    background, and the files should then be released: a service that closes one buffer
    and makes another (a reconfiguration, a test suite, a Lambda reusing its environment)
    must be able to re-send them. Files left open and locked until the process exits would
    be skipped by the new buffer and sent by nobody."""
    count = 300_000
    spool = tmp_path / "spool"
    done = _run_child(RELEASING_CHILD, refused_endpoint, firehose.endpoint_url, str(spool),
                      str(count))
    assert done.returncode == 0, done.stderr[-3000:]
    report = orjson.loads(done.stdout.splitlines()[-1])
    spooled = report["a_spooled"]
    assert spooled > 0, f"the first buffer spooled nothing: {report}"
    received = len(firehose.lines(STREAM))
    assert received >= spooled, (
        f"the first buffer spooled {spooled} events after its close() timed out; a second "
        f"buffer on the same spool in the same process re-sent {received} of them "
        f"({report}); {_spool_lines(spool)} lines are still in the spool"
    )


# -- a slow on_failure, a full buffer at exit, a call in flight ---------------------------------


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=[STREAM], data_dir=tmp_path / "delivered",
                       keep_records=True) as fh:
        yield fh


def _seqs_in(lines: list[bytes]) -> set[int]:
    return {int(orjson.loads(line)["seq"]) for line in lines if line.strip()}


def _spooled(spool: Path) -> list[bytes]:
    return [
        line
        for path in sorted(spool.rglob("*.jsonl")) if path.is_file()
        for line in path.read_bytes().splitlines()
    ]


def _logged_as_lost(stderr: str, lost: int) -> bool:
    """Whether the child logged the loss with its number ("300 events lost", "lost: 300")."""
    number = rf"\b{lost:,}\b|\b{lost}\b"
    return any(re.search(number, line) and re.search(r"\blost\b", line, re.IGNORECASE)
               for line in stderr.splitlines())


SLOW_CALLBACK_CHILD = """
    import json, sys, time
    from firehose_buffer import BufferConfig, FirehoseBuffer

    endpoint, reported_path = sys.argv[1], sys.argv[2]
    out = open(reported_path, "ab", buffering=0)

    def on_failure(events, reason):
        out.write(b"".join(event + b"\\n" for event in events))
        time.sleep(4.0)   # a callback that ships to a slow dead-letter store

    # The stream does not exist: every call fails 4xx and its events go to on_failure.
    buffer = FirehoseBuffer(BufferConfig(streams=("close-missing",), endpoint_url=endpoint,
                                         region="us-east-1", linger_seconds=0.05,
                                         on_failure=on_failure))
    for seq in range(50):
        buffer.put({"seq": seq})
    deadline = time.monotonic() + 10
    while not open(reported_path, "rb").read() and time.monotonic() < deadline:
        time.sleep(0.01)   # the first failure is being reported (and the callback sleeps)
    for seq in range(50, 350):
        buffer.put({"seq": seq})
    started = time.monotonic()
    closed = buffer.close(2.0)
    print(json.dumps({"accepted": 350, "closed": bool(closed),
                      "close_seconds": time.monotonic() - started}), flush=True)
"""


@pytest.mark.slow
def test_close_with_a_slow_on_failure_hands_over_or_counts_what_it_abandons(
    emulator: LocalFirehose, tmp_path: Path,
) -> None:
    """An on_failure that takes 4 s per call, and close(2.0) with 300 more events failing
    behind the first 50: close() returns at its deadline and the process exits. Every
    accepted event must have been handed over before close() returned, or be counted and
    logged as lost with the number; none may simply appear nowhere."""
    reported_path = tmp_path / "reported.jsonl"
    reported_path.touch()
    done = _run_child(SLOW_CALLBACK_CHILD, emulator.endpoint_url, str(reported_path),
                      timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout)
    reported = _seqs_in(reported_path.read_bytes().splitlines())
    assert reported, "the slow callback never ran: the scenario did not happen"
    lost = len(set(range(result["accepted"])) - reported)
    assert lost == 0 or _logged_as_lost(done.stderr, lost), (
        f"{lost} of {result['accepted']} accepted events were neither reported nor logged as "
        f"lost (close(2.0) returned {result['closed']} after {result['close_seconds']:.1f} s)"
    )


FULL_BUFFER_CHILD = """
    import json, sys
    from firehose_buffer import BufferConfig, BufferFullError, FirehoseBuffer

    endpoint, spool = sys.argv[1], sys.argv[2]
    buffer = FirehoseBuffer(BufferConfig(
        streams=("close-0", "close-1"), endpoint_url=endpoint, region="us-east-1",
        spool_dir=spool, max_buffer_bytes=4 * 1024 * 1024, on_full="raise",
        max_events_per_record=20, connect_timeout_seconds=0.5, exit_timeout_seconds=1.0,
    ))
    accepted = 0
    try:
        while True:
            buffer.put({"seq": accepted, "pad": "f" * 20})
            accepted += 1
    except BufferFullError:
        pass
    print(json.dumps({"accepted": accepted}), flush=True)
    # No close(): the exit hook has exit_timeout_seconds to spool what is in memory.
"""


@pytest.mark.slow
def test_exit_hook_spools_everything_a_full_buffer_abandons(
    refused_endpoint: str, tmp_path: Path,
) -> None:
    """A full buffer of small events (4 MiB), nothing listening, a spool, and no close():
    the exit hook has exit_timeout_seconds=1 to spool what is in memory. The process must
    not exit while the worker is still writing the spool: every accepted event is in the
    spool after exit, or the loss is counted and logged with its number."""
    spool = tmp_path / "spool"
    done = _run_child(FULL_BUFFER_CHILD, refused_endpoint, str(spool))
    assert done.returncode == 0, done.stderr[-3000:]
    accepted = orjson.loads(done.stdout)["accepted"]
    assert accepted > 50_000, "the buffer did not fill: the scenario did not happen"
    spooled = _seqs_in(_spooled(spool))
    lost = len(set(range(accepted)) - spooled)
    assert lost == 0 or _logged_as_lost(done.stderr, lost), (
        f"{lost} of {accepted} accepted events are not in the spool after exit, and no log "
        f"line says so"
    )


@pytest.mark.slow
def test_batch_abandoned_in_flight_counts_possible_duplicates(
    emulator: LocalFirehose, tmp_path: Path,
) -> None:
    """close(0.5) with a batch in flight that the service holds for 2 s, then stores: the
    batch goes to the spool, and the next buffer's replay sends it again. Every event that
    lands twice must be counted in possible_duplicates (when spooled or when replayed)."""
    spool = tmp_path / "spool"
    config = BufferConfig(streams=(STREAM,), endpoint_url=emulator.endpoint_url,
                          region="us-east-1", linger_seconds=0.05, spool_dir=str(spool))
    emulator.script(Fault.latency(2.0))  # the call is held, then stored and answered
    first = FirehoseBuffer(config)
    try:
        for seq in range(100):
            first.put({"seq": seq})
        wait_for(lambda: emulator.pending_faults == 0, 5.0, "the batch to be in flight")
    finally:
        first.close(0.5)
    abandoned = first.stats()
    wait_for(lambda: len(accepted_lines(emulator, STREAM)) >= 100, 10.0,
             "the held call to be stored after close()")
    assert len(_spooled(spool)) == 100, "close() did not spool the in-flight batch"

    second = FirehoseBuffer(config)  # replays the spool
    try:
        second.flush(10.0)  # first use: starts the replay, which the flush covers
        wait_for(lambda: len(accepted_lines(emulator, STREAM)) >= 200, 10.0,
                 "the spool to be replayed")
    finally:
        second.close(5.0)
    wire = [int(orjson.loads(line)["seq"]) for line in accepted_lines(emulator, STREAM)]
    duplicates = len(wire) - len(set(wire))
    counted = abandoned.possible_duplicates + second.stats().possible_duplicates
    assert duplicates == 100
    assert counted >= duplicates, (
        f"{duplicates} events landed twice, possible_duplicates counted {counted} "
        f"(at close: {abandoned.possible_duplicates})"
    )
