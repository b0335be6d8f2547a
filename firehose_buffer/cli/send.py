"""Send JSON Lines (one JSON object per line) from files or stdin to Firehose, packed and paced.

Options not given as flags come from the FIREHOSE_BUFFER_* environment, as for
BufferConfig.from_env(). Progress goes to stderr every few seconds on long input, and a
summary at the end. Exit status: 0 all delivered; 1 some events failed or a bad line
stopped the run; 2 nothing could be sent (missing stream, credentials, configuration).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

import orjson

from ..buffer import FirehoseBuffer
from ..config import BufferConfig
from ..errors import BufferFullError, EventValueError
from ..quota import Quota
from .common import (
    CREDENTIALS_HINT,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    MISSING_STREAM_HINT,
    add_connection_options,
    add_stream_options,
    error,
    guarded,
    note,
    streams_from_args,
)

COMMAND = "send"
EXAMPLES = """\
examples:
  # one file to four sharded streams events-0..events-3
  firehose-buffer send --stream events --shards 4 --region us-east-1 events.jsonl

  # from stdin, routed by a field, skipping lines that are not JSON objects
  zcat app.jsonl.gz | firehose-buffer send --streams logs-a,logs-b \\
      --partition-key user_id --on-bad-line skip

  # streams and options from the environment, against a local emulator
  export FIREHOSE_BUFFER_STREAM=events FIREHOSE_BUFFER_SHARDS=4
  firehose-buffer send --endpoint-url http://127.0.0.1:4573 < events.jsonl
"""

#: Failure reasons that every later event would meet too: stop reading and say what to do.
FATAL_REASONS = {
    "ResourceNotFoundException": MISSING_STREAM_HINT,
    "NoCredentialsError": CREDENTIALS_HINT,
    "PartialCredentialsError": CREDENTIALS_HINT,
    "UnrecognizedClientException": CREDENTIALS_HINT,
    "InvalidSignatureException": CREDENTIALS_HINT,
    "ExpiredTokenException": CREDENTIALS_HINT,
    "AccessDeniedException": "the caller's IAM policy must allow firehose:PutRecordBatch",
}
_BOM = b"\xef\xbb\xbf"
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="JSON Lines files, read in order; '-' or none: stdin")
    add_stream_options(parser)
    add_connection_options(parser)
    group = parser.add_argument_group("buffer")
    group.add_argument("--partition-key", metavar="FIELD",
                       help="route each event by the hash of this field (default: keyless)")
    group.add_argument("--quota", choices=["standard", "high"],
                       help="each stream's Direct PUT quota (default: FIREHOSE_BUFFER_QUOTA "
                            "or standard; high is the default of us-east-1, us-west-2, "
                            "eu-west-1)")
    group.add_argument("--quota-share", type=float, metavar="FRACTION",
                       help="fraction of the quota to use when other producers share the "
                            "streams")
    group.add_argument("--linger-seconds", type=float, metavar="S",
                       help="longest an event waits in memory before its record is sent")
    parser.add_argument("--on-bad-line", choices=["fail", "skip"], default="fail",
                        help="a line that is not a JSON object: stop (fail, the default) or "
                             "report it and go on (skip)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="give up when nothing could be delivered for this long "
                             "(default %(default)s)")
    parser.add_argument("--progress-seconds", type=float, default=5.0, metavar="S",
                        help="progress line on stderr this often; 0: never "
                             "(default %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress and no summary, only errors")


def run(args: argparse.Namespace) -> int:
    with _library_logging(args.quiet):
        return guarded(COMMAND, lambda: _run(args))


class _Failures:
    """The on_failure callback: counts failed events by reason (called on the worker)."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.fatal: str | None = None
        self.stop = threading.Event()

    def __call__(self, events: list[bytes], reason: str) -> None:
        self.by_reason[reason] += len(events)
        if reason in FATAL_REASONS and self.fatal is None:
            self.fatal = reason
            self.stop.set()


def _config(args: argparse.Namespace, failures: _Failures) -> BufferConfig:
    overrides: dict[str, Any] = {"on_failure": failures}
    streams = streams_from_args(args, required=False)
    if streams:
        overrides["streams"] = streams
    for name in ("partition_key", "quota_share", "linger_seconds", "endpoint_url", "region"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.quota:
        overrides["quota"] = Quota.named(args.quota)
    return BufferConfig.from_env(**overrides)


@contextlib.contextmanager
def _library_logging(quiet: bool) -> Iterator[None]:
    """Show the library's own warnings (rate-limited) on stderr, prefixed, during the run,
    unless the application has set up logging for it already."""
    library = logging.getLogger("firehose_buffer")
    if library.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"firehose-buffer {COMMAND}: %(message)s"))
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)
    propagate = library.propagate
    library.addHandler(handler)
    library.propagate = False
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.propagate = propagate


def _inputs(files: list[str]) -> Iterator[tuple[str, IO[bytes]]]:
    for name in files or ["-"]:
        if name == "-":
            yield "<stdin>", sys.stdin.buffer
            continue
        try:
            handle = open(name, "rb")  # noqa: SIM115  (closed right after use below)
        except OSError as exc:
            raise EventValueError(f"cannot read {name}: {exc.strerror}") from None
        with handle:
            yield name, handle


