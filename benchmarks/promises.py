"""Where every accepted event went, under each hostile scenario the tests pin (bad answers,
close() out of time, user code calling back, forks, spool replay, a freeze).

    python -m benchmarks.promises [--quick] [--only name,name] [--json out.json]

Each scenario runs once as real processes over real HTTP on 127.0.0.1: the buffer lives in
a child Python process (benchmarks/promise_children.py), the Firehose is the project's
emulator or the deliberately hostile server of tests/hostile_server.py, in this process.
For each scenario, one row: events accepted by put(), and of those how many were delivered
(on the wire at least once), left in the spool, reported (handed to on_failure), lost
(in none of those and not logged), logged lost (in none of those, but the ERROR line gives
the number), duplicated on the wire, and counted in ``possible_duplicates``. Not part of
run.py: it takes about a minute and a half (``--quick``: shorter freeze, fewer forks).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import promise_children as children  # noqa: E402
from benchmarks.emulator_proc import AWS_ENV  # noqa: E402
from firehose_buffer import BufferConfig, FirehoseBuffer  # noqa: E402
from firehose_buffer.emulator import Fault, LocalFirehose  # noqa: E402


def _load_hostile_server() -> ModuleType:
    """tests/hostile_server.py, by path: tests/ is not a package."""
    spec = importlib.util.spec_from_file_location("hostile_server",
                                                  ROOT / "tests" / "hostile_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hostile_server"] = module
    spec.loader.exec_module(module)
    return module


hostile = _load_hostile_server()

Key = Hashable


@dataclass
class Row:
    scenario: str
    accepted: int = 0
    delivered: int = 0
    spooled: int = 0
    reported: int = 0
    lost: int = 0
    logged_lost: int = 0
    duplicated: int = 0
    counted: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class Child:
    """What a child process left: its last JSON line, stderr, exit status, wall time."""

    result: dict[str, Any]
    stderr: str
    returncode: int
    seconds: float
    reported: list[bytes]


class Workdir:
    def __init__(self, root: Path, name: str) -> None:
        self.path = root / name
        self.path.mkdir()
        self.reported = self.path / "reported.jsonl"
        self.reported.touch()
        self.spool = self.path / "spool"


def _env() -> dict[str, str]:
    return {**os.environ, **AWS_ENV, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(line)
            if isinstance(value, dict):
                return value
    return {}


def _reported_lines(work: Workdir) -> list[bytes]:
    return work.reported.read_bytes().splitlines()


def run_child(script: str, work: Workdir, timeout: float, **args: Any) -> Child:
    """Run ``script`` to its end (killed at ``timeout``: a hang shows as returncode -9)."""
    params = {"reported": str(work.reported), "spool": str(work.spool), **args}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(params)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return Child(_last_json(out), err, proc.returncode, time.monotonic() - started,
                 _reported_lines(work))


def run_staged_child(script: str, work: Workdir, between: Callable[[int], None],
                     **args: Any) -> tuple[str, str]:
    """Run a child that prints a ready line, then waits for "go" on stdin: ``between(pid)``
    runs in between (a signal, a wait for the emulator). Returns its stdout and stderr."""
    params = {"reported": str(work.reported), "spool": str(work.spool), **args}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(params)], env=_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdout.readline()
        between(proc.pid)
        return proc.communicate("go\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def key(line: bytes) -> Key:
    """An event's identity: its seq (with who put it, when it says), else the line itself."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if isinstance(value, dict) and "seq" in value:
        return f"{value['who']}:{value['seq']}" if "who" in value else value["seq"]
    return line


def spool_lines(spool: Path) -> list[bytes]:
    """Every line of every file under the spool dir (quarantine included)."""
    if not spool.exists():
        return []
    return [line for path in sorted(spool.rglob("*")) if path.is_file()
            for line in path.read_bytes().splitlines()]


def emulator_lines(firehose: LocalFirehose, *streams: str) -> list[bytes]:
    lines: list[bytes] = []
    for stream in streams:
        try:
            records = firehose.accepted_records(stream)
        except KeyError:
            continue
        lines.extend(line for record in records for line in record[:-1].split(b"\n"))
    return lines


_LOST_LINE = re.compile(r"(\d[\d,]*) events\b.*\blost\b")


def logged_lost(stderr: str) -> int:
    """The numbers the library's ERROR lines give for events lost."""
    return sum(int(m.group(1).replace(",", "")) for m in _LOST_LINE.finditer(stderr))


