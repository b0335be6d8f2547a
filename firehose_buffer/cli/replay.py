"""Re-send the events a spool directory holds (see ``spool_dir``), then report: spool files,
and the durable segments (``durable=True``) of processes that died.

Each spool file, and each dead process's segments, is claimed (locked) while it is sent, so
this is safe to run while applications using the same spool directory are running: files
they are writing or replaying are left to them, and so are the segments of a live process
(even a stopped one). A file is deleted once all its events are delivered; events that fail
again go back into the spool. Progress goes to stderr.

Exit status: 0 every spooled event was delivered and the spool is empty; 1 something is still
undelivered (still in the spool); 2 bad options or configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from .._storage.durable import count_events, dead_owners
from .._storage.spool import count_lines, pending_files
from ..buffer import FirehoseBuffer
from ..config import ENV_PREFIX, BufferConfig
from ..errors import ConfigurationError

EXIT_OK = 0
EXIT_UNDELIVERED = 1
EXIT_ERROR = 2
PROGRESS_SECONDS = 1.0

EXAMPLES = """\
examples:
  # back to the streams the events were meant for
  firehose-buffer replay --spool-dir /var/spool/app --region us-east-1

  # everything into one stream, against a local emulator
  firehose-buffer replay --spool-dir ./spool --stream events --endpoint-url http://127.0.0.1:4573
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("--spool-dir", default=os.environ.get(ENV_PREFIX + "SPOOL_DIR"),
                        help=f"the spool directory (default: ${ENV_PREFIX}SPOOL_DIR)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--stream", metavar="NAME",
                        help="send every spooled event to this one delivery stream")
    target.add_argument("--streams", metavar="A,B",
                        help="the delivery streams to send to; events spooled for a stream "
                             "not listed are spread over these (default: the streams the "
                             "spool has events for)")
    parser.add_argument("--endpoint-url", default=None, help="Firehose endpoint URL")
    parser.add_argument("--region", default=None, help="AWS region (default: the AWS config)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="give up on an event after this many seconds; it stays in the "
                             "spool (default %(default)s)")


def _streams(args: argparse.Namespace, spool_dir: str, durable: set[str]) -> tuple[str, ...]:
    if args.stream:
        return (args.stream.strip(),)
    if args.streams:
        return tuple(s.strip() for s in args.streams.split(",") if s.strip())
    return tuple(sorted({f.stream for f in pending_files(spool_dir)} | durable))


def run(args: argparse.Namespace) -> int:
    if not args.spool_dir:
        print("replay: give --spool-dir (or set FIREHOSE_BUFFER_SPOOL_DIR)", file=sys.stderr)
        return EXIT_ERROR
    spool_dir = str(args.spool_dir)
    if not os.path.isdir(spool_dir):
        print(f"replay: {spool_dir} is not a directory", file=sys.stderr)
        return EXIT_ERROR
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="replay: %(message)s")
    in_segments, durable_streams = count_events(spool_dir)
    total = count_lines(spool_dir) + in_segments
    files = len(pending_files(spool_dir)) + len(dead_owners(spool_dir))
    if total == 0 and files == 0:
        print("replay: the spool is empty", file=sys.stderr)
        return EXIT_OK
    streams = _streams(args, spool_dir, durable_streams)
    try:
        config = BufferConfig(
            streams=streams, spool_dir=spool_dir, endpoint_url=args.endpoint_url,
            region=args.region, record_ttl_seconds=args.timeout, linger_seconds=0.2,
            exit_timeout_seconds=args.timeout,
        )
        buffer = FirehoseBuffer(config)
    except ConfigurationError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"replay: {total} events in {files} files -> {', '.join(streams)}", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    try:
        while not buffer.wait_for_replay(PROGRESS_SECONDS) and time.monotonic() < deadline:
            _progress(buffer, total)
    finally:
        buffer.close(max(1.0, deadline - time.monotonic()))
    stats = buffer.stats()
    left = [*pending_files(spool_dir), *dead_owners(spool_dir)]
    print(f"replay: {stats.events_delivered} of {total} events delivered, "
          f"{stats.events_spooled} back in the spool, {len(left)} spool files left",
          file=sys.stderr)
    if stats.events_failed or left:
        if stats.last_error:
            print(f"replay: last error: {stats.last_error}", file=sys.stderr)
        return EXIT_UNDELIVERED
    return EXIT_OK


def _progress(buffer: FirehoseBuffer, total: int) -> None:
    s = buffer.stats()
    print(f"replay: {s.events_replayed}/{total} read, {s.events_delivered} delivered, "
          f"{s.events_failed} failed", file=sys.stderr)