class _Run:
    """One ``send`` command's progress: lines read, events put, bad lines, why it stopped;
    used by the command's one thread."""

    def __init__(self, args: argparse.Namespace, buffer: FirehoseBuffer,
                 failures: _Failures) -> None:
        self.args = args
        self.buffer = buffer
        self.failures = failures
        self.lines = 0
        self.events = 0
        self.bytes_read = 0
        self.bad = 0
        self.stopped: str | None = None
        self.start = time.monotonic()
        every = args.progress_seconds
        self.every = every if every > 0 and not args.quiet else None
        self.next_progress = self.start + every if self.every else float("inf")

    def progress(self, now: float) -> None:
        self.next_progress = now + (self.every or 0.0)
        s = self.buffer.stats()
        rate = self.bytes_read / max(now - self.start, 1e-9) / 1e6
        waiting = f", last error: {s.last_error}" if s.last_error else ""
        note(COMMAND, f"{self.lines:,} lines read ({rate:.1f} MB/s), "
                      f"{s.events_delivered:,} events delivered, {s.events_failed:,} failed, "
                      f"{s.events_buffered:,} buffered{waiting}")

    def read(self) -> None:
        for name, handle in _inputs(self.args.files):
            if not self.read_one(name, handle):
                return

    def read_one(self, name: str, handle: IO[bytes]) -> bool:
        lineno = 0
        for raw in handle:
            lineno += 1
            self.lines += 1
            self.bytes_read += len(raw)
            if not self._keep_going():
                return False
            line = raw.strip()
            if lineno == 1 and line.startswith(_BOM):
                line = line[len(_BOM):].strip()
            if not line:
                continue
            problem = _check(line)
            if problem is None:
                try:
                    if not self.put(line):
                        return False
                    continue
                except EventValueError as exc:  # too large for one record
                    problem = str(exc)
            self.bad += 1
            where = f"{name}:{lineno}"
            if self.args.on_bad_line == "fail":
                error(COMMAND, f"{where}: {problem} (use --on-bad-line skip to skip such lines)")
                self.stopped = "bad line"
                return False
            if not self.args.quiet:
                note(COMMAND, f"skipped {where}: {problem}")
        return True

    def _keep_going(self) -> bool:
        """False once an error every later event would hit too has been seen; says how far
        it got when a progress line is due."""
        if self.failures.stop.is_set():
            self.stopped = "fatal"
            return False
        now = time.monotonic()
        if now >= self.next_progress:
            self.progress(now)
        return True

    def put(self, line: bytes) -> bool:
        """Put one event, waiting for room as long as delivery makes progress."""
        stalled_since: float | None = None
        delivered = -1
        while True:
            try:
                self.buffer.put(line)
                self.events += 1
                return True
            except BufferFullError:
                pass
            if not self._keep_going():
                return False
            now = time.monotonic()
            s = self.buffer.stats()
            done = s.events_delivered + s.events_failed
            if done != delivered:
                delivered, stalled_since = done, now
            elif stalled_since is not None and now - stalled_since >= self.args.timeout:
                last = f" (last error: {s.last_error})" if s.last_error else ""
                error(COMMAND, f"nothing delivered for {self.args.timeout:g} s{last}; "
                               "stopping (check --endpoint-url, --region and the streams)")
                self.stopped = "stalled"
                return False


def _check(line: bytes) -> str | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(value, dict):
        return f"not a JSON object but a {type(value).__name__}"
    return None


def _run(args: argparse.Namespace) -> int:
    failures = _Failures()
    config = _config(args, failures)
    buffer = FirehoseBuffer(config)
    state = _Run(args, buffer, failures)
    try:
        state.read()
    except EventValueError as exc:  # an input file that cannot be read
        error(COMMAND, str(exc))
        state.stopped = "unreadable input"
    except KeyboardInterrupt:
        state.stopped = "interrupted"
    finally:
        # An interrupted or failed read still delivers what was put before it.
        with contextlib.suppress(KeyboardInterrupt):
            buffer.close(args.timeout)
    s = buffer.stats()
    if not args.quiet:
        note(COMMAND, _summary(state, s, config))
    if failures.fatal is not None:
        error(COMMAND, f"{failures.fatal}: {FATAL_REASONS[failures.fatal]} "
                       f"({s.events_failed:,} events failed)")
        return EXIT_ERROR
    if s.events_failed:
        reasons = ", ".join(f"{n:,} {r}" for r, n in failures.by_reason.most_common())
        last = f"; last error: {s.last_error}" if s.last_error else ""
        error(COMMAND, f"{s.events_failed:,} of {s.events_put:,} events failed ({reasons}{last})")
        return EXIT_FAILED
    if state.stopped == "interrupted":
        return EXIT_INTERRUPTED
    if state.stopped is not None:
        return EXIT_FAILED
    return EXIT_OK


def _summary(state: _Run, s: Any, config: BufferConfig) -> str:
    mb = s.bytes_sent / 1e6
    billed = f", billed {s.billed_bytes / 1e6:.2f} MB" if s.bytes_sent else ""
    skipped = f"; {state.bad:,} bad lines skipped" if state.bad and state.stopped is None else ""
    return (f"{s.events_delivered:,} of {state.events:,} events delivered to "
            f"{len(config.streams)} streams in {s.records_sent:,} records "
            f"({mb:.2f} MB{billed}), {s.events_failed:,} failed, "
            f"{time.monotonic() - state.start:.1f} s{skipped}")