def tally(row: Row, accepted: Iterable[Key], wire: list[bytes], spooled: list[bytes],
          reported: list[bytes], *, counted: int, logged: int) -> Row:
    accepted_set = set(accepted)
    on_wire = Counter(key(line) for line in wire)
    in_spool = {key(line) for line in spooled}
    handed = {key(line) for line in reported}
    row.accepted = len(accepted_set)
    row.delivered = len(accepted_set & on_wire.keys())
    row.spooled = len(accepted_set & in_spool)
    row.reported = len(accepted_set & handed)
    nowhere = len(accepted_set - on_wire.keys() - in_spool - handed)
    row.logged_lost = min(nowhere, logged)
    row.lost = nowhere - row.logged_lost
    row.duplicated = sum(n - 1 for k, n in on_wire.items() if k in accepted_set)
    row.counted = counted
    resent_later = len(accepted_set & on_wire.keys() & in_spool)
    if resent_later:
        row.notes.append(f"{resent_later} delivered and also in the spool (to be resent)")
    unknown = [k for k in on_wire if k not in accepted_set]
    if unknown:
        row.notes.append(f"{len(unknown)} lines on the wire that were never accepted")
    return row


def _child_note(child: Child) -> list[str]:
    if child.returncode != 0:
        tail = child.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        return [f"child exit {child.returncode}: {tail[0][:120]}"]
    return []


# -- the scenarios --------------------------------------------------------------------------


def malformed_200(root: Path, quick: bool) -> Row:
    return _hostile_answer(root, "malformed 200 (null entries)", hostile.Behaviour.NULL_ENTRIES)


def trickle(root: Path, quick: bool) -> Row:
    return _hostile_answer(root, "trickled answer, call_timeout_seconds=2",
                           hostile.Behaviour.TRICKLE)


def _hostile_answer(root: Path, name: str, behaviour: Any) -> Row:
    work = Workdir(root, behaviour.value)
    row = Row(name)
    with hostile.HostileFirehose(trickle_interval=0.4) as server:
        server.script(hostile.Answer(behaviour, store=True))
        child = run_child(children.HOSTILE_ANSWER, work, 30.0, endpoint=server.endpoint_url)
        wire = server.lines("hostile-0")
    r = child.result
    row.notes += _child_note(child)
    row.notes.append(f"flush() results {r.get('flushed')} in {r.get('seconds', 0):.1f} s")
    return tally(row, range(60), wire, [], child.reported,
                 counted=r.get("possible_duplicates", 0),
                 logged=r.get("events_lost", 0) or logged_lost(child.stderr))


def slow_on_failure(root: Path, quick: bool) -> Row:
    work = Workdir(root, "slow-callback")
    row = Row("close(2.0), on_failure takes 4 s, stream missing")
    with LocalFirehose(keep_records=True) as firehose:
        child = run_child(children.SLOW_CALLBACK, work, 40.0, endpoint=firehose.endpoint_url)
    r = child.result
    row.notes += _child_note(child)
    row.notes.append(f"close() returned {r.get('closed')} after "
                     f"{r.get('close_seconds', 0):.1f} s; process exited after "
                     f"{child.seconds:.1f} s")
    return tally(row, range(r.get("accepted", 350)), [], [], child.reported,
                 counted=r.get("possible_duplicates", 0), logged=logged_lost(child.stderr))


def exit_full_buffer(root: Path, quick: bool) -> Row:
    work = Workdir(root, "exit-full")
    row = Row("exit hook, full 4 MiB buffer, endpoint down, spool, exit_timeout 1 s")
    child = run_child(children.FULL_BUFFER_EXIT, work, 120.0,
                      endpoint=f"http://127.0.0.1:{_free_port()}")
    row.notes += _child_note(child)
    row.notes.append(f"process ran {child.seconds:.1f} s")
    return tally(row, range(child.result.get("accepted", 0)), [], spool_lines(work.spool),
                 child.reported, counted=0, logged=logged_lost(child.stderr))


