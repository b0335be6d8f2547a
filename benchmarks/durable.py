"""Durable segments (``durable=True``): what they cost and what they survive.

- put() caller CPU, durable against memory, 0.5 KB and 4 KB events (interleaved rounds, both
  buffers shipping to a null transport in this process; the durable one's files on the disk's
  file system, the harder case: tmpfs has no write-back);
- minor page faults per 0.5 KB put in steady state, durable, refaults after write-back
  included: each write-back makes the next write to each page fault once. The files are
  written back (``fsync``) at the kernel's cadence (``vm.dirty_expire_centisecs``, 30 s),
  over one whole period, at 500, 4,000 and 32,000 (16 MB/s) puts a second and back to
  back; then every second (30x the kernel's rate) as a stress figure without a goal;
- CPU of the buffer's own threads (worker, senders) at 16 MB/s, durable minus memory (the
  acknowledgments, the marks, zeroing released segments), and the disk bytes the durable
  run dirtied per second (``/proc/self/io`` ``write_bytes``: what write-back will write);
- random kills (SIGKILL, SIGSEGV, os.abort, an OOM-like SIGKILL while allocating; tmpfs and
  disk) of a producing process (``tests/durable_child.py``, forked from a fork server), each
  recovered by this process: lost, corrupt, and duplicates against those counted;
- the recovery scan: a dead process's segments (page cache, as after a process death) read
  and cut into the blocks of lines that are sent again, MB/s.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer._storage import durable
from firehose_buffer.emulator import FaultRates, LocalFirehose

from .events import fixed_size
from .hot_path import _loop_time
from .report import Row
from .sinks import UNLIMITED, NullTransport

PUT_GOAL = 1.05
FAULTS_GOAL = 0.01
WORKER_GOAL = 0.005  # of a core
KILLS_GOAL = 100
SCAN_GOAL = 500.0  # MB/s


def _spool_base() -> Path:
    """The disk's file system (not tmpfs) when it can be had: the harder case."""
    for candidate in (os.environ.get("TMPDIR"), "/var/tmp", tempfile.gettempdir()):
        if candidate and os.path.isdir(candidate) and durable._fs_type(Path(candidate)) not in (
                "tmpfs", None):
            return Path(candidate)
    return Path(tempfile.gettempdir())


def _buffer(spool: Path | None, streams: int = 1, **options: Any) -> FirehoseBuffer:
    config = BufferConfig(streams=tuple(f"bench-{i}" for i in range(streams)), quota=UNLIMITED,
                          spool_dir=None if spool is None else str(spool),
                          durable=spool is not None, **options)
    return FirehoseBuffer(config, transport=NullTransport())


def _fs(path: Path) -> str:
    return durable._fs_type(path) or "?"


# -- put() CPU -----------------------------------------------------------------------------------


def put_cpu(size: int, quick: bool, base: Path) -> Row:
    events = fixed_size(2000, size, seed=size + 11)
    rounds = 25 if quick else 1000  # a round is ~1 ms: fewer leave the mean to a few hiccups
    spool = Path(tempfile.mkdtemp(prefix="durable-put-", dir=base))
    times: dict[str, list[float]] = {"memory": [], "durable": []}
    try:
        with _buffer(None) as memory, _buffer(spool) as kept:
            # Warm: every segment the bound allows mapped and touched once, in both.
            for buf in (memory, kept):
                for _ in range(40 if quick else 80):
                    _loop_time(buf.put, events)
                buf.flush(30)
            for _ in range(rounds):
                times["memory"].append(_loop_time(memory.put, events))
                times["durable"].append(_loop_time(kept.put, events))
            memory.flush(30)
            kept.flush(30)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    n = len(events)
    mean = {k: sum(v) / (len(v) * n) * 1e9 for k, v in times.items()}
    ratio = mean["durable"] / mean["memory"]
    return Row(
        figure=f"durable: put() {size} B event, durable vs memory",
        measured=mean["durable"], unit="ns/event", reference=mean["memory"],
        reference_label="memory mode", goal=f"<= {PUT_GOAL}x", met=ratio <= PUT_GOAL,
        notes=f"calling thread's CPU, mean of {rounds} interleaved rounds; files on "
              f"{_fs(base)}",
        details={"rounds": rounds, "mean_ns": mean,
                 "median_round_ns": {k: statistics.median(v) / n * 1e9
                                     for k, v in times.items()}},
    )


