"""``python -m firehose_buffer.emulator``: run the emulator in its own process.

:func:`add_arguments` and :func:`run` are separate so a parent CLI can mount them as a
subcommand. Once serving, one line ``listening on http://127.0.0.1:PORT`` goes to stdout
(flushed), so a parent process can wait for it and learn the port chosen by ``--port 0``.
With ``--tls`` it is ``listening on https://127.0.0.1:PORT``, followed at once by
``ca file: PATH``, the CA certificate clients must trust (``AWS_CA_BUNDLE=PATH``).
SIGTERM and SIGINT stop it cleanly, writing pending records first.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType

from firehose_buffer.errors import ConfigurationError
from firehose_buffer.quota import Quota

from ..emulator.faults import FaultRates
from ..emulator.server import DEFAULT_BUFFER_BYTES, DEFAULT_BUFFER_SECONDS, LocalFirehose
from ..emulator.tls import EXTRA


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=4573, help="0 picks a free port")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where delivered files go (default: a temporary directory, "
                             "removed at exit)")
    parser.add_argument("--streams", default="",
                        help="comma-separated delivery streams to create at start")
    parser.add_argument("--quota", choices=["standard", "high"], default="standard",
                        help="per-stream quota preset (default %(default)s)")
    parser.add_argument("--requests-per-second", type=float, default=None,
                        help="override the preset's requests/s")
    parser.add_argument("--bytes-per-second", type=float, default=None,
                        help="override the preset's bytes/s")
    parser.add_argument("--records-per-second", type=float, default=None,
                        help="override the preset's records/s")
    parser.add_argument("--fault-rates", type=FaultRates.parse, default=None,
                        help="random faults, e.g. 'http_500=0.01,record_service_unavailable=0.05'")
    parser.add_argument("--seed", type=int, default=None, help="seed for random faults")
    parser.add_argument("--buffer-bytes", type=int, default=DEFAULT_BUFFER_BYTES,
                        help="delivery file size trigger (default %(default)s)")
    parser.add_argument("--buffer-seconds", type=float, default=DEFAULT_BUFFER_SECONDS,
                        help="delivery file age trigger (default %(default)s)")
    parser.add_argument("--credentials", action="append", type=_credential, default=None,
                        metavar="KEY_ID:SECRET",
                        help="accept SigV4 signatures made with this access key id and secret "
                             "(repeatable; default testing:testing)")
    parser.add_argument("--no-verify-signatures", dest="verify_signatures",
                        action="store_false", help="accept requests whatever their signature")
    parser.add_argument("--tls", action="store_true",
                        help="serve HTTPS with a certificate from a CA made at start; the CA "
                             "file's path is printed after the listening line as 'ca file: "
                             f"PATH' (needs the {EXTRA} extra)")


def _credential(text: str) -> tuple[str, str]:
    key, sep, secret = text.partition(":")
    if not sep or not key or not secret:
        raise argparse.ArgumentTypeError("expected KEY_ID:SECRET")
    return key, secret


def quota_from_args(args: argparse.Namespace) -> Quota:
    quota = Quota.named(args.quota)
    overrides = {
        name: float(value)
        for name in ("requests_per_second", "bytes_per_second", "records_per_second")
        if (value := getattr(args, name)) is not None
    }
    return replace(quota, **overrides) if overrides else quota


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            emulator = _emulator(args)
        except ConfigurationError as exc:
            print(f"firehose-buffer emulator: {exc}", file=sys.stderr)
            return 2
        with emulator:
            ready = f"listening on {emulator.endpoint_url}\n"
            if emulator.ca_file is not None:
                ready += f"ca file: {emulator.ca_file}\n"
            sys.stdout.write(ready)
            sys.stdout.flush()
            # A timeout keeps the main thread responsive to signals on every platform.
            while not stop.wait(1.0):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _emulator(args: argparse.Namespace) -> LocalFirehose:
    return LocalFirehose(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        quota=quota_from_args(args),
        streams=[s.strip() for s in args.streams.split(",") if s.strip()],
        fault_rates=args.fault_rates,
        seed=args.seed,
        buffer_bytes=args.buffer_bytes,
        buffer_seconds=args.buffer_seconds,
        verify_signatures=args.verify_signatures,
        credentials=dict(args.credentials) if args.credentials else None,
        tls=args.tls,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firehose_buffer.emulator",
        description="A local Amazon Data Firehose (JSON 1.1 API) for tests and benchmarks.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