def logging_handler(root: Path, quick: bool) -> Row:
    work = Workdir(root, "logging")
    row = Row("FirehoseHandler into the same buffer, a 4xx")
    with LocalFirehose(streams=["reentry-good"], keep_records=True) as firehose:
        child = run_child(children.LOGGING_HANDLER, work, 20.0, endpoint=firehose.endpoint_url)
        wire = emulator_lines(firehose, "reentry-good")
    r = child.result
    if child.returncode == -signal.SIGKILL:
        row.notes.append("deadlocked: killed after 20 s")
    else:
        row.notes += _child_note(child)
    accepted: list[Key] = list(r.get("accepted", [*range(50), 1000]))
    records = r.get("events_put", len(accepted)) - len(accepted)
    # The handler's log records have no seq: those found anywhere count as accepted, and the
    # rest of what events_put says were put as lost.
    found = {key(line) for line in [*wire, *child.reported] if not isinstance(key(line), int)}
    row.notes.append(f"of which {records} log records the handler put ({len(found)} found)")
    row = tally(row, [*accepted, *found], wire, [], child.reported,
                counted=r.get("possible_duplicates", 0),
                logged=r.get("events_lost", 0) or logged_lost(child.stderr))
    row.accepted += max(0, records - len(found))
    row.lost += max(0, records - len(found))
    return row


def put_from_on_failure(root: Path, quick: bool) -> Row:
    work = Workdir(root, "reput")
    row = Row('put() from on_failure, buffer full, on_full="block"')
    with LocalFirehose(streams=["reentry-good"], keep_records=True) as firehose:
        child = run_child(children.PUT_FROM_ON_FAILURE, work, 40.0,
                          endpoint=firehose.endpoint_url)
        wire = emulator_lines(firehose, "reentry-good")
    r = child.result
    row.notes += _child_note(child)
    row.notes.append(f"{r.get('re_put')} re-puts, longest {r.get('longest_wait', 0):.2f} s")
    return tally(row, r.get("accepted", range(10)), wire, [], child.reported,
                 counted=r.get("possible_duplicates", 0), logged=r.get("events_lost", 0))


def fork_plain_client(root: Path, quick: bool) -> Row:
    work = Workdir(root, "fork")
    forks, per_burst = (3, 300) if quick else (15, 300)
    row = Row(f"fork with a plain client= ({forks} forks)")
    out_dir = work.path / "children"
    out_dir.mkdir()
    with hostile.HostileFirehose() as server:
        child = run_child(children.FORKING, work, 60.0 + 8 * forks,
                          endpoint=server.endpoint_url, forks=forks, per_burst=per_burst,
                          out_dir=str(out_dir))
        wire = server.lines("fork-0") + server.lines("fork-1")
        calls = server.all_calls()
    forked = [orjson.loads(p.read_bytes()) for p in sorted(out_dir.glob("child-*.json"))]
    r = child.result
    row.notes += _child_note(child)
    whos = ["warm", *(f"{side}-{f}" for f in range(forks) for side in ("parent", "child"))]
    accepted = [f"{who}:{seq}" for who in whos for seq in range(per_burst)]
    shared: dict[tuple[str, int], set[str]] = {}
    for call in calls:
        owners = shared.setdefault(call.peer, set())
        for line in call.lines:
            who = str(orjson.loads(line)["who"])
            owners.add("parent" if who == "warm" or who.startswith("parent") else who)
    garbled = sum(1 for call in calls if not call.stream)
    crashed = [f for f in forked if "crashed" in f]
    row.notes.append(f"{len(forked)} of {forks} children reported; "
                     f"{sum(len(o) > 1 for o in shared.values())} connections carried two "
                     f"processes' calls; {garbled} unreadable calls; "
                     f"failed: parent {r.get('failed')}, children "
                     f"{sum(f.get('failed', 0) for f in forked)}"
                     + (f"; crashed {len(crashed)}" if crashed else ""))
    counted = r.get("possible_duplicates", 0) + sum(f.get("possible_duplicates", 0)
                                                     for f in forked)
    logged = r.get("events_lost", 0) + sum(f.get("events_lost", 0) for f in forked)
    return tally(row, accepted, wire, [], child.reported, counted=counted, logged=logged)


def _make_spool(firehose: LocalFirehose, spool: Path, stream: str, *parts: range) -> None:
    """Buffers (alive together, so none replays another's file) whose stream is missing:
    every event ends in the spool, one file per buffer."""
    buffers = [FirehoseBuffer(BufferConfig(streams=(stream,), endpoint_url=firehose.endpoint_url,
                                           region="us-east-1", spool_dir=str(spool),
                                           linger_seconds=0.05)) for _ in parts]
    try:
        for buffer, seqs in zip(buffers, parts, strict=True):
            for seq in seqs:
                buffer.put({"seq": seq, "pad": "s" * 60})
            buffer.flush(10.0)
    finally:
        for buffer in buffers:
            buffer.close(10.0)