# -- page faults ---------------------------------------------------------------------------------


def _write_back(owner_dir: Path) -> None:
    """Write the segment files back, as the kernel's flusher does: every dirty page clean
    (and write-protected, so the next write to it faults)."""
    for path in owner_dir.glob("*/*.seg"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_back_every(owner_dir: Path, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        _write_back(owner_dir)


def kernel_writeback_seconds() -> float:
    """How long the kernel lets a file page stay dirty before its flusher writes it back
    (``vm.dirty_expire_centisecs``; the flusher looks every ``dirty_writeback_centisecs``,
    so a file written all the time is written back every 30-35 s by default)."""
    try:
        return int(Path("/proc/sys/vm/dirty_expire_centisecs").read_text()) / 100
    except (OSError, ValueError):
        return 30.0


def _paced(put: Any, events: list[Any], rate: int | None, seconds: float) -> int:
    """``rate`` puts a second (None: back to back) for ``seconds``; returns how many."""
    n = len(events)
    start = time.perf_counter()
    count = 0
    if rate is None:
        while time.perf_counter() - start < seconds:
            for i in range(10_000):
                put(events[i % n])
            count += 10_000
        return count
    while (elapsed := time.perf_counter() - start) < seconds:
        due = min(int(elapsed * rate) + 1, int(seconds * rate))
        while count < due:
            put(events[count % n])
            count += 1
        time.sleep(0.001)
    return count


def page_faults(quick: bool, base: Path, rate: int | None, period: float, *, window: float,
                size: int = 512) -> Row:
    """Faults per put at ``rate`` over ``window`` seconds, the files written back at its
    start and every ``period`` seconds."""
    events = fixed_size(2000, size, seed=size + 12)
    spool = Path(tempfile.mkdtemp(prefix="durable-faults-", dir=base))
    owner_dir = spool / durable.DIRECTORY
    stop = threading.Event()
    flusher = threading.Thread(target=_write_back_every, args=(owner_dir, stop, period),
                               daemon=True)
    try:
        with _buffer(spool) as buffer:
            put = buffer.put
            for i in range(200_000):  # every segment the bound allows made and touched once
                put(events[i % len(events)])
            buffer.flush(30)
            _paced(put, events, rate, 1.0 if quick else 3.0)  # the rate's steady state
            _write_back(owner_dir)
            flusher.start()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            thread_before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            start = time.perf_counter()
            count = _paced(put, events, rate, window)
            elapsed = time.perf_counter() - start
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            put_faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - thread_before
            buffer.flush(30)
    finally:
        stop.set()
        flusher.join(5)
        shutil.rmtree(spool, ignore_errors=True)
    per_event = faults / count
    pace = "back to back" if rate is None else f"{rate:,} puts/s"
    kernel = kernel_writeback_seconds()
    if period >= kernel:
        figure = f"durable: minor page faults per put(), {size} B, {pace}, kernel write-back"
        how = (f"written back at the start and every {period:.0f} s, the kernel's "
               f"vm.dirty_expire ({kernel:.0f} s)")
        goal = f"<= {FAULTS_GOAL}"
        met: bool | None = per_event <= FAULTS_GOAL
    else:
        figure = (f"durable: minor page faults per put(), {size} B, {pace}, write-back every "
                  f"{period:g} s")
        how = (f"written back every {period:g} s, {kernel / period:.0f}x the kernel's rate "
               f"(a stress figure, not the goal's)")
        goal = ""
        met = None
    return Row(
        figure=figure, measured=per_event, unit="faults/event", goal=goal, met=met,
        notes=f"ru_minflt of the whole process over {window:.0f} s of puts, the segment files "
              f"{how}; {_fs(base)}",
        details={"events": count, "faults": faults, "put_thread_faults": put_faults,
                 "faults_per_second": faults / elapsed, "seconds": elapsed, "rate": rate,
                 "writeback_every": period},
    )


def page_fault_rows(quick: bool, base: Path) -> list[Row]:
    """At the kernel's write-back cadence: the mission's rates for one process (500 and
    4,000 events/s, 16 MB/s) and back to back; then forced every second, as a stress."""
    kernel = kernel_writeback_seconds()
    if quick:  # every row once, shortened: the figures are not the goal's
        return [page_faults(quick, base, 4000, 3.0, window=3.0),
                page_faults(quick, base, None, 1.0, window=3.0)]
    rows = [page_faults(quick, base, rate, kernel, window=kernel)
            for rate in (500, 4000, 32_000, None)]
    rows += [page_faults(quick, base, rate, 1.0, window=10.0) for rate in (32_000, None)]
    return rows


# -- 16 MB/s: the buffer's threads' CPU, disk bytes ------------------------------------------------


def _thread_cpu(prefix: str) -> float:
    """CPU seconds of this process's threads whose name starts with ``prefix`` (the
    scheduler's nanosecond count: clock ticks are too coarse for a few seconds)."""
    total = 0.0
    for thread in threading.enumerate():
        if not thread.name.startswith(prefix) or thread.native_id is None:
            continue
        with contextlib.suppress(OSError):
            schedstat = Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text()
            total += int(schedstat.split()[0]) / 1e9
    return total


def _written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _steady(spool: Path | None, seconds: float, events: list[Any], rate: float
            ) -> tuple[float, int]:
    """Put ``rate`` events/s for ``seconds``; the buffer threads' CPU and the bytes dirtied."""
    with _buffer(spool, streams=4) as buffer:
        put = buffer.put
        n = len(events)
        for i in range(int(rate)):  # a second's worth first: threads started, segments made
            put(events[i % n])
        buffer.flush(30)
        cpu0 = _thread_cpu("firehose-buffer")
        io0 = _written_bytes()
        start = time.monotonic()
        i = 0
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                break
            due = int((now - start) * rate)
            while i < due:
                put(events[i % n])
                i += 1
            time.sleep(0.002)
        buffer.flush(30)
        return _thread_cpu("firehose-buffer") - cpu0, _written_bytes() - io0


def worker_cpu(quick: bool, base: Path) -> list[Row]:
    size = 4096
    rate = 16_000_000 / size
    events = fixed_size(1000, size, seed=13)
    seconds = 3.0 if quick else 10.0
    cpu: dict[str, list[float]] = {"memory": [], "durable": []}
    written = 0
    for _ in range(1 if quick else 2):
        used, _ = _steady(None, seconds, events, rate)
        cpu["memory"].append(used / seconds)
        spool = Path(tempfile.mkdtemp(prefix="durable-16mbs-", dir=base))
        try:
            used, dirtied = _steady(spool, seconds, events, rate)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        cpu["durable"].append(used / seconds)
        written += dirtied
    memory = statistics.mean(cpu["memory"])
    kept = statistics.mean(cpu["durable"])
    added = kept - memory
    runs = len(cpu["durable"])
    return [
        Row(
            figure="durable: buffer threads' CPU added at 16 MB/s (4 KB events)",
            measured=added, unit="of a core", reference=memory,
            reference_label="memory mode's threads", goal=f"<= {WORKER_GOAL}",
            met=added <= WORKER_GOAL,
            notes="worker and sender threads (/proc per-thread CPU), durable minus memory, "
                  f"{runs} x {seconds:.0f} s each, null transport; files on {_fs(base)}",
            details={"cores": cpu},
        ),
        Row(
            figure="durable: disk bytes dirtied per second at 16 MB/s",
            measured=written / (runs * seconds) / 1e6, unit="MB/s", reference=16.0,
            reference_label="event bytes/s",
            notes="/proc/self/io write_bytes (pages going from clean to dirty: what write-back "
                  "writes); short runs see the first writes, the kernel then rewrites each "
                  "dirty page about every 30 s",
        ),
    ]


# -- kills ---------------------------------------------------------------------------------------


def _produce(endpoint: str, spool: str, report: str, how: str, seed: int) -> None:
    """In a process forked from the fork server: the test suite's producer, quiet."""
    from tests import durable_child  # noqa: PLC0415  (the fork server preloads it)

    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    durable_child.DELAY = (0.05, 0.4)
    durable_child.main(endpoint, spool, report, how, seed)


def _accepted(report: Path) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in report.read_bytes().splitlines():
            t, n = line.split()
            out.add((int(t), int(n)))
    return out


def kills(quick: bool, base: Path) -> list[Row]:
    from tests import durable_child  # noqa: PLC0415

    count = 12 if quick else 120
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["firehose_buffer", "tests.durable_child"])
    kinds = ["sigkill", "segv", "abort", "oom"]
    shm = Path("/dev/shm")
    places = [base] + ([shm] if shm.is_dir() and _fs(shm) == "tmpfs" else [])
    expected = {"sigkill": -signal.SIGKILL, "segv": -signal.SIGSEGV,
                "abort": -signal.SIGABRT, "oom": -signal.SIGKILL}
    totals: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    started = time.monotonic()
    for k in range(count):
        how = kinds[k % len(kinds)]
        place = places[(k // len(kinds)) % len(places)]
        work = Path(tempfile.mkdtemp(prefix="durable-kill-", dir=place))
        spool = work / "spool"
        report = work / "report"
        try:
            with LocalFirehose(streams=list(durable_child.STREAMS), keep_records=True,
                               fault_rates=FaultRates(record_service_unavailable=0.05),
                               seed=k) as fh:
                proc = context.Process(
                    target=_produce,
                    args=(fh.endpoint_url, str(spool), str(report),
                          "wait" if how == "sigkill" else how, k))
                proc.start()
                deadline = time.monotonic() + 30
                if how == "sigkill":
                    delay = 0.05 + (k * 7919 % 100) / 250  # 0.05-0.45 s of producing
                    while not report.exists() and time.monotonic() < deadline:
                        time.sleep(0.005)
                    time.sleep(delay)
                    proc.kill()
                elif how == "oom":
                    marker = Path(str(report) + ".allocating")
                    while not marker.exists() and time.monotonic() < deadline:
                        time.sleep(0.005)
                    time.sleep(0.02)
                    proc.kill()
                proc.join(30)
                if proc.exitcode is None:
                    proc.kill()
                    proc.join()
                totals["wrong_death"] += proc.exitcode != expected[how]
                accepted = _accepted(report)
                config = durable_child.config(fh.endpoint_url, str(spool))
                with FirehoseBuffer(config) as recoverer:
                    recoverer.flush(60)
                stats = recoverer.stats()
                got: Counter[tuple[int, int]] = Counter()
                for stream in durable_child.STREAMS:
                    for record in fh.accepted_records(stream):
                        for line in record[:-1].split(b"\n"):
                            try:
                                event = orjson.loads(line)
                                got[(event["t"], event["n"])] += event["run"] == k
                            except (orjson.JSONDecodeError, KeyError, TypeError):
                                totals["corrupt"] += 1
                delivered = {key for key, c in got.items() if c}
                duplicates = sum(c - 1 for c in got.values() if c > 1)
                totals["accepted"] += len(accepted)
                totals["lost"] += len(accepted - delivered)
                totals["duplicates"] += duplicates
                totals["counted"] += stats.possible_duplicates
                totals["uncounted"] += max(0, duplicates - stats.possible_duplicates)
                totals["recovered"] += stats.events_replayed
                totals["torn"] += stats.events_torn
                totals["left_files"] += bool(durable.dead_owners(spool))
                by_kind[f"{how}@{_fs(place)}"] += 1
        finally:
            shutil.rmtree(work, ignore_errors=True)
    bad = totals["lost"] + totals["corrupt"] + totals["uncounted"] + totals["wrong_death"]
    return [Row(
        figure=f"durable: random kills recovered by another process ({count})",
        measured=totals["lost"], unit="events lost", reference=totals["accepted"],
        reference_label="events accepted",
        goal=f">= {KILLS_GOAL} kills: 0 lost, 0 corrupt, duplicates counted",
        met=count >= KILLS_GOAL and bad == 0 if not quick else bad == 0,
        notes=f"{dict(by_kind)}; {totals['recovered']} events recovered, "
              f"{totals['duplicates']} duplicates, {totals['counted']} counted as possible",
        details={**totals, "kills": count, "seconds": time.monotonic() - started,
                 "by_kind": dict(by_kind)},
    )]


# -- the recovery scan -----------------------------------------------------------------------------


def _fill_and_die(spool: str, megabytes: int) -> None:
    """A process that fills its durable segments with 0.5 KB lines and dies (nothing
    acknowledged), leaving them to recover."""
    store = durable.DurableStore(spool, ("bench-0",))
    line = orjson.dumps({"event": "page_view", "pad": "q" * 470}) + b"\n"
    size = 4 * 1024 * 1024
    block = line * (size // len(line))
    for _ in range(megabytes // 4):
        segment = store.allocate(size)
        store.filling(segment, 0)
        segment.write(block)
    os._exit(0)


def recovery_scan(quick: bool, base: Path) -> list[Row]:
    megabytes = 64 if quick else 256
    work = Path(tempfile.mkdtemp(prefix="durable-scan-", dir=base))
    try:
        context = multiprocessing.get_context("fork")
        filler = context.Process(target=_fill_and_die, args=(str(work), megabytes))
        filler.start()
        filler.join(120)
        owners = durable.dead_owners(work)
        assert len(owners) == 1, owners
        start = time.perf_counter()
        claim = owners[0].claim()
        assert claim is not None
        data = 0
        for _, blocks in claim.pieces():
            data += sum(len(b) for b in blocks)
        scan = time.perf_counter() - start
        events = claim.events
        claim.release()
        # The whole way: fed to a buffer and delivered (to a null transport).
        start = time.perf_counter()
        with _buffer(work) as buffer:
            assert buffer.flush(120)
        full = time.perf_counter() - start
        replayed = buffer.stats().events_replayed
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        Row(
            figure="durable: recovery scan",
            measured=data / scan / 1e6, unit="MB/s", goal=f">= {SCAN_GOAL:.0f} MB/s",
            met=data / scan / 1e6 >= SCAN_GOAL,
            notes=f"{megabytes} MiB of 0.5 KB lines in a dead process's segments (in the page "
                  f"cache, as after a process death), claimed and read into blocks of lines; "
                  f"{_fs(base)}",
            details={"bytes": data, "events": events, "seconds": scan},
        ),
        Row(
            figure="durable: recovery, read to delivered (null transport)",
            measured=data / full / 1e6, unit="MB/s",
            notes="the same segments fed through the replay into a buffer and delivered",
            details={"seconds": full, "events_replayed": replayed},
        ),
    ]


def run(quick: bool) -> list[Row]:
    base = _spool_base()
    rows = [put_cpu(512, quick, base), put_cpu(4096, quick, base)]
    rows.extend(page_fault_rows(quick, base))
    rows.extend(worker_cpu(quick, base))
    rows.extend(kills(quick, base))
    rows.extend(recovery_scan(quick, base))
    return rows
