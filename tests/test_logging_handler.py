"""FirehoseHandler ships log records as JSON events through a real buffer to the emulator,
never recurses on the library's or the AWS SDK's own logging, and never raises."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import LocalFirehose
from firehose_buffer.logging import FirehoseHandler, encode_record

pytestmark = pytest.mark.slow
STREAM = "logs"
PACKAGE = Path(__file__).resolve().parent.parent / "firehose_buffer"


@pytest.fixture
def fh() -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=[STREAM], keep_records=True) as emulator:
        yield emulator


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.app")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.propagate = True


def _buffer(fh: LocalFirehose, **kwargs: Any) -> FirehoseBuffer:
    config = BufferConfig(streams=(STREAM,), endpoint_url=fh.endpoint_url, region="us-east-1",
                          linger_seconds=0.05, **kwargs)
    return FirehoseBuffer(config)


def _shipped(fh: LocalFirehose) -> list[dict[str, Any]]:
    lines = [line for record in fh.accepted_records(STREAM) for line in record.splitlines()]
    return [orjson.loads(line) for line in lines]


class Opaque:
    def __str__(self) -> str:
        return "<opaque thing>"


def test_records_become_json_events(fh: LocalFirehose, logger: logging.Logger) -> None:
    with _buffer(fh) as buffer:
        handler = FirehoseHandler(buffer, level=logging.INFO, fields={"service": "checkout"})
        logger.addHandler(handler)
        logger.debug("below the level: not shipped")
        logger.info("order %s paid", 42, extra={"order": {"id": 42, "items": [1, 2]},
                                                "thing": Opaque(), "amount": 9.5})
        try:
            raise ValueError("card declined")
        except ValueError:
            logger.exception("payment failed")
        logger.warning("with stack", stack_info=True)
        assert buffer.flush(10)
    events = _shipped(fh)
    assert [e["message"] for e in events] == ["order 42 paid", "payment failed", "with stack"]
    info, failure, stacked = events
    assert info["level"] == "INFO"
    assert info["logger"] == "tests.app"
    assert info["service"] == "checkout"
    assert info["order"] == {"id": 42, "items": [1, 2]}
    assert info["thing"] == "<opaque thing>"
    assert info["amount"] == 9.5
    assert "exception" not in info
    # ISO 8601 in UTC, to the millisecond, close to now.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info["time"])
    when = datetime.fromisoformat(info["time"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60
    assert failure["level"] == "ERROR"
    assert "ValueError: card declined" in failure["exception"]
    assert "Traceback" in failure["exception"]
    assert "test_records_become_json_events" in stacked["stack"]
    # No standard LogRecord attribute leaks in as an "extra" field.
    assert not {"args", "msg", "levelno", "pathname", "exc_info"} & set(info)


def test_library_and_sdk_logs_are_not_shipped(fh: LocalFirehose) -> None:
    root = logging.getLogger()
    previous = root.level
    with _buffer(fh) as buffer:
        handler = FirehoseHandler(buffer)
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)  # botocore and urllib3 debug-log every request
        try:
            logging.getLogger("tests.app").info("from the app")
            for name in ("firehose_buffer", "firehose_buffer.buffer", "botocore.endpoint",
                         "urllib3.connectionpool", "boto3.resources"):
                logging.getLogger(name).warning("internal %s", name)
            assert buffer.flush(10)
            # The flush itself made botocore/urllib3 log requests at DEBUG: none shipped.
            assert buffer.flush(10)
        finally:
            root.removeHandler(handler)
            root.setLevel(previous)
    loggers = [e["logger"] for e in _shipped(fh)]
    assert loggers == ["tests.app"]


def test_a_closed_or_full_buffer_never_raises_into_the_caller(
    fh: LocalFirehose, logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    buffer = _buffer(fh, max_buffer_bytes=1_024_000, max_record_bytes=1_024_000,
                     on_full="raise")
    handler = FirehoseHandler(buffer)
    logger.addHandler(handler)
    logger.error("x" * 2_000_000)  # too large for one record
    buffer.close()
    logger.error("after close")
    captured = capsys.readouterr().err
    # Reported the standard way (Handler.handleError), naming what went wrong.
    assert "EventTooLargeError" in captured
    assert "BufferClosedError" in captured
    assert buffer.stats().events_put == 0


@settings(max_examples=40, deadline=None)
@given(
    message=st.text(max_size=200),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: k not in _RESERVED),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=20), st.binary(max_size=10),
                  st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=3)),
        max_size=5,
    ),
)
def test_any_record_encodes_to_one_json_object_line(message: str, extra: dict[str, Any]) -> None:
    record = logging.getLogger("tests.prop").makeRecord(
        "tests.prop", logging.INFO, __file__, 1, "%s", (message,), None, extra=extra,
    )
    line = encode_record(record)
    assert b"\n" not in line
    event = orjson.loads(line)
    assert event["message"] == message
    for key, value in extra.items():
        assert key in event
        if isinstance(value, str | bool | type(None)):
            assert event[key] == value


# taskName: a LogRecord attribute from Python 3.12 on, which the handler treats as standard
# on 3.11 too (so an extra of that name is not shipped there either).
_RESERVED = set(vars(logging.makeLogRecord({}))) | {
    "message", "asctime", "taskName", "time", "level", "logger", "exception", "stack"}


def test_the_package_never_prints() -> None:
    # A library writes through logging. print() belongs to the command line only (cli/).
    result = subprocess.run(
        ["grep", "-rlE", r"(^|[^.\w])print\(", str(PACKAGE), "--include=*.py"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: no match at all
    offenders = [
        path for path in result.stdout.splitlines()
        if Path(path).parent.name != "cli"
    ]
    assert offenders == [], offenders