def short_lived_replay(root: Path, quick: bool) -> Row:
    work = Workdir(root, "short-lived")
    row = Row("short-lived buffer, 2,000 events in the spool, puts nothing")
    with LocalFirehose(keep_records=True) as firehose:
        with _quiet():
            _make_spool(firehose, work.spool, "spool-0", range(0, 1000), range(1000, 2000))
        before = len(spool_lines(work.spool))
        firehose.create_stream("spool-0")
        child = run_child(children.SHORT_LIVED, work, 90.0, endpoint=firehose.endpoint_url)
        wire = emulator_lines(firehose, "spool-0")
    r = child.result
    row.notes += _child_note(child)
    row.notes.append(f"{before} lines spooled first; flush(30) {r.get('flushed')}, "
                     f"flush+close {r.get('seconds', 0):.1f} s")
    return tally(row, range(2000), wire, spool_lines(work.spool), child.reported,
                 counted=r.get("possible_duplicates", 0), logged=r.get("events_lost", 0))


def in_flight_then_replay(root: Path, quick: bool) -> Row:
    work = Workdir(root, "in-flight")
    row = Row("close(0.5) with a batch in flight (held 2 s), then replay")
    with LocalFirehose(streams=["exit-0"], keep_records=True) as firehose:
        firehose.script(Fault.latency(2.0))
        def held(_pid: int) -> None:
            _wait(lambda: firehose.pending_faults == 0, 10.0)  # the batch is in flight

        out, err = run_staged_child(children.IN_FLIGHT_CLOSE, work, held,
                                    endpoint=firehose.endpoint_url)
        first = _last_json(out)
        _wait(lambda: len(emulator_lines(firehose, "exit-0")) >= 100, 10.0)
        spooled_between = len(spool_lines(work.spool))
        second = run_child(children.REPLAY, work, 60.0, endpoint=firehose.endpoint_url,
                           stream="exit-0")
        wire = emulator_lines(firehose, "exit-0")
    row.notes += _child_note(second)
    row.notes.append(f"close(0.5) spooled {spooled_between}; counted at close "
                     f"{first.get('possible_duplicates')}, at replay "
                     f"{second.result.get('possible_duplicates')}")
    counted = first.get("possible_duplicates", 0) + second.result.get("possible_duplicates", 0)
    logged = first.get("events_lost", 0) + logged_lost(err + second.stderr)
    return tally(row, range(100), wire, spool_lines(work.spool), second.reported,
                 counted=counted, logged=logged)


def freeze(root: Path, quick: bool) -> Row:
    seconds = 4.0 if quick else 6.0
    work = Workdir(root, "freeze")
    row = Row(f"SIGSTOP {seconds:g} s, record_ttl_seconds=3")
    with LocalFirehose(streams=["exit-0"], keep_records=True) as firehose:
        def freeze_for(pid: int) -> None:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(seconds)  # the freeze itself
            os.kill(pid, signal.SIGCONT)

        out, err = run_staged_child(children.FREEZE, work, freeze_for,
                                    endpoint=firehose.endpoint_url)
        wire = emulator_lines(firehose, "exit-0")
    r = _last_json(out)
    row.notes.append(f"failures {r.get('failures')}, flush() {r.get('flushed')}")
    return tally(row, range(200), wire, [], _reported_lines(work),
                 counted=r.get("possible_duplicates", 0),
                 logged=r.get("events_lost", 0) or logged_lost(err))


def _damaged_lines() -> list[bytes]:
    """51 lines that are not one JSON value each, as a damaged disk or a bad edit leaves."""
    kinds: list[Callable[[int], bytes]] = [
        lambda i: b'{"seq":%d,"user":"\xff\xfe"}' % i,
        lambda i: b'{"seq":%d}{"seq":%d}' % (i, i),
        lambda i: b"plain text %d" % i,
        lambda i: b'{"seq":%d}\x00' % i,
        lambda i: b'{"seq":%d,"cut' % i,
        lambda i: b"\x00" * (i + 1),
    ]
    return [kinds[i % len(kinds)](i) for i in range(51)]


