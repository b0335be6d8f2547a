"""Options and error reporting shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from .._service.firehose import FIREHOSE
from ..config import ENV_PREFIX, BufferConfig, quota_from_env, sharded_stream_names
from ..errors import ConfigurationError
from ..quota import Quota

EXIT_OK = 0
#: Some events failed, the input had bad lines, or a check failed (status).
EXIT_FAILED = 1
#: Nothing could be done: configuration, credentials, endpoint, a missing stream.
EXIT_ERROR = 2


_CREDENTIAL_CODES = frozenset({
    "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
    "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "IncompleteSignature",
    "MissingAuthenticationToken",
})
_ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException"})
CREDENTIALS_HINT = ("check AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/"
                    "AWS_SESSION_TOKEN (`aws sts get-caller-identity` shows who you are)")
MISSING_STREAM_HINT = "create it with `firehose-buffer provision` or check --region"
_T = TypeVar("_T")


class CommandError(Exception):
    """Something the user must fix; the message says what, in one line."""


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "delivery streams",
        "default: FIREHOSE_BUFFER_STREAMS=a,b or FIREHOSE_BUFFER_STREAM=base with "
        "FIREHOSE_BUFFER_SHARDS=N",
    )
    names = group.add_mutually_exclusive_group()
    names.add_argument("--streams", metavar="A,B", help="comma-separated delivery stream names")
    names.add_argument("--stream", metavar="BASE",
                       help="base name of sharded streams BASE-0 .. BASE-(N-1)")
    group.add_argument("--shards", type=int, metavar="N",
                       help="with --stream: how many streams (default 1: just BASE)")


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS connection")
    group.add_argument(
        "--endpoint-url", metavar="URL",
        default=os.environ.get(ENV_PREFIX + "ENDPOINT_URL") or None,
        help="send every AWS call here (a local emulator, moto, LocalStack); "
             "default: FIREHOSE_BUFFER_ENDPOINT_URL or AWS's own",
    )
    group.add_argument(
        "--region", default=os.environ.get(ENV_PREFIX + "REGION") or None,
        help="AWS region; default: FIREHOSE_BUFFER_REGION, else AWS_REGION or your AWS config",
    )


def streams_from_args(args: argparse.Namespace, *, required: bool = True) -> tuple[str, ...]:
    """Streams named by the flags, else by the FIREHOSE_BUFFER_* environment."""
    if args.shards is not None and not args.stream:
        raise CommandError("--shards needs --stream BASE")
    if args.streams:
        streams = tuple(s.strip() for s in args.streams.split(",") if s.strip())
    elif args.stream:
        streams = sharded_stream_names(args.stream, args.shards) if args.shards is not None \
            else (args.stream,)
    else:
        try:
            return BufferConfig.from_env().streams
        except ConfigurationError:
            if not required:
                return ()
            raise CommandError(
                "no delivery streams: give --streams a,b or --stream BASE --shards N "
                "(or set FIREHOSE_BUFFER_STREAMS)"
            ) from None
    # Validates the names the same way the buffer will.
    return BufferConfig(streams=streams).streams


def aws_client(service: str, args: argparse.Namespace) -> Any:
    """A boto3 client honouring --region and --endpoint-url, with a few quick retries."""
    import boto3  # noqa: PLC0415  (keeps `--help` fast)
    from botocore.config import Config  # noqa: PLC0415

    session: Any = boto3.session.Session()  # typed per service literal; ours is a str
    return session.client(
        service, region_name=args.region, endpoint_url=args.endpoint_url,
        config=Config(retries={"total_max_attempts": 3, "mode": "standard"},
                      connect_timeout=5, read_timeout=30),
    )


def default_quota(region: str | None) -> Quota:
    """The Direct PUT quota a new stream gets in ``region``, unless the FIREHOSE_BUFFER_QUOTA
    variables (read as BufferConfig.from_env reads them) say otherwise."""
    configured = quota_from_env(os.environ)
    if configured is not None:
        return configured
    return Quota.HIGH if region in FIREHOSE.high_quota_regions else Quota.STANDARD


def explain(exc: BaseException) -> str:
    """One line saying what went wrong and what to do about it."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return f"no usable AWS credentials: {CREDENTIALS_HINT}"
    if isinstance(exc, NoRegionError):
        return "no AWS region: pass --region or set AWS_REGION"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot connect to {exc.kwargs.get('endpoint_url')}: check --endpoint-url, " \
               "--region and the network"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or "").strip()
        operation = exc.operation_name
        if code == "ResourceNotFoundException":
            return f"{operation}: {message or 'not found'} ({MISSING_STREAM_HINT})"
        if code in _CREDENTIAL_CODES:
            return f"AWS rejected the credentials ({code}): {CREDENTIALS_HINT}"
        if code in _ACCESS_CODES:
            return f"access denied for {operation}: {message} (the caller's IAM policy " \
                   "must allow it)"
        return f"{operation} failed: {code}: {message}"
    if isinstance(exc, ConfigurationError | CommandError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def guarded(command: str, body: Callable[[], int]) -> int:
    """Run ``body``; turn the errors a user can fix into one line on stderr and exit 2."""
    try:
        return body()
    except (BotoCoreError, ClientError, ConfigurationError, CommandError) as exc:
        error(command, explain(exc))
        return EXIT_ERROR


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size`` (an API's per-call maximum)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def error(command: str, message: str) -> None:
    print(f"firehose-buffer {command}: error: {message}", file=sys.stderr)


def note(command: str, message: str) -> None:
    print(f"firehose-buffer {command}: {message}", file=sys.stderr, flush=True)
