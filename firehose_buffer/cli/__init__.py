"""The ``firehose-buffer`` command: one subcommand per module, mounted here.

Each subcommand module has ``add_arguments(parser)`` and ``run(args) -> int``. Exit codes: 0
done, 1 some events failed, input was bad or a check failed (``status
--record-compression``: a stream would break compressed records), 2 nothing could be done
(bad configuration, credentials, endpoint or a missing stream), with one line on stderr
saying what to do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

#: subcommand -> (module, one-line help). Each module has add_arguments(parser) and run(args).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("firehose_buffer.cli.demo", "ship realistic traffic to a local Firehose and report"),
    "emulator": ("firehose_buffer.cli.emulator", "run the local Firehose emulator"),
    "replay": ("firehose_buffer.cli.replay", "re-send the events a spool directory holds"),
    "send": ("firehose_buffer.cli.send", "send JSON Lines from files or stdin to Firehose"),
    "provision": ("firehose_buffer.cli.provision",
                  "create the configured delivery streams (S3, .jsonl) and their alarms"),
    "status": ("firehose_buffer.cli.status",
               "the streams' settings, quotas, last hour of metrics and the shards a peak "
               "needs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firehose-buffer",
        description="Ship JSON events to Amazon Data Firehose, packed and paced; "
        "or run a local Firehose to test against.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = import_module(module_name)
        p = sub.add_parser(
            name, help=help_text, description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        runner: Callable[[argparse.Namespace], int] = module.run
        p.set_defaults(_run=runner)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args._run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