def corrupt_spool(root: Path, quick: bool) -> Row:
    work = Workdir(root, "corrupt")
    row = Row("spool with 51 corrupt lines and one over 1 MB, two starts")
    damaged = _damaged_lines()
    oversized = orjson.dumps({"seq": "big", "pad": "o" * 1_100_000})
    with LocalFirehose(keep_records=True) as firehose:
        with _quiet():
            _make_spool(firehose, work.spool, "spool-0", range(100))
        files = sorted(work.spool.rglob("*.jsonl"))
        with files[0].open("ab") as f:
            for i, line in enumerate(damaged):
                f.write(line + b"\n")
                if i == 25:
                    f.write(oversized + b"\n")
        firehose.create_stream("spool-0")
        runs = [run_child(children.REPLAY, work, 60.0, endpoint=firehose.endpoint_url,
                          stream="spool-0") for _ in range(2)]
        wire = emulator_lines(firehose, "spool-0")
    for run in runs:
        row.notes += _child_note(run)
    invalid = sum(1 for line in wire if not isinstance(key(line), int))
    handed = Counter(runs[-1].reported)
    row.notes.append(f"{invalid} invalid lines on the wire; bad lines reported twice: "
                     f"{sum(1 for line in [*damaged, oversized] if handed[line] > 1)}; "
                     f"second start replayed {runs[1].result.get('replayed')}")
    accepted: list[Key] = [*range(100), *(key(line) for line in damaged), key(oversized)]
    return tally(row, accepted, wire, spool_lines(work.spool), runs[-1].reported,
                 counted=sum(r.result.get("possible_duplicates", 0) for r in runs),
                 logged=sum(logged_lost(r.stderr) for r in runs))


def full_disk(mode: str) -> Callable[[Path, bool], Row]:
    def scenario(root: Path, quick: bool) -> Row:
        work = Workdir(root, f"full-disk-{mode}")
        what = "stream missing" if mode == "failed" else 'endpoint down, on_full="spill"'
        row = Row(f"full spool disk (RLIMIT_FSIZE=0), {what}")
        with LocalFirehose(keep_records=True) as firehose:
            endpoint = (firehose.endpoint_url if mode == "failed"
                        else f"http://127.0.0.1:{_free_port()}")
            child = run_child(children.FULL_DISK, work, 60.0, endpoint=endpoint, mode=mode,
                              count=300)
        errors = [line for line in child.stderr.splitlines()
                  if line.startswith("ERROR firehose_buffer")]
        row.notes += _child_note(child)
        row.notes.append(f"{len(errors)} ERROR lines logged")
        r = child.result
        return tally(row, r.get("accepted", []), [], spool_lines(work.spool), child.reported,
                     counted=r.get("possible_duplicates", 0), logged=r.get("events_lost", 0))
    return scenario


SCENARIOS: dict[str, Callable[[Path, bool], Row]] = {
    "malformed_200": malformed_200,
    "trickle": trickle,
    "slow_on_failure": slow_on_failure,
    "exit_full_buffer": exit_full_buffer,
    "logging_handler": logging_handler,
    "put_from_on_failure": put_from_on_failure,
    "fork": fork_plain_client,
    "short_lived_replay": short_lived_replay,
    "in_flight_replay": in_flight_then_replay,
    "freeze": freeze,
    "corrupt_spool": corrupt_spool,
    "full_disk_failed": full_disk("failed"),
    "full_disk_spill": full_disk("spill"),
}


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The setup buffers' expected 4xx warnings would drown the table."""
    logger = logging.getLogger("firehose_buffer")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


COLUMNS = ("scenario", "accepted", "delivered", "spooled", "reported", "lost", "logged lost",
           "duplicated", "counted", "seconds", "notes")


def render(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r.scenario, f"{r.accepted:,}", f"{r.delivered:,}", f"{r.spooled:,}",
                 f"{r.reported:,}", f"{r.lost:,}", f"{r.logged_lost:,}", f"{r.duplicated:,}",
                 f"{r.counted:,}", f"{r.seconds:.1f}", "; ".join(r.notes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter freeze, 3 forks")
    parser.add_argument("--only", default="", help=f"comma-separated of {', '.join(SCENARIOS)}")
    parser.add_argument("--json", default="", help="also write the rows here")
    options = parser.parse_args(argv)
    names = [n.strip() for n in options.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {unknown}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fb-promises-") as tmp:
        for name in names:
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                row = SCENARIOS[name](Path(tmp), options.quick)
            except Exception as exc:  # one broken scenario must not hide the others' rows
                row = Row(name, notes=[f"crashed: {exc!r}"])
            row.seconds = time.monotonic() - started
            rows.append(row)
    print(render(rows))
    if options.json:
        Path(options.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
