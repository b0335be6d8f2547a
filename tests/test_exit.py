"""Interpreter exit without close(): a child process's events still reach the service."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from firehose_buffer.emulator import LocalFirehose

pytestmark = pytest.mark.slow

STREAMS = ("exit-0", "exit-1", "exit-2")
ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import sys
    from firehose_buffer import BufferConfig, FirehoseBuffer

    endpoint, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    config = BufferConfig(
        streams=("exit-0", "exit-1", "exit-2"),
        partition_key="user" if mode == "keyed" else None,
        # Far longer than the process lives: only the exit hook can send these events.
        linger_seconds=60.0,
        endpoint_url=endpoint, region="us-east-1", exit_timeout_seconds=20.0,
    )
    buffer = FirehoseBuffer(config)
    for seq in range(count):
        buffer.put({"seq": seq, "user": f"u{seq % 13}", "pad": "x" * (seq % 900)})
    print("put", count, flush=True)
    # No close(), no flush(): the interpreter exits with everything still in memory.
""")


@pytest.fixture
def firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=STREAMS, data_dir=tmp_path / "delivered",
                       keep_records=True) as fh:
        yield fh


@pytest.mark.parametrize("mode", ["keyless", "keyed"])
def test_events_put_before_exit_are_delivered_without_close(
    firehose: LocalFirehose, mode: str,
) -> None:
    count = 3_000
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, firehose.endpoint_url, str(count), mode],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"put {count}"
    seqs = [
        orjson.loads(line)["seq"]
        for stream in STREAMS
        for record in firehose.accepted_records(stream)
        for line in record[:-1].split(b"\n")
    ]
    assert sorted(seqs) == list(range(count)), (
        f"{len(set(seqs))} of {count} events delivered; child stderr:\n{done.stderr}"
    )
