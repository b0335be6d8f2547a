"""A logging handler that ships the library's own log records into the same buffer never
deadlocks it when the spool fails.

With ``on_full="spill"``, put() on a full buffer writes the event to the spool. When the spool
cannot keep it (a directory it cannot create a file in, a full disk) the spool logs why. A
``FirehoseHandler(buffer, exclude=())``, or any handler that ships every logger's records,
turns that log record into another put() on the same full buffer, which spills again, on the
same thread, while the first spill is still in progress. Nothing that can run user code
(logging included) may run under a lock of the library's; the process must go on, the events
that could be neither buffered nor spilled must be refused with a count, and the rest
delivered or kept in the spool.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from children import run_child
from counters import identity_gap

from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

STREAM = "spool-logs"

CHILD = textwrap.dedent("""
    import dataclasses, json, logging, os, resource, signal, sys
    from firehose_buffer import BufferConfig, FirehoseBuffer
    from firehose_buffer.logging import FirehoseHandler

    endpoint, spool, how = sys.argv[1:4]
    buf = FirehoseBuffer(BufferConfig(
        streams=("spool-logs",), endpoint_url=endpoint, region="us-east-1",
        max_record_bytes=10_000, max_buffer_bytes=20_000, on_full="spill", spool_dir=spool,
        linger_seconds=0.05))
    if how == "cannot-create":
        # A file where the stream's spool directory goes: no spool file can be made.
        open(os.path.join(spool, "spool-logs"), "w").close()
    else:
        # The disk fills after 8 KB: writes fail with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    logging.getLogger("firehose_buffer").addHandler(FirehoseHandler(buf, exclude=()))
    out = {"accepted": [], "refused": 0}
    # 3,000 events of 40 bytes into a 20 KB buffer: most of them spill. When one does not
    # fit, the log record that says the spill failed (200 bytes) does not fit either.
    for n in range(3000):
        heartbeat()
        if buf.put({"b": "user", "n": n, "pad": "x" * 16}):
            out["accepted"].append(n)
        else:
            out["refused"] += 1
    heartbeat(12)
    out["flushed"] = bool(buf.flush(10))
    heartbeat(12)
    buf.close(10)
    s = buf.stats()
    out["counters"] = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                       if isinstance(getattr(s, f.name), int)}
    print(json.dumps(out))
""")


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=[STREAM], data_dir=tmp_path / "delivered") as fh:
        yield fh


def _user_events(lines: list[bytes]) -> list[int]:
    return [e["n"] for e in map(orjson.loads, lines) if e.get("b") == "user"]


@pytest.mark.parametrize("failure", ["cannot-create", "cannot-write"])
def test_a_handler_shipping_the_librarys_logs_does_not_deadlock_a_failing_spill(
    firehose: LocalFirehose, tmp_path: Path, failure: str,
) -> None:
    """Before the fix, the spool logged its failure while holding its lock; the handler's
    put() spilled into the spool again and waited for that lock forever, on the first
    spill that failed."""
    spool = tmp_path / "spool"
    spool.mkdir()
    out = run_child(CHILD, firehose.endpoint_url, str(spool), failure, deadline=30)
    assert out["refused"] > 0, "the spool never failed: the test did not test anything"
    delivered = _user_events(firehose.delivered_lines(STREAM))
    spooled = _user_events([line for path in sorted(spool.glob(f"{STREAM}/*.jsonl"))
                            for line in path.read_bytes().splitlines()])
    missing = sorted(set(out["accepted"]) - set(delivered) - set(spooled))
    assert missing == [], f"accepted, then neither delivered nor spooled: {missing[:10]}"
    counters = out["counters"]
    assert counters["events_dropped"] >= out["refused"], counters
    assert counters["events_buffered"] == 0 and out["flushed"]
    assert identity_gap(counters) is None, identity_gap(counters)
